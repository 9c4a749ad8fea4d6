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
//!
//! [`run_open`] is the open-loop variant: requests are due at fixed intervals (`1 / rate`),
//! whatever the answers do. A pacing thread releases each request at its due time; whichever
//! connection is free takes it. When every connection is busy, due requests wait in a queue and
//! their latency counts from the *due* time, not from when they could be sent, so queueing in
//! the server shows in the percentiles instead of slowing the load down (no coordinated
//! omission). How late each request was sent is kept too (`send_lag_us`): the generator's own
//! part (pacing-thread wake-ups, waiting for a free connection).

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
    /// Latency of each answered request, microseconds (sorted once the run is over). In an
    /// open-loop run, from the request's due time.
    pub latencies_us: Vec<u32>,
    /// Open loop only: how long after its due time each request was sent, microseconds (sorted
    /// once the run is over); empty for a closed-loop run.
    pub send_lag_us: Vec<u32>,
    /// Open loop only: the fixed rate asked for, requests per second.
    pub target_rate: Option<f64>,
    /// Open loop only: requests answered [`SLOW`] or more after their due time, as (due time
    /// in ms from the start, latency in µs), sorted by due time; see [`stall_windows`].
    pub slow: Vec<(u32, u32)>,
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
        self.send_lag_us.extend(other.send_lag_us);
        self.slow.extend(other.slow);
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
        percentile_of(&self.latencies_us, p)
    }
}

/// The `p`-th percentile (`p` in 0..=100, nearest rank) of `sorted_us`, microseconds sorted in
/// ascending order; zero when empty.
pub fn percentile_of(sorted_us: &[u32], p: f64) -> Duration {
    let n = sorted_us.len();
    if n == 0 {
        return Duration::ZERO;
    }
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64).round() as usize;
    Duration::from_micros(u64::from(sorted_us[rank.min(n - 1)]))
}

/// An open-loop request answered this long after its due time is kept in [`LoadReport::slow`].
pub const SLOW: Duration = Duration::from_millis(20);

/// A stretch of time in which open-loop requests were slow: what a stall of the server looks like
/// from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// Due time of its first slow request, ms from the start.
    pub from_ms: u32,
    /// Due time of its last slow request, ms from the start.
    pub to_ms: u32,
    /// Slow requests in it.
    pub requests: u64,
    /// The worst latency in it, µs.
    pub worst_us: u32,
}

/// Groups slow requests, `(due ms, latency µs)` sorted by due time, into stalls: a request due
/// more than `gap_ms` after the previous slow one starts a new stall.
pub fn stall_windows(slow: &[(u32, u32)], gap_ms: u32) -> Vec<Stall> {
    let mut out: Vec<Stall> = Vec::new();
    for &(due, lat) in slow {
        match out.last_mut() {
            Some(w) if due.saturating_sub(w.to_ms) <= gap_ms => {
                w.to_ms = due;
                w.requests += 1;
                w.worst_us = w.worst_us.max(lat);
            }
            _ => out.push(Stall {
                from_ms: due,
                to_ms: due,
                requests: 1,
                worst_us: lat,
            }),
        }
    }
    out
}

/// When request number `k` (from 0) of an open-loop run at `rate` requests per second is due,
/// counted from the start: `k / rate`, exact to the nanosecond (no accumulated drift).
pub fn slot_offset(k: u64, rate: f64) -> Duration {
    if rate <= 0.0 || !rate.is_finite() {
        return Duration::MAX;
    }
    Duration::from_secs_f64(k as f64 / rate)
}

/// How many requests an open-loop run at `rate` requests per second sends within `duration`
/// (those due strictly before it), at most `max_requests`.
pub fn slots_within(duration: Duration, rate: f64, max_requests: u64) -> u64 {
    if rate <= 0.0 || !rate.is_finite() {
        return 0;
    }
    let n = (duration.as_secs_f64() * rate).ceil();
    (n as u64).min(max_requests)
}

/// One answered request, as [`LoadReport::record`] counts it.
struct Answer<'a> {
    events: u64,
    stored: u64,
    status: StatusCode,
    body: &'a [u8],
    latency: Duration,
}

