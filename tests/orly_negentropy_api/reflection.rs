//! Reflection lists the service with every method ORLY's client calls.

use super::common::*;
use super::gateway::*;
use super::harness::*;

use std::collections::BTreeSet;

/// ORLY's methods, as ORLY-API.md lists them.
const ORLY_METHODS: [&str; 15] = [
    "Ready",
    "Start",
    "Stop",
    "HandleNegOpen",
    "HandleNegMsg",
    "HandleNegClose",
    "SyncWithPeer",
    "GetSyncStatus",
    "GetPeers",
    "AddPeer",
    "RemovePeer",
    "TriggerSync",
    "GetPeerSyncState",
    "ListSessions",
    "CloseSession",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_service_with_orly_methods() {
    tokio::time::timeout(TEST_LIMIT, reflection())
        .await
        .expect("test exceeded its time limit");
}

async fn reflection() {
    use prost::Message as _;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    const NAME: &str = "orlysync.negentropy.v1.NegentropyService";

    let fx = Fixture::with_policy(&policy_toml("", &[admin("alice", ALL_RIGHTS)]));
    let svc = service(&fx, &[], &[]);
    let cert = fx.client("alice");
    let token = fx.token("alice", &cert);
    let ch = connect(&svc.addr, &fx.ca_pem, &cert).await;
    let mut rc = ServerReflectionClient::new(ch);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let reqs = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(NAME.into())),
    ];
    let mut stream = bounded(rc.server_reflection_info(request(tokio_stream::iter(reqs), &token)))
        .await
        .expect("reflection call");
    let mut replies = Vec::new();
    while let Some(m) = tokio::time::timeout(CALL_LIMIT, stream.message())
        .await
        .expect("reflection reply timed out")
        .expect("reflection reply")
    {
        replies.push(m.message_response);
    }
    let [
        Some(MessageResponse::ListServicesResponse(list)),
        Some(MessageResponse::FileDescriptorResponse(files)),
    ] = &replies[..]
    else {
        panic!("unexpected reflection replies {replies:?}");
    };
    assert!(
        list.service.iter().any(|s| s.name == NAME),
        "{NAME} not listed: {list:?}"
    );
    let methods: BTreeSet<String> = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(&b[..]).expect("file descriptor"))
        .filter(|f| f.package() == "orlysync.negentropy.v1")
        .flat_map(|f| f.service)
        .filter(|s| s.name() == "NegentropyService")
        .flat_map(|s| s.method)
        .map(|m| m.name().to_string())
        .collect();
    let missing: Vec<&str> = ORLY_METHODS
        .iter()
        .filter(|m| !methods.contains(**m))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "reflection lacks {missing:?}: {methods:?}"
    );
}
