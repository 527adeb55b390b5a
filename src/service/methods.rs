//! Every `NegentropyService` method in one table: its request message type, the policy right it
//! needs, and who writes its audit record. The gateway reads it to decode request messages, to
//! check rights and to leave the record to the handler where the decision needs the body; the
//! tests read it to cover every method. A method missing here is not served.

use crate::policy::Right;
use crate::proto::orlysync::common::v1 as common;
use crate::proto::orlysync::negentropy::v1 as pb;
use prost::Message;

/// The path prefix of the service's methods.
pub const SERVICE_PREFIX: &str = "/orlysync.negentropy.v1.NegentropyService/";

/// Who writes a call's audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The gateway, before the handler runs ("allowed"), once the head-level checks passed.
    BeforeHandler,
    /// The handler, through its gate, after the decision that needs the request message
    /// (the policy on a peer URL; whose sync it is).
    ByHandler,
}

/// One method of the service.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    /// Its name, e.g. `AddPeer`.
    pub name: &'static str,
    /// The request message type's name, for refusals.
    pub request: &'static str,
    /// Decodes a request message, to refuse one that is not this type before anything is
    /// recorded as allowed.
    pub decode: fn(&[u8]) -> Result<(), prost::DecodeError>,
    /// The right a caller must hold; `None`: any admin of the policy.
    pub right: Option<Right>,
    /// Who records the call.
    pub recorded: Recorded,
}

impl Method {
    /// The method's gRPC path.
    pub fn path(&self) -> String {
        format!("{SERVICE_PREFIX}{}", self.name)
    }
}

macro_rules! method {
    ($name:literal, $module:ident :: $ty:ident, $right:expr, $recorded:ident) => {
        Method {
            name: $name,
            request: stringify!($ty),
            decode: |b| $module::$ty::decode(b).map(drop),
            right: $right,
            recorded: Recorded::$recorded,
        }
    };
}

const PEERS: Option<Right> = Some(Right::ManagePeers);
const NIP77: Option<Right> = Some(Right::ServeNip77);
const SESSIONS: Option<Right> = Some(Right::Sessions);

/// Every method, ORLY's first in ORLY's order, then ours.
pub const METHODS: &[Method] = &[
    method!("Ready", common::Empty, None, BeforeHandler),
    method!("Start", common::Empty, PEERS, BeforeHandler),
    method!("Stop", common::Empty, PEERS, BeforeHandler),
    method!("HandleNegOpen", pb::NegOpenRequest, NIP77, BeforeHandler),
    method!("HandleNegMsg", pb::NegMsgRequest, NIP77, BeforeHandler),
    method!("HandleNegClose", pb::NegCloseRequest, NIP77, BeforeHandler),
    method!("SyncWithPeer", pb::SyncPeerRequest, None, ByHandler),
    method!("GetSyncStatus", common::Empty, PEERS, BeforeHandler),
    method!("GetPeers", common::Empty, PEERS, BeforeHandler),
    method!("AddPeer", pb::AddPeerRequest, PEERS, ByHandler),
    method!("RemovePeer", pb::RemovePeerRequest, PEERS, BeforeHandler),
    method!("TriggerSync", pb::TriggerSyncRequest, PEERS, BeforeHandler),
    method!(
        "GetPeerSyncState",
        pb::PeerSyncStateRequest,
        PEERS,
        BeforeHandler
    ),
    method!("ListSessions", common::Empty, SESSIONS, BeforeHandler),
    method!(
        "CloseSession",
        pb::CloseSessionRequest,
        SESSIONS,
        BeforeHandler
    ),
    method!("GetSync", pb::GetSyncRequest, None, BeforeHandler),
    method!("ListSyncs", pb::ListSyncsRequest, None, BeforeHandler),
    method!("CancelSync", pb::CancelSyncRequest, None, ByHandler),
];

/// The method a gRPC path names, if this service has it.
pub fn method(path: &str) -> Option<&'static Method> {
    let name = path.strip_prefix(SERVICE_PREFIX)?;
    METHODS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table and the compiled service agree: every method of the proto is listed once, and
    /// nothing else.
    #[test]
    fn the_table_lists_every_method_of_the_service_once() {
        let fds =
            <prost_types::FileDescriptorSet as Message>::decode(crate::proto::FILE_DESCRIPTOR_SET)
                .expect("descriptor set");
        let service = fds
            .file
            .iter()
            .filter(|f| f.package() == "orlysync.negentropy.v1")
            .flat_map(|f| f.service.iter())
            .find(|s| s.name() == "NegentropyService")
            .expect("NegentropyService");
        let mut in_proto: Vec<(&str, &str)> = service
            .method
            .iter()
            .map(|m| {
                let input = m.input_type().rsplit('.').next().unwrap_or_default();
                (m.name(), input)
            })
            .collect();
        let mut in_table: Vec<(&str, &str)> = METHODS.iter().map(|m| (m.name, m.request)).collect();
        in_proto.sort_unstable();
        in_table.sort_unstable();
        assert_eq!(in_proto, in_table);
        assert!(method(&format!("{SERVICE_PREFIX}AddPeer")).is_some());
        assert!(method(&format!("{SERVICE_PREFIX}Nope")).is_none());
        assert!(method("/orlydb.v1.DatabaseService/Ready").is_none());
    }

    /// Default deny for what is new: every ORLY method beyond syncing and `Ready` needs a
    /// right.
    #[test]
    fn only_ready_and_the_sync_methods_need_no_right() {
        let free: Vec<&str> = METHODS
            .iter()
            .filter(|m| m.right.is_none())
            .map(|m| m.name)
            .collect();
        assert_eq!(
            free,
            [
                "Ready",
                "SyncWithPeer",
                "GetSync",
                "ListSyncs",
                "CancelSync"
            ]
        );
    }
}
