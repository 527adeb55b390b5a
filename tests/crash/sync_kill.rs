//! `kill -9` of a direct-mode `orly sync` (down into our store, up into an `orly-relay`'s
//! store) and of `orly-relay` while clients write to it, at seeded random points: every store
//! involved passes `orly stats --check`, the same sync run again converges (exit 0) to the
//! merged set, and a second rerun moves nothing; events the relay acknowledged survive its kill.

use super::harness::*;
use crate::common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn data_dir(dir: &Path) -> Vec<String> {
    strings(&["--data-dir", dir.to_str().unwrap()])
}

#[test]
fn kill_9_of_sync_down_into_our_store() {
    let t0 = Instant::now();
    let mut rng = Rng::for_target("sync-down");
    let tmp = tempfile::tempdir().unwrap();
    let sets = Sets::new(tmp.path(), 31);
    let remote = tmp.path().join("remote");
    copy_dir(&sets.b, &remote);
    let rl = relay(&remote, &[]);
    let url = format!("ws://{}", rl.addr);
    let mut killed = 0;
    for round in 1..=rounds() {
        let point = KillPoint::pick(&mut rng);
        let when = format!("sync down, round {round} ({point:?})");
        let local = tmp.path().join(format!("local{round}"));
        copy_dir(&sets.a, &local);
        let mut args = data_dir(&local);
        args.extend(strings(&["--dir", "down"]));

        let mut run = start_sync(&url, &args);
        let landed = run.kill_at(point, Victim::Sync);
        let done = run.wait();
        done.no_panic(&when);
        killed += usize::from(!landed.sync_had_ended);
        check_all(&[&local], &format!("{when}, after the kill"));

        run_sync(&url, &args).converged(&format!("{when}, rerun"));
        run_sync(&url, &args).moved_nothing(&format!("{when}, second rerun"));
        check_all(&[&local], &format!("{when}, converged"));
        assert!(id_set(&local) == sets.union, "{when}: not the merged set");
        eprintln!("{when}: {landed:?}, exit {}", done.code);
    }
    stop(rl, "sync down");
    check_all(&[&remote], "sync down, the relay's store");
    assert!(killed > 0, "no kill landed while a sync ran");
    eprintln!(
        "sync down: {killed} of {} kills mid-sync, {:.1?}",
        rounds(),
        t0.elapsed()
    );
}

#[test]
fn kill_9_of_sync_up_into_a_relays_store() {
    let t0 = Instant::now();
    let mut rng = Rng::for_target("sync-up");
    let tmp = tempfile::tempdir().unwrap();
    let sets = Sets::new(tmp.path(), 32);
    let local = tmp.path().join("local");
    copy_dir(&sets.a, &local);
    let mut args = data_dir(&local);
    args.extend(strings(&["--dir", "up"]));
    let mut killed = 0;
    for round in 1..=rounds() {
        let point = KillPoint::pick(&mut rng);
        let when = format!("sync up, round {round} ({point:?})");
        let remote = tmp.path().join(format!("remote{round}"));
        copy_dir(&sets.b, &remote);
        let rl = relay(&remote, &[]);
        let url = format!("ws://{}", rl.addr);

        let mut run = start_sync(&url, &args);
        let landed = run.kill_at(point, Victim::Sync);
        let done = run.wait();
        done.no_panic(&when);
        killed += usize::from(!landed.sync_had_ended);
        stop(rl, &when);
        check_all(&[&local, &remote], &format!("{when}, after the kill"));

        let rl = relay(&remote, &[]);
        let url = format!("ws://{}", rl.addr);
        run_sync(&url, &args).converged(&format!("{when}, rerun"));
        run_sync(&url, &args).moved_nothing(&format!("{when}, second rerun"));
        stop(rl, &when);
        check_all(&[&local, &remote], &format!("{when}, converged"));
        assert!(id_set(&remote) == sets.union, "{when}: not the merged set");
        eprintln!("{when}: {landed:?}, exit {}", done.code);
    }
    assert!(killed > 0, "no kill landed while a sync ran");
    eprintln!(
        "sync up: {killed} of {} kills mid-sync, {:.1?}",
        rounds(),
        t0.elapsed()
    );
}

