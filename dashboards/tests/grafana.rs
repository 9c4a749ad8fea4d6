//! The Grafana dashboard only charts metrics the collector really exports: every `veil_*` name
//! in its queries must appear in a live collector's `/metrics` output, scraped as Prometheus
//! does, from the collector's metrics listener with its bearer token.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use veil_collector::config::CollectorConfig;
use veil_collector::pipeline::sink::{RowBatch, Sink};
use veil_collector::pipeline::Pipeline;
use veil_collector::{Collector, Error, SystemClock};

struct Discard;
impl Sink for Discard {
    fn write(&mut self, _: &RowBatch) -> Result<(), Error> {
        Ok(())
    }
}

/// `GET /metrics` with the token from `c`'s metrics listener, served on a free loopback port.
async fn scrape(c: &Collector, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(veil_collector::server::serve(
        listener,
        c.metrics_app(),
        c.metrics_server_options(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_string(&mut out),
    )
    .await
    .unwrap()
    .unwrap();
    let _ = stop.send(());
    server.await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[tokio::test]
async fn every_panel_queries_an_exported_metric() {
    let dash: serde_json::Value = serde_json::from_str(veil_dashboards::GRAFANA_DASHBOARD).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CollectorConfig {
        sites: vec!["example.com".into()],
        ..Default::default()
    };
    cfg.spool.dir = dir.path().to_path_buf();
    let token = "grafana-0123456789abcdef";
    cfg.metrics.token = Some(token.into());
    let pipeline = Pipeline::with_key(Arc::new(cfg.registry()), cfg.limits.clone(), [1; 32]);
    let registry = prometheus::Registry::new();
    let c = Collector::assemble(
        cfg,
        pipeline,
        Box::new(|| Ok(Box::new(Discard) as Box<dyn Sink>)),
        None,
        registry,
        Arc::new(SystemClock),
    )
    .unwrap();
    c.observe();
    // Histograms and counters appear once observed; make sure each kind has a sample.
    c.metrics().batch_flush.observe(0.01);
    c.metrics().batch_size.observe(10.0);
    c.metrics()
        .events_received
        .with_label_values(&["plausible"])
        .inc();
    c.metrics()
        .events_accepted
        .with_label_values(&["plausible"])
        .inc();
    c.metrics()
        .http_requests
        .with_label_values(&["plausible", "202"])
        .inc();
    c.metrics()
        .requests_rejected
        .with_label_values(&["bad_request"])
        .inc();
    let exported = scrape(&c, token).await;
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut checked = 0;
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')) {
                if word.starts_with("veil_") || word.starts_with("process_") {
                    assert!(
                        exported.lines().any(|l| l.starts_with(word)),
                        "panel {:?} uses {word}, which /metrics does not export",
                        p["title"]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 15, "only {checked} metric references checked");
    tokio::task::spawn_blocking(move || c.finish())
        .await
        .unwrap();
}
