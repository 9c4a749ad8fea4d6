//! Durable spool (write-ahead log) between the handlers and the ClickHouse writer. Being written.
