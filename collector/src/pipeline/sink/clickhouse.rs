//! The ClickHouse sink: one `INSERT INTO events FORMAT RowBinary` per batch over HTTP (LZ4
//! compressed), with the `clickhouse` crate. Each writer thread owns one sink and a small
//! single-threaded tokio runtime to drive the client, so inserts never block the server's runtime.

use std::time::Duration;

use veil_schemas::ClickHouseConfig;

use super::Sink;
use crate::pipeline::EventRow;
use crate::Error;

/// Table the collector writes to.
pub const EVENTS_TABLE: &str = "events";

/// Inserts batches into `events`.
pub struct ClickHouseSink {
    rt: tokio::runtime::Runtime,
    client: clickhouse::Client,
    timeout: Duration,
}

impl ClickHouseSink {
    /// A sink for the given database.
    pub fn new(cfg: &ClickHouseConfig) -> Result<Self, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            rt,
            client: cfg.client(),
            timeout: Duration::from_secs(60),
        })
    }

    async fn insert(
        client: &clickhouse::Client,
        rows: &[EventRow],
    ) -> Result<(), clickhouse::error::Error> {
        let mut insert = client.insert::<EventRow>(EVENTS_TABLE).await?;
        for r in rows {
            insert.write(r).await?;
        }
        insert.end().await
    }
}

impl Sink for ClickHouseSink {
    fn write(&mut self, rows: &[EventRow]) -> Result<(), Error> {
        let fut = Self::insert(&self.client, rows);
        let timeout = self.timeout;
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, fut).await })
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Sink(e.to_string())),
            Err(_) => Err(Error::Sink(format!(
                "insert did not finish within {timeout:?}"
            ))),
        }
    }
}
