//! A private PostgreSQL cluster for tests: `initdb` into a directory of its own (as the
//! `postgres` user when run as root: initdb refuses root), a free port on 127.0.0.1, its own
//! socket directory. One cluster per test binary, each test in a fresh database; a watchdog
//! stops the cluster and removes its directory when the test process exits.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One running cluster.
pub struct PgCluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    /// Ends by itself after this process (see [`PgCluster::watchdog`]).
    _watchdog: Option<std::process::Child>,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect(
        "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): apt-get install \
         postgresql (.ci/run does)",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `prog args…`, as the postgres user when we are root.
fn as_pg(prog: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(prog).args(args);
        c
    } else {
        let mut c = Command::new(prog);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory the postgres user owns, under the system temp dir.
fn pg_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "orly-pg-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["postgres:postgres"]).arg(&dir);
                c
            },
            "chown",
        );
    }
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl PgCluster {
    /// A new cluster (initdb + start), stopped when this process exits.
    pub fn start() -> PgCluster {
        let bin = pg_bin();
        let dir = pg_dir("primary");
        let data = dir.join("data");
        let data_s = data.to_str().unwrap();
        run(
            as_pg(
                &bin.join("initdb"),
                &[
                    "-D",
                    data_s,
                    "-A",
                    "trust",
                    "-U",
                    "orly",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            ),
            "initdb",
        );
        Self::launch(bin, dir)
    }

    /// Starts the cluster in `dir/data` on a free port (another on a port race).
    fn launch(bin: PathBuf, dir: PathBuf) -> PgCluster {
        let data = dir.join("data");
        for _ in 0..5 {
            let port = free_port();
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                dir.display()
            );
            let st = as_pg(
                &bin.join("pg_ctl"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-o",
                    &opts,
                    "-l",
                    dir.join(format!("log-{port}")).to_str().unwrap(),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("pg_ctl");
            if st.success() {
                let mut c = PgCluster {
                    dir,
                    port,
                    bin,
                    _watchdog: None,
                };
                c._watchdog = Some(c.watchdog());
                return c;
            }
        }
        panic!("PostgreSQL did not start (see {}/log-*)", dir.display());
    }

    /// Stops the cluster and removes its directory once this test process is gone.
    fn watchdog(&self) -> std::process::Child {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}; rm -rf '{dir}'",
            pid = std::process::id(),
            stop = if is_root() {
                format!(
                    "runuser -u postgres -- '{}' -D '{}' -m immediate stop",
                    self.bin.join("pg_ctl").display(),
                    self.dir.join("data").display()
                )
            } else {
                format!(
                    "'{}' -D '{}' -m immediate stop",
                    self.bin.join("pg_ctl").display(),
                    self.dir.join("data").display()
                )
            },
            dir = self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("watchdog")
    }

    /// A fresh, empty database; its URL.
    pub fn database(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("t{}", N.fetch_add(1, Ordering::SeqCst));
        let port = self.port.to_string();
        run(
            {
                let mut c = Command::new(self.bin.join("psql"));
                c.args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "orly",
                    "-d",
                    "postgres",
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
                .arg(format!("CREATE DATABASE {name}"));
                c
            },
            "create database",
        );
        self.url(&name)
    }

    /// The URL of database `db` (plain TCP on loopback).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://orly@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Runs SQL in database `db` with psql; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "orly",
                "-d",
                db,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A hot standby of this cluster (`pg_basebackup -R`), started on a port of its own.
    pub fn standby(&self) -> PgCluster {
        let dir = pg_dir("standby");
        let data = dir.join("data");
        run(
            as_pg(
                &self.bin.join("pg_basebackup"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-R",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "orly",
                    "--no-sync",
                    "--checkpoint=fast",
                ],
            ),
            "pg_basebackup",
        );
        Self::launch(self.bin.clone(), dir)
    }
}

/// The cluster of this test binary.
pub fn cluster() -> &'static PgCluster {
    static C: OnceLock<PgCluster> = OnceLock::new();
    C.get_or_init(PgCluster::start)
}

/// The database name at the end of `url`.
pub fn db_name(url: &str) -> String {
    url.rsplit('/')
        .next()
        .and_then(|s| s.split('?').next())
        .unwrap_or("")
        .to_string()
}

/// A store on the database at `url` (no read replica), as the services open it.
pub async fn open_store(url: &str) -> orly::store::PgStore {
    orly::store::PgStore::open(&orly::store::postgres::PgConfig {
        primary: orly::store::postgres::PgTarget::parse("test", url, None).unwrap(),
        read: None,
    })
    .await
    .unwrap()
}

/// Every event of `s`, newest first, as JSON lines.
pub async fn export(s: &dyn orly::store::Store) -> Vec<String> {
    use futures_util::StreamExt;
    s.query(
        orly::event::Filter::default(),
        orly::store::Order::NewestFirst,
    )
    .map(|e| e.unwrap().to_json())
    .collect()
    .await
}

/// What one writer fed `evs` in one batch ends with (fjall): the state concurrent writers must
/// reach.
pub async fn one_writer(evs: &[orly::event::Event]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let s = orly::store::FjallStore::open(dir.path()).unwrap();
    orly::store::Store::save(&s, evs.to_vec()).await.unwrap();
    export(&s).await
}
