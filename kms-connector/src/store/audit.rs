//! The audit trail: append-only events, queried newest first.

use diesel::prelude::*;

use super::Store;
use super::conn::write_transaction;
use super::error::{Entity, StoreError, on};
use super::models::{AuditEvent, AuditQuery};
use super::schema::audit_events;
use super::types::UnixMillis;

impl Store {
    /// Appends an event (`detail` is cut to [`AuditEvent::MAX_DETAIL_BYTES`]).
    /// `AlreadyExists(AuditEvent)` if the event id was used.
    pub async fn append_audit(&self, mut event: AuditEvent) -> Result<(), StoreError> {
        if let Some(detail) = event.detail.as_mut() {
            truncate_at_char_boundary(detail, AuditEvent::MAX_DETAIL_BYTES);
        }
        self.run(move |conn| {
            diesel::insert_into(audit_events::table)
                .values(event)
                .execute(conn)
                .map_err(on(Entity::AuditEvent))?;
            Ok(())
        })
        .await
    }

    /// Deletes at most `batch` events older than `before`, oldest first; returns how many.
    /// (Small batches keep each write transaction short; call again until it returns less.)
    pub async fn purge_audit_before(
        &self,
        before: UnixMillis,
        batch: u32,
    ) -> Result<usize, StoreError> {
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                let oldest: Vec<i64> = audit_events::table
                    .filter(audit_events::time.lt(before.0))
                    .order(audit_events::seq.asc())
                    .limit(i64::from(batch))
                    .select(audit_events::seq)
                    .load(conn)?;
                Ok(
                    diesel::delete(audit_events::table.filter(audit_events::seq.eq_any(oldest)))
                        .execute(conn)?,
                )
            })
        })
        .await
    }

    /// Events matching every set field of `query`, newest first (ties: latest appended
    /// first), at most `query.limit` (1–[`AuditQuery::MAX_LIMIT`]).
    pub async fn query_audit(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        if !(1..=AuditQuery::MAX_LIMIT).contains(&query.limit) {
            return Err(StoreError::InvalidArgument(format!(
                "audit limit must be 1–{}",
                AuditQuery::MAX_LIMIT
            )));
        }
        self.run(move |conn| {
            let mut select = audit_events::table.into_boxed();
            if let Some(account_id) = &query.account_id {
                select = select.filter(audit_events::account_id.eq(account_id));
            }
            if let Some(key_id) = &query.key_id {
                select = select.filter(audit_events::key_id.eq(key_id));
            }
            if let Some(action) = &query.action {
                select = select.filter(audit_events::action.eq(action));
            }
            if let Some(since) = query.since {
                select = select.filter(audit_events::time.ge(since.0));
            }
            if let Some(until) = query.until {
                select = select.filter(audit_events::time.lt(until.0));
            }
            Ok(select
                .order((audit_events::time.desc(), audit_events::seq.desc()))
                .limit(i64::from(query.limit))
                .select(AuditEvent::as_select())
                .load(conn)?)
        })
        .await
    }
}

fn truncate_at_char_boundary(text: &mut String, max_bytes: usize) {
    if text.len() > max_bytes {
        let cut = (0..=max_bytes)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::truncate_at_char_boundary;

    #[test]
    fn truncation_keeps_whole_characters() {
        let mut text = "ab€".to_owned(); // '€' is 3 bytes
        truncate_at_char_boundary(&mut text, 4);
        assert_eq!(text, "ab");
        let mut short = "abc".to_owned();
        truncate_at_char_boundary(&mut short, 4);
        assert_eq!(short, "abc");
    }
}
