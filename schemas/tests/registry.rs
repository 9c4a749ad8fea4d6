//! The registry store against a real ClickHouse: two processes' registries on one database
//! see each other's writes after a refresh; hostile strings are stored verbatim; the newest
//! version wins without any merge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use veil_schemas::registry::{secret_hash, Registry, SiteSettings};
use veil_schemas::sql::{Run as _, Sql};
use veil_schemas::testing::fresh_database;

#[tokio::test]
async fn two_registries_share_sites_keys_and_links() {
    let ch = fresh_database("registry_share").await;
    let a = Registry::new(&ch);
    let b = Registry::new(&ch);
    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    assert!(b.snapshot().loaded);
    assert!(b.snapshot().site("shop.example").is_none());

    let hostile = "x'); DROP TABLE sites; --\\";
    let settings = SiteSettings {
        aliases: vec![hostile.to_string(), "A-EU-1234".into()],
        timezone: "Europe/Berlin".into(),
        retention_days: Some(30),
        ..Default::default()
    };
    a.put_site("shop.example", settings.clone()).await.unwrap();
    // The writer sees its write at once; the other process after a refresh.
    assert_eq!(
        a.snapshot().site("shop.example").unwrap().settings,
        settings
    );
    assert!(b.snapshot().site("shop.example").is_none());
    b.refresh().await.unwrap();
    let snap = b.snapshot();
    assert_eq!(snap.site("shop.example").unwrap().settings, settings);
    assert_eq!(snap.alias(hostile), Some("shop.example"));
    assert_eq!(snap.alias("A-EU-1234"), Some("shop.example"));

    // Keys: only the hash is stored; the name comes back verbatim.
    let (rec, key) = b.create_key("shop.example", hostile).await.unwrap();
    assert!(key.starts_with("vk_") && key.len() == 67);
    a.refresh().await.unwrap();
    let seen = a.snapshot();
    let k = seen.key_by_hash(&secret_hash(&key)).unwrap();
    assert_eq!(k.id, rec.id);
    assert_eq!(k.name, hostile);
    assert!(!k.revoked);
    let raw: Vec<String> = ch
        .client()
        .sql(&Sql::new(
            "SELECT concat(id, key_hash, site, name) FROM site_keys",
        ))
        .fetch_all()
        .await
        .unwrap();
    assert!(!raw.is_empty());
    assert!(
        raw.iter().all(|r| !r.contains(&key[3..])),
        "the key itself is never stored"
    );

    // Revocation and update from A; B sees the newest version of each.
    assert!(a.revoke_key(&rec.id).await.unwrap());
    let newer = SiteSettings {
        timezone: "Asia/Tokyo".into(),
        ..settings.clone()
    };
    a.put_site("shop.example", newer.clone()).await.unwrap();
    let (link, token) = a
        .create_link("shop.example", "board", String::new(), 0, Vec::new())
        .await
        .unwrap();
    b.refresh().await.unwrap();
    let s = b.snapshot();
    assert!(s.key(&rec.id).unwrap().revoked);
    assert_eq!(
        s.site("shop.example").unwrap().settings.timezone,
        "Asia/Tokyo"
    );
    assert_eq!(s.link_by_hash(&secret_hash(&token)).unwrap().id, link.id);

    // Delete: the site goes, its keys and links are revoked, everywhere.
    assert!(b.delete_site("shop.example").await.unwrap());
    assert!(!b.delete_site("shop.example").await.unwrap());
    a.refresh().await.unwrap();
    let s = a.snapshot();
    assert!(s.site("shop.example").is_none());
    assert!(s.alias("A-EU-1234").is_none());
    assert!(s.link(&link.id).unwrap().revoked);
    // The tables still exist and hold every version (append-only).
    let n: u64 = ch
        .client()
        .sql(&Sql::new("SELECT count() FROM sites"))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 3);
}

#[tokio::test]
async fn timezones_are_checked_by_clickhouse() {
    let ch = fresh_database("registry_tz").await;
    let r = Registry::new(&ch);
    r.check_timezone("Europe/Berlin").await.unwrap();
    r.check_timezone("UTC").await.unwrap();
    let e = r.check_timezone("Mars/Olympus_Mons").await.unwrap_err();
    assert!(e.to_string().contains("`timezone`"), "{e}");
    let e = r.check_timezone("Europe/Berlin') --").await.unwrap_err();
    assert!(e.to_string().contains("`timezone`"), "{e}");
}

#[tokio::test]
async fn background_refresh_picks_up_other_writes() {
    let ch = fresh_database("registry_bg").await;
    let a = Registry::new(&ch);
    let b = Registry::new(&ch);
    let _task = b.spawn_refresh(std::time::Duration::from_millis(100));
    a.put_site("late.example", SiteSettings::default())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while b.snapshot().site("late.example").is_none() {
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