impl LoadReport {
    fn record(&mut self, workload: Workload, addr: SocketAddr, a: Answer<'_>) {
        self.latencies_us.push(micros(a.latency));
        self.requests += 1;
        *self.by_target.entry(addr).or_default() += 1;
        *self.statuses.entry(a.status.as_u16()).or_default() += 1;
        if a.status.is_success() {
            self.events += a.events;
            self.expected_stored += a.stored;
            self.reported_accepted += match workload {
                Workload::Plausible => a.stored,
                Workload::Native { .. } => serde_json::from_slice::<serde_json::Value>(a.body)
                    .ok()
                    .and_then(|v| v.get("accepted").and_then(serde_json::Value::as_u64))
                    .unwrap_or(0),
            };
        }
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
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
                report.record(
                    opts.workload,
                    addr,
                    Answer {
                        events: planned.events,
                        stored: planned.stored,
                        status,
                        body: &body,
                        latency: started.elapsed(),
                    },
                );
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

/// Checks the targets (at least one, loopback only) and opens every connection.
async fn open_connections(opts: &LoadOptions) -> io::Result<Vec<(SocketAddr, Sender)>> {
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
    Ok(senders)
}

/// Due times of an open-loop run, shared by its connections: each takes the next one when it
/// is free.
type Slots = Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>>;

async fn drive_open(
    opts: Arc<LoadOptions>,
    index: u64,
    addr: SocketAddr,
    mut sender: Option<Sender>,
    slots: Slots,
    started: Instant,
) -> LoadReport {
    let mut rng = Rng::new(opts.seed ^ index.wrapping_mul(0xA24B_AED4_963E_E407));
    let host =
        HeaderValue::from_str(&addr.to_string()).unwrap_or(HeaderValue::from_static("localhost"));
    let mut report = LoadReport::default();
    loop {
        // Built before taking a due time, so building it is not counted as lateness.
        let planned = plan(opts.workload, &mut rng, &host);
        let Some(due) = slots.lock().await.recv().await else {
            break;
        };
        let Ok(planned) = planned else {
            report.failures += 1;
            continue;
        };
        let s = match sender.as_mut().filter(|s| !s.is_closed()) {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => sender.insert(s),
                Err(_) => {
                    // The request was due: it counts as failed, not as postponed.
                    report.failures += 1;
                    continue;
                }
            },
        };
        report
            .send_lag_us
            .push(micros(Instant::now().saturating_duration_since(due)));
        match tokio::time::timeout(opts.request_timeout, exchange(s, planned.req)).await {
            Ok(Ok((status, body, closing))) => {
                if closing {
                    sender = None;
                }
                let latency = due.elapsed();
                if latency >= SLOW {
                    let at = due.saturating_duration_since(started).as_millis();
                    report
                        .slow
                        .push((u32::try_from(at).unwrap_or(u32::MAX), micros(latency)));
                }
                report.record(
                    opts.workload,
                    addr,
                    Answer {
                        events: planned.events,
                        stored: planned.stored,
                        status,
                        body: &body,
                        latency,
                    },
                );
            }
            Ok(Err(_)) | Err(_) => {
                report.failures += 1;
                sender = None;
            }
        }
    }
    report
}

/// Runs the load of `opts` open-loop, at a fixed `rate` (requests per second) for
/// `opts.duration` (at most `opts.max_requests` requests), over `opts.connections` connections,
/// and returns what it measured, latencies counted from each request's due time.
///
/// A pacing thread (not a tokio timer, whose resolution is a millisecond) sleeps until each due
/// time and releases the request; requests due while every connection is busy wait for one.
/// Every released request is sent, even after the duration, so a slow server cannot shorten
/// the queue it causes. Fails like [`run`], or when `rate` is not a positive number.
pub async fn run_open(opts: LoadOptions, rate: f64) -> io::Result<LoadReport> {
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "an open-loop rate must be a positive number of requests per second, not {rate}"
            ),
        ));
    }
    let senders = open_connections(&opts).await?;
    let total = slots_within(opts.duration, rate, opts.max_requests);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let slots: Slots = Arc::new(tokio::sync::Mutex::new(rx));
    let opts = Arc::new(opts);
    let started = Instant::now();
    let pacer = std::thread::Builder::new()
        .name("veil-load-pacer".into())
        .spawn(move || {
            for k in 0..total {
                let due = started + slot_offset(k, rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tx.send(due).is_err() {
                    break;
                }
            }
        })?;
    let tasks: Vec<_> = senders
        .into_iter()
        .zip(0u64..)
        .map(|((addr, s), i)| {
            tokio::spawn(drive_open(
                opts.clone(),
                i,
                addr,
                Some(s),
                slots.clone(),
                started,
            ))
        })
        .collect();
    let mut report = LoadReport::default();
    for t in tasks {
        match t.await {
            Ok(r) => report.merge(r),
            Err(e) => {
                return Err(io::Error::other(format!(
                    "a load connection task failed: {e}"
                )))
            }
        }
    }
    report.elapsed = started.elapsed();
    let _ = pacer.join();
    report.latencies_us.sort_unstable();
    report.send_lag_us.sort_unstable();
    report.slow.sort_unstable();
    report.target_rate = Some(rate);
    Ok(report)
}

