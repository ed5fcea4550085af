//! The gate every request passes before the application: the header-list cap, and, where the
//! server asks for it, the whole body read within its cap and deadline (the application then
//! reads it from memory). A refusal is answered in the server's own protocol ([`Refusals`]),
//! after the body is thrown away so the answer reaches an HTTP/2 client ([`crate::body`]).

use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::body::{BoxBody, EitherBody, MessageBody};
use actix_http::header::{self, HeaderName, HeaderValue};
use actix_http::{Payload, Request, RequestHead, Response, StatusCode};
use actix_service::{Service, ServiceFactory};
use futures_util::future::LocalBoxFuture;

use crate::body::{self, Deadline};
use crate::conn::{Activity, InProgress};
use crate::server::Shared;

/// Why the listener refused a request or a connection before the application saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The header list is larger than [`crate::Limits::max_header_bytes`].
    HeadersTooLarge {
        /// The cap.
        limit: usize,
    },
    /// The body is larger than the server's cap.
    BodyTooLarge {
        /// The cap.
        limit: usize,
    },
    /// The body did not arrive within [`crate::Limits::body_timeout`].
    BodyTimeout {
        /// The time allowed.
        after: Duration,
    },
    /// The body's framing broke.
    BadBody,
    /// [`crate::Limits::max_connections`] connections are open already.
    Overloaded,
}

impl Refusal {
    /// The HTTP status that says it (a protocol may carry it differently).
    pub fn status(self) -> u16 {
        match self {
            Self::HeadersTooLarge { .. } => 431,
            Self::BodyTooLarge { .. } => 413,
            Self::BodyTimeout { .. } => 408,
            Self::BadBody => 400,
            Self::Overloaded => 503,
        }
    }

    /// A short, printable explanation (no request data).
    pub fn message(self) -> String {
        match self {
            Self::HeadersTooLarge { limit } => {
                format!("request header list larger than {limit} bytes")
            }
            Self::BodyTooLarge { limit } => format!("request body larger than {limit} bytes"),
            Self::BodyTimeout { after } => {
                format!("request body not received within {} ms", after.as_millis())
            }
            Self::BadBody => "request body cannot be read".to_owned(),
            Self::Overloaded => "server overloaded, retry later".to_owned(),
        }
    }

    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::BadBody => "bad_body",
            Self::Overloaded => "overloaded",
        }
    }
}

/// A complete answer in a protocol's own error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// More headers (e.g. a request id).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: &impl serde::Serialize) -> Self {
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            // Serializing plain error structs cannot fail; an empty body would still be framed.
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub(crate) fn into_response(self) -> Response<BoxBody> {
        let mut response = Response::with_body(self.status_code(), BoxBody::new(self.body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::from_str(&value))
            {
                headers.insert(name, value);
            }
        }
        response
    }

    /// The answer as a whole HTTP/1.1 response that closes the connection (for connections
    /// refused before any HTTP parser runs).
    pub(crate) fn http1_bytes(&self) -> Vec<u8> {
        let status = self.status_code();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            if HeaderName::try_from(*name).is_ok() && HeaderValue::from_str(value).is_ok() {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A protocol's answers to the listener's refusals, in its own error shape (XKI, EKM API,
/// Alibaba OpenAPI), and its log line for refused requests (the listener logs those at `debug`
/// only).
pub trait Refusals: Send + Sync + 'static {
    /// The answer to `refusal` of `request`. `None`: a connection refused at the cap before any
    /// request; those the listener counts ([`crate::Stats`]) and warns about at most every ten
    /// seconds, so an implementation should not log each one.
    fn answer(&self, refusal: Refusal, request: Option<&RequestHead>) -> Answer;
}

/// Plain-text answers, for the operations ports.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainRefusals;

impl Refusals for PlainRefusals {
    fn answer(&self, refusal: Refusal, _request: Option<&RequestHead>) -> Answer {
        Answer {
            status: refusal.status(),
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: refusal.message().into_bytes(),
        }
    }
}

/// The header list size as HTTP/2 counts it (name + value + 32 per field), plus the request
/// line, so both protocols share one cap.
fn header_list_size(head: &RequestHead) -> usize {
    let line = head.method.as_str().len()
        + head.uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + 64;
    head.headers.iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 32
    })
}