/// Publishes `events` one at a time over a WebSocket, each waiting for its `OK`, until the
/// list ends or the connection fails; records the ids the relay accepted.
fn publish(addr: String, events: Vec<Event>, acked: Arc<Mutex<Vec<String>>>) {
    use tokio_tungstenite::tungstenite::{Message, client};
    let Ok(tcp) = std::net::TcpStream::connect(&addr) else {
        return;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok((mut ws, _)) = client(format!("ws://{addr}/"), tcp) else {
        return;
    };
    for e in events {
        let msg = format!("[\"EVENT\",{}]", e.to_json());
        if ws.send(Message::text(msg)).is_err() {
            return;
        }
        loop {
            let Ok(m) = ws.read() else { return };
            let Ok(text) = m.to_text() else { continue };
            let v: serde_json::Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v[0] == "OK" && v[1] == e.id_hex().as_str() {
                assert_eq!(v[2], true, "the relay refused a valid event: {v}");
                acked.lock().unwrap().push(e.id_hex());
                break;
            }
        }
    }
}

#[test]
fn kill_9_of_the_relay_while_clients_write() {
    let t0 = Instant::now();
    let mut rng = Rng::for_target("relay");
    let tmp = tempfile::tempdir().unwrap();
    let sets = Sets::new(tmp.path(), 33);
    let local = tmp.path().join("local");
    copy_dir(&sets.a, &local);
    let mut args = data_dir(&local);
    args.extend(strings(&["--dir", "up"]));
    let mut killed = 0;
    for round in 1..=rounds() {
        let point = KillPoint::pick(&mut rng);
        let when = format!("relay, round {round} ({point:?})");
        let remote = tmp.path().join(format!("remote{round}"));
        copy_dir(&sets.b, &remote);
        let published = notes(&format!("writer {round}"), 1500, GEN_UNTIL - 500_000);
        let mut rl = relay(&remote, &[]);
        let url = format!("ws://{}", rl.addr);

        // Two writers: an upload, and a client publishing events one by one.
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (addr, evs, acked) = (rl.addr.clone(), published.clone(), acked.clone());
            std::thread::spawn(move || publish(addr, evs, acked))
        };
        let mut run = start_sync(&url, &args);
        let landed = run.kill_at(point, Victim::Other(&mut rl.child));
        let done = run.wait();
        done.no_panic(&when);
        assert!(
            [0, 6].contains(&done.code),
            "{when}: a sync whose relay died must end incomplete (6): {done:?}"
        );
        writer.join().expect("writer thread");
        let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
        killed += usize::from(!landed.sync_had_ended);
        check_all(&[&local, &remote], &format!("{when}, after the kill"));
        let stored = id_set(&remote);
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "{when}: acknowledged events lost: {lost:?}"
        );

        let rl = relay(&remote, &[]);
        let url = format!("ws://{}", rl.addr);
        run_sync(&url, &args).converged(&format!("{when}, rerun"));
        run_sync(&url, &args).moved_nothing(&format!("{when}, second rerun"));
        stop(rl, &when);
        check_all(&[&local, &remote], &format!("{when}, converged"));
        let stored = id_set(&remote);
        let written: BTreeSet<String> = ids_of(&published).into_iter().collect();
        let rest: BTreeSet<String> = stored.difference(&written).cloned().collect();
        assert!(rest == sets.union, "{when}: not the merged set");
        assert!(acked.is_subset(&stored), "{when}");
        eprintln!(
            "{when}: {landed:?}, sync exit {}, {} of {} published acknowledged",
            done.code,
            acked.len(),
            published.len()
        );
    }
    assert!(killed > 0, "no kill landed while a sync ran");
    eprintln!(
        "relay: {killed} of {} kills mid-sync, {:.1?}",
        rounds(),
        t0.elapsed()
    );
}
