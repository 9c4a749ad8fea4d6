//! The HTTP/1.1 server every Veil role runs on: accept loop, limits, graceful shutdown.
//!
//! [`serve`] takes a bound listener, an [`App`] and a shutdown future. It reads each request body
//! completely (bounded by `max_body_bytes` → 413, and by `body_read_timeout` → 408) before handing
//! the app an `http::Request<Bytes>` whose extensions carry the [`PeerAddr`]. Headers must arrive
//! within `header_read_timeout` (hyper's timer is set, without which that timeout does nothing).
//! Accept errors such as EMFILE are counted and survived with a short back-off. Beyond
//! `max_connections` open connections a new one gets a 503 and is closed; a keep-alive
//! connection is closed after `max_requests_per_connection` requests. On shutdown it
//! stops accepting, lets in-flight requests finish (keep-alive connections are told to close),
//! and gives up on connections still open after `shutdown_timeout`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::IntCounter;
use tokio::net::TcpListener;

use crate::Error;

/// A response with a fully buffered body.
pub type HttpResponse = Response<Full<Bytes>>;

/// A boxed future answering one request.
pub type ResponseFuture = Pin<Box<dyn Future<Output = HttpResponse> + Send + 'static>>;

/// The socket peer of a request, in its extensions.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Something that answers requests (the collector, the aggregator, a composition of both).
pub trait App: Send + Sync + 'static {
    /// Answers one request whose body has been read.
    fn call(self: Arc<Self>, req: Request<Bytes>) -> ResponseFuture;
}

/// Limits and timeouts of the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Time to receive the headers.
    pub header_read_timeout: Duration,
    /// Time to receive the body.
    pub body_read_timeout: Duration,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_timeout: Duration,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Requests on one connection before it is closed (`Connection: close` on the last).
    pub max_requests_per_connection: u64,
    /// Counter for accept errors (optional).
    pub accept_errors: Option<IntCounter>,
    /// Counter for requests refused before the app saw them, by reason (optional).
    pub rejected: Option<prometheus::IntCounterVec>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        let l = crate::config::Limits::default();
        Self {
            max_body_bytes: l.max_body_bytes,
            header_read_timeout: l.header_read_timeout,
            body_read_timeout: l.body_read_timeout,
            shutdown_timeout: Duration::from_secs(30),
            max_connections: l.max_connections,
            max_requests_per_connection: l.max_requests_per_connection,
            accept_errors: None,
            rejected: None,
        }
    }
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The JSON error answer for an [`Error`]: `{"error": "..."}` with its status; 503s carry
/// `Retry-After`.
pub fn error_response(e: &Error) -> HttpResponse {
    let mut r = json(e.status(), &serde_json::json!({ "error": e.to_string() }));
    if e.status() == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    if e.status() == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

async fn read_body(
    body: Incoming,
    declared: Option<u64>,
    opts: &ServerOptions,
) -> Result<Bytes, Error> {
    if declared.is_some_and(|n| n > opts.max_body_bytes as u64) {
        return Err(Error::PayloadTooLarge {
            limit: opts.max_body_bytes,
        });
    }
    let limited = Limited::new(body, opts.max_body_bytes);
    match tokio::time::timeout(opts.body_read_timeout, limited.collect()).await {
        Err(_) => Err(Error::BodyTimeout(opts.body_read_timeout)),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Error::PayloadTooLarge {
            limit: opts.max_body_bytes,
        }),
        Ok(Err(e)) => Err(Error::BodyRead(e.to_string())),
    }
}

async fn handle(
    app: Arc<dyn App>,
    opts: Arc<ServerOptions>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let (mut parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bytes = match read_body(body, declared, &opts).await {
        Ok(b) => b,
        Err(e) => {
            if let Some(r) = &opts.rejected {
                r.with_label_values(&[e.reason()]).inc();
            }
            let mut resp = error_response(&e);
            // The rest of the body was not read: do not reuse the connection.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Ok(resp);
        }
    };
    parts.extensions.insert(PeerAddr(peer));
    Ok(app.call(Request::from_parts(parts, bytes)).await)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: Arc<dyn App>,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let opts = Arc::new(opts);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024)
        .max_headers(100);
    let connections = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let Ok(permit) = connections.clone().try_acquire_owned() else {
                        // Over --max-connections: a clear refusal, then close.
                        if let Some(r) = &opts.rejected {
                            r.with_label_values(&["too_many_connections"]).inc();
                        }
                        tokio::spawn(refuse(stream));
                        continue;
                    };
                    let app = app.clone();
                    let o = opts.clone();
                    let served = Arc::new(AtomicU64::new(0));
                    let svc = service_fn(move |req| {
                        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                        let (app, o) = (app.clone(), o.clone());
                        async move {
                            let last = n >= o.max_requests_per_connection;
                            let mut resp = handle(app, o, peer, req).await?;
                            if last {
                                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    let fut = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = fut.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    // EMFILE, ENFILE, ECONNABORTED…: never end the loop; back off briefly.
                    if let Some(c) = &opts.accept_errors {
                        c.inc();
                    }
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("all connections closed"),
        () = tokio::time::sleep(opts.shutdown_timeout) => {
            tracing::warn!("connections still open after {:?}; closing anyway", opts.shutdown_timeout);
        }
    }
}

/// Answers 503 on a connection over the limit and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":"too many open connections; retry later"}"#;
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
