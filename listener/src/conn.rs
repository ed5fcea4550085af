//! One accepted connection as the HTTP dispatchers see it: the plain or TLS stream, holding its
//! slot of [`crate::Limits::max_connections`] until it is dropped, and closed when it goes
//! too long without a request in progress.
//!
//! actix times out only the head of a connection's *first* request; on a kept-alive HTTP/1.1
//! connection the next head may be trickled a byte at a time (each byte clears the keep-alive
//! timer), and an HTTP/2 client answering pings keeps an idle connection forever. So a
//! connection with no request in progress for `keep_alive + header_timeout` is closed at its
//! next read, whatever bytes it sends meanwhile; a request in progress is bounded by the body
//! deadline and the application instead.

use std::cell::Cell;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;

/// Requests in progress on one connection, and when that count last changed. Shared with
/// the requests through the connection data (`Request::conn_data`).
#[derive(Debug)]
pub(crate) struct Activity {
    in_progress: Cell<usize>,
    since: Cell<Instant>,
}

impl Activity {
    fn new() -> Rc<Self> {
        Rc::new(Self {
            in_progress: Cell::new(0),
            since: Cell::new(Instant::now()),
        })
    }
}

/// One request in progress on its connection, from its head to its response.
pub(crate) struct InProgress(Rc<Activity>);

impl InProgress {
    pub(crate) fn start(activity: &Rc<Activity>) -> Self {
        activity.in_progress.set(activity.in_progress.get() + 1);
        activity.since.set(Instant::now());
        Self(Rc::clone(activity))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .in_progress
            .set(activity.in_progress.get().saturating_sub(1));
        activity.since.set(Instant::now());
    }
}

/// A served connection.
pub(crate) struct Conn {
    stream: Stream,
    _slot: OwnedSemaphorePermit,
    activity: Rc<Activity>,
    /// Longest time without a request in progress.
    idle_limit: Duration,
    idle_timer: Option<Pin<Box<Sleep>>>,
}

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    pub(crate) fn new(stream: Stream, slot: OwnedSemaphorePermit, idle_limit: Duration) -> Self {
        Self {
            stream,
            _slot: slot,
            activity: Activity::new(),
            idle_limit,
            idle_timer: None,
        }
    }

    /// What the connection's requests report their progress to.
    pub(crate) fn activity(&self) -> Rc<Activity> {
        Rc::clone(&self.activity)
    }

    /// Whether the connection has gone too long without a request in progress (and, if not,
    /// a wake-up registered for when it would have).
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        if self.activity.in_progress.get() > 0 {
            return false;
        }
        let deadline = self.activity.since.get() + self.idle_limit;
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.stream {
            Stream::Plain(_) => "plain",
            Stream::Tls(_) => "tls",
        };
        f.debug_struct("Conn").field("stream", &kind).finish()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle_too_long(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request in progress for keep_alive + header_timeout",
            )));
        }
        match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
