//! `orly`'s flags: every command and its arguments, and the variables behind them
//! (`ORLY_DATA_DIR`; for `sync`, `ORLY_SYNC_CA`, `ORLY_SYNC_CERT`, `ORLY_SYNC_KEY`,
//! `ORLY_SYNC_TOKEN` and `ORLY_SYNC_AUTH_KEY`; the first four for `peers` and `syncs` too), read
//! through the injected environment. The command bodies live in the `cli` module.

use super::env::{EnvSource, Problems};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "orly",
    version,
    about = "Nostr event store kept in step with relays by NIP-77 negentropy sync"
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// `--data-dir` of the commands that open the store.
#[derive(clap::Args, Clone, Debug)]
pub struct DataDir {
    /// Store directory [env: ORLY_DATA_DIR; default: ~/.local/share/ORLY]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl DataDir {
    /// `--data-dir`, else `ORLY_DATA_DIR`, else `~/.local/share/ORLY`.
    pub fn resolve(&self, env: &dyn EnvSource) -> Result<PathBuf, String> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => Ok(env
                .var("ORLY_DATA_DIR")?
                .map_or_else(super::default_data_dir, PathBuf::from)),
        }
    }
}

/// `orly sync --help`: the modes and the exit codes.
pub(super) const SYNC_HELP: &str = "\
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
pub enum Cmd {
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
    /// The managed peers of a sync service and their background sync (needs the policy's
    /// `manage_peers` right).
    #[command(subcommand)]
    Peers(PeersCmd),
    /// The syncs a sync service runs or recently ran (yours; an auditor sees all).
    #[command(subcommand)]
    Syncs(SyncsCmd),
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

/// Exit codes of `orly peers` and `orly syncs` (the classes of `orly sync`'s, plus not found).
pub(super) const SERVICE_CLIENT_HELP: &str = "\
Flags and variables for the service as `orly sync --server` (--ca, --cert, --key, --token-file;
ORLY_SYNC_CA, ORLY_SYNC_CERT, ORLY_SYNC_KEY, ORLY_SYNC_TOKEN). Peer URLs are shown with user
information and query values redacted.

