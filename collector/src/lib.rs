//! Veil's collector: takes events over HTTP, turns each into a row without any raw identifier,
//! keeps the rows of each request durably in a spool, and batches them into ClickHouse.
//!
//! ```text
//! HTTP ─▶ server (limits, timeouts) ─▶ routes::ROUTES ─▶ routes/{plausible,native,umami,aptabase,pixel}
//!      ─▶ routes::ingest (decode → prepare each → store → answer)
//!      ─▶ pipeline::Pipeline::process, one event in three typed stages:
//!           parse (checks, site, consent) ─▶ enrich (user agent, GeoIP, data-centre check,
//!           sources, app facts; IP and UA still present) ─▶ anonymise (visitor hash, session;
//!           IP and UA dropped; minimised, scrubbed) ─▶ EventRow
//!      ─▶ pipeline::batch: the request's rows appended to pipeline::spool (the committer thread
//!           writes and fsyncs them; the answer is sent once they are on disk)
//!      ─▶ one writer thread reads batches from the spool ─▶ pipeline::sink (ClickHouse),
//!           then commits the batch in the spool
//! ```
//!
//! [`run`] is the whole collector on a bound listener (plus, when given, the metrics listener)
//! until a shutdown future resolves; tests start it on port 0. [`Collector`] is the same thing
//! as a value, so `veil up` can serve it on one address together with the aggregator and the
//! dashboard. Prometheus' `/metrics` is served only on the metrics listener
//! ([`routes::health::MetricsApp`], `--metrics-listen`, loopback unless `--metrics-token`),
//! never on the ingest one: its per-event counters would show anyone who can reach the ingest
//! port what became of one visitor's event.

pub mod config;
pub mod error;
pub mod filtered;
pub mod metrics;
pub mod pipeline;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod sites;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::Request;
use prometheus::Registry;
use tokio::net::TcpListener;
use veil_schemas::ClickHouseConfig;

pub use config::CollectorConfig;
pub use error::Error;
use metrics::{DropReason, Metrics};
use pipeline::batch::BatchQueue;
use pipeline::privacy::salts::{ClickHouseSaltStore, Salts};
use pipeline::sink::clickhouse::ClickHouseSink;
use pipeline::sink::{Sink, SinkFactory};
use pipeline::{EventRow, Incoming, Outcome, Pipeline};
use server::{App, HttpResponse, ResponseFuture, ServerOptions};

/// Where "now" comes from (tests inject a fixed clock).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What [`Collector::prepare`] made of one valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// The row to store.
    Row(Box<EventRow>),
    /// Valid but not stored by policy (counted under the reason).
    Dropped(DropReason),
}

/// What `/readyz` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Accepting, ClickHouse answering.
    Ready,
    /// Accepting into the spool while ClickHouse is unreachable or failing.
    Degraded(String),
    /// Not accepting.
    NotReady(String),
}

struct Inner {
    config: CollectorConfig,
    /// `config.trusted_ip_headers` as header names (validated with the config), so that no
    /// request parses them again.
    ip_headers: Vec<http::HeaderName>,
    pipeline: Pipeline,
    queue: BatchQueue,
    metrics: Metrics,
    registry: Registry,
    clickhouse: Option<ClickHouseConfig>,
    accepting: AtomicBool,
    clock: Arc<dyn Clock>,
    rate: ratelimit::RateLimits,
    /// Per-site counts of events not stored (bots, opt-outs, rate limit).
    filtered: Arc<filtered::FilteredCounts>,
    /// Set to true at shutdown; background tasks watch it.
    stop: tokio::sync::watch::Sender<bool>,
}

/// A running collector (spool open, its writer thread started). Cheap to clone.
#[derive(Clone)]
pub struct Collector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("queue", &self.inner.queue)
            .finish()
    }
}

