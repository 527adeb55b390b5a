//! The `orly` commands that need no network: `certs init`, `audit verify`, `import`, `export`,
//! `stats` and `gen`, and the dispatch of every command (`sync`, `peers`, `syncs` and `token`
//! have their own files). Flags come parsed from `crate::config`.

use super::gen_events::GenSpec;
use super::output;
use crate::config::{AuditCmd, CertsCmd, Cli, Cmd, DataDir, EnvSource};
use crate::errln;
use crate::event::Filter;
use crate::store::{FjallStore, Order, PgStore, Store};
use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;

/// Opens the store of `--data-dir` (or `ORLY_DATA_DIR`, or the default).
pub(crate) fn open(data: &DataDir, env: &dyn EnvSource) -> anyhow::Result<FjallStore> {
    let dir = data.resolve(env).map_err(anyhow::Error::msg)?;
    Ok(FjallStore::open(&dir)?)
}

/// A store opened by a store command (the PostgreSQL one with the runtime its pool lives on).
enum CliStore {
    Fjall(FjallStore),
    Postgres(PgStore, tokio::runtime::Runtime),
}

/// The store of a store command: PostgreSQL when `ORLY_DB_TYPE=postgres`, else fjall.
fn open_any(data: &DataDir, env: &dyn EnvSource) -> anyhow::Result<CliStore> {
    match crate::config::StoreConfig::postgres_from_env(env).map_err(anyhow::Error::msg)? {
        Some(cfg) => {
            let rt = tokio::runtime::Runtime::new()?;
            let store = rt.block_on(PgStore::open(&cfg))?;
            Ok(CliStore::Postgres(store, rt))
        }
        None => Ok(CliStore::Fjall(open(data, env)?)),
    }
}

