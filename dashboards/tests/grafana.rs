//! The Grafana dashboard only charts metrics the collector really exports: every `veil_*` name
//! in its queries must appear in a live collector's `/metrics` output.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use veil_collector::config::CollectorConfig;
use veil_collector::pipeline::sink::Sink;
use veil_collector::pipeline::{EventRow, Pipeline};
use veil_collector::{Collector, Error, SystemClock};

struct Discard;
impl Sink for Discard {
    fn write(&mut self, _: &[EventRow]) -> Result<(), Error> {
        Ok(())
    }
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
    let exported = veil_collector::metrics::render(c.registry());
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