impl Collector {
    /// Validates `config`, loads the shared daily salts, opens the spool and starts its writer
    /// thread that inserts into `ch`, and the task that keeps salts fresh. If ClickHouse is unreachable at start the
    /// collector still starts; events get 503 until today's salt can be loaded.
    pub async fn start(
        mut config: CollectorConfig,
        ch: ClickHouseConfig,
        registry: Registry,
    ) -> Result<Self, Error> {
        config.validate()?;
        ch.validate().map_err(|e| Error::Config(e.to_string()))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let salts = Arc::new(Salts::shared(
            Arc::new(ClickHouseSaltStore::new(&ch)),
            clock.clone(),
        ));
        if let Err(e) = salts.refresh().await {
            tracing::warn!(error = %e, "could not load today's salt; events get 503 until ClickHouse answers");
        }
        let sink_cfg = ch.clone();
        let factory: SinkFactory =
            Box::new(move || Ok(Box::new(ClickHouseSink::new(&sink_cfg)?) as Box<dyn Sink>));
        let geo = Arc::new(match &config.geoip_dir {
            Some(dir) => pipeline::geo::GeoDb::open(dir),
            None => pipeline::geo::GeoDb::empty(),
        });
        tracing::info!(status = %geo.status(), "GeoIP");
        if config.geoip_dir.is_some() {
            geo.watch(config.geoip_reload)?;
        }
        // Sites from flags, then the registry shared through ClickHouse (admin API), kept
        // fresh in the background for as long as the collector lives.
        let sites = Arc::new(config.registry());
        let store = veil_schemas::registry::Registry::new(&ch);
        if let Err(e) = store.refresh().await {
            tracing::warn!(error = %e, "could not load the site registry; flag sites only until it loads");
        }
        store.spawn_refresh(veil_schemas::registry::DEFAULT_REFRESH);
        sites.attach_store(store);
        let pipeline = Pipeline::new(sites, config.limits.clone(), salts.clone()).with_geo(geo);
        let client = ch.client();
        let c = Self::assemble(config, pipeline, factory, Some(ch), registry, clock)?;
        let mut stopped = c.inner.stop.subscribe();
        tokio::spawn(salts.keep_fresh(Duration::from_secs(60), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        // Filtered-traffic counts reach ClickHouse every 5 s, and once more at shutdown.
        let counts = c.inner.filtered.clone();
        let mut stopped = c.inner.stop.subscribe();
        tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => false,
                    _ = stopped.wait_for(|s| *s) => true,
                };
                if let Err(e) = counts.flush(&client).await {
                    tracing::warn!(error = %e, "could not write filtered-traffic counts; retrying");
                }
                if stop {
                    break;
                }
            }
        });
        Ok(c)
    }

    /// A collector over any sink, pipeline and clock (tests and benches). Readiness checks
    /// ClickHouse only when `ch` is given.
    pub fn assemble(
        mut config: CollectorConfig,
        pipeline: Pipeline,
        factory: SinkFactory,
        ch: Option<ClickHouseConfig>,
        registry: Registry,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let metrics = Metrics::new(&registry)
            .map_err(|e| Error::Config(format!("registering metrics: {e}")))?;
        pipeline::geo::AgeMetrics::new(pipeline.geo())
            .and_then(|m| registry.register(Box::new(m)))
            .map_err(|e| Error::Config(format!("registering GeoIP metrics: {e}")))?;
        let queue = BatchQueue::start(
            &config.batch,
            &config.spool.dir,
            config.spool.engine_config(),
            factory,
            metrics.clone(),
        )?;
        let rate =
            ratelimit::RateLimits::new(config.limits.rate_limit_ip, config.limits.rate_limit_site);
        let ip_headers = config.trusted_ip_header_names()?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                ip_headers,
                pipeline,
                queue,
                metrics,
                registry,
                clickhouse: ch,
                accepting: AtomicBool::new(true),
                clock,
                rate,
                filtered: Arc::default(),
                stop: tokio::sync::watch::channel(false).0,
            }),
        })
    }

    /// Answers a request if its path is one of the collector's.
    pub async fn handle(&self, req: Request<Bytes>) -> Option<HttpResponse> {
        routes::route(self, req).await
    }

    /// Validates, enriches and anonymises one event (no I/O): the row to store, or the reason
    /// it is not stored (counted). Store the rows of a request with [`Self::store`].
    pub fn prepare(
        &self,
        ev: Incoming,
        endpoint: &str,
        now: DateTime<Utc>,
    ) -> Result<Ingested, Error> {
        let m = &self.inner.metrics;
        m.events_received.with_label_values(&[endpoint]).inc();
        if !self.inner.accepting.load(Ordering::Relaxed) {
            m.dropped(DropReason::ShuttingDown, 1);
            return Err(Error::ShuttingDown);
        }
        // The sender's domain, kept to count a drop against its site (bots, opt-outs).
        let domain = ev.domain.clone();
        match self.inner.pipeline.process(ev, now) {
            Err(e) => {
                m.dropped(
                    if matches!(e, Error::NoSalt) {
                        DropReason::NoSalt
                    } else {
                        DropReason::Invalid
                    },
                    1,
                );
                Err(e)
            }
            Ok(Outcome::Drop(reason)) => {
                m.dropped(reason, 1);
                if filtered::per_site(reason) {
                    if let Some((site, _)) = self.inner.pipeline.sites().resolve(&domain) {
                        self.inner.filtered.add(&site, reason, now);
                    }
                }
                Ok(Ingested::Dropped(reason))
            }
            Ok(Outcome::Store(row)) => {
                if !self.inner.rate.allow_site(&row.site, 1) {
                    m.dropped(DropReason::RateLimited, 1);
                    self.inner
                        .filtered
                        .add(&row.site, DropReason::RateLimited, now);
                    return Err(Error::RateLimited("site"));
                }
                Ok(Ingested::Row(row))
            }
        }
    }

    /// [`Self::prepare`] and [`Self::store`] for a request carrying one event: Ok also when
    /// the event is dropped by policy (counted).
    pub async fn ingest_one(&self, ev: Incoming, endpoint: &str) -> Result<(), Error> {
        match self.prepare(ev, endpoint, self.now())? {
            Ingested::Row(row) => self.store(&[*row], endpoint).await,
            Ingested::Dropped(_) => Ok(()),
        }
    }

    /// Appends the rows of one request to the spool, all or none; returns once they are on disk.
    pub async fn store(&self, rows: &[EventRow], endpoint: &str) -> Result<(), Error> {
        match self.inner.queue.append(rows).await {
            Ok(()) => {
                self.inner
                    .metrics
                    .events_accepted
                    .with_label_values(&[endpoint])
                    .inc_by(rows.len() as u64);
                Ok(())
            }
            Err(e) => {
                if matches!(e, Error::ShuttingDown) {
                    self.inner
                        .metrics
                        .dropped(DropReason::ShuttingDown, rows.len() as u64);
                }
                Err(e)
            }
        }
    }

    /// Whether a request from `ip` is within the per-IP rate limit.
    pub fn allow_ip(&self, ip: Option<std::net::IpAddr>) -> bool {
        self.inner.rate.allow_ip(ip)
    }

    /// Counts `n` events that were received but invalid before reaching [`Self::prepare`].
    pub fn count_invalid(&self, endpoint: &str, n: u64) {
        self.inner
            .metrics
            .events_received
            .with_label_values(&[endpoint])
            .inc_by(n);
        self.inner.metrics.dropped(DropReason::Invalid, n);
    }

    /// An error answer for a request refused as a whole, counted by reason.
    pub fn reject(&self, e: &Error) -> HttpResponse {
        self.inner
            .metrics
            .requests_rejected
            .with_label_values(&[e.reason()])
            .inc();
        server::error_response(e)
    }

    /// Like [`Self::reject`], also counting the `n` events the request carried as dropped.
    pub fn reject_events(&self, e: &Error, endpoint: &str, n: u64) -> HttpResponse {
        let m = &self.inner.metrics;
        m.events_received.with_label_values(&[endpoint]).inc_by(n);
        let reason = match e {
            Error::SpoolFull => DropReason::SpoolFull,
            Error::ShuttingDown => DropReason::ShuttingDown,
            _ => DropReason::Invalid,
        };
        m.dropped(reason, n);
        self.reject(e)
    }

    /// Whether the collector accepts events, and whether ClickHouse keeps up.
    pub async fn readiness(&self) -> Readiness {
        if !self.inner.accepting.load(Ordering::Relaxed) {
            return Readiness::NotReady("shutting down".into());
        }
        if let Some(ch) = &self.inner.clickhouse {
            if let Err(e) = ch.ping(Duration::from_secs(2)).await {
                return Readiness::Degraded(format!(
                    "ClickHouse unreachable ({e}); events are spooled on disk"
                ));
            }
        }
        if !self.inner.queue.sink_healthy() {
            return Readiness::Degraded(
                "ClickHouse inserts are failing; events are spooled on disk".into(),
            );
        }
        Readiness::Ready
    }

    /// Per-site counts of events not stored, not yet written to ClickHouse.
    pub fn filtered(&self) -> &Arc<filtered::FilteredCounts> {
        &self.inner.filtered
    }

    /// Stops accepting events: new ones get 503, `/readyz` turns 503.
    pub fn begin_shutdown(&self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
    }

    /// Flushes what is queued and stops the writers (blocking, bounded by the shutdown timeout).
    /// Returns false if a writer did not finish in time.
    pub fn finish(&self) -> bool {
        self.begin_shutdown();
        self.inner.stop.send_replace(true);
        let ok = self
            .inner
            .queue
            .close(Instant::now() + self.inner.config.shutdown_timeout);
        if !ok {
            tracing::error!(
                queued = self.inner.queue.depth(),
                "writers did not finish before the shutdown deadline"
            );
        }
        ok
    }

    /// The server options matching this collector's limits.
    pub fn server_options(&self) -> ServerOptions {
        let l = &self.inner.config.limits;
        ServerOptions {
            max_body_bytes: l.max_body_bytes,
            header_read_timeout: l.header_read_timeout,
            body_read_timeout: l.body_read_timeout,
            shutdown_timeout: self.inner.config.shutdown_timeout,
            max_connections: l.max_connections,
            max_requests_per_connection: l.max_requests_per_connection,
            accept_errors: Some(self.inner.metrics.accept_errors.clone()),
            rejected: Some(self.inner.metrics.requests_rejected.clone()),
        }
    }

    /// The metrics listener's app (`/metrics` behind `--metrics-token` when set, `/healthz`,
    /// `/readyz`).
    pub fn metrics_app(&self) -> Arc<dyn App> {
        Arc::new(routes::health::MetricsApp::new(
            self.clone(),
            self.inner.config.metrics.token.as_deref(),
        ))
    }

    /// The server options of the metrics listener: the collector's timeouts, few connections
    /// and small bodies (a scraper sends none).
    pub fn metrics_server_options(&self) -> ServerOptions {
        ServerOptions {
            max_body_bytes: 1024,
            max_connections: 64,
            ..self.server_options()
        }
    }

    /// The clock's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }
    /// Configured client-IP headers.
    pub fn trusted_ip_headers(&self) -> &[http::HeaderName] {
        &self.inner.ip_headers
    }
    /// Networks whose peers may set the client-IP headers.
    pub fn trusted_proxies(&self) -> &[ipnet::IpNet] {
        &self.inner.config.trusted_proxies
    }
    /// Networks that may send `/v1/events` overrides without an ingest key.
    pub fn trusted_senders(&self) -> &[ipnet::IpNet] {
        &self.inner.config.trusted_senders
    }
    /// Limits in force.
    pub fn limits(&self) -> &config::Limits {
        &self.inner.config.limits
    }
    /// The site registry.
    pub fn sites(&self) -> &Arc<sites::SiteRegistry> {
        self.inner.pipeline.sites()
    }
    /// Events accepted (spooled) and not yet in ClickHouse.
    pub fn queue_depth(&self) -> u64 {
        self.inner.queue.depth()
    }
    /// (hits, misses) of the user-agent cache so far.
    pub fn ua_cache_stats(&self) -> (u64, u64) {
        self.inner.pipeline.ua().cache_stats()
    }

    /// What GeoIP data is loaded (or why none is), one line for humans.
    pub fn geo_status(&self) -> String {
        self.inner.pipeline.geo().status()
    }

    /// Refreshes the spool gauges (before `/metrics` renders).
    pub fn observe(&self) {
        self.inner.queue.observe();
        let (hits, misses) = self.inner.pipeline.ua().cache_stats();
        let m = &self.inner.metrics;
        m.ua_cache_hits
            .inc_by(hits.saturating_sub(m.ua_cache_hits.get()));
        m.ua_cache_misses
            .inc_by(misses.saturating_sub(m.ua_cache_misses.get()));
    }
    /// The collector's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    /// The registry the metrics live on (`/metrics` renders it).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }
}

