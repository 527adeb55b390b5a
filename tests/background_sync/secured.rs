//! On a secured service, a background sync is its owner's, checked against the owner's current
//! policy and recorded at `orly:peer-loop` (the operator's peers as `(operator)`), across a
//! policy change and a restart; an `AddPeer` the policy refuses is PERMISSION_DENIED with exactly
//! one record.

use super::common::{import, notes, relay};
use super::harness::*;
use super::{gateway, nrb};

use orly::proto::orlysync::common::v1 as cpb;
use orly::proto::orlysync::negentropy::v1 as npb;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn alice_policy(peers: &str) -> String {
    gateway::policy_toml(
        "",
        &[gateway::AdminSpec {
            peers,
            extra: "rights = [\"manage_peers\"]",
            ..gateway::AdminSpec::open("alice")
        }],
    )
}

fn rec_is(r: &Value, event: &str, rpc: &str, admin: &str, peer: &str) -> bool {
    gateway::s(r, "event") == event
        && gateway::s(r, "rpc") == rpc
        && gateway::s(r, "admin") == admin
        && gateway::s(r, "peer").contains(peer)
}

const LOOP_PATH: &str = "orly:peer-loop";
const ADD_PEER_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/AddPeer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secured_background_syncs_follow_the_owners_policy_and_are_audited() {
    bounded(secured_loop()).await;
}

