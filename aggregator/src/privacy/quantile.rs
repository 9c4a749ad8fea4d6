//! Performance percentiles under differential privacy: a noisy histogram, read at p50 and p95.
//!
//! An app's launch times and screen latencies are numbers a hit carries (the `launch_ms` and
//! `latency_ms` properties, [`Sample`]). Exact mode answers their percentiles with ClickHouse's
//! `quantile`; a percentile of raw samples has no bounded sensitivity (one visitor's extreme
//! launches can move it anywhere), so differential privacy publishes a **histogram** instead
//! and reads the percentiles off it, which is post-processing and costs nothing more:
//!
//! - **Buckets** ([`bucket_sql`], [`middle`]): bucket 0 is `[0, 10)` ms; bucket `b` in
//!   `1..TOP` is `[10·1.25^(b−1), 10·1.25^b)` ms; bucket [`TOP`] holds everything from
//!   10·1.25^(TOP−1) ms (≈ 2 minutes) up. A percentile is answered as its bucket's geometric
//!   middle (the lower edge for the top bucket, 5 ms for bucket 0): within ±12 % of a value in
//!   the bucket, whatever the noise.
//! - **Bound**: per visitor id and report row at most [`super::Bounds::samples`] samples count
//!   (`groupArrayIf(n)` in [`crate::query::assemble::sample_sql`]), so one visitor-day moves a
//!   row's histogram by at most that much in L1 — over all its buckets together, not per
//!   bucket. Times the report rows it can fall in and the person-days of the range, that is the
//!   L1 sensitivity of the whole vector; one share of the release's ε (as one counted part)
//!   calibrates discrete Laplace noise for it with OpenDP (`make_laplace` over a vector with L1
//!   distance: [`super::calibrate`]), drawn per bucket from the release's keyed stream.
//! - **Reading** ([`quantiles`]): most buckets are empty, and their noise alone would add up to
//!   a tail that is not there (45 buckets of noise at scale 8 move a thousand samples' p95 from
//!   2.4 s to 4.6 s). So a noisy count under a floor is read as 0: the floor is the scale times
//!   ln(buckets) ([`floor`]), which an empty bucket's noise passes with probability 1/(2 ×
//!   buckets), about half a bucket per histogram. The kept counts are summed in bucket order,
//!   and a percentile `q` is the first bucket where the sum reaches `q` × their total. A row
//!   with no bucket over the floor (too few samples for its noise) gets `null`. The cost is
//!   a bias: a real bucket with fewer samples than the floor is dropped too, so the answers
//!   are of the histogram's well-populated part (documented in docs/PRIVACY.md). All of this
//!   reads only the noisy counts: post-processing, no further ε.
//!
//! Wire format: the SQL answers `d…` (the report's dimensions), `b` (bucket, UInt8) and `n`
//! (samples, clamped per visitor) per non-empty bucket of each row.

use veil_schemas::sql;
use veil_schemas::sql::Sql;

use crate::query::Metric;

/// The top bucket: everything from `LOW_MS · RATIO^(TOP−1)` ms up.
pub const TOP: u8 = 44;
/// The upper edge of bucket 0, in ms.
pub const LOW_MS: f64 = 10.0;
/// The ratio of one bucket's edges.
pub const RATIO: f64 = 1.25;

/// A number hits carry whose percentiles a report may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sample {
    /// An app launch's duration (`launch_ms`).
    LaunchMs,
    /// A screen's or request's latency (`latency_ms`).
    LatencyMs,
}

impl Sample {
    /// The custom property carrying the number.
    pub fn prop(self) -> &'static str {
        match self {
            Sample::LaunchMs => "launch_ms",
            Sample::LatencyMs => "latency_ms",
        }
    }

    /// The sample and quantile a percentile metric reads (None: not a percentile).
    pub fn of(m: Metric) -> Option<(Sample, f64)> {
        match m {
            Metric::LaunchTimeP50 => Some((Sample::LaunchMs, 0.5)),
            Metric::LaunchTimeP95 => Some((Sample::LaunchMs, 0.95)),
            Metric::LatencyP50 => Some((Sample::LatencyMs, 0.5)),
            Metric::LatencyP95 => Some((Sample::LatencyMs, 0.95)),
            _ => None,
        }
    }
}

