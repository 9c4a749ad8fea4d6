//! The load generator: HTTP/1.1 over a fixed number of persistent (keep-alive) connections, to
//! loopback addresses only, each connection sending its next request as soon as the previous
//! answer has been read (closed loop), until a deadline or a total request count is reached.
//!
//! With several target addresses (several collectors) the connections are spread over them
//! round-robin, as a load balancer would: connection `i` goes to address `i mod n` and stays
//! there (a reopened connection goes back to the same address).
//!
//! Connections are opened before the clock starts, so the numbers describe the steady state.
//! A connection the server closes (`Connection: close`) is reopened before the next request; one
//! that fails (transport error, or no answer within the request timeout) is counted and
//! reopened. Latency is measured per request, from sending the request to having read the whole
//! response body, in microseconds.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::traffic::{NativeBatch, PlausibleHit, Rng};

/// What every request of a run carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One event per request, `POST /api/event` (Plausible's format).
    Plausible,
    /// `batch` events per request, `POST /v1/events` (Veil's batch format).
    Native {
        /// Events per request.
        batch: usize,
    },
}

/// How to run the load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where to send requests: one or more loopback addresses, connections spread over them
    /// round-robin.
    pub addrs: Vec<SocketAddr>,
    /// What to send.
    pub workload: Workload,
    /// Persistent connections, each with one request in flight.
    pub connections: usize,
    /// Stop sending new requests after this long.
    pub duration: Duration,
    /// Stop after this many requests in total, whatever the time.
    pub max_requests: u64,
    /// Seed of the traffic mix (each connection derives its own).
    pub seed: u64,
    /// A request without an answer after this long counts as failed (its connection is reopened).
    pub request_timeout: Duration,
}

/// What a run measured.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Requests that got an answer.
    pub requests: u64,
    /// Events carried by requests answered with a 2xx status.
    pub events: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without an answer (transport error, timeout).
    pub failures: u64,
    /// Events in 2xx-answered requests that the collector must store (according to the mix).
    pub expected_stored: u64,
    /// Events the server said it queued: `accepted` of `/v1/events` answers; for `/api/event`,
    /// whose answer does not say, the expected count of 2xx answers.
    pub reported_accepted: u64,
    /// Latency of each answered request, microseconds (sorted once the run is over).
    pub latencies_us: Vec<u32>,
    /// Answered requests by target address.
    pub by_target: BTreeMap<SocketAddr, u64>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.requests += other.requests;
        self.events += other.events;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.failures += other.failures;
        self.expected_stored += other.expected_stored;
        self.reported_accepted += other.reported_accepted;
        self.latencies_us.extend(other.latencies_us);
        for (a, n) in other.by_target {
            *self.by_target.entry(a).or_default() += n;
        }
    }

    /// Answered requests per second.
    pub fn requests_per_sec(&self) -> f64 {
        per_sec(self.requests, self.elapsed)
    }

    /// Acknowledged (2xx) events per second.
    pub fn events_per_sec(&self) -> f64 {
        per_sec(self.events, self.elapsed)
    }

    /// Answers whose status was not 2xx.
    pub fn non_2xx(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// The `p`-th percentile latency (`p` in 0..=100); zero without answers.
    pub fn percentile(&self, p: f64) -> Duration {
        let n = self.latencies_us.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (n - 1) as f64).round() as usize;
        Duration::from_micros(u64::from(self.latencies_us[rank.min(n - 1)]))
    }
}

fn per_sec(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> io::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request to send and what to expect of it.
struct Planned {
    req: Request<Full<Bytes>>,
    events: u64,
    stored: u64,
}

fn plan(workload: Workload, rng: &mut Rng, host: &HeaderValue) -> Result<Planned, http::Error> {
    match workload {
        Workload::Plausible => {
            let hit = PlausibleHit::random(rng);
            let mut b = Request::post("/api/event")
                .header(header::HOST, host)
                .header(header::CONTENT_TYPE, "text/plain")
                .header(header::USER_AGENT, hit.user_agent)
                .header("x-forwarded-for", hit.forwarded_for);
            if hit.gpc {
                b = b.header("sec-gpc", "1");
            }
            Ok(Planned {
                req: b.body(Full::new(hit.body))?,
                events: 1,
                stored: u64::from(hit.stored),
            })
        }
        Workload::Native { batch } => {
            let b = NativeBatch::random(rng, batch);
            let req = Request::post("/v1/events")
                .header(header::HOST, host)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::USER_AGENT, "veil-load (server-side forwarder)")
                .body(Full::new(b.body))?;
            Ok(Planned {
                req,
                events: b.events,
                stored: b.stored,
            })
        }
    }
}

/// Sends one request and reads the whole answer; the flag says the server is closing the
/// connection (`Connection: close`, e.g. after its per-connection request limit).
async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes, bool), hyper::Error> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let closing = resp
        .headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body, closing))
}

/// The address connection number `index` uses: round-robin over `addrs` (not empty).
fn target(addrs: &[SocketAddr], index: usize) -> SocketAddr {
    addrs[index % addrs.len()]
}