/// Runs the load described by `opts` and returns what it measured.
///
/// Fails before sending anything when there is no target, a target is not a loopback address,
/// or a connection cannot be opened.
pub async fn run(opts: LoadOptions) -> io::Result<LoadReport> {
    let senders = open_connections(&opts).await?;
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

    #[test]
    fn percentile_of_edges() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile_of(&v, 99.9), Duration::from_micros(999));
        assert_eq!(percentile_of(&v, 0.0), Duration::from_micros(1));
        assert_eq!(percentile_of(&v, 100.0), Duration::from_micros(1000));
        assert_eq!(percentile_of(&v, 150.0), Duration::from_micros(1000));
        assert_eq!(percentile_of(&[7], 50.0), Duration::from_micros(7));
    }

    #[test]
    fn slow_requests_group_into_stalls() {
        let slow = [(100, 30_000), (110, 45_000), (180, 25_000), (900, 21_000)];
        assert_eq!(
            stall_windows(&slow, 100),
            [
                Stall {
                    from_ms: 100,
                    to_ms: 180,
                    requests: 3,
                    worst_us: 45_000
                },
                Stall {
                    from_ms: 900,
                    to_ms: 900,
                    requests: 1,
                    worst_us: 21_000
                }
            ]
        );
        assert_eq!(stall_windows(&slow, 10).len(), 3);
        assert!(stall_windows(&[], 100).is_empty());
    }

    #[test]
    fn open_loop_schedule_is_fixed_and_does_not_drift() {
        assert_eq!(slot_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(slot_offset(1, 1000.0), Duration::from_millis(1));
        // A million slots later still exact: computed from k, not summed.
        assert_eq!(slot_offset(1_000_000, 4000.0), Duration::from_secs(250));
        assert_eq!(slot_offset(3, 3.0), Duration::from_secs(1));
        assert_eq!(slot_offset(1, 0.0), Duration::MAX);
        // 2.5 s at 1000/s: slots 0..2500 are due before the end.
        assert_eq!(
            slots_within(Duration::from_millis(2500), 1000.0, u64::MAX),
            2500
        );
        assert_eq!(slots_within(Duration::from_millis(2500), 1000.0, 10), 10);
        assert_eq!(slots_within(Duration::from_millis(1), 1500.0, u64::MAX), 2);
        assert_eq!(slots_within(Duration::from_secs(1), -1.0, 5), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_sends_at_the_rate_and_counts_from_the_due_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::bare::serve(listener, async move {
            let _ = stopped.await;
        }));
        let opts = LoadOptions {
            addrs: vec![addr],
            workload: Workload::Plausible,
            connections: 4,
            duration: Duration::from_millis(500),
            max_requests: u64::MAX,
            seed: 3,
            request_timeout: Duration::from_secs(5),
        };
        let t = Instant::now();
        let report = run_open(opts.clone(), 400.0).await.unwrap();
        // 200 requests due in 0.5 s, all sent and answered, none early.
        assert_eq!(report.requests, 200);
        assert_eq!(report.send_lag_us.len(), 200);
        assert!(
            t.elapsed() >= Duration::from_millis(497),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(report.target_rate, Some(400.0));
        assert!(run_open(opts, 0.0).await.is_err());
        let _ = stop.send(());
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
