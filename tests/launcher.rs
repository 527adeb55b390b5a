//! `orly-launcher` with the real service binaries (cargo builds them beside the launcher, where
//! it looks first): restart after a crash, orderly shutdown, and a start-up failure that names
//! the service. Every wait is bounded.
//!
//! Ports: the services get `127.0.0.1:0` and announce the port they bound; the launcher keeps
//! that port for restarts and hands orly-db's to the others. So no test picks a "free" port by
//! bind-and-release. The one fixed port (the "port taken" case) is a listener this test binds
//! and holds for the whole test.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bound on the launcher bringing up all services (debug binaries on a busy 2-core machine).
const START_LIMIT: Duration = Duration::from_secs(90);
/// Bound on a restart after a crash (backoff starts at 0.5 s).
const RESTART_LIMIT: Duration = Duration::from_secs(45);
/// Bound on an orderly shutdown (3 services × 10 s stop timeout, at worst).
const STOP_LIMIT: Duration = Duration::from_secs(40);

/// Lines a pipe has produced so far, shared with the thread reading it.
#[derive(Clone, Default)]
struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn collect(pipe: impl Read + Send + 'static, tag: &'static str) -> Self {
        let lines = Self::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("launcher {tag}: {line}");
                let (m, cv) = &*sink.0;
                m.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        lines
    }

    fn snapshot(&self) -> Vec<String> {
        self.0.0.lock().unwrap().clone()
    }

    /// Waits (up to `limit`) for a line at index `from` or later matching `pred`; returns its
    /// index and parse.
    fn wait_for<T>(
        &self,
        from: usize,
        limit: Duration,
        what: &str,
        mut pred: impl FnMut(&str) -> Option<T>,
    ) -> (usize, T) {
        let deadline = Instant::now() + limit;
        let (m, cv) = &*self.0;
        let mut lines = m.lock().unwrap();
        loop {
            for (i, l) in lines.iter().enumerate().skip(from) {
                if let Some(t) = pred(l) {
                    return (i, t);
                }
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out after {limit:?} waiting for {what}"
            );
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

/// A running launcher; on drop (a failed test) it and every service it started are killed.
struct Launcher {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    _data: tempfile::TempDir,
}

impl Launcher {
    fn start(envs: &[(&str, String)]) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orly-launcher"));
        // Only what the test sets: no ORLY_* from the developer's shell leaks in.
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ORLY_DATA_DIR", data.path())
            .env("ORLY_DB_LISTEN", "127.0.0.1:0")
            .env("ORLY_RELAY_LISTEN", "127.0.0.1:0")
            .env("ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN", "127.0.0.1:0")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn orly-launcher");
        let stdout = Lines::collect(child.stdout.take().expect("stdout"), "out");
        let stderr = Lines::collect(child.stderr.take().expect("stderr"), "err");
        Self {
            child,
            stdout,
            stderr,
            _data: data,
        }
    }

    fn with_sync() -> Self {
        Self::start(&[("ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED", "true".into())])
    }

    /// Waits for "all services ready" and returns each service's (address, pid), in start order.
    fn ready(&self) -> Vec<(String, SocketAddr, u32)> {
        let (end, ()) = self
            .stdout
            .wait_for(0, START_LIMIT, "all services ready", |l| {
                (l == "[orly-launcher] all services ready").then_some(())
            });
        self.stdout.snapshot()[..end]
            .iter()
            .filter_map(|l| parse_ready(l))
            .collect()
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self) -> ExitStatus {
        signal("-TERM", self.child.id());
        self.wait_exit(STOP_LIMIT)
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "launcher still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The services run in their own process groups: kill the ones still alive, checking
        // the pid still belongs to an orly service first.
        for pid in started_pids(&self.stdout.snapshot()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("orly-") {
                signal("-KILL", pid);
            }
        }
    }
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// True while `pid` exists (a zombie counts: not yet reaped by anyone).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// "[orly-launcher] NAME ready on ADDR (pid N)".
fn parse_ready(line: &str) -> Option<(String, SocketAddr, u32)> {
    let rest = line.strip_prefix("[orly-launcher] ")?;
    let (name, rest) = rest.split_once(" ready on ")?;
    let (addr, rest) = rest.split_once(" (pid ")?;
    Some((
        name.to_string(),
        addr.parse().ok()?,
        rest.strip_suffix(')')?.parse().ok()?,
    ))
}

/// Pids from "[orly-launcher] NAME started: pid N".
fn started_pids(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.split_once(" started: pid ")?.1.parse().ok())
        .collect()
}

fn count_starts(lines: &[String], name: &str) -> usize {
    let prefix = format!("[orly-launcher] {name} started: pid ");
    lines.iter().filter(|l| l.starts_with(&prefix)).count()
}

/// One gRPC health `Check`, bounded.
fn health(addr: SocketAddr, service: &str) -> Result<i32, String> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let call = async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let mut client = HealthClient::new(channel);
            let r = client
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await
                .map_err(|s| format!("check: {s}"))?;
            Ok(r.into_inner().status)
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .map_err(|_| "health check timed out".to_string())?
    })
}

