//! Tag values that are not UTF-8: an INVALID_ARGUMENT naming the field, never INTERNAL, on every
//! method that takes a filter; the service answers on afterwards.

use super::common::*;
use super::gateway::*;
use super::harness::*;

use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_tag_values_are_invalid_arguments_naming_the_field() {
    tokio::time::timeout(TEST_LIMIT, non_utf8())
        .await
        .expect("test exceeded its time limit");
}

async fn non_utf8() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("alice", ALL_RIGHTS)]));
    let rl = relay_with(&fx, "relay", &notes("orly-neg-utf8", 5, T0));
    let svc = service(&fx, &[], &[]);
    let mut alice = Caller::new(&fx, &svc.addr, "alice").await;
    let bad = || api::Filter {
        tags: [(
            "t".to_string(),
            api::TagSet {
                values: vec![vec![0xff]],
            },
        )]
        .into(),
        ..Default::default()
    };
    let mut failures = Vec::new();
    let mut check = |what: &str, r: Result<(), tonic::Status>| match r {
        Err(st) if st.code() == Code::InvalidArgument && st.message().contains("filter.tags") => {}
        other => failures.push(format!(
            "{what}: expected INVALID_ARGUMENT naming filter.tags, got {other:?}"
        )),
    };
    let r = alice
        .sync(neg::SyncPeerRequest {
            peer_url: format!("ws://{}", rl.addr),
            filter: Some(bad()),
            since: 0,
        })
        .await;
    check("SyncWithPeer", r.map(drop));
    let init = initiator(&[]).initiate().unwrap();
    let r = alice.neg_open("c", "s", Some(bad()), init).await;
    check("HandleNegOpen", r.map(drop));
    let r = alice
        .client
        .trigger_sync(alice.req(neg::TriggerSyncRequest {
            peer_url: String::new(),
            filter: Some(bad()),
        }));
    check("TriggerSync", bounded(r).await.map(drop));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The service still answers.
    assert!(alice.ready().await.unwrap());
    assert!(alice.sessions().await.unwrap().is_empty());
}