Exit codes:
  0  done (found; cancelled)
  1  not found: no such managed peer or sync, or `syncs cancel` found no running sync of yours
     with that id (nothing cancelled); or a local failure (I/O)
  2  usage error (bad flag, filter, URL or sync id; the service's INVALID_ARGUMENT too)
  3  refused by the sync service's policy or limits (e.g. no `manage_peers` right, a peer the
     policy does not allow)
  4  authentication failed (the service's certificate or token checks)
  5  timed out
  6  service unreachable or not ready, or the call broken off";

/// What every `orly peers` and `orly syncs` command takes: the service (required) and `--json`.
#[derive(clap::Args, Clone, Debug)]
#[command(mut_arg("server", |a| a.required(true)))]
pub struct ClientArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// One JSON object on stdout (one per line for lists).
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum PeersCmd {
    /// The managed peers' URLs (GetPeers).
    #[command(after_help = SERVICE_CLIENT_HELP)]
    List(ClientArgs),
    /// Add a managed peer (AddPeer); your policy must allow syncing with it. A URL listed
    /// already is left as it is (a warning says so; exit 0).
    #[command(after_help = SERVICE_CLIENT_HELP)]
    Add {
        /// Relay URL (ws:// or wss://).
        url: String,
        /// The peer's own NIP-01 filter as JSON [default: the service's, ORLY_SYNC_NEGENTROPY_FILTER]
        #[arg(long)]
        filter: Option<String>,
        /// The peer's direction: down, up, both or none [default: both]
        #[arg(long = "dir")]
        dir: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a managed peer (RemovePeer); a sync running with it finishes.
    #[command(after_help = SERVICE_CLIENT_HELP)]
    Remove {
        /// The peer's URL, as added or as `peers list` shows it.
        url: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Sync one managed peer now, or every one without URL (TriggerSync), loop running or not.
    #[command(after_help = SERVICE_CLIENT_HELP)]
    Trigger {
        /// The peer's URL, as added or as `peers list` shows it; none: every managed peer.
        url: Option<String>,
        /// This sync's NIP-01 filter instead of the peer's own.
        #[arg(long)]
        filter: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The background sync and every peer's state (GetSyncStatus), or one peer's
    /// (GetPeerSyncState; exit 1 when it is not a managed peer).
    #[command(after_help = SERVICE_CLIENT_HELP)]
    Status {
        /// The peer's URL, as added or as `peers list` shows it.
        url: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start the background sync of the managed peers (Start; idempotent).
    #[command(after_help = SERVICE_CLIENT_HELP)]
    Start(ClientArgs),
    /// Stop starting background syncs (Stop); those running finish.
    #[command(after_help = SERVICE_CLIENT_HELP)]
    Stop(ClientArgs),
}

#[derive(Subcommand)]
pub enum SyncsCmd {
    /// Syncs running now and recently finished, newest first (ListSyncs).
    #[command(after_help = SERVICE_CLIENT_HELP)]
    List(ClientArgs),
    /// One sync's state and progress (GetSync; exit 1 when there is no such sync).
    #[command(after_help = SERVICE_CLIENT_HELP)]
    Status {
        /// The sync id (24 hex characters, from `syncs list` or `orly sync --json`).
        sync_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop one of your running syncs (CancelSync); what it stored stays stored. Exit 1 when
    /// nothing was cancelled.
    #[command(after_help = SERVICE_CLIENT_HELP)]
    Cancel {
        /// The sync id (24 hex characters).
        sync_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
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
pub enum CertsCmd {
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

/// Exit codes of `orly audit verify`.
const AUDIT_VERIFY_HELP: &str = "\
Exit codes:
  0  the log is intact (and, with --anchors, every checkpoint is anchored and every anchor
     matches the log)
  1  the log is broken: the first broken record is named (anchors are not checked then)
  2  usage error
  3  the anchors contradict the log: a checkpoint's hash differs from its anchor (the history
     was rewritten; the first rewritten checkpoint is named), or anchors name seqs the log no
     longer has (truncated; the missing seqs are named)
  4  no contradiction, but checkpoints without an anchor, or anchors whose previous anchor is
     on no relay
  5  none of the --anchors relays could be read";

/// Exit codes of `orly audit anchor`.
const AUDIT_ANCHOR_HELP: &str = "\
Exit codes:
  0  every anchor published was accepted by at least one relay (or nothing was missing)
  1  the log is broken, or --seq is not a checkpoint
  2  usage error
  3  the anchors on the relays contradict the log: nothing published
  5  no relay could be read, or an anchor was accepted by none";

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Verify the audit chain: reports the first broken record (edit, deletion, reordering,
    /// truncation, forged checkpoint, a record not signed by the audit key), incidents recorded
    /// at restarts and syncs that never finished. With --anchors, also holds every checkpoint
    /// against its public anchor on those relays.
    #[command(after_help = AUDIT_VERIFY_HELP)]
    Verify {
        /// Audit directory.
        dir: PathBuf,
        /// Audit public key (audit.pub): record, checkpoint and head signatures must verify with
        /// it; without it nothing is authenticated (the output says so).
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// Anchor relays to fetch the log's public anchors from (comma-separated ws:// or
        /// wss:// URLs); needs --pubkey and --anchor-pubkey.
        #[arg(long, value_delimiter = ',', requires_all = ["pubkey", "anchor_pubkey"])]
        anchors: Vec<String>,
        /// The anchoring key's public key (64 hex, x-only), the one ORLY_AUDIT_ANCHOR_KEY signs with.
        #[arg(long, requires = "anchors")]
        anchor_pubkey: Option<String>,
    },
    /// Publish the public anchors of checkpoints by hand (a log written before anchoring, or
    /// while the relays were down): every checkpoint without an anchor on the relays, or --seq.
    #[command(after_help = AUDIT_ANCHOR_HELP)]
    Anchor {
        /// Audit directory (it must verify with --pubkey).
        dir: PathBuf,
        /// Audit public key (audit.pub).
        #[arg(long)]
        pubkey: PathBuf,
        /// File holding the anchoring key (64 hex), as ORLY_AUDIT_ANCHOR_KEY.
        #[arg(long)]
        anchor_key: PathBuf,
        /// Relays (comma-separated ws:// or wss:// URLs) [env: ORLY_AUDIT_ANCHOR_RELAYS]
        #[arg(long, value_delimiter = ',')]
        relays: Vec<String>,
        /// Only the checkpoint with this seq (published even if anchored already).
        #[arg(long)]
        seq: Option<u64>,
    },
}

/// `orly sync`'s flags. The service flags are [`ServiceArgs`], worded here for the two modes
/// (`--ca` means the relay's CA in direct mode).
#[derive(clap::Args)]
#[command(
    mut_arg("server", |a| a.help("Run on an orly-sync-negentropy service at HOST:PORT (client mode)")),
    mut_arg("ca", |a| a.help("CA certificate (PEM): the service's CA in client mode, a private relay CA in direct mode [env: ORLY_SYNC_CA]")),
    mut_arg("cert", |a| a.help("Client certificate (PEM) for the service (client mode) [env: ORLY_SYNC_CERT]")),
    mut_arg("key", |a| a.help("Private key (PEM) of --cert (client mode) [env: ORLY_SYNC_KEY]")),
    mut_arg("token_file", |a| a.help("File holding the admin token for the service (client mode) [env: ORLY_SYNC_TOKEN]")),
)]
pub struct SyncArgs {
    /// Relay URL (ws:// or wss://).
    pub url: String,
    /// NIP-01 filter as JSON (limit is ignored).
    #[arg(long, default_value = "{}")]
    pub filter: String,
    /// Direction: down (fetch), up (upload), both, or none (report differences only).
    #[arg(long = "dir", default_value = "down")]
    pub dir: String,
    /// Only events created at or after this unix time.
    #[arg(long)]
    pub since: Option<u64>,
    /// Negentropy frame size limit in bytes (0 = none; else at least 4096). Default: derived
    /// from the relay's NIP-11 max_message_length, or 60000 when it says nothing.
    #[arg(long)]
    pub frame_size_limit: Option<u64>,
    /// Seconds to wait for the relay: connect, first reply and idle.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// One JSON progress line per update on stdout (for cron and CI).
    #[arg(long)]
    pub json: bool,
    /// File with the hex secret key for NIP-42 AUTH [env: ORLY_SYNC_AUTH_KEY holds the hex key itself]
    #[arg(long)]
    pub auth_key_file: Option<PathBuf>,
    /// The service (client mode) and its credentials.
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub data: DataDir,
}

impl SyncArgs {
    /// The client-mode files (`--ca`, `--cert`, `--key`, `--token-file`) and `--data-dir` with
    /// every unset one taken from its variable; unreadable variables are problems in `p`.
    pub fn with_env(mut self, env: &dyn EnvSource, p: &mut Problems) -> Self {
        self.service = self.service.with_env(env, p);
        self.data.data_dir = self.data.data_dir.take().or_else(|| {
            p.take(env.var("ORLY_DATA_DIR"))
                .flatten()
                .map(PathBuf::from)
        });
        self
    }
}

/// How to reach an `orly-sync-negentropy` service: `--server` and the files for mTLS and the
/// admin token, the same flags and variables for `orly sync` (client mode), `orly peers` and
/// `orly syncs`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServiceArgs {
    /// The orly-sync-negentropy service, HOST:PORT.
    #[arg(long)]
    pub server: Option<String>,
    /// CA certificate (PEM) of the service; enables TLS [env: ORLY_SYNC_CA]
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for the service [env: ORLY_SYNC_CERT]
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert [env: ORLY_SYNC_KEY]
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// File holding the admin token for the service [env: ORLY_SYNC_TOKEN]
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

impl ServiceArgs {
    /// `--ca`, `--cert`, `--key` and `--token-file`, every unset one taken from its variable
    /// (`ORLY_SYNC_CA`, `ORLY_SYNC_CERT`, `ORLY_SYNC_KEY`, `ORLY_SYNC_TOKEN`); unreadable
    /// variables are problems in `p`.
    pub fn with_env(mut self, env: &dyn EnvSource, p: &mut Problems) -> Self {
        let mut path = |flag: Option<PathBuf>, name: &str| {
            flag.or_else(|| p.take(env.var(name)).flatten().map(PathBuf::from))
        };
        self.ca = path(self.ca.take(), "ORLY_SYNC_CA");
        self.cert = path(self.cert.take(), "ORLY_SYNC_CERT");
        self.key = path(self.key.take(), "ORLY_SYNC_KEY");
        self.token_file = path(self.token_file.take(), "ORLY_SYNC_TOKEN");
        self
    }
}
