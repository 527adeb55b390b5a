//! `orly`: the command line. Flag parsing and output only; the work lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use orly::cli::{self, gen_events::GenSpec, output};
use orly::errln;
use orly::event::Filter;
use orly::store::{FjallStore, Order, PgStore, Store};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "orly",
    version,
    about = "Nostr event store kept in step with relays by NIP-77 negentropy sync"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct DataDir {
    /// Store directory [env: ORLY_DATA_DIR; default: ~/.local/share/ORLY]
    #[arg(long, env = "ORLY_DATA_DIR", hide_env = true)]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    fn open(&self) -> anyhow::Result<FjallStore> {
        let dir = self.data_dir.clone().unwrap_or_else(cli::default_data_dir);
        Ok(FjallStore::open(&dir)?)
    }

    /// The store of a store command: PostgreSQL when `ORLY_DB_TYPE=postgres`, else fjall.
    fn open_any(&self) -> anyhow::Result<CliStore> {
        match orly::config::StoreConfig::postgres_from_env().map_err(anyhow::Error::msg)? {
            Some(cfg) => {
                let rt = tokio::runtime::Runtime::new()?;
                let store = rt.block_on(PgStore::open(&cfg))?;
                Ok(CliStore::Postgres(store, rt))
            }
            None => Ok(CliStore::Fjall(self.open()?)),
        }
    }
}

/// A store opened by a store command (the PostgreSQL one with the runtime its pool lives on).
enum CliStore {
    Fjall(FjallStore),
    Postgres(PgStore, tokio::runtime::Runtime),
}

const SYNC_HELP: &str = "\
Direct mode (no --server) opens the store in --data-dir itself. Client mode (--server HOST:PORT)
asks an orly-sync-negentropy service to run the sync on its store and streams the progress; it
touches no local files. In client mode --ca/--cert/--key/--token-file are for the service
(mTLS and the admin token); in direct mode --ca adds a private CA for a wss:// relay.