/// Makes a [`Gate`] around each service of `inner`.
pub(crate) struct GateFactory<F, B> {
    inner: F,
    shared: Arc<Shared>,
    _body: PhantomData<B>,
}

impl<F, B> GateFactory<F, B> {
    pub(crate) fn new(inner: F, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            _body: PhantomData,
        }
    }
}

impl<F, B> ServiceFactory<Request> for GateFactory<F, B>
where
    F: ServiceFactory<Request, Config = ()>,
    F::Future: 'static,
    F::Service: 'static,
    <F::Service as Service<Request>>::Future: 'static,
    F::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    type Response = Response<EitherBody<B>>;
    type Error = F::Error;
    type Config = ();
    type Service = Gate<F::Service, B>;
    type InitError = F::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Service, Self::InitError>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let inner = self.inner.new_service(());
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            Ok(Gate {
                inner: Rc::new(inner.await?),
                shared,
                _body: PhantomData,
            })
        })
    }
}

/// The gate around one worker's application service.
pub(crate) struct Gate<S, B> {
    inner: Rc<S>,
    shared: Arc<Shared>,
    _body: PhantomData<B>,
}

impl<S, B> Service<Request> for Gate<S, B>
where
    S: Service<Request> + 'static,
    S::Future: 'static,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    type Response = Response<EitherBody<B>>;
    type Error = S::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::forward_ready!(inner);

    fn call(&self, mut req: Request) -> Self::Future {
        let inner = Rc::clone(&self.inner);
        let shared = Arc::clone(&self.shared);
        // From here to the response, the connection has a request in progress.
        let in_progress = req.conn_data::<Rc<Activity>>().map(InProgress::start);
        Box::pin(async move {
            let _in_progress = in_progress;
            let limits = &shared.settings.limits;
            let deadline = Deadline::after(limits.body_timeout);
            if header_list_size(req.head()) > limits.max_header_bytes {
                let mut payload = req.take_payload();
                body::discard(&mut payload, deadline).await;
                let refusal = Refusal::HeadersTooLarge {
                    limit: limits.max_header_bytes,
                };
                return Ok(refuse(&shared, refusal, req.head()));
            }
            if let Some(limit) = shared.settings.buffer_body {
                let declared = body::declared_length(&req.head().headers);
                let mut payload = req.take_payload();
                match body::read(&mut payload, declared, limit, deadline).await {
                    Ok(bytes) => *req.payload() = Payload::from(bytes),
                    Err(e) => return Ok(refuse(&shared, e.into(), req.head())),
                }
            }
            let response = inner.call(req).await?;
            Ok(response.into().map_body(|_, b| EitherBody::left(b)))
        })
    }
}

fn refuse<B>(shared: &Shared, refusal: Refusal, head: &RequestHead) -> Response<EitherBody<B>> {
    shared.stats.refused_request();
    let mut path = head.uri.path();
    if let Some((cut, _)) = path.char_indices().nth(200) {
        path = &path[..cut];
    }
    tracing::debug!(
        target: "listener",
        refusal = refusal.as_str(),
        method = %head.method,
        path = %path,
        "request refused before the application"
    );
    shared
        .settings
        .refusals
        .answer(refusal, Some(head))
        .into_response()
        .map_body(|_, b| EitherBody::right(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_as_raw_http1_closes_the_connection() {
        let answer = Answer::json(503, &serde_json::json!({"Code": "Busy"}))
            .with_header("x-request-id", "R1")
            .with_header("x-bad", "a\r\nb");
        let text = String::from_utf8(answer.http1_bytes()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.contains("x-request-id: R1\r\n"), "{text}");
        assert!(!text.contains("x-bad"), "no header injection: {text}");
        assert!(text.ends_with("\r\n\r\n{\"Code\":\"Busy\"}"), "{text}");
    }

    #[test]
    fn refusals_have_their_statuses() {
        let cases = [
            (Refusal::HeadersTooLarge { limit: 1 }, 431),
            (Refusal::BodyTooLarge { limit: 1 }, 413),
            (
                Refusal::BodyTimeout {
                    after: Duration::from_millis(5),
                },
                408,
            ),
            (Refusal::BadBody, 400),
            (Refusal::Overloaded, 503),
        ];
        for (refusal, status) in cases {
            assert_eq!(
                PlainRefusals.answer(refusal, None).status,
                status,
                "{refusal:?}"
            );
        }
    }
}
