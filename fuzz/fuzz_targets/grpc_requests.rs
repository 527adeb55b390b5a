//! Protobuf messages the gRPC services decode (and, for orly-db, the answers its clients
//! decode), then what the handlers do with them before any store or network work: the
//! `SyncWithPeer` and `AddPeer` request validation, peer URL normalization, delegated session
//! keys and negentropy messages, the proto → domain filter and event conversions. The first byte picks the message type.
//!
//! Checked: nothing panics; a filter or event that converts comes back the same from our own
//! protobuf and JSON forms; prost re-encodes what it decoded to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orly::event::{Event, Filter};
use orly::negentropy::check_message;
use orly::policy::normalize_peer_url;
use orly::proto::orlydb::v1 as db;
use orly::proto::orlysync::common::v1 as common;
use orly::proto::orlysync::negentropy::v1 as sync;
use orly::proto::progress_from_pb;
use orly::service::SyncDefaults;
use orly::service::delegated::SessionKey;
use prost::Message;

/// Decodes `T`, checks that re-encoding and decoding gives it back, and returns it.
fn decode<T: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<T> {
    let m = T::decode(bytes).ok()?;
    let again = T::decode(m.encode_to_vec().as_slice()).expect("our own encoding decodes");
    assert_eq!(again, m, "prost round trip");
    Some(m)
}

/// What every handler does with a request's filter (`filter_of` in the services).
fn filter(p: Option<&common::Filter>) {
    let Some(p) = p else {
        return;
    };
    let Ok(f) = Filter::try_from(p) else {
        return;
    };
    assert_eq!(
        Filter::try_from(&common::Filter::from(&f)).as_ref(),
        Ok(&f),
        "protobuf"
    );
    assert_eq!(
        Filter::from_value(&f.to_value()).as_ref(),
        Ok(&f),
        "JSON form"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 12 {
        0 => {
            if let Some(r) = decode::<sync::SyncPeerRequest>(bytes) {
                let _ = normalize_peer_url(&r.peer_url);
                filter(r.filter.as_ref());
                if let Ok(req) = SyncDefaults::default().validate(&r) {
                    assert_eq!(req.peer_url().as_str(), r.peer_url);
                    assert!(req.frame_limit().is_none_or(|n| n.get() == 0 || n.get() >= 4096));
                }
            }
        }
        1 => {
            let _ = decode::<sync::GetSyncRequest>(bytes);
            let _ = decode::<sync::CancelSyncRequest>(bytes);
            let _ = decode::<sync::ListSyncsRequest>(bytes);
            // ORLY's methods: what their handlers do before any store or network work.
            if let Some(r) = decode::<sync::NegOpenRequest>(bytes) {
                let _ = SessionKey::new(&r.connection_id, &r.subscription_id);
                filter(r.filter.as_ref());
                let _ = check_message(&r.initial_message);
            }
            if let Some(r) = decode::<sync::NegMsgRequest>(bytes) {
                let _ = SessionKey::new(&r.connection_id, &r.subscription_id);
                let _ = check_message(&r.message);
            }
            if let Some(r) = decode::<sync::AddPeerRequest>(bytes) {
                let _ = SyncDefaults::default().validate(&sync::SyncPeerRequest {
                    peer_url: r.peer_url,
                    filter: r.filter,
                    direction: r.direction,
                    ..Default::default()
                });
            }
            if let Some(r) = decode::<sync::TriggerSyncRequest>(bytes) {
                let _ = normalize_peer_url(&r.peer_url);
                filter(r.filter.as_ref());
            }
            let _ = decode::<sync::CloseSessionRequest>(bytes);
            let _ = decode::<sync::NegCloseRequest>(bytes);
            let _ = decode::<sync::PeerSyncStateRequest>(bytes);
        }
        2 => {
            // SaveEvents streams events in.
            if let Some(p) = decode::<common::Event>(bytes)
                && let Ok(ev) = Event::try_from(p.clone())
            {
                assert_eq!(
                    common::Event::from(ev.clone()),
                    p,
                    "event protobuf round trip"
                );
                let _ = ev.verify();
            }
        }
        3 => {
            if let Some(r) = decode::<db::QueryRequest>(bytes) {
                filter(r.filter.as_ref());
            }
        }
        4 => {
            if let Some(r) = decode::<db::CountRequest>(bytes) {
                filter(r.filter.as_ref());
            }
        }
        5 => {
            if let Some(r) = decode::<db::NegentropyItemsRequest>(bytes) {
                filter(r.filter.as_ref());
            }
        }
        6 => {
            if let Some(r) = decode::<db::ReconcileRequest>(bytes) {
                match r.step {
                    Some(db::reconcile_request::Step::Open(o)) => filter(o.filter.as_ref()),
                    Some(db::reconcile_request::Step::Message(m)) => {
                        let _ = check_message(&m);
                    }
                    Some(db::reconcile_request::Step::Initiate(_)) | None => {}
                }
            }
        }
        7 => {
            let _ = decode::<db::GetEventsByIdsRequest>(bytes);
            let _ = decode::<db::Empty>(bytes);
            // ORLY's subset: bytes tag values and content, checked for UTF-8 on conversion.
            if let Some(r) = decode::<db::QueryEventsRequest>(bytes)
                && let Some(p) = r.filter.as_ref()
                && let Ok(f) = Filter::try_from(p)
            {
                assert_eq!(Filter::try_from(&db::Filter::from(&f)).as_ref(), Ok(&f));
            }
            if let Some(r) = decode::<db::SaveEventRequest>(bytes)
                && let Some(p) = r.event
                && let Ok(ev) = Event::try_from(p.clone())
            {
                assert_eq!(db::Event::from(ev), p, "ORLY event protobuf round trip");
            }
        }
        // Answers the clients of orly-db and of the sync service decode.
        8 => {
            let _ = decode::<db::NegentropyItemBatch>(bytes);
            let _ = decode::<db::ReconcileResponse>(bytes);
        }
        9 => {
            let _ = decode::<db::SaveEventsResponse>(bytes);
            let _ = decode::<db::KnownIdsResponse>(bytes);
            let _ = decode::<db::CountResponse>(bytes);
            let _ = decode::<db::EventBatch>(bytes);
            let _ = decode::<db::IdPkTsList>(bytes);
            let _ = decode::<db::CountEventsResponse>(bytes);
            let _ = decode::<db::SaveEventResponse>(bytes);
        }
        10 => {
            if let Some(p) = decode::<sync::SyncProgress>(bytes) {
                let _ = progress_from_pb(&p);
            }
        }
        _ => {
            let _ = decode::<sync::SyncStatusResponse>(bytes);
            let _ = decode::<sync::NegOpenResponse>(bytes);
            let _ = decode::<sync::ListSessionsResponse>(bytes);
            let _ = decode::<sync::PeerSyncStateResponse>(bytes);
            if let Some(s) = decode::<sync::ListSyncsResponse>(bytes) {
                for st in &s.syncs {
                    if let Some(p) = &st.progress {
                        let _ = progress_from_pb(p);
                    }
                }
            }
        }
    }
});
