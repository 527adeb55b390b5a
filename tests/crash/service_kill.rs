//! `kill -9` of `orly-sync-negentropy` (mTLS, tokens, the starter policy, a signed audit log)
//! while two client-mode syncs run through it, at seeded random points: the service's store and
//! both relays' stores pass `orly stats --check`, `orly audit verify` passes (reporting the cut
//! syncs as interrupted), the restarted service runs the same syncs to convergence, a second
//! rerun moves nothing, and the audit log verifies again, across every round's restart.

use super::harness::*;
use super::pki::Pki;
use crate::common::*;
use std::time::Instant;

#[test]
fn kill_9_of_the_sync_service_during_client_syncs() {
    let t0 = Instant::now();
    let mut rng = Rng::for_target("service");
    let tmp = tempfile::tempdir().unwrap();
    let sets = Sets::new(tmp.path(), 34);
    let pki = Pki::init(&tmp.path().join("pki"), "alice");
    let audit = tmp.path().join("audit");
    let mut killed = 0;
    for round in 1..=rounds() {
        let point = KillPoint::pick(&mut rng);
        let when = format!("service, round {round} ({point:?})");
        let (store, both, up) = (
            tmp.path().join(format!("service{round}")),
            tmp.path().join(format!("both{round}")),
            tmp.path().join(format!("up{round}")),
        );
        copy_dir(&sets.a, &store);
        copy_dir(&sets.b, &both);
        let (r_both, r_up) = (relay(&both, &[]), relay(&up, &[]));
        let (u_both, u_up) = (
            format!("ws://{}", r_both.addr),
            format!("ws://{}", r_up.addr),
        );
        // The same two syncs before and after the kill: both ways with one relay, and up
        // into another (empty) relay.
        let args = |addr: &str, dir: &str| {
            let mut a = pki.client("alice", addr);
            a.extend(strings(&["--dir", dir]));
            a
        };

        let mut svc = pki.service(&store, &audit);
        let mut first = start_sync(&u_both, &args(&svc.addr, "both"));
        let second = start_sync(&u_up, &args(&svc.addr, "up"));
        let landed = first.kill_at(point, Victim::Other(&mut svc.child));
        let cut: Vec<Done> = [first.wait(), second.wait()].into();
        for d in &cut {
            d.no_panic(&when);
            assert!(
                [0, 6].contains(&d.code),
                "{when}: a sync whose service died must end incomplete (6): {d:?}"
            );
        }
        killed += usize::from(!landed.sync_had_ended);
        drop(svc);
        check_all(&[&store], &format!("{when}, after the kill"));
        let report = pki.verify(&audit, &format!("{when}, after the kill"));
        // A sync that streamed progress had its allow record written before it started; cut
        // short, it has no finished record.
        if cut.iter().any(|d| d.code == 6 && d.seen > 0) {
            assert!(
                report.contains("interrupted syncs"),
                "{when}: a sync cut short is not reported interrupted:\n{report}"
            );
        }

        let svc = pki.service(&store, &audit);
        run_sync(&u_both, &args(&svc.addr, "both")).converged(&format!("{when}, rerun both"));
        run_sync(&u_up, &args(&svc.addr, "up")).converged(&format!("{when}, rerun up"));
        run_sync(&u_both, &args(&svc.addr, "both"))
            .moved_nothing(&format!("{when}, second rerun both"));
        run_sync(&u_up, &args(&svc.addr, "up")).moved_nothing(&format!("{when}, second rerun up"));
        stop(svc, &when);
        stop(r_both, &when);
        stop(r_up, &when);
        check_all(&[&store, &both, &up], &format!("{when}, converged"));
        let report = pki.verify(&audit, &format!("{when}, after the restart"));
        assert!(
            !report.contains("interrupted syncs ("),
            "{when}: the restart did not record the cut syncs:\n{report}"
        );
        for (name, dir) in [("service", &store), ("both", &both), ("up", &up)] {
            assert!(
                id_set(dir) == sets.union,
                "{when}: the {name} store is not the merged set"
            );
        }
        eprintln!(
            "{when}: {landed:?}, client exits {:?}",
            cut.iter().map(|d| d.code).collect::<Vec<_>>()
        );
    }
    assert!(killed > 0, "no kill landed while a sync ran");
    eprintln!(
        "service: {killed} of {} kills mid-sync, {:.1?}",
        rounds(),
        t0.elapsed()
    );
}
