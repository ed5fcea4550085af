//! The HTTP listener every server of the workspace uses (the EKM, the XKI proxy and the
//! kms-connector): one implementation of what stands between a socket and an actix-web
//! application.
//!
//! - **Connection cap** ([`Limits::max_connections`], all listeners of a server together): the
//!   next connection gets the protocol's overload answer and is closed, instead of the process
//!   running out of file descriptors.
//! - **TLS** ([`Tls`]): our own accept path on tokio-rustls. It offers exactly the configured
//!   ALPN protocols (actix's acceptor adds `h2`), swaps the whole configuration on reload, times
//!   out slow handshakes, and delivers the alert of a refused handshake before closing (actix's
//!   acceptor drops the socket, and under TLS 1.3 the reset destroys the alert).
//! - **Time limits**: a request head within [`Limits::header_timeout`], a body within
//!   [`Limits::body_timeout`] (an unauthenticated client trickling a body is cut off).
//! - **Size limits**: the header list ([`Limits::max_header_bytes`], advertised to HTTP/2
//!   clients and enforced for HTTP/1.1 too), HTTP/2 streams per connection
//!   ([`Limits::max_concurrent_streams`]), and optionally the body ([`Settings::buffer_body`]).
//! - **Refusals** in the server's own protocol ([`Refusals`]), delivered over HTTP/2 as well
//!   (the body is read or thrown away first, see [`body`]).
//!
//! The two HTTP/2 settings need the patched `actix-http` under `vendor/` (see its README).
#![forbid(unsafe_code)]

pub mod body;
mod conn;
mod gate;
mod limits;
mod server;
mod tls;

pub use body::{BodyError, Deadline};
pub use gate::{Answer, PlainRefusals, Refusal, Refusals};
pub use limits::{Limits, LimitsConfig};
pub use server::{HttpServer, Settings, Stats};
pub use tls::{LINGER, Tls};

/// The request head a [`Refusals`] implementation sees (actix's, re-exported).
pub use actix_http::RequestHead;

/// Connections over the cap that are answered at once; more are closed without an answer
/// (answering costs a TLS handshake, which is what an overload cannot afford without bound).
pub const OVERLOAD_ANSWERS: usize = 64;