/// 404 for anything no app answered.
pub fn not_found(req: &Request<Bytes>) -> HttpResponse {
    server::error_response(&Error::NotFound(format!(
        "{} {}",
        req.method(),
        req.uri().path()
    )))
}

impl App for Collector {
    fn call(self: Arc<Self>, req: Request<Bytes>) -> ResponseFuture {
        Box::pin(async move {
            if !routes::is_collector_path(req.uri().path()) {
                return not_found(&req);
            }
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            self.handle(req).await.unwrap_or_else(|| {
                server::error_response(&Error::NotFound(format!("{method} {path}")))
            })
        })
    }
}

/// Binds the metrics listener at `settings.listen` (`None` when it is off). Call it after
/// [`CollectorConfig::validate`], which refuses a non-loopback address without a token.
pub async fn bind_metrics(
    settings: &config::MetricsSettings,
) -> Result<Option<TcpListener>, Error> {
    let Some(addr) = settings.listen else {
        return Ok(None);
    };
    settings.check_address(addr)?;
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|e| Error::Config(format!("binding --metrics-listen {addr}: {e}")))
}

/// Serves `app` on `listener` and, when given, `collector`'s metrics app on `metrics`, until
/// `shutdown` resolves: then the collector stops accepting events, the main listener drains,
/// and only after it the metrics listener closes (its counters stay readable while draining).
/// Refuses (before serving) a metrics listener bound beyond loopback when no token is set.
pub async fn serve_with_metrics(
    collector: &Collector,
    listener: TcpListener,
    app: Arc<dyn App>,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    if let Some(m) = &metrics {
        collector
            .inner
            .config
            .metrics
            .check_address(m.local_addr()?)?;
    }
    let c2 = collector.clone();
    let shutdown = async move {
        shutdown.await;
        c2.begin_shutdown();
    };
    let (main_done, main_done_rx) = tokio::sync::oneshot::channel::<()>();
    let main = async {
        server::serve(listener, app, collector.server_options(), shutdown).await;
        let _ = main_done.send(());
    };
    let metrics = async {
        if let Some(m) = metrics {
            let stop = async {
                let _ = main_done_rx.await;
            };
            server::serve(
                m,
                collector.metrics_app(),
                collector.metrics_server_options(),
                stop,
            )
            .await;
        }
    };
    tokio::join!(main, metrics);
    Ok(())
}

/// Runs the collector alone on `listener`, with `/metrics` on `metrics` (the listener bound at
/// `config.metrics.listen`, see [`bind_metrics`]; `None`: no metrics listener), until
/// `shutdown` resolves, then stops accepting, drains connections, and flushes the last batch.
pub async fn run(
    config: CollectorConfig,
    ch: ClickHouseConfig,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    // The bound metrics address obeys the same rule as the configured one.
    if let Some(m) = &metrics {
        config.metrics.check_address(m.local_addr()?)?;
    }
    let collector = Collector::start(config, ch, Registry::new()).await?;
    let app: Arc<dyn App> = Arc::new(collector.clone());
    serve_with_metrics(&collector, listener, app, metrics, shutdown).await?;
    let flushed = tokio::task::spawn_blocking(move || collector.finish())
        .await
        .map_err(|e| Error::Sink(format!("writer shutdown task failed: {e}")))?;
    if flushed {
        Ok(())
    } else {
        Err(Error::Sink(
            "shutdown deadline passed before the last batch was written".into(),
        ))
    }
}