/// Runs one `orly` command with `env` behind its flags; the exit code, or an error (exit 1).
pub fn run(cli: Cli, env: &dyn EnvSource) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Sync(a) => super::sync_command::sync(*a, env),
        Cmd::Peers(p) => super::peers::peers(p, env),
        Cmd::Syncs(s) => super::syncs::syncs(s, env),
        Cmd::Token(t) => super::token::token(t),
        Cmd::Certs(CertsCmd::Init {
            dir,
            admins,
            hosts,
            days,
            force,
        }) => {
            let pki = crate::auth::init_dev_pki(&dir, &admins, &hosts, days, force)?;
            let policy = crate::policy::starter_policy(&admins)?;
            let policy_path = dir.join("policy.toml");
            if policy_path.exists() && !force {
                anyhow::bail!("{} exists (use --force)", policy_path.display());
            }
            std::fs::write(&policy_path, policy)?;
            output::print(|out| {
                writeln!(out, "wrote a development PKI to {}:", pki.dir.display())?;
                writeln!(
                    out,
                    "  ca.pem ca.key server.pem server.key token.key token.pub audit.key audit.pub policy.toml"
                )?;
                for a in &admins {
                    writeln!(out, "  {a}.pem {a}.key")?;
                }
                writeln!(
                    out,
                    "service: ORLY_TLS_CERT=server.pem ORLY_TLS_KEY=server.key ORLY_TLS_CLIENT_CA=ca.pem ORLY_POLICY=policy.toml ORLY_TOKEN_KEYS=token.pub ORLY_AUDIT_KEY=audit.key"
                )?;
                writeln!(
                    out,
                    "client:  orly token mint --admin NAME --key token.key --cert NAME.pem --out NAME.token"
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Audit(AuditCmd::Verify {
            dir,
            pubkey,
            anchors,
            anchor_pubkey,
        }) => Ok(ExitCode::from(super::audit::verify_command(
            &dir,
            pubkey.as_deref(),
            &anchors,
            anchor_pubkey.as_deref(),
        )?)),
        Cmd::Audit(AuditCmd::Anchor {
            dir,
            pubkey,
            anchor_key,
            mut relays,
            seq,
        }) => {
            if relays.is_empty() {
                relays = env
                    .var("ORLY_AUDIT_ANCHOR_RELAYS")
                    .map_err(anyhow::Error::msg)?
                    .unwrap_or_default()
                    .split(',')
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .collect();
            }
            if relays.is_empty() {
                errln!("orly audit anchor: give --relays (or set ORLY_AUDIT_ANCHOR_RELAYS)");
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::from(super::audit::anchor_command(
                &dir,
                &pubkey,
                &anchor_key,
                &relays,
                seq,
            )?))
        }
        Cmd::Import { file, data } => {
            let store = open_any(&data, env)?;
            let reader: Box<dyn std::io::BufRead + Send> = if file == "-" {
                Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
            } else {
                let f =
                    std::fs::File::open(&file).with_context(|| format!("cannot open {file}"))?;
                Box::new(std::io::BufReader::with_capacity(1 << 20, f))
            };
            let pb = super::progress_bar(None, "{spinner} {pos} lines {per_sec}");
            let started = std::time::Instant::now();
            let s = match &store {
                CliStore::Fjall(f) => {
                    super::import::import(f, reader, &mut output::QuietStderr, &pb)?
                }
                CliStore::Postgres(p, rt) => super::import::import_with(
                    &|batch| rt.block_on(p.save(batch.to_vec())),
                    reader,
                    &mut output::QuietStderr,
                    &pb,
                )?,
            };
            pb.finish_and_clear();
            match store {
                CliStore::Fjall(store) => {
                    // Compacts the negentropy index after the bulk load, then leaves no journal
                    // behind.
                    store.flush()?;
                    store.close(None)?;
                }
                CliStore::Postgres(store, rt) => rt.block_on(store.after_bulk_load())?,
            }
            let secs = started.elapsed().as_secs_f64();
            errln!(
                "imported {} lines in {secs:.2}s: accepted {}, replaced {}, duplicate {}, superseded {}, deleted {}, ephemeral {}, rejected {}",
                s.lines,
                s.accepted,
                s.replaced,
                s.duplicate,
                s.superseded,
                s.deleted,
                s.ephemeral,
                s.rejected
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Migrate {
            to,
            checkpoint,
            data,
        } => {
            let to_pg = match to.as_str() {
                "postgres" => true,
                "fjall" => false,
                other => anyhow::bail!("--to must be postgres or fjall, not {other:?}"),
            };
            let cfg = crate::store::postgres::PgConfig::from_vars(|n| env.var(n))
                .map_err(anyhow::Error::msg)?;
            let dir = data.resolve(env).map_err(anyhow::Error::msg)?;
            let fjall = FjallStore::open(&dir)?;
            let ck = checkpoint.unwrap_or_else(|| dir.join(format!("migrate-to-{to}.checkpoint")));
            let pb =
                super::progress_bar(Some(0), "{bar:40} {pos}/{len} events {per_sec} eta {eta}");
            let rt = tokio::runtime::Runtime::new()?;
            let sum = rt.block_on(async {
                let pg = PgStore::open(&cfg).await?;
                let (from, into): (&dyn Store, &dyn Store) =
                    if to_pg { (&fjall, &pg) } else { (&pg, &fjall) };
                let sum = crate::store::postgres::migrate::copy(from, into, &ck, &pb).await?;
                if to_pg {
                    pg.after_bulk_load().await?;
                }
                Ok::<_, crate::store::StoreError>(sum)
            })?;
            pb.finish_and_clear();
            fjall.flush()?;
            fjall.close(None)?;
            errln!(
                "migrated to {to}{}: read {}, stored {}, skipped (already there, superseded or deleted) {}",
                if sum.resumed { " (resumed)" } else { "" },
                sum.read,
                sum.stored,
                sum.skipped
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export {
            filter,
            ascending,
            data,
        } => {
            let f = Filter::from_json(&filter)?;
            let store = open_any(&data, env)?;
            let order = if ascending {
                Order::OldestFirst
            } else {
                Order::NewestFirst
            };
            let mut query_err = None;
            output::print_with(1 << 20, |out| {
                let mut io_err = None;
                // A failed write (the reader gone) ends the query: the export stops early.
                let emit = |ev: crate::event::Event| match writeln!(out, "{}", ev.to_json()) {
                    Ok(()) => true,
                    Err(e) => {
                        io_err = Some(e);
                        false
                    }
                };
                let queried = match &store {
                    CliStore::Fjall(s) => s.query_blocking(&f, order, emit),
                    CliStore::Postgres(s, rt) => rt.block_on(s.query_each(&f, order, emit)),
                };
                if let Err(e) = queried {
                    query_err = Some(e);
                }
                io_err.map_or(Ok(()), Err)
            })?;
            match query_err {
                Some(e) => Err(e.into()),
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Cmd::Stats { json, check, data } => {
            let (st, report) = match open_any(&data, env)? {
                CliStore::Fjall(store) => (
                    store.stats()?,
                    check.then(|| store.check_integrity()).transpose()?,
                ),
                CliStore::Postgres(store, rt) => rt.block_on(async {
                    let st = store.stats().await?;
                    let r = match check {
                        true => Some(store.check_integrity().await?),
                        false => None,
                    };
                    anyhow::Ok((st, r))
                })?,
            };
            output::print(|out| {
                if json {
                    return writeln!(
                        out,
                        "{}",
                        serde_json::json!({ "stats": st, "integrity": report })
                    );
                }
                writeln!(out, "events: {}", st.events)?;
                writeln!(
                    out,
                    "first created_at: {}",
                    st.first_created_at.map_or("-".into(), |t| t.to_string())
                )?;
                writeln!(
                    out,
                    "last created_at: {}",
                    st.last_created_at.map_or("-".into(), |t| t.to_string())
                )?;
                writeln!(out, "disk: {:.1} MiB", st.disk_bytes as f64 / 1048576.0)?;
                for (k, n) in &st.by_kind {
                    writeln!(out, "kind {k}: {n}")?;
                }
                if let Some(r) = &report {
                    writeln!(
                        out,
                        "integrity: {} events, {} index entries, {} problems",
                        r.events,
                        r.index_entries,
                        r.problems.len()
                    )?;
                    for p in &r.problems {
                        writeln!(out, "  {p}")?;
                    }
                }
                Ok(())
            })?;
            let broken = report.is_some_and(|r| !r.problems.is_empty());
            Ok(if broken {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Gen {
            count,
            seed,
            authors,
            kinds,
            span_days,
            until,
            skip,
        } => {
            anyhow::ensure!(!kinds.is_empty(), "--kinds needs at least one kind");
            anyhow::ensure!(authors > 0, "--authors must be at least 1");
            anyhow::ensure!(
                span_days * 86_400 < until,
                "--span-days reaches before 1970"
            );
            let spec = GenSpec {
                count,
                seed,
                authors,
                kinds,
                span_days,
                until,
            };
            let end = skip.saturating_add(count);
            // A failed write (the reader gone) ends generation there.
            output::print_with(1 << 20, |out| {
                let mut at = skip;
                while at < end {
                    let next = (at + 50_000).min(end);
                    for ev in super::gen_events::generate(&spec, at..next) {
                        writeln!(out, "{}", ev.to_json())?;
                    }
                    at = next;
                }
                Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
