//! Migrations against a real ClickHouse: applied once, recorded, idempotent, checksum-guarded.

use veil_schemas::sql::{Run as _, Sql};
use veil_schemas::testing::fresh_database;
use veil_schemas::{migrate, MIGRATIONS};

#[tokio::test]
async fn migrations_apply_once_and_are_recorded() {
    let cfg = fresh_database("migrate_once").await;
    let client = cfg.client();
    let recorded: Vec<u32> = client
        .sql(&Sql::new(
            "SELECT version FROM schema_migrations ORDER BY version",
        ))
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
        .sql(&Sql::new("SELECT count() FROM schema_migrations"))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n as usize, MIGRATIONS.len());
    // The events table exists with the columns the collector writes.
    let cols: Vec<String> = client
        .sql(&Sql::new("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'events'"))
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
        .sql(&Sql::new(
            "ALTER TABLE schema_migrations UPDATE checksum = 'edited' WHERE version = 1",
        ))
        .execute()
        .await
        .unwrap();
    // Mutations are asynchronous on 18.16: wait until the edit is visible.
    for _ in 0..100 {
        let c: String = cfg
            .client()
            .sql(&Sql::new(
                "SELECT any(checksum) FROM schema_migrations WHERE version = 1",
            ))
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
        .sql(&Sql::new(
            "ALTER TABLE schema_migrations DELETE WHERE version = 3",
        ))
        .execute()
        .await
        .unwrap();
    for _ in 0..100 {
        let n: u64 = cfg
            .client()
            .sql(&Sql::new(
                "SELECT count() FROM schema_migrations WHERE version = 3",
            ))
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
        .sql(&Sql::new("SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'events' AND name = 'engagement_ms'"))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(cols, 1);
}

/// Cluster mode on a server whose cluster has no distributed DDL queue: a clear error naming
/// what to configure, and nothing created.
#[test]
fn cluster_mode_without_a_ddl_queue_says_what_to_configure() {
    use veil_schemas::managed::{ManagedClickHouse, ManagedOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut o = ManagedOptions::new(dir.path());
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    o.tcp_port = Some(tcp);
    o.extra_files = vec![(
        "config.d/cluster.xml".into(),
        format!(
            "<yandex><remote_servers><solo><shard><replica><host>127.0.0.1</host>\
             <port>{tcp}</port></replica></shard></solo></remote_servers></yandex>"
        ),
    )];
    let server = ManagedClickHouse::start(&o).unwrap();
    let mut cfg = server.config("veil_noddl");
    cfg.cluster = Some("solo".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(migrate(&cfg)).unwrap_err().to_string();
    assert!(
        err.contains("distributed_ddl") && err.contains("--clickhouse-cluster solo"),
        "{err}"
    );
    let dbs: Vec<String> = rt
        .block_on(
            cfg.server_client()
                .sql(&Sql::new("SELECT name FROM system.databases"))
                .fetch_all(),
        )
        .unwrap();
    assert!(!dbs.contains(&"veil_noddl".to_string()), "{dbs:?}");
}

/// Settings newer than 18.16 are asked of the server before they are sent: the one that makes
/// a retried insert feed the materialized views is there on current servers and not on 18.16.
#[tokio::test]
async fn newer_settings_are_found_where_the_server_has_them() {
    use veil_schemas::sql::{has_setting, ServerVersion, MV_DEDUP_SETTING};
    let ch = veil_schemas::testing::fresh_database("has_setting").await;
    let client = ch.client();
    assert!(has_setting(&client, "max_execution_time").await.unwrap());
    assert!(!has_setting(&client, "no_such_setting_anywhere")
        .await
        .unwrap());
    let legacy = ServerVersion::of(&client).await.unwrap().is_legacy();
    assert_eq!(
        has_setting(&client, MV_DEDUP_SETTING).await.unwrap(),
        !legacy
    );
}
