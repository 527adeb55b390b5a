//! Unit tests of the [`RequestMessage`] layer: a method nobody serves, a message over the size
//! limit and one that does not decode as its method's type are each refused with their status
//! and one record; a good message reaches the handler byte for byte; health calls pass untouched.
//! (How a body is read, frame by frame, is tested in `body.rs` itself.)

use super::body::RequestMessage;
use super::test_support::{
    Harness, Reached, admin_toml, as_admin, assert_passed, assert_refused, inner, policy_toml,
    request, rpc, send,
};
use crate::proto::orlysync::negentropy::v1 as pb;
use crate::service::MAX_REQUEST_BYTES;
use prost::Message;
use tonic::Code;
use tonic::body::Body;
use tower::Layer;

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

async fn call(h: &Harness, path: &str, body: Vec<u8>) -> (tonic::Status, Reached) {
    let reached = Reached::default();
    let svc = RequestMessage::new(h.audit.clone()).layer(inner(&reached));
    let req = as_admin(request(path, None), "alice")
        .body(Body::new(http_body_util::Full::new(
            hyper::body::Bytes::from(body),
        )))
        .unwrap();
    (send(svc, req).await, reached)
}

#[tokio::test]
async fn each_bad_message_is_refused_with_its_status_and_one_record() {
    let too_large = ((MAX_REQUEST_BYTES + 1) as u32).to_be_bytes();
    let big_prefix = vec![0, too_large[0], too_large[1], too_large[2], too_large[3]];
    let sync = rpc("SyncWithPeer");
    let list = rpc("ListSyncs");
    let nope = rpc("Nope");
    // (case, path, body, status, reason)
    let rows: [(&str, &str, Vec<u8>, Code, &str); 4] = [
        (
            "unknown method",
            &nope,
            framed(b""),
            Code::Unimplemented,
            "unknown method",
        ),
        (
            "too large",
            &sync,
            big_prefix,
            Code::OutOfRange,
            "more than the 4194304 allowed",
        ),
        (
            "not protobuf",
            &list,
            framed(&[0xff; 8]),
            Code::InvalidArgument,
            "not a valid ListSyncsRequest message",
        ),
        (
            "no message",
            &sync,
            Vec::new(),
            Code::InvalidArgument,
            "no SyncPeerRequest message",
        ),
    ];
    for (case, path, body, code, reason) in rows {
        let h = Harness::new(&policy_toml("", &[admin_toml("alice", "")], ""));
        let (status, reached) = call(&h, path, body).await;
        let r = assert_refused(&h, &reached, &status, code, path, reason, Some("alice"));
        assert!(r.reason.is_some(), "{case}");
    }
}

#[tokio::test]
async fn a_good_message_reaches_the_handler_unchanged_and_health_passes() {
    let h = Harness::new(&policy_toml("", &[admin_toml("alice", "")], ""));
    let msg = framed(
        &pb::SyncPeerRequest {
            peer_url: "wss://relay.example.com/".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let (status, reached) = call(&h, &rpc("SyncWithPeer"), msg.clone()).await;
    assert_passed(&h, &reached, &status);
    assert_eq!(reached.seen()[0].1, msg);
    // Health is not ours to judge: even bytes that are no message pass as they are.
    let (status, reached) = call(&h, "/grpc.health.v1.Health/Check", vec![1, 2, 3]).await;
    assert_passed(&h, &reached, &status);
    assert_eq!(reached.seen()[0].1, vec![1, 2, 3]);
}