/// The bucket of the number `v` (ms, Float64) as a UInt8 (module docs). Finite for every
/// input: the logarithm is taken of at least 1.
pub fn bucket_sql(v: &Sql) -> Sql {
    sql!(
        "toUInt8(if({0} < {1}, 0, least({2}, 1 + floor(log(greatest({0}, {1}) / {1}) / {3}))))",
        v.clone(),
        LOW_MS,
        TOP,
        RATIO.ln()
    )
}

/// The value a percentile in bucket `b` is answered with, in ms (module docs).
pub fn middle(b: u8) -> f64 {
    match b {
        0 => LOW_MS / 2.0,
        b if b >= TOP => LOW_MS * RATIO.powi(i32::from(TOP) - 1),
        b => LOW_MS * RATIO.powf(f64::from(b) - 0.5),
    }
    .round()
}

/// The noisy count under which a bucket is read as empty, for noise of `scale` (module docs).
pub fn floor(scale: f64) -> f64 {
    scale * f64::from(TOP + 1).ln()
}

/// The `q`-quantiles (each in `0..=1`) of a noisy histogram (`noisy[b]`: bucket `b`'s noisy
/// count, `TOP + 1` of them) whose counts under `floor` are read as 0, as [`middle`]s; `None`
/// each when no count reaches the floor (or none is positive).
pub fn quantiles(noisy: &[f64], qs: &[f64], floor: f64) -> Vec<Option<f64>> {
    let kept: Vec<f64> = noisy
        .iter()
        .map(|n| if *n >= floor && *n > 0.0 { *n } else { 0.0 })
        .collect();
    let total: f64 = kept.iter().sum();
    if total <= 0.0 {
        return vec![None; qs.len()];
    }
    let mut running = Vec::with_capacity(kept.len());
    let mut sum = 0.0;
    for n in &kept {
        sum += n;
        running.push(sum);
    }
    qs.iter()
        .map(|q| {
            let at = running
                .iter()
                .position(|c| *c >= q * total)
                .unwrap_or(noisy.len() - 1);
            Some(middle(u8::try_from(at).unwrap_or(TOP)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket of `v` as [`bucket_sql`] computes it, in Rust.
    fn bucket(v: f64) -> u8 {
        if v < LOW_MS {
            0
        } else {
            (1.0 + ((v.max(LOW_MS) / LOW_MS).ln() / RATIO.ln()).floor()).min(f64::from(TOP)) as u8
        }
    }

    #[test]
    fn a_percentile_is_answered_within_its_bucket() {
        for v in [12.0, 95.0, 480.0, 1234.0, 9_999.0, 60_000.0] {
            let m = middle(bucket(v));
            assert!(
                (m / v - 1.0).abs() <= 0.125,
                "{v} ms answered as {m} ms (bucket {})",
                bucket(v)
            );
        }
        assert_eq!(middle(0), 5.0);
        assert_eq!(bucket(5.0), 0);
        assert_eq!(bucket(1e9), TOP);
        assert!(middle(TOP) > 100_000.0, "{}", middle(TOP));
    }

    #[test]
    fn quantiles_of_a_histogram() {
        let mut h = vec![0.0; usize::from(TOP) + 1];
        // 90 samples at ~500 ms, 10 at ~5 s.
        h[usize::from(bucket(500.0))] = 90.0;
        h[usize::from(bucket(5000.0))] = 10.0;
        let got = quantiles(&h, &[0.5, 0.95], 0.0);
        assert_eq!(
            got,
            vec![Some(middle(bucket(500.0))), Some(middle(bucket(5000.0)))]
        );
        // Noise in empty buckets under the floor is read as nothing: the answers stay put.
        for (b, n) in [
            (1, -30.0),
            (2, 9.0),
            (40, 9.0),
            (41, 9.0),
            (42, -4.0),
            (43, 9.0),
        ] {
            h[b] = n;
        }
        assert_eq!(quantiles(&h, &[0.5, 0.95], 10.0), got);
        // Read without the floor, the noise of four empty buckets is a tail that is not there.
        assert_ne!(quantiles(&h, &[0.95], 0.0)[0], got[1]);
        // Nothing over the floor: withheld.
        assert_eq!(quantiles(&h, &[0.5], 100.0), vec![None]);
        assert_eq!(quantiles(&vec![-1.0; 45], &[0.5], 0.0), vec![None]);
        assert_eq!(quantiles(&[], &[0.5], 0.0), vec![None]);
    }
}
