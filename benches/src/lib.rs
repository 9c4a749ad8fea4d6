//! Veil's benchmarks: the pieces shared by the criterion micro-benchmarks
//! (`benches/pipeline.rs`) and the `veil-load` harness (`src/main.rs`).
//!
//! - [`traffic`]: a realistic, reproducible mix of visitors (browser and bot user agents,
//!   documentation-range IPs, pages, referrers, custom events) and the request bodies built from
//!   it for `POST /api/event` and `POST /v1/events`;
//! - [`bare`]: a hyper server that reads each body and answers 202, the ceiling the collector is
//!   compared with;
//! - [`loadgen`]: the keep-alive HTTP/1.1 load generator (fixed persistent connections, loopback
//!   only, bounded by time and request count; closed loop, or open loop at a fixed rate) and its
//!   latency statistics;
//! - [`rss`]: the collectors' resident memory, sampled from `/proc/PID/status`;
//! - [`chclient`]: the `/v1/events` denominator, `clickhouse-client` inserting the same rows.
//!
//! See `benches/README.md` for how to run them and the numbers measured.

pub mod bare;
pub mod chclient;
pub mod cpu;
pub mod loadgen;
pub mod rss;
pub mod traffic;
