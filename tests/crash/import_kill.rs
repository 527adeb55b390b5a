//! `kill -9` of `orly import` at seeded random times over its whole run (reading and verifying,
//! between and inside batch commits, the final flush and clean close): the store passes
//! `orly stats --check` and holds what some prefix of the input produces, a re-import converges
//! to the full set, and a second re-import stores nothing new. The large-store variant with
//! fixed kill points is `kill_9_mid_import_leaves_a_consistent_prefix_and_reimport_converges`.

use super::harness::*;
use crate::common::*;
use crate::{check, export_ids, fp, replay, summary};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Two batches of 4 096 lines and a short one.
const LINES: u64 = 9_000;

fn import_out(file: &Path, dir: &Path) -> Output {
    Command::new(bin("orly"))
        .args(["import", file.to_str().unwrap(), "--data-dir"])
        .arg(dir)
        .env_remove("ORLY_DATA_DIR")
        .output()
        .unwrap()
}

#[test]
fn kill_9_of_import_at_seeded_points() {
    let t0 = Instant::now();
    let mut rng = Rng::for_target("import");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    gen_file(&file, 35, 0, LINES);
    let events: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (full, prefixes) = replay(&events);

    // How long a whole import takes here, to spread the kills over it.
    let started = Instant::now();
    let out = import_out(&file, &tmp.path().join("whole"));
    assert!(out.status.success());
    let whole = started.elapsed();

    let mut killed = 0;
    for round in 1..=rounds() {
        let at = whole.mul_f64(rng.unit() * 1.1);
        let when = format!("import, round {round} (kill after {at:.1?} of ~{whole:.1?})");
        let dir = tmp.path().join(format!("store{round}"));
        let mut child = Command::new(bin("orly"))
            .args(["import", file.to_str().unwrap(), "--data-dir"])
            .arg(&dir)
            .env_remove("ORLY_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut ended = None;
        while started.elapsed() < at {
            if let Some(st) = child.try_wait().unwrap() {
                ended = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        let st = child.wait().unwrap();
        let ended = ended.or_else(|| st.success().then_some(st));
        killed += usize::from(ended.is_none());

        let count = if dir.exists() {
            check(&dir, &format!("{when}, after the kill"))
        } else {
            0 // killed before it created the store
        };
        if count > 0 {
            let partial = export_ids(&dir);
            let print = partial.iter().fold(0u128, |a, id| a ^ fp(id));
            assert!(
                prefixes.contains_key(&(partial.len(), print)),
                "{when}: the {count} surviving events are not the result of any prefix"
            );
        }

        let out = import_out(&file, &dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{when}: re-import: {err}");
        assert_eq!(summary(&err)["rejected"], 0, "{when}: {err}");
        assert!(
            export_ids(&dir) == full,
            "{when}: re-import did not converge"
        );
        let out = import_out(&file, &dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{when}: second re-import: {err}");
        let s = summary(&err);
        assert_eq!(
            (s["accepted"], s["replaced"], s["rejected"]),
            (0, 0, 0),
            "{when}: a second re-import still stored events: {err}"
        );
        assert_eq!(
            check(&dir, &format!("{when}, converged")),
            full.len() as u64
        );
        eprintln!(
            "{when}: {}, {count} events had survived",
            match ended {
                Some(st) => format!("import had ended ({st})"),
                None => "killed mid-import".into(),
            }
        );
    }
    assert!(killed > 0, "no kill landed while the import ran");
    eprintln!(
        "import: {killed} of {} kills mid-import, {:.1?}",
        rounds(),
        t0.elapsed()
    );
}
