//! `veil user create`, `veil key create` and `veil import …`: accounts, site keys and imported
//! history from the command line, for setups without a browser and for the README's first
//! authenticated query. All write to the
//! registry in ClickHouse (the one `veil up` serves, found through the managed server's config
//! under --data-dir when it runs; or --clickhouse-url), so a running `veil up` sees the change
//! within a registry refresh. Each change goes to the audit log as done by `veil CLI`.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use serde_json::json;
use veil_aggregator::auth::hash_password;
use veil_schemas::people::{normalize_email, AuditEntry, Role, ALL_SITES};
use veil_schemas::registry::{now_secs, random_hex, Registry};
use veil_schemas::ClickHouseConfig;

use crate::config::{ImportCommand, KeyCommand, Settings, UserCommand};

/// Who the audit log says made a change from the command line.
const ACTOR: &str = "veil CLI";

async fn audit(reg: &Registry, site: &str, action: &str, detail: serde_json::Value) -> Result<()> {
    reg.audit(&AuditEntry {
        at: now_secs(),
        id: random_hex(8)?,
        actor: ACTOR.into(),
        site: site.into(),
        action: action.into(),
        detail: detail.to_string(),
    })
    .await
    .context("writing the audit log")
}

/// The one --site of a command, normalised; `None` when none is given and `optional`.
fn one_site(s: &Settings, optional: bool) -> Result<Option<String>> {
    match s.collector.sites.as_slice() {
        [] if optional => Ok(None),
        [d] => Ok(Some(
            veil_collector::sites::normalize_domain(d)
                .with_context(|| format!("--site {d:?} is not a domain name"))?,
        )),
        other => bail!("give exactly one --site (got {})", other.len()),
    }
}

async fn registry(ch: &ClickHouseConfig) -> Result<std::sync::Arc<Registry>> {
    veil_schemas::migrate(ch)
        .await
        .context("applying migrations")?;
    let reg = Registry::new(ch);
    reg.refresh().await.context("loading the registry")?;
    Ok(reg)
}

/// `veil user …`.
pub async fn user(ch: &ClickHouseConfig, s: &Settings, cmd: &UserCommand) -> Result<()> {
    let UserCommand::Create { email, role } = cmd;
    let email = normalize_email(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let role = Role::parse(role).with_context(|| {
        format!("--role {role:?} is not a role; expected owner, admin or viewer")
    })?;
    let site = one_site(s, true)?.unwrap_or_else(|| ALL_SITES.to_string());
    let reg = registry(ch).await?;
    let snap = reg.snapshot();
    let user = match snap.people.user_by_email(&email) {
        Some(u) => {
            println!("{email} has an account already; giving it the role");
            u.clone()
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let pw = line.trim_end_matches(['\n', '\r']);
            if pw.len() < veil_aggregator::account::MIN_PASSWORD_BYTES {
                bail!(
                    "the password (first line of standard input) must be at least {} bytes",
                    veil_aggregator::account::MIN_PASSWORD_BYTES
                );
            }
            let phc = hash_password(pw).map_err(|e| anyhow::anyhow!("{e}"))?;
            let u = reg.create_user(&email, phc, now_secs()).await?;
            println!("made the account {email}");
            u
        }
    };
    reg.set_membership(&user.id, &site, Some(role)).await?;
    audit(
        &reg,
        &site,
        "person.role",
        json!({"email": email, "to": role.name()}),
    )
    .await?;
    let on = if site == ALL_SITES {
        "every site".to_string()
    } else {
        site
    };
    println!("{email} is {} of {on}", role.name());
    Ok(())
}

/// `veil key …`.
pub async fn key(ch: &ClickHouseConfig, s: &Settings, cmd: &KeyCommand) -> Result<()> {
    let KeyCommand::Create { name } = cmd;
    let Some(site) = one_site(s, false)? else {
        bail!("give the key's site with --site");
    };
    veil_schemas::policy::check_text("--name", name, veil_schemas::registry::MAX_NAME_BYTES)?;
    let reg = registry(ch).await?;
    let known = reg.snapshot().site(&site).is_some() || s.aggregator.flag_site(&site);
    if !known {
        // A key for a site defined by `veil up --site` alone is fine; a typo is not.
        eprintln!(
            "veil: note: {site} is not a stored site (fine if `veil up` names it with --site)"
        );
    }
    let (rec, key) = reg.create_key(&site, name).await?;
    audit(
        &reg,
        &site,
        "key.create",
        json!({"id": rec.id, "name": rec.name}),
    )
    .await?;
    println!("{key}");
    eprintln!(
        "veil: site key {} for {site} (shown once; stored hashed)",
        rec.id
    );
    Ok(())
}

/// `veil import …` (the work is [`veil_aggregator::imports`]'s).
pub async fn import(ch: &ClickHouseConfig, s: &Settings, cmd: &ImportCommand) -> Result<()> {
    let Some(site) = one_site(s, false)? else {
        bail!("give the site with --site");
    };
    let reg = registry(ch).await?;
    match cmd {
        ImportCommand::Plausible { file } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let out = veil_aggregator::imports::import_plausible(ch, &site, &name, &bytes).await?;
            let i = &out.import;
            if out.already {
                println!(
                    "{} was imported already as {} (nothing changed)",
                    name, i.id
                );
            } else {
                audit(
                    &reg,
                    &site,
                    "import.create",
                    json!({"id": i.id, "source": i.source, "file": i.file_name, "rows": i.rows}),
                )
                .await?;
                println!(
                    "imported {} as {}: {} rows, {} to {}",
                    name, i.id, i.rows, i.start_date, i.end_date
                );
            }
            for f in &out.skipped {
                eprintln!("veil: note: {f} is not a table of Plausible's export; left alone");
            }
        }
        ImportCommand::List => {
            for i in veil_aggregator::imports::list(ch, &site).await? {
                println!(
                    "{}\t{}\t{} to {}\t{} rows\t{}\t{}",
                    i.id, i.source, i.start_date, i.end_date, i.rows, i.imported_at, i.file_name
                );
            }
        }
        ImportCommand::Delete { id } => {
            let i = veil_aggregator::imports::delete(ch, &site, id).await?;
            audit(
                &reg,
                &site,
                "import.delete",
                json!({"id": i.id, "file": i.file_name}),
            )
            .await?;
            println!("deleted import {} of {site} ({} rows)", i.id, i.rows);
        }
    }
    Ok(())
}
