//! Migrations against a real ClickHouse: applied once, recorded, idempotent, checksum-guarded.

use veil_schemas::testing::fresh_database;
use veil_schemas::{migrate, MIGRATIONS};

#[tokio::test]
async fn migrations_apply_once_and_are_recorded() {
    let cfg = fresh_database("migrate_once").await;
    let client = cfg.client();
    let recorded: Vec<u32> = client
        .query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        recorded,
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    // Second run: nothing to do, nothing recorded twice.
    assert!(migrate(&cfg).await.unwrap().is_empty());
    let n: u64 = client
        .query("SELECT count() FROM schema_migrations")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n as usize, MIGRATIONS.len());
    // The events table exists with the columns the collector writes.
    let cols: Vec<String> = client
        .query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'events'")
        .fetch_all()
        .await
        .unwrap();
    for c in [
        "site",
        "timestamp",
        "visitor_id",
        "session_id",
        "pathname",
        "browser",
        "country_code",
    ] {
        assert!(
            cols.iter().any(|x| x == c),
            "events lacks column {c}: {cols:?}"
        );
    }
    for forbidden in ["ip", "user_agent", "ua"] {
        assert!(
            !cols.iter().any(|x| x == forbidden),
            "events must not have a {forbidden} column"
        );
    }
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let cfg = fresh_database("migrate_checksum").await;
    cfg.client()
        .query("ALTER TABLE schema_migrations UPDATE checksum = 'edited' WHERE version = 1")
        .execute()
        .await
        .unwrap();
    // Mutations are asynchronous on 18.16: wait until the edit is visible.
    for _ in 0..100 {
        let c: String = cfg
            .client()
            .query("SELECT any(checksum) FROM schema_migrations WHERE version = 1")
            .fetch_one()
            .await
            .unwrap();
        if c == "edited" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let err = migrate(&cfg).await.unwrap_err().to_string();
    assert!(err.contains("append-only"), "{err}");
}

#[tokio::test]
async fn a_half_applied_migration_can_run_again() {
    let cfg = fresh_database("migrate_rerun").await;
    // Forget that 003 ran, as if the process died after its ALTERs but before recording it.
    cfg.client()
        .query("ALTER TABLE schema_migrations DELETE WHERE version = 3")
        .execute()
        .await
        .unwrap();
    for _ in 0..100 {
        let n: u64 = cfg
            .client()
            .query("SELECT count() FROM schema_migrations WHERE version = 3")
            .fetch_one()
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(migrate(&cfg).await.unwrap(), vec![3]);
    let cols: u64 = cfg
        .client()
        .query("SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'events' AND name = 'engagement_ms'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(cols, 1);
}
