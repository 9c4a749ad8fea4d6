//! The baseline: a hyper 1.x HTTP/1.1 server that reads each request body and answers
//! `202 ok`, and does nothing else.
//!
//! Its connection builder is set up like the collector's (`veil_collector::server`: hyper timer,
//! header read timeout, keep-alive, buffer and header limits, `TCP_NODELAY`), so the difference
//! between the two under the same load is the collector's own work: body limits, routing, JSON,
//! the pipeline and the queue. It is the ceiling of this machine and this load generator.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

async fn accept_everything(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body like any real server must (and so the connection can be reused).
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
    *resp.status_mut() = StatusCode::ACCEPTED;
    Ok(resp)
}

/// Serves the baseline on `listener` until `shutdown` resolves. Connections still open then are
/// left to end when their clients close them.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true)
        .max_buf_size(64 * 1024)
        .max_headers(100);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = builder.serve_connection(TokioIo::new(stream), service_fn(accept_everything));
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            () = &mut shutdown => break,
        }
    }
}