Exit codes:
  0  the sync completed, and the two sides agree on everything it moved
  1  local failure (store, I/O)
  2  usage error (bad flag, filter or URL)
  3  refused by the relay or by the sync service's policy or limits
  4  authentication failed (NIP-42 AUTH, or the service's certificate/token checks)
  5  timed out (connect, first reply or idle)
  6  incomplete (disconnected, protocol error, service unreachable or not ready, cancelled)
  7  the sync completed, but the two sides still differ: events were dropped (failed
     verification, not asked for) or the relay refused uploads; the summary line names the
     cause, and the final --json line lists it in \"differs\" (\"dropped\", \"rejected\")";

#[derive(Subcommand)]
enum Cmd {
    /// Sync events with a relay over NIP-77 negentropy (direct or client mode).
    #[command(after_help = SYNC_HELP)]
    Sync(Box<SyncArgs>),
    /// Import JSONL events (verifying every one); bad lines are reported and skipped.
    Import {
        /// Input file, or `-` for stdin.
        #[arg(default_value = "-")]
        file: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Export stored events as JSONL to stdout.
    Export {
        /// NIP-01 filter as JSON, e.g. '{"kinds":[1]}'.
        #[arg(long, default_value = "{}")]
        filter: String,
        /// Oldest first (default: newest first).
        #[arg(long)]
        ascending: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Counts by kind, first/last created_at, size on disk.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also check every index entry against the events (slow on big stores).
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Copy every event between fjall (--data-dir) and PostgreSQL (ORLY_POSTGRES_URL), with a
    /// progress bar; resumable (a checkpoint file after each batch).
    Migrate {
        /// Destination: `postgres` (copy fjall in --data-dir there) or `fjall` (copy PostgreSQL
        /// into --data-dir).
        #[arg(long)]
        to: String,
        /// Checkpoint file [default: DATA_DIR/migrate-to-TO.checkpoint]; removed when done.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Admin tokens for the sync service.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Development certificates and keys.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Generate valid signed events as JSONL (deterministic for a seed).
    Gen {
        /// Number of events.
        #[arg(long)]
        count: u64,
        /// PRNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of distinct authors.
        #[arg(long, default_value_t = 50)]
        authors: u64,
        /// Comma-separated kinds to draw from.
        #[arg(long, value_delimiter = ',', default_value = "0,1,3,7")]
        kinds: Vec<u16>,
        /// Spread of created_at, in days, below --until.
        #[arg(long, default_value_t = 30)]
        span_days: u64,
        /// Newest created_at (unix seconds); fixed so output never depends on the clock.
        #[arg(long, default_value_t = 1_760_000_000)]
        until: u64,
        /// Index of the first event of the sequence (to generate a slice of it).
        #[arg(long, default_value_t = 0)]
        skip: u64,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint an admin token (JWT, EdDSA/ES256), bound to the admin's certificate with --cert.
    Mint {
        /// Admin name (the policy's `name`), the token's `sub`.
        #[arg(long)]
        admin: String,
        /// Lifetime, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Signing key (PKCS#8 PEM, Ed25519 or P-256), e.g. token.key from `orly certs init`.
        #[arg(long)]
        key: PathBuf,
        /// The admin's client certificate (PEM): binds the token to it (cnf x5t#S256). The
        /// service requires bound tokens.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Write the token to this file (mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show a token's header and claims WITHOUT verifying it (never prints the signature).
    Inspect {
        /// Token file, or `-` for stdin.
        #[arg(default_value = "-")]
        file: String,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Make a development PKI: CA, server cert, admin certs, token and audit keys, starter policy.
    Init {
        /// Output directory.
        dir: PathBuf,
        /// Admin to create a certificate for (repeatable).
        #[arg(long = "admin", required = true)]
        admins: Vec<String>,
        /// Extra DNS name or IP for the server certificate (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Validity of the certificates in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the audit chain: reports the first broken record (edit, deletion, reordering,
    /// truncation, forged checkpoint, a record not signed by the audit key), incidents recorded
    /// at restarts and syncs that never finished. Exit 0 intact, 1 broken.
    Verify {
        /// Audit directory.
        dir: PathBuf,
        /// Audit public key (audit.pub): record, checkpoint and head signatures must verify with
        /// it; without it nothing is authenticated (the output says so).
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct SyncArgs {
    /// Relay URL (ws:// or wss://).
    url: String,
    /// NIP-01 filter as JSON (limit is ignored).
    #[arg(long, default_value = "{}")]
    filter: String,
    /// Direction: down (fetch), up (upload), both, or none (report differences only).
    #[arg(long = "dir", default_value = "down")]
    dir: String,
    /// Only events created at or after this unix time.
    #[arg(long)]
    since: Option<u64>,
    /// Negentropy frame size limit in bytes (0 = none; else at least 4096). Default: derived
    /// from the relay's NIP-11 max_message_length, or 60000 when it says nothing.
    #[arg(long)]
    frame_size_limit: Option<u64>,
    /// Seconds to wait for the relay: connect, first reply and idle.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// One JSON progress line per update on stdout (for cron and CI).
    #[arg(long)]
    json: bool,
    /// File with the hex secret key for NIP-42 AUTH [env: ORLY_SYNC_AUTH_KEY holds the hex key itself]
    #[arg(long)]
    auth_key_file: Option<PathBuf>,
    /// Run on an orly-sync-negentropy service at HOST:PORT (client mode).
    #[arg(long)]
    server: Option<String>,
    /// CA certificate (PEM): the service's CA in client mode, a private relay CA in direct mode.
    #[arg(long, env = "ORLY_SYNC_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for the service (client mode).
    #[arg(long, env = "ORLY_SYNC_CERT")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert (client mode).
    #[arg(long, env = "ORLY_SYNC_KEY")]
    key: Option<PathBuf>,
    /// File holding the admin token for the service (client mode).
    #[arg(long, env = "ORLY_SYNC_TOKEN")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    data: DataDir,
}

fn main() -> ExitCode {
    orly::init_crypto();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Sync(a) => sync(*a),
        Cmd::Token(t) => token(t),
        Cmd::Certs(CertsCmd::Init {
            dir,
            admins,
            hosts,
            days,
            force,
        }) => {
            let pki = orly::auth::init_dev_pki(&dir, &admins, &hosts, days, force)?;
            let policy = orly::policy::starter_policy(&admins)?;
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
        Cmd::Audit(AuditCmd::Verify { dir, pubkey }) => {
            let key = match &pubkey {
                Some(p) => Some(orly::audit::load_verifying_key(p)?),
                None => None,
            };
            let report = orly::audit::verify(&dir, key.as_ref());
            output::print(|out| writeln!(out, "{report}"))?;
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Import { file, data } => {
            let store = data.open_any()?;
            let reader: Box<dyn std::io::BufRead + Send> = if file == "-" {
                Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
            } else {
                let f =
                    std::fs::File::open(&file).with_context(|| format!("cannot open {file}"))?;
                Box::new(std::io::BufReader::with_capacity(1 << 20, f))
            };
            let pb = cli::progress_bar(None, "{spinner} {pos} lines {per_sec}");
            let started = std::time::Instant::now();
            let s = match &store {
                CliStore::Fjall(f) => {
                    cli::import::import(f, reader, &mut output::QuietStderr, &pb)?
                }
                CliStore::Postgres(p, rt) => cli::import::import_with(
                    &|batch| rt.block_on(p.save(batch.to_vec())),
                    reader,
                    &mut output::QuietStderr,
                    &pb,
                )?,
            };
            pb.finish_and_clear();
            if let CliStore::Fjall(store) = store {
                // Compacts the negentropy index after the bulk load, then leaves no journal
                // behind.
                store.flush()?;
                store.close(None)?;
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
            let cfg = orly::store::postgres::PgConfig::from_env().map_err(anyhow::Error::msg)?;
            let dir = data.data_dir.clone().unwrap_or_else(cli::default_data_dir);
            let fjall = FjallStore::open(&dir)?;
            let ck = checkpoint.unwrap_or_else(|| dir.join(format!("migrate-to-{to}.checkpoint")));
            let pb = cli::progress_bar(Some(0), "{bar:40} {pos}/{len} events {per_sec} eta {eta}");
            let rt = tokio::runtime::Runtime::new()?;
            let sum = rt.block_on(async {
                let pg = PgStore::open(&cfg).await?;
                let (from, into): (&dyn Store, &dyn Store) =
                    if to_pg { (&fjall, &pg) } else { (&pg, &fjall) };
                orly::store::postgres::migrate::copy(from, into, &ck, &pb).await
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
            let store = data.open_any()?;
            let order = if ascending {
                Order::OldestFirst
            } else {
                Order::NewestFirst
            };
            let mut query_err = None;
            output::print_with(1 << 20, |out| {
                let mut io_err = None;
                // A failed write (the reader gone) ends the query: the export stops early.
                let emit = |ev: orly::event::Event| match writeln!(out, "{}", ev.to_json()) {
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
            let (st, report) = match data.open_any()? {
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
                    for ev in cli::gen_events::generate(&spec, at..next) {
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

fn sync(a: SyncArgs) -> anyhow::Result<ExitCode> {
    use orly::cli::sync::{self as s, Display, Mode, ServiceTarget};
    let auth_keys = match (&a.auth_key_file, std::env::var("ORLY_SYNC_AUTH_KEY")) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            Some(
                orly::event::Keys::from_hex(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
            )
        }
        (None, Ok(hex)) if !hex.trim().is_empty() => Some(
            orly::event::Keys::from_hex(&hex)
                .map_err(|e| anyhow::anyhow!("ORLY_SYNC_AUTH_KEY: {e}"))?,
        ),
        _ => None,
    };
    let client_mode = a.server.is_some();
    let relay_ca = if client_mode { None } else { a.ca.clone() };
    let req = match s::build_request(
        &a.url,
        &a.filter,
        &a.dir,
        a.since,
        a.frame_size_limit,
        a.timeout,
        relay_ca,
        auth_keys,
    ) {
        Ok(r) => r,
        Err(e) => {
            errln!("error: {e}");
            return Ok(ExitCode::from(orly::sync::exit::USAGE));
        }
    };
    let rt = tokio::runtime::Runtime::new()?;
    let display = Display::new(a.json);
    let code = rt.block_on(async {
        let mode = match a.server {
            Some(addr) => Mode::Client(ServiceTarget {
                addr,
                ca: a.ca,
                cert: a.cert,
                key: a.key,
                token_file: a.token_file,
            }),
            None => {
                let pg =
                    orly::config::StoreConfig::postgres_from_env().map_err(anyhow::Error::msg)?;
                if let Some(cfg) = pg {
                    let store = PgStore::open(&cfg).await?;
                    let mode = Mode::Direct(std::sync::Arc::new(store));
                    return anyhow::Ok(s::run(mode, req, &display).await);
                }
                let store = a.data.open()?;
                let code = s::run(
                    Mode::Direct(std::sync::Arc::new(store.clone())),
                    req,
                    &display,
                )
                .await;
                // A clean close leaves no journal for the next open to replay.
                if let Err(e) = tokio::task::spawn_blocking(move || store.close(None)).await? {
                    errln!("warning: store flush failed: {e}");
                }
                return anyhow::Ok(code);
            }
        };
        anyhow::Ok(s::run(mode, req, &display).await)
    })?;
    Ok(ExitCode::from(code))
}

fn parse_ttl(s: &str) -> anyhow::Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("--ttl {s:?}: expected e.g. 30m, 24h, 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" | "" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("--ttl {s:?}: unit must be s, m, h or d"),
    };
    anyhow::ensure!(
        secs > 0 && secs <= 366 * 86_400,
        "--ttl must be between 1s and 366d"
    );
    Ok(std::time::Duration::from_secs(secs))
}

fn token(cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCmd::Mint {
            admin,
            ttl,
            key,
            cert,
            out,
        } => {
            let signing = orly::auth::TokenSigningKey::from_file(&key)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            let der = match &cert {
                Some(p) => {
                    use rustls_pki_types::{CertificateDer, pem::PemObject};
                    Some(
                        CertificateDer::from_pem_file(p)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                            .to_vec(),
                    )
                }
                None => {
                    errln!(
                        "warning: no --cert: the token is not bound to a certificate and the sync service will refuse it"
                    );
                    None
                }
            };
            let req = orly::auth::MintRequest {
                issuer: orly::gateway::TOKEN_ISSUER,
                audience: orly::gateway::TOKEN_AUDIENCE,
                admin: &admin,
                ttl: parse_ttl(&ttl)?,
                cert_der: der.as_deref(),
                now: std::time::SystemTime::now(),
            };
            let tok = orly::auth::mint(&signing, &req)?;
            match out {
                Some(p) => {
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&p)?;
                    writeln!(f, "{tok}")?;
                    errln!("wrote token for {admin} to {}", p.display());
                }
                None => output::print(|out| writeln!(out, "{tok}"))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCmd::Inspect { file } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let v = orly::auth::inspect(text.trim())?;
            let text = serde_json::to_string_pretty(&v)?;
            output::print(|out| writeln!(out, "{text}"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
