//! The peer list survives a restart: peers added at run time stay with their state, the
//! operator's list is merged in again, and a peer dropped from it goes.

use super::common::{import, notes, relay};
use super::harness::*;
use super::nrb;

use orly::proto::orlysync::negentropy::v1 as npb;
use std::collections::BTreeSet;

/// The state of `url` once its last sync succeeded (idle, `last_sync` > 0) with
/// `events_synced` at least `events`.
async fn synced(c: &mut Client, url: &str, events: i64) -> npb::PeerSyncState {
    wait_until(&format!("{url} synced ({events} events)"), || {
        let mut c = c.clone();
        async move {
            match peer_state(&mut c, url).await {
                Some(s) if s.status == "idle" && s.last_sync > 0 && s.events_synced >= events => {
                    Ok(s)
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_list_survives_restart() {
    bounded(restart_keeps_the_list()).await;
}

async fn restart_keeps_the_list() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, state, relay_dir) = (
        tmp.path().join("store"),
        tmp.path().join("state"),
        tmp.path().join("relay-a"),
    );
    let a = notes("bg2-a", 8, T0);
    let c_events = notes("bg2-c", 8, T0 + 100_000);
    tokio::task::block_in_place(|| import(&relay_dir, &a));
    let rl = tokio::task::block_in_place(|| relay(&relay_dir, &[]));
    let nrb_b = nrb::local_relay(&notes("bg2-b", 8, T0 + 50_000), nrb::no_rate_limit()).await;
    let nrb_c = nrb::local_relay(&c_events, nrb::no_rate_limit()).await;
    let (url_a, url_b, url_c) = (
        relay_url(&rl),
        format!("{}/", nrb_b.url),
        format!("{}/", nrb_c.url),
    );

    let svc = plain_service(&store, &state, &[&url_a, &url_b]);
    let mut c = plain_client(&svc).await;
    synced(&mut c, &url_a, 1).await;
    synced(&mut c, &url_b, 1).await;
    c.add_peer(npb::AddPeerRequest {
        peer_url: url_c.clone(),
        ..Default::default()
    })
    .await
    .expect("AddPeer on the plain service");
    // C's syncs move its own 8 events down and the 16 others up.
    let before = synced(&mut c, &url_c, 24).await;
    c.remove_peer(npb::RemovePeerRequest {
        peer_url: url_a.clone(),
    })
    .await
    .expect("RemovePeer of an operator peer");
    assert_eq!(
        peers(&mut c).await,
        BTreeSet::from([url_b.clone(), url_c.clone()]),
        "RemovePeer takes it off the list"
    );
    assert!(peer_state(&mut c, &url_a).await.is_none());
    tokio::task::block_in_place(|| svc.terminate());

    // Same operator list: the added peer stays with its state, the removed operator peer is
    // back (the operator's list is merged in at every start).
    let mut failures = Vec::new();
    let svc = plain_service(&store, &state, &[&url_a, &url_b]);
    let mut c = plain_client(&svc).await;
    let listed = peers(&mut c).await;
    let after = peer_state(&mut c, &url_c).await;
    for (what, url) in [
        ("operator peer A (removed at run time)", &url_a),
        ("operator peer B", &url_b),
        ("peer C added at run time", &url_c),
    ] {
        if !listed.contains(url.as_str()) {
            failures.push(format!(
                "after restart 1: {what} {url} not listed; listed: {listed:?}"
            ));
        }
    }
    match after {
        None => failures.push(format!(
            "after restart 1: no state for peer C {url_c} added at run time (state before: {before:?})"
        )),
        Some(after) => {
            if !(after.last_sync >= before.last_sync && after.last_sync > 0) {
                failures.push(format!("C's last_sync not kept: before {before:?}, after {after:?}"));
            }
            if after.events_synced != before.events_synced {
                failures.push(format!(
                    "C's events_synced not kept (nothing new to move): before {before:?}, after {after:?}"
                ));
            }
        }
    }
    tokio::task::block_in_place(|| svc.terminate());

    // A peer taken out of the operator's list goes; the one an admin added stays.
    let svc = plain_service(&store, &state, &[&url_b]);
    let mut c = plain_client(&svc).await;
    let listed = peers(&mut c).await;
    let want = BTreeSet::from([url_b.clone(), url_c.clone()]);
    if listed != want {
        failures.push(format!(
            "after restart 2 with ORLY_SYNC_NEGENTROPY_PEERS=B: listed {listed:?}, expected B {url_b} and C {url_c} (A {url_a} gone)"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    tokio::task::block_in_place(|| svc.terminate());
    drop(rl);
}
