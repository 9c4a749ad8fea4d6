//! The one ingest skeleton every multi-event wire format shares: **decode** (the route turns its
//! body into events, each already checked as far as the wire format goes) → **prepare** each
//! through the pipeline ([`Collector::prepare`]) → **store** the rows of the request as one
//! all-or-nothing spool append ([`Collector::store`]) → **answer** (the route shapes the
//! [`Tally`] into its own wire answer).
//!
//! What differs between formats is only what an invalid event does ([`OnInvalid`]): refuse the
//! whole request at once (Plausible, Aptabase), or be listed and skipped (Veil's batch API).
//! Single-event routes (Umami, the pixel) use [`Collector::ingest_one`], the same prepare and
//! store for one event.

use chrono::{DateTime, Utc};

use crate::pipeline::Incoming;
use crate::server::HttpResponse;
use crate::{Collector, Error, Ingested};

/// What an invalid event does to its request.
pub enum OnInvalid<'a> {
    /// Refuse the request at the first invalid event, with the error this gives for
    /// (index, error); the events after it are not looked at.
    Refuse(&'a (dyn Fn(usize, Error) -> Error + Sync)),
    /// List it in [`Tally::rejected`] and go on.
    Report,
}

/// What became of a request's events.
#[derive(Debug, Default)]
pub struct Tally {
    /// Events stored (on disk when the tally is returned).
    pub accepted: usize,
    /// Valid events not stored by policy (unknown site, bot, consent).
    pub ignored: u64,
    /// Invalid events, by index, when invalid events are reported.
    pub rejected: Vec<(usize, Error)>,
}

/// Prepares (at `now`) and stores the events of one request. `events` yields each decoded event, or the
/// reason it could not be decoded (counted as received and invalid here); it is read lazily, so
/// with [`OnInvalid::Refuse`] nothing after the first invalid event is decoded. `Err` is the
/// answer for a refused request (an invalid event, or a store that failed: nothing stored).
pub async fn ingest(
    c: &Collector,
    endpoint: &'static str,
    now: DateTime<Utc>,
    events: impl IntoIterator<Item = Result<Incoming, Error>>,
    on_invalid: OnInvalid<'_>,
) -> Result<Tally, HttpResponse> {
    let events = events.into_iter();
    let mut rows = Vec::with_capacity(events.size_hint().0);
    let mut tally = Tally::default();
    for (index, decoded) in events.enumerate() {
        let prepared = match decoded {
            Ok(ev) => c.prepare(ev, endpoint, now),
            Err(e) => {
                c.count_invalid(endpoint, 1);
                Err(e)
            }
        };
        match prepared {
            Ok(Ingested::Row(row)) => rows.push(*row),
            Ok(Ingested::Dropped(_)) => tally.ignored += 1,
            Err(e) => match on_invalid {
                OnInvalid::Refuse(refusal) => return Err(c.reject(&refusal(index, e))),
                OnInvalid::Report => tally.rejected.push((index, e)),
            },
        }
    }
    // 2xx only once the rows are on disk: one append, all or none (503 with Retry-After when
    // the spool is full).
    if let Err(e) = c.store(&rows, endpoint).await {
        return Err(c.reject(&e));
    }
    tally.accepted = rows.len();
    Ok(tally)
}
