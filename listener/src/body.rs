//! Reading a request body within a size cap and a deadline, and throwing one away.
//!
//! A refusal must reach the client over HTTP/2 too: when a handler answers while the client is
//! still sending, actix drops the stream's receive half before the response is sent, `h2`
//! resets the stream (`CANCEL`) and the client gets no answer at all. So a body is read to its
//! end, or thrown away up to [`DISCARD_LIMIT`] bytes past the cap, before any answer; only a
//! client that keeps sending beyond that, or past the deadline, loses the answer.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use tokio::time::Instant;

use crate::Refusal;

/// How much of a body past its cap (or of a body nobody wants) is read and thrown away so that
/// the answer reaches the client. Reading costs bandwidth, not memory.
pub const DISCARD_LIMIT: usize = 1024 * 1024;

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// More than the cap.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The deadline passed first.
    #[error("request body not received within {} ms", .after.as_millis())]
    Timeout {
        /// The time allowed.
        after: Duration,
    },
    /// The framing broke (bad chunked encoding, stream reset, connection lost).
    #[error("request body cannot be read")]
    Broken,
}

impl From<BodyError> for Refusal {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => Refusal::BodyTooLarge { limit },
            BodyError::Timeout { after } => Refusal::BodyTimeout { after },
            BodyError::Broken => Refusal::BadBody,
        }
    }
}

/// The body length a request declares (`Content-Length`), if it declares a readable one.
pub fn declared_length(headers: &actix_http::header::HeaderMap) -> Option<usize> {
    headers
        .get(actix_http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// When a body must be in, counted from now.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    after: Duration,
}

impl Deadline {
    /// `after` from now.
    pub fn after(after: Duration) -> Self {
        Self {
            at: Instant::now() + after,
            after,
        }
    }
}

/// Reads the whole body: at most `limit` bytes, by `deadline`. `declared` is the
/// `Content-Length`, if any: a body declared over the cap is refused without waiting for it
/// (after throwing it away when that is cheap, see [`DISCARD_LIMIT`]).
pub async fn read<S, E>(
    payload: &mut S,
    declared: Option<usize>,
    limit: usize,
    deadline: Deadline,
) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    if declared.is_some_and(|len| len > limit) {
        if declared.is_some_and(|len| len <= limit.saturating_add(DISCARD_LIMIT)) {
            discard(payload, deadline).await;
        }
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    loop {
        match next(payload, deadline).await? {
            None => return Ok(body.freeze()),
            Some(chunk) if body.len() + chunk.len() > limit => {
                discard(payload, deadline).await;
                return Err(BodyError::TooLarge { limit });
            }
            Some(chunk) => body.extend_from_slice(&chunk),
        }
    }
}

/// Reads and throws away what is left of a body, at most [`DISCARD_LIMIT`] bytes, by `deadline`.
/// Returns whether the body ended (so an answer now reaches the client).
pub async fn discard<S, E>(payload: &mut S, deadline: Deadline) -> bool
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut thrown = 0usize;
    while thrown <= DISCARD_LIMIT {
        match next(payload, deadline).await {
            Ok(None) => return true,
            Ok(Some(chunk)) => thrown += chunk.len(),
            Err(_) => return false,
        }
    }
    false
}

async fn next<S, E>(payload: &mut S, deadline: Deadline) -> Result<Option<Bytes>, BodyError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let chunk = std::future::poll_fn(|cx| Pin::new(&mut *payload).poll_next(cx));
    match tokio::time::timeout_at(deadline.at, chunk).await {
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(_))) => Err(BodyError::Broken),
        Ok(None) => Ok(None),
        Err(_) => Err(BodyError::Timeout {
            after: deadline.after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Chunks = futures_util::stream::Iter<std::vec::IntoIter<Result<Bytes, ()>>>;

    fn chunks(parts: &[&[u8]]) -> Chunks {
        let items: Vec<Result<Bytes, ()>> = parts
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        futures_util::stream::iter(items)
    }

    fn soon() -> Deadline {
        Deadline::after(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let body = read(&mut chunks(&[b"ab", b"cd"]), None, 4, soon()).await;
        assert_eq!(body.unwrap(), Bytes::from_static(b"abcd"));
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_refused_and_thrown_away() {
        let mut stream = chunks(&[b"abc", b"de", b"fgh"]);
        assert_eq!(
            read(&mut stream, None, 4, soon()).await,
            Err(BodyError::TooLarge { limit: 4 })
        );
        assert!(
            futures_util::StreamExt::next(&mut stream).await.is_none(),
            "read to its end"
        );
        let declared = read(&mut chunks(&[b"abcdef"]), Some(6), 4, soon()).await;
        assert_eq!(declared, Err(BodyError::TooLarge { limit: 4 }));
    }

    #[tokio::test]
    async fn broken_framing_and_slow_bodies_are_told_apart() {
        let mut broken = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"a")), Err(())]);
        assert_eq!(
            read(&mut broken, None, 10, soon()).await,
            Err(BodyError::Broken)
        );
        let mut never = futures_util::stream::pending::<Result<Bytes, ()>>();
        let after = Duration::from_millis(20);
        assert_eq!(
            read(&mut never, None, 10, Deadline::after(after)).await,
            Err(BodyError::Timeout { after })
        );
        assert!(!discard(&mut never, Deadline::after(after)).await);
    }
}
