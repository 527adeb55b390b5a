//! `Stop` stops background syncs (the running one finishes), `TriggerSync` still runs one, `Start`
//! resumes them.

use super::common::{import, notes, relay};
use super::harness::*;

use orly::proto::orlysync::common::v1 as cpb;
use orly::proto::orlysync::negentropy::v1 as npb;
use std::time::Duration;

async fn list_syncs(c: &mut Client) -> Vec<npb::SyncStatus> {
    c.list_syncs(npb::ListSyncsRequest {})
        .await
        .expect("ListSyncs")
        .into_inner()
        .syncs
}

/// The syncs of `url` ListSyncs shows, and whether any of them runs.
async fn syncs_of(c: &mut Client, url: &str) -> (Vec<npb::SyncStatus>, bool) {
    let all: Vec<npb::SyncStatus> = list_syncs(c)
        .await
        .into_iter()
        .filter(|s| s.progress.as_ref().is_some_and(|p| p.peer_url == url))
        .collect();
    let running = all.iter().any(|s| s.running);
    (all, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_pauses_the_loop_trigger_still_syncs_start_resumes() {
    bounded(start_stop_trigger()).await;
}

async fn start_stop_trigger() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    tokio::task::block_in_place(|| import(&relay_dir, &notes("bg3", 5, T0)));
    let rl = tokio::task::block_in_place(|| relay(&relay_dir, &[]));
    let url = relay_url(&rl);
    let svc = plain_service(
        &tmp.path().join("store"),
        &tmp.path().join("state"),
        &[&url],
    );
    let mut c = plain_client(&svc).await;

    // Running: the peer syncs again and again.
    wait_until("two background syncs", || {
        let mut c = c.clone();
        let url = url.clone();
        async move {
            let (s, _) = syncs_of(&mut c, &url).await;
            if s.len() >= 2 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        }
    })
    .await;
    let (s, _) = syncs_of(&mut c, &url).await;
    assert!(
        s.iter()
            .all(|s| s.admin == "(operator)" && s.direction == "both"),
        "background syncs of an operator peer are the operator's: {s:#?}"
    );

    // Stopped: the running sync finishes; no new one starts over three intervals.
    c.stop(cpb::Empty {}).await.expect("Stop");
    assert!(!status(&mut c).await.active, "Stop: not active");
    // A sync the loop picked just before Stop may still be registering.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = wait_until("the running sync to finish", || {
        let mut c = c.clone();
        let url = url.clone();
        async move {
            match syncs_of(&mut c, &url).await {
                (s, false) => Ok(s.len()),
                (s, true) => Err(format!("{s:?}")),
            }
        }
    })
    .await;
    let last_before = peer_state(&mut c, &url).await.unwrap().last_sync;
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let (s, _) = syncs_of(&mut c, &url).await;
    assert_eq!(s.len(), stopped, "no background sync while stopped: {s:#?}");

    // TriggerSync runs the peer once, stopped or not.
    c.trigger_sync(npb::TriggerSyncRequest {
        peer_url: url.clone(),
        ..Default::default()
    })
    .await
    .expect("TriggerSync");
    let triggered = wait_until("the triggered sync to run and finish", || {
        let mut c = c.clone();
        let url = url.clone();
        async move {
            match syncs_of(&mut c, &url).await {
                (s, false) if s.len() > stopped => Ok(s.len()),
                (s, _) => Err(format!("{s:?}")),
            }
        }
    })
    .await;
    assert_eq!(triggered, stopped + 1, "one sync per trigger");
    let st = peer_state(&mut c, &url).await.unwrap();
    assert!(
        st.last_sync >= last_before && st.status == "idle",
        "the triggered sync is recorded: {st:?}"
    );
    assert!(
        !status(&mut c).await.active,
        "a trigger does not start the loop"
    );
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (s, _) = syncs_of(&mut c, &url).await;
    assert_eq!(
        s.len(),
        triggered,
        "still stopped after the trigger: {s:#?}"
    );

    // Started again: syncs resume.
    c.start(cpb::Empty {}).await.expect("Start");
    assert!(status(&mut c).await.active, "Start: active");
    wait_until("background syncs to resume", || {
        let mut c = c.clone();
        let url = url.clone();
        async move {
            let (s, _) = syncs_of(&mut c, &url).await;
            if s.len() >= triggered + 2 {
                Ok(())
            } else {
                Err(format!("{} syncs", s.len()))
            }
        }
    })
    .await;
    tokio::task::block_in_place(|| {
        svc.terminate();
        rl.terminate();
    });
}
