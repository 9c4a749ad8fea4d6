//! Property-based fuzzing of every parser through the collector's real request handling (a fake
//! sink stands in for ClickHouse): Plausible events, native JSON arrays and NDJSON, user agents,
//! page and referrer URLs, props, and consent headers. Whatever the input, the answer is a 2xx
//! or a 4xx with a JSON error — never a panic, never a 5xx.
//!
//! The test command runs a few thousand cases per target; `PROPTEST_CASES=200000 cargo test
//! -p veil-collector --test fuzz --release` (or `make fuzz`) runs longer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::Request;
use proptest::prelude::*;
use veil_collector::config::CollectorConfig;
use veil_collector::pipeline::sink::{RowBatch, Sink};
use veil_collector::pipeline::Pipeline;
use veil_collector::{Collector, Error, SystemClock};

struct Discard;
impl Sink for Discard {
    fn write(&mut self, _rows: &RowBatch) -> Result<(), Error> {
        Ok(())
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn collector() -> &'static Collector {
    static C: OnceLock<(Collector, tempfile::TempDir)> = OnceLock::new();
    &C.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = CollectorConfig {
            sites: vec!["example.com".into()],
            ..Default::default()
        };
        cfg.spool.dir = dir.path().to_path_buf();
        cfg.spool.durability = veil_collector::pipeline::spool::Durability::None;
        cfg.limits.rate_limit_ip = 0;
        let pipeline = Pipeline::with_key(Arc::new(cfg.registry()), cfg.limits.clone(), [3; 32]);
        let _guard = runtime().enter();
        let c = Collector::assemble(
            cfg,
            pipeline,
            Box::new(|| Ok(Box::new(Discard) as Box<dyn Sink>)),
            None,
            prometheus::Registry::new(),
            Arc::new(SystemClock),
        )
        .unwrap();
        (c, dir)
    })
    .0
}

fn check(path: &str, headers: &[(&str, String)], body: Vec<u8>) -> Result<(), TestCaseError> {
    let mut b = Request::builder().method("POST").uri(path);
    for (k, v) in headers {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            b = b.header(*k, v);
        }
    }
    let req = b.body(Bytes::from(body)).unwrap();
    let resp = runtime().block_on(collector().handle(req)).unwrap();
    let status = resp.status().as_u16();
    prop_assert!(
        (200..300).contains(&status) || (400..500).contains(&status),
        "status {status}"
    );
    Ok(())
}

fn json_scalar() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    json_scalar().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::hash_map("[a-z_]{0,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("https://example.com/".to_string()),
        "(https?|app|ftp|javascript)://[a-zA-Z0-9.@:%-]{0,30}(/[a-zA-Z0-9._~%@!$&'()*+,;=-]{0,20}){0,4}(\\?[a-z_=&%0-9@.]{0,40})?(#.{0,10})?",
        ".{0,60}",
    ]
}

fn event() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::option::of(prop_oneof![Just("pageview".to_string()), ".{0,130}"]),
        prop::option::of(url()),
        prop::option::of(prop_oneof![
            Just("example.com".to_string()),
            Just("example.com,other.example".into()),
            ".{0,20}"
        ]),
        prop::option::of(url()),
        prop::option::of(json_value()),
        prop::option::of(json_scalar()),
    )
        .prop_map(|(n, u, d, r, p, h)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [
                ("n", n.map(Into::into)),
                ("u", u.map(Into::into)),
                ("d", d.map(Into::into)),
                ("r", r.map(Into::into)),
                ("p", p),
                ("h", h),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            serde_json::Value::Object(m)
        })
}

fn user_agent() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36".to_string()),
        "Mozilla/5\\.0 \\([ -~]{0,60}\\)[ -~]{0,60}",
        "[ -~]{0,200}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn plausible_endpoint_never_panics(ev in event(), ua in user_agent(), ip in "[0-9a-f.:, ]{0,40}", gpc in "[01]?") {
        check("/api/event", &[("user-agent", ua), ("x-forwarded-for", ip), ("sec-gpc", gpc)], ev.to_string().into_bytes())?;
    }

    #[test]
    fn plausible_endpoint_takes_any_bytes(body in prop::collection::vec(any::<u8>(), 0..400)) {
        check("/api/event", &[], body)?;
    }

    #[test]
    fn native_batches_never_panic(events in prop::collection::vec(json_value(), 0..8), ndjson in any::<bool>()) {
        let body = if ndjson {
            events.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
        } else {
            serde_json::Value::Array(events).to_string()
        };
        check("/v1/events", &[], body.into_bytes())?;
    }

    #[test]
    fn native_fields_never_panic(site in prop_oneof![Just("example.com".to_string()), ".{0,10}"], name in ".{0,20}", u in url(), ts in json_scalar(), ip in ".{0,40}", ua in user_agent(), props in json_value()) {
        let ev = serde_json::json!([{"site": site, "name": name, "url": u, "timestamp": ts, "ip": ip, "user_agent": ua, "props": props}]);
        check("/v1/events", &[], ev.to_string().into_bytes())?;
    }

    #[test]
    fn scrubber_and_url_parsers_never_panic(s in ".{0,200}") {
        let _ = veil_collector::pipeline::privacy::scrub::scrub(&s);
        let _ = veil_collector::pipeline::parse::page(&s, true);
        let _ = veil_collector::pipeline::parse::referrer(Some(&s), "example.com");
        let _ = veil_collector::pipeline::enrich::UaParser::new().parse(&s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Spool recovery on arbitrary segment and cursor bytes: opening never fails or panics
    /// because of file contents, and the spool accepts appends afterwards.
    #[test]
    fn spool_recovery_survives_any_bytes(valid_header in any::<bool>(), seg in prop::collection::vec(any::<u8>(), 0..2000), cursor in prop::option::of(prop::collection::vec(any::<u8>(), 0..120))) {
        use veil_collector::pipeline::spool::{Records, Spool, SpoolConfig};
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        if valid_header {
            bytes.extend_from_slice(b"VEILSPOL");
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes.extend_from_slice(&0u32.to_le_bytes());
        }
        bytes.extend_from_slice(&seg);
        std::fs::write(dir.path().join("00000000000000000001.seg"), &bytes).unwrap();
        if let Some(c) = cursor {
            std::fs::write(dir.path().join("cursor"), c).unwrap();
        }
        let spool = Spool::open(dir.path(), SpoolConfig::default());
        prop_assert!(spool.is_ok(), "{:?}", spool.err());
        let spool = spool.unwrap();
        prop_assert!(spool.append_blocking(Records::one(b"after recovery")).is_ok());
        spool.close().unwrap();
    }
}
