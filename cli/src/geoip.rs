//! `veil geoip status` and `veil geoip install`: the GeoIP databases of `--geoip-dir` (default
//! `DATA_DIR/geoip`) without starting anything else. `status` prints one line per loaded file —
//! `FILE  SOURCE  built YYYY-MM-DD  N days old  limit L days (licence|Veil)  ok|TOO OLD` — then
//! the refresh command for each file past its limit, and fails (exit status 1) when there is
//! one. `install` hands each file to `veil_collector::pipeline::geo::install` and prints where
//! it went. The downloads themselves are `scripts/geoip/update.sh` (docs/GEOIP.md).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use veil_collector::pipeline::geo::{self, GeoDb};

use crate::config::{GeoipCommand, Settings};

/// Runs one `veil geoip` subcommand.
pub fn run(settings: &Settings, cmd: &GeoipCommand) -> Result<()> {
    let dir = settings
        .collector
        .geoip_dir
        .clone()
        .unwrap_or_else(|| settings.data_dir.join("geoip"));
    match cmd {
        GeoipCommand::Status => status(&dir),
        GeoipCommand::Install { files, force } => install(&dir, files, *force),
    }
}

fn status(dir: &Path) -> Result<()> {
    // Warnings go to the log as well; here they are printed in full below.
    let db = GeoDb::open(dir);
    let ages = db.ages();
    if ages.is_empty() {
        bail!("{}", db.status());
    }
    println!("GeoIP databases in {}:", dir.display());
    for a in &ages {
        println!(
            "  {:<15} {:<22} built {}  {:>4} days old  limit {} days ({})  {}",
            a.file,
            a.policy.source,
            a.built(),
            a.days(),
            a.policy.limit_days,
            if a.policy.licence_limit {
                "licence"
            } else {
                "Veil"
            },
            if a.is_stale() { "TOO OLD" } else { "ok" }
        );
    }
    let stale: Vec<_> = ages.iter().filter(|a| a.is_stale()).collect();
    for a in &stale {
        println!("{}", a.warning());
    }
    if !stale.is_empty() {
        bail!(
            "{} GeoIP database(s) past their age limit (details above)",
            stale.len()
        );
    }
    Ok(())
}

fn install(dir: &Path, files: &[PathBuf], force: bool) -> Result<()> {
    for f in files {
        let done = geo::install(dir, f, force)
            .with_context(|| format!("installing {} into {}", f.display(), dir.display()))?;
        println!(
            "installed {} ({}, built {}) as {}",
            f.display(),
            done.database_type,
            done.built,
            dir.join(done.file).display()
        );
        for old in &done.retired {
            println!(
                "removed {} (replaced by {})",
                dir.join(old).display(),
                done.file
            );
        }
    }
    println!("a running collector picks the new files up within 30 s");
    Ok(())
}
