//! OpenAPI `SignatureNonce` replay protection, shared by every replica through the database.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::Store;
use super::error::StoreError;
use super::schema::request_nonces;
use super::types::UnixMillis;

impl Store {
    /// Records that `access_key_id` used `nonce`, to be remembered until `expires_at`.
    /// Returns `true` if the nonce is fresh, `false` if it was already recorded (a replay).
    ///
    /// One `INSERT` against the primary key: the database decides, so two replicas receiving
    /// the same request cannot both see it as fresh. A nonce stays a replay until purged,
    /// even past `expires_at` (the signature's timestamp window refuses such requests anyway).
    pub async fn remember_nonce(
        &self,
        access_key_id: &str,
        nonce: &str,
        expires_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let (access_key_id, nonce) = (access_key_id.to_owned(), nonce.to_owned());
        self.run(move |conn| {
            let inserted = diesel::insert_into(request_nonces::table)
                .values((
                    request_nonces::access_key_id.eq(&access_key_id),
                    request_nonces::nonce.eq(&nonce),
                    request_nonces::expires_at.eq(expires_at.0),
                ))
                .execute(conn);
            match inserted {
                Ok(_) => Ok(true),
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
                Err(other) => Err(other.into()),
            }
        })
        .await
    }

    /// Forgets nonces whose `expires_at` is at or before `now`; returns how many.
    pub async fn purge_expired_nonces(&self, now: UnixMillis) -> Result<usize, StoreError> {
        self.run(move |conn| {
            Ok(
                diesel::delete(request_nonces::table.filter(request_nonces::expires_at.le(now.0)))
                    .execute(conn)?,
            )
        })
        .await
    }
}