const SERVING: i32 = 1;

/// Kills `name` with SIGKILL, waits for the launcher to report it ready again, and returns the
/// new (address, pid).
fn crash_and_wait_for_restart(l: &Launcher, name: &str, old_pid: u32) -> (SocketAddr, u32) {
    let from = l.stdout.snapshot().len();
    signal("-KILL", old_pid);
    let (_, (addr, pid)) =
        l.stdout
            .wait_for(from, RESTART_LIMIT, &format!("{name} restarted"), |line| {
                parse_ready(line)
                    .filter(|(n, _, _)| n == name)
                    .map(|(_, a, p)| (a, p))
            });
    assert_ne!(pid, old_pid, "{name} should be a new process");
    assert!(!alive(old_pid), "the killed {name} was reaped");
    (addr, pid)
}

#[test]
fn a_killed_service_is_restarted_and_healthy_again() {
    let t0 = Instant::now();
    let mut l = Launcher::with_sync();
    let ready = l.ready();
    let names: Vec<&str> = ready.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["orly-db", "orly-relay", "orly-sync-negentropy"]);
    eprintln!("all ready after {:?}", t0.elapsed());
    let (_, db_addr, db_pid) = ready[0];
    let (_, sync_addr, sync_pid) = ready[2];
    assert_eq!(health(db_addr, "orlydb.v1.DatabaseService"), Ok(SERVING));
    // The launcher gave orly-db a secret only its services know: anyone else is refused.
    {
        use orly::store::Store;
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let outsider = rt
            .block_on(orly::store::RemoteStore::connect(
                &db_addr.to_string(),
                None,
            ))
            .expect("client");
        let refused = rt
            .block_on(outsider.ready())
            .expect_err("no secret, no store");
        assert!(refused.to_string().contains("ORLY_DB_TOKEN"), "{refused}");
    }

    let t1 = Instant::now();
    let (addr, _) = crash_and_wait_for_restart(&l, "orly-db", db_pid);
    assert_eq!(
        addr, db_addr,
        "a restart keeps the address the others were given"
    );
    assert_eq!(health(addr, "orlydb.v1.DatabaseService"), Ok(SERVING));
    eprintln!("orly-db back after {:?}", t1.elapsed());

    let (addr, _) = crash_and_wait_for_restart(&l, "orly-sync-negentropy", sync_pid);
    assert_eq!(addr, sync_addr);
    assert_eq!(
        health(addr, "orlysync.negentropy.v1.NegentropyService"),
        Ok(SERVING)
    );

    let out = l.stdout.snapshot();
    assert!(
        out.iter()
            .any(|x| x.starts_with("[orly-launcher] orly-db exited (signal: 9")),
        "the crash is reported"
    );
    assert!(
        out.iter()
            .any(|x| x.starts_with("[orly-db] orly-db listening on ")),
        "service output is prefixed with its name"
    );
    assert!(l.terminate().success());
}

/// A service that stays alive but stops answering (here: frozen with SIGSTOP, as a deadlock
/// or a wedged disk would leave it) fails its health probes, and the launcher kills it and
/// starts a new one on the same address.
#[test]
fn a_hung_service_is_killed_and_restarted() {
    let mut l = Launcher::start(&[
        ("ORLY_LAUNCHER_LIVENESS_INTERVAL", "0.3".into()),
        ("ORLY_LAUNCHER_LIVENESS_FAILURES", "2".into()),
        ("ORLY_LAUNCHER_STOP_TIMEOUT", "1".into()),
    ]);
    let ready = l.ready();
    let (_, relay_addr, relay_pid) = ready
        .iter()
        .find(|(n, _, _)| n == "orly-relay")
        .cloned()
        .expect("orly-relay started");
    // Healthy services are left alone: a few probe intervals pass without a restart.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count_starts(&l.stdout.snapshot(), "orly-relay"), 1);

    let from = l.stdout.snapshot().len();
    signal("-STOP", relay_pid);
    let (_, (addr, pid)) = l.stdout.wait_for(
        from,
        RESTART_LIMIT,
        "the hung orly-relay restarted",
        |line| {
            parse_ready(line)
                .filter(|(n, _, _)| n == "orly-relay")
                .map(|(_, a, p)| (a, p))
        },
    );
    assert_ne!(pid, relay_pid, "a new process");
    assert_eq!(addr, relay_addr, "on the same address");
    assert!(!alive(relay_pid), "the hung process was killed and reaped");
    let out = l.stdout.snapshot();
    assert!(
        out.iter().any(
            |x| x.starts_with("[orly-launcher] orly-relay failed 2 health probes")
                && x.contains("killed")
        ),
        "the hang is reported: {out:#?}"
    );
    assert!(l.terminate().success());
}