async fn secured_loop() {
    let fx = gateway::Fixture::with_policy(&alice_policy("\"ws://127.0.0.1:*\""));
    let relay_dir = fx.root.join("relay");
    tokio::task::block_in_place(|| import(&relay_dir, &notes("bg4-op", 5, T0)));
    let rl = tokio::task::block_in_place(|| relay(&relay_dir, &[]));
    let op_url = relay_url(&rl);
    let nrb = nrb::local_relay(&notes("bg4-alice", 5, T0 + 1000), nrb::no_rate_limit()).await;
    let alice_url = format!("{}/", nrb.url);
    let mut env = fx.env();
    env.push(("ORLY_SYNC_NEGENTROPY_PEERS", op_url.clone()));
    env.push(("ORLY_SYNC_NEGENTROPY_INTERVAL", "1s".into()));
    let peer_state_dir = fx.root.join("peer-state").display().to_string();
    env.push(("ORLY_SYNC_NEGENTROPY_STATE_DIR", peer_state_dir));
    let data = fx.root.join("store").display().to_string();
    let start = |n: u32| {
        let cmd = gateway::service_command(
            &["--listen", "127.0.0.1:0", "--data-dir", &data],
            &env,
            gateway::SERVICE_LOG,
            &fx.log_path(n),
        );
        tokio::task::block_in_place(|| gateway::start_command(cmd, &fx.log_path(n)))
    };
    let svc = start(1);
    let cert = fx.client("alice");
    let token = fx.token("alice", &cert);
    let ch = gateway::connect(&svc.addr, &fx.ca_pem, &cert).await;
    let mut c = gateway::client(&ch);
    let audit = fx.audit_dir.clone();

    // AddPeer outside alice's patterns: refused, one record.
    let trace = gateway::trace_id(4001);
    let before = gateway::audit_records(&audit);
    let outside = "ws://127.0.0.2:7/";
    let r = c
        .add_peer(gateway::traced(
            npb::AddPeerRequest {
                peer_url: outside.into(),
                ..Default::default()
            },
            Some(&token),
            &trace,
        ))
        .await;
    let st = r.expect_err("AddPeer outside alice's peers is refused");
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    let recs = gateway::new_records(&audit, before.len(), 1).await;
    let of_call: Vec<Value> = recs
        .iter()
        .filter(|r| gateway::s(r, "trace_id") == trace || gateway::s(r, "rpc") == ADD_PEER_PATH)
        .cloned()
        .collect();
    gateway::check_one_refusal(
        &of_call,
        &gateway::Refused {
            reason: "policy",
            rpc: Some(ADD_PEER_PATH),
            trace: Some(&trace),
            admin: Some("alice"),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("AddPeer refusal: {e}"));
    assert!(
        !gateway::s(&of_call[0], "peer").is_empty(),
        "the refusal names the peer: {}",
        of_call[0]
    );
    let peers_now = c
        .get_peers(gateway::request(cpb::Empty {}, &token))
        .await
        .expect("GetPeers")
        .into_inner()
        .peers;
    assert_eq!(peers_now, vec![op_url.clone()], "nothing added");

    // AddPeer inside them: alice's peer, synced in the background as alice's.
    c.add_peer(gateway::request(
        npb::AddPeerRequest {
            peer_url: alice_url.clone(),
            ..Default::default()
        },
        &token,
    ))
    .await
    .expect("AddPeer of a peer alice's policy allows");
    let state = |url: String| {
        let mut c = c.clone();
        let token = token.clone();
        async move {
            c.get_peer_sync_state(gateway::request(
                npb::PeerSyncStateRequest { peer_url: url },
                &token,
            ))
            .await
            .expect("GetPeerSyncState")
            .into_inner()
            .state
        }
    };
    for (url, owner) in [(&alice_url, "alice"), (&op_url, "")] {
        let s = wait_until(&format!("{url} synced"), || {
            let state = state(url.clone());
            async move {
                match state.await {
                    Some(s) if s.status == "idle" && s.last_sync > 0 && s.events_synced > 0 => {
                        Ok(s)
                    }
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        assert_eq!(s.owner, owner, "{s:?}");
    }
    let added = gateway::audit_records(&audit);
    assert!(
        added.iter().any(
            |r| rec_is(r, "decision", ADD_PEER_PATH, "alice", &alice_url)
                && r["allowed"] == Value::Bool(true)
        ),
        "the AddPeer allowed is recorded"
    );
    gateway::wait_records(
        &audit,
        "alice's and the operator's background records",
        |recs| {
            let has = |event: &str, admin: &str, peer: &str| {
                recs.iter()
                    .any(|r| rec_is(r, event, LOOP_PATH, admin, peer))
            };
            has("decision", "alice", &alice_url)
                && has("sync_finished", "alice", &alice_url)
                && has("decision", "(operator)", &op_url)
                && has("sync_finished", "(operator)", &op_url)
        },
    )
    .await;
    let recs = gateway::audit_records(&audit);
    for r in recs.iter().filter(|r| gateway::s(r, "rpc") == LOOP_PATH) {
        let want = if gateway::s(r, "peer").contains(&alice_url) {
            "alice"
        } else {
            "(operator)"
        };
        assert_eq!(gateway::s(r, "admin"), want, "loop record: {r}");
        if gateway::s(r, "event") == "decision" {
            assert_eq!(r["allowed"], Value::Bool(true), "before narrowing: {r}");
        }
    }

    // Alice's policy narrowed: her peer's next background sync is refused, the operator's
    // peer goes on.
    fx.write_policy(&alice_policy("\"wss://relay.example.com/\""));
    let narrowed_at = Instant::now();
    let refused = wait_until("alice's peer refused by policy", || {
        let state = state(alice_url.clone());
        async move {
            match state.await {
                Some(s)
                    if s.status == "error" && s.last_error.to_lowercase().contains("policy") =>
                {
                    Ok(s)
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(refused.consecutive_failures >= 1, "{refused:?}");
    assert!(
        narrowed_at.elapsed() < Duration::from_secs(10),
        "refused within the reload delay and an interval: {:?}",
        narrowed_at.elapsed()
    );
    let recs = gateway::wait_records(&audit, "the refusal of alice's background sync", |recs| {
        recs.iter().any(|r| {
            rec_is(r, "decision", LOOP_PATH, "alice", &alice_url)
                && r["allowed"] == Value::Bool(false)
                && gateway::s(r, "reason").to_lowercase().contains("policy")
        })
    })
    .await;
    let op_last = state(op_url.clone()).await.unwrap().last_sync;
    wait_until("the operator's peer to sync again", || {
        let state = state(op_url.clone());
        async move {
            match state.await {
                Some(s) if s.last_sync > op_last && s.status == "idle" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(
        recs.iter()
            .all(|r| gateway::s(r, "rpc") != LOOP_PATH || !gateway::s(r, "admin").is_empty()),
        "every loop record names its admin"
    );

    // Restarted over the same state: alice's peer is still hers, with its state; its syncs
    // are still refused by her narrowed policy.
    tokio::task::block_in_place(|| svc.terminate());
    let svc = start(2);
    let ch = gateway::connect(&svc.addr, &fx.ca_pem, &cert).await;
    let mut c = gateway::client(&ch);
    let listed: BTreeSet<String> = c
        .get_peers(gateway::request(cpb::Empty {}, &token))
        .await
        .expect("GetPeers after restart")
        .into_inner()
        .peers
        .into_iter()
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([op_url.clone(), alice_url.clone()]),
        "alice's peer survives a restart"
    );
    let kept = c
        .get_peer_sync_state(gateway::request(
            npb::PeerSyncStateRequest {
                peer_url: alice_url.clone(),
            },
            &token,
        ))
        .await
        .expect("GetPeerSyncState after restart")
        .into_inner()
        .state
        .expect("alice's peer state after restart");
    assert_eq!(kept.owner, "alice", "{kept:?}");
    assert!(
        kept.last_sync > 0 && kept.events_synced == refused.events_synced,
        "its state is kept: before {refused:?}, after {kept:?}"
    );
    tokio::task::block_in_place(|| {
        svc.terminate();
        rl.terminate();
    });
    let (code, out) = fx.verify(&audit);
    assert_eq!(code, 0, "the audit log verifies: {out}");
}