async fn drive(
    opts: Arc<LoadOptions>,
    index: u64,
    addr: SocketAddr,
    mut sender: Option<Sender>,
    deadline: Instant,
    issued: Arc<AtomicU64>,
) -> LoadReport {
    let mut rng = Rng::new(opts.seed ^ index.wrapping_mul(0xA24B_AED4_963E_E407));
    let host =
        HeaderValue::from_str(&addr.to_string()).unwrap_or(HeaderValue::from_static("localhost"));
    let mut report = LoadReport::default();
    while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < opts.max_requests {
        let Ok(planned) = plan(opts.workload, &mut rng, &host) else {
            report.failures += 1;
            continue;
        };
        let s = match sender.as_mut().filter(|s| !s.is_closed()) {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => sender.insert(s),
                Err(_) => {
                    report.failures += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        match tokio::time::timeout(opts.request_timeout, exchange(s, planned.req)).await {
            Ok(Ok((status, body, closing))) => {
                if closing {
                    // Reopen before the next request, as a browser would.
                    sender = None;
                }
                let us = started.elapsed().as_micros();
                report
                    .latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
                report.requests += 1;
                *report.by_target.entry(addr).or_default() += 1;
                *report.statuses.entry(status.as_u16()).or_default() += 1;
                if status.is_success() {
                    report.events += planned.events;
                    report.expected_stored += planned.stored;
                    report.reported_accepted += match opts.workload {
                        Workload::Plausible => planned.stored,
                        Workload::Native { .. } => {
                            serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v.get("accepted").and_then(serde_json::Value::as_u64))
                                .unwrap_or(0)
                        }
                    };
                }
            }
            Ok(Err(_)) | Err(_) => {
                report.failures += 1;
                sender = None;
            }
        }
    }
    report
}

/// One `GET path` to a loopback address on a fresh connection, for health checks and metrics
/// around a run (not for load): the status and the whole body, or an error after `timeout`.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> io::Result<(StatusCode, Bytes)> {
    let once = async {
        let mut sender = connect(addr).await?;
        let req = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(io::Error::other)?;
        let (status, body, _) = exchange(&mut sender, req).await.map_err(io::Error::other)?;
        Ok((status, body))
    };
    tokio::time::timeout(timeout, once)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("GET {path} on {addr}")))?
}

/// Runs the load described by `opts` and returns what it measured.
///
/// Fails before sending anything when there is no target, a target is not a loopback address,
/// or a connection cannot be opened.
pub async fn run(opts: LoadOptions) -> io::Result<LoadReport> {
    if opts.addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no address to load",
        ));
    }
    if let Some(a) = opts.addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to load {a}: the load generator only targets loopback addresses"),
        ));
    }
    let mut senders = Vec::with_capacity(opts.connections);
    for i in 0..opts.connections.max(1) {
        let addr = target(&opts.addrs, i);
        senders.push((addr, connect(addr).await?));
    }
    let opts = Arc::new(opts);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + opts.duration;
    let tasks: Vec<_> = senders
        .into_iter()
        .zip(0u64..)
        .map(|((addr, s), i)| {
            tokio::spawn(drive(
                opts.clone(),
                i,
                addr,
                Some(s),
                deadline,
                issued.clone(),
            ))
        })
        .collect();
    let mut total = LoadReport::default();
    for t in tasks {
        match t.await {
            Ok(r) => total.merge(r),
            Err(e) => {
                return Err(io::Error::other(format!(
                    "a load connection task failed: {e}"
                )))
            }
        }
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let r = LoadReport {
            latencies_us: (1..=100).collect(),
            ..LoadReport::default()
        };
        assert_eq!(r.percentile(50.0), Duration::from_micros(51));
        assert_eq!(r.percentile(99.0), Duration::from_micros(99));
        assert_eq!(LoadReport::default().percentile(99.0), Duration::ZERO);
    }

    #[tokio::test]
    async fn refuses_non_loopback_targets() {
        let opts = LoadOptions {
            addrs: vec![
                "127.0.0.1:9".parse().unwrap(),
                "192.0.2.1:80".parse().unwrap(),
            ],
            workload: Workload::Plausible,
            connections: 1,
            duration: Duration::from_millis(10),
            max_requests: 1,
            seed: 1,
            request_timeout: Duration::from_secs(1),
        };
        assert!(run(opts).await.is_err());
    }

    #[test]
    fn connections_go_round_robin() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let picked: Vec<_> = (0..5).map(|i| target(&[a, b], i)).collect();
        assert_eq!(picked, [a, b, a, b, a]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spreads_the_load_over_every_address() {
        let mut addrs = Vec::new();
        let mut stops = Vec::new();
        for _ in 0..2 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            tokio::spawn(crate::bare::serve(listener, async move {
                let _ = stopped.await;
            }));
        }
        let report = run(LoadOptions {
            addrs: addrs.clone(),
            workload: Workload::Plausible,
            connections: 4,
            duration: Duration::from_secs(5),
            max_requests: 200,
            seed: 1,
            request_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
        assert_eq!(report.requests, 200);
        assert_eq!(report.by_target.len(), 2);
        for a in &addrs {
            assert!(
                report.by_target[a] > 0,
                "{a} got no request: {:?}",
                report.by_target
            );
        }
        for s in stops {
            let _ = s.send(());
        }
    }
}