#[test]
fn sigterm_stops_every_service_in_reverse_order_and_exits_zero() {
    let mut l = Launcher::with_sync();
    let ready = l.ready();
    assert_eq!(ready.len(), 3);
    for (name, _, pid) in &ready {
        assert!(alive(*pid), "{name} runs");
    }
    let t0 = Instant::now();
    let status = l.terminate();
    eprintln!("stopped after {:?}", t0.elapsed());
    assert_eq!(status.code(), Some(0), "exit status {status}");
    for (name, _, pid) in &ready {
        assert!(!alive(*pid), "{name} (pid {pid}) is gone");
    }
    // Reverse order, each stopped by SIGTERM (exit 0), none killed.
    let stopped: Vec<String> = l
        .stdout
        .snapshot()
        .iter()
        .filter_map(|x| {
            let rest = x.strip_prefix("[orly-launcher] ")?;
            rest.contains(") stopped (exit status: 0)")
                .then(|| rest.split(' ').next().unwrap_or_default().to_string())
        })
        .collect();
    assert_eq!(stopped, ["orly-sync-negentropy", "orly-relay", "orly-db"]);
}

#[test]
fn a_service_that_cannot_start_fails_the_launcher_by_name_without_a_restart_storm() {
    // Held for the whole test: orly-relay cannot bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let t0 = Instant::now();
    let mut l = Launcher::start(&[("ORLY_RELAY_LISTEN", addr.to_string())]);
    let status = l.wait_exit(START_LIMIT);
    let took = t0.elapsed();
    eprintln!("launcher gave up after {took:?}");
    assert!(!status.success(), "exit status {status}");
    assert_eq!(status.code(), Some(1));

    let err = l
        .stderr
        .wait_for(0, Duration::from_secs(5), "the error", |x| {
            x.starts_with("orly-launcher: ").then(|| x.to_string())
        });
    let expected = format!("orly-launcher: orly-relay failed to start on {addr} (3 attempt(s))");
    assert!(err.1.starts_with(&expected), "{}", err.1);
    assert!(
        err.1.contains("cannot listen on"),
        "the relay's own reason is passed on: {}",
        err.1
    );

    let out = l.stdout.snapshot();
    assert_eq!(count_starts(&out, "orly-relay"), 3, "bounded attempts");
    assert_eq!(count_starts(&out, "orly-db"), 1, "orly-db is not restarted");
    for pid in started_pids(&out) {
        assert!(!alive(pid), "pid {pid} was stopped");
    }
    assert!(took < Duration::from_secs(60), "took {took:?}");
    drop(taken);
}

#[test]
fn bad_configuration_is_reported_whole_before_anything_starts() {
    let mut l = Launcher::start(&[
        ("ORLY_DB_LISTEN", "not an address".into()),
        ("ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED", "perhaps".into()),
        ("ORLY_LAUNCHER_STOP_TIMEOUT", "0".into()),
    ]);
    let status = l.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(2));
    let (_, ()) = l
        .stderr
        .wait_for(0, Duration::from_secs(5), "the errors", |x| {
            x.contains("ORLY_LAUNCHER_STOP_TIMEOUT").then_some(())
        });
    let err = l.stderr.snapshot().join("\n");
    assert!(err.contains("ORLY_DB_LISTEN"), "{err}");
    assert!(
        err.contains("ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED"),
        "{err}"
    );
    assert!(started_pids(&l.stdout.snapshot()).is_empty());
}

#[test]
fn the_sync_service_behind_mtls_is_probed_with_a_client_certificate() {
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let admins = ["alice".to_string(), "probe".to_string()];
    let pki = orly::auth::init_dev_pki(pki_dir.path(), &admins, &[], 1, false).expect("dev pki");
    // The probe's certificate is signed by the client CA but named in no policy: it can pass
    // the TLS handshake and ask for health, nothing else.
    let policy = pki_dir.path().join("policy.toml");
    let starter = orly::policy::starter_policy(&admins[..1]).expect("policy");
    std::fs::write(&policy, starter).expect("write policy");
    let probe = &pki.admins[1];
    let p = |x: &std::path::Path| x.display().to_string();
    let mut l = Launcher::start(&[
        ("ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED", "true".into()),
        ("ORLY_TLS_CERT", p(&pki.server_cert)),
        ("ORLY_TLS_KEY", p(&pki.server_key)),
        ("ORLY_TLS_CLIENT_CA", p(&pki.ca_cert)),
        ("ORLY_POLICY", p(&policy)),
        ("ORLY_TOKEN_KEYS", p(&pki.token_pub)),
        ("ORLY_AUDIT_DIR", p(&pki_dir.path().join("audit"))),
        ("ORLY_LAUNCHER_HEALTH_CERT", p(&probe.cert)),
        ("ORLY_LAUNCHER_HEALTH_KEY", p(&probe.key)),
    ]);
    let ready = l.ready();
    assert_eq!(ready.len(), 3);
    let (_, sync_addr, _) = ready[2];
    assert!(
        health(sync_addr, "orlysync.negentropy.v1.NegentropyService").is_err(),
        "plaintext is refused: the service really is behind TLS"
    );
    assert!(l.terminate().success());
}
