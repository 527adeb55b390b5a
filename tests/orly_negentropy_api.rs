//! ORLY's sync service API (`orlysync.negentropy.v1.NegentropyService`, every method ORLY-API.md
//! lists)
//! against our real, secured `orly-sync-negentropy`, with a client compiled from
//! tests/proto/orly/ (written from ORLY's field list in ORLY-API.md, not from our proto/):
//!
//! - every method answers ORLY's client in ORLY's shape (readiness, the background sync's status
//!   and its Start/Stop, managed peers, a sync with a real orly-relay, NIP-77 answered for a
//!   relay, sessions listed and closed);
//! - every method that needs a policy right is refused to an admin without it
//!   (PERMISSION_DENIED naming the right) and served to one with it, each call leaving exactly
//!   one audit record;
//! - NIP-77 through `HandleNegOpen`/`HandleNegMsg` reconciles to the same have/need sets as the
//!   same client over WebSocket against orly-relay on the same events; idle sessions expire;
//! - tag values that are not UTF-8 are an INVALID_ARGUMENT naming the field, never INTERNAL;
//! - reflection lists the service with ORLY's methods.
//!
//! Every wait is bounded; nothing binds anything but 127.0.0.1 port 0.

mod common;
#[path = "common/gateway.rs"]
mod gateway;
use common::*;
use gateway::*;

use futures_util::{SinkExt, StreamExt};
use orly::negentropy::{Item, Reconciler, VecStorage};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;
use tonic::transport::Channel;

#[allow(clippy::all, dead_code)]
mod orly_api {
    pub mod orlysync {
        pub mod common {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/orly_api/orlysync.common.v1.rs"));
            }
        }
        pub mod negentropy {
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/orly_api/orlysync.negentropy.v1.rs"
                ));
            }
        }
    }
}
use orly_api::orlysync::common::v1 as api;
use orly_api::orlysync::negentropy::v1 as neg;
use orly_api::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;

type Client = NegentropyServiceClient<Channel>;

const T0: u64 = 1_700_000_000;
/// Bound on waiting for something the service does in the background.
const BACKGROUND_WAIT: Duration = Duration::from_secs(30);
/// `RUST_LOG` of the services these tests start.
const LOG: &str = "info,fjall=warn,lsm_tree=warn,h2=warn,tower=warn,hyper=warn";
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

const ALL_RIGHTS: &str = r#"rights = ["manage_peers", "serve_nip77", "sessions"]"#;

/// An admin with any peer, any direction, and the policy lines `extra` (its rights).
fn admin<'a>(name: &'a str, extra: &'a str) -> AdminSpec<'a> {
    AdminSpec {
        extra,
        ..AdminSpec::open(name)
    }
}

/// One admin's token and ORLY client (over its mTLS channel).
#[derive(Clone)]
struct Caller {
    name: String,
    token: String,
    client: Client,
}

impl Caller {
    async fn new(fx: &Fixture, addr: &str, name: &str) -> Self {
        let cert = fx.client(name);
        let token = fx.token(name, &cert);
        let ch = connect(addr, &fx.ca_pem, &cert).await;
        Caller {
            name: name.to_string(),
            token,
            client: NegentropyServiceClient::new(ch),
        }
    }

    /// ORLY's client on loopback: no TLS, no credentials.
    async fn plain(addr: &str) -> Self {
        Caller {
            name: "(loopback)".into(),
            token: String::new(),
            client: NegentropyServiceClient::new(channel(addr).await),
        }
    }

    fn req<T>(&self, body: T) -> tonic::Request<T> {
        if self.token.is_empty() {
            return tonic::Request::new(body);
        }
        request(body, &self.token)
    }

    async fn ready(&mut self) -> Result<bool, tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.ready(r)).await.map(|r| r.ready)
    }

    async fn start(&mut self) -> Result<(), tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.start(r)).await.map(drop)
    }

    async fn stop(&mut self) -> Result<(), tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.stop(r)).await.map(drop)
    }

    async fn status(&mut self) -> Result<neg::SyncStatusResponse, tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.get_sync_status(r)).await
    }

    async fn peers(&mut self) -> Result<Vec<String>, tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.get_peers(r)).await.map(|r| r.peers)
    }

    async fn add_peer(&mut self, url: &str) -> Result<(), tonic::Status> {
        let r = self.req(neg::AddPeerRequest {
            peer_url: url.into(),
        });
        bounded(self.client.add_peer(r)).await.map(drop)
    }

    async fn remove_peer(&mut self, url: &str) -> Result<(), tonic::Status> {
        let r = self.req(neg::RemovePeerRequest {
            peer_url: url.into(),
        });
        bounded(self.client.remove_peer(r)).await.map(drop)
    }

    async fn trigger(&mut self, url: &str) -> Result<(), tonic::Status> {
        let r = self.req(neg::TriggerSyncRequest {
            peer_url: url.into(),
            filter: None,
        });
        bounded(self.client.trigger_sync(r)).await.map(drop)
    }

    async fn peer_state(&mut self, url: &str) -> Result<neg::PeerSyncStateResponse, tonic::Status> {
        let r = self.req(neg::PeerSyncStateRequest {
            peer_url: url.into(),
        });
        bounded(self.client.get_peer_sync_state(r)).await
    }

    async fn neg_open(
        &mut self,
        conn: &str,
        sub: &str,
        filter: Option<api::Filter>,
        initial: Vec<u8>,
    ) -> Result<neg::NegOpenResponse, tonic::Status> {
        let r = self.req(neg::NegOpenRequest {
            subscription_id: sub.into(),
            filter,
            initial_message: initial,
            connection_id: conn.into(),
        });
        bounded(self.client.handle_neg_open(r)).await
    }

    async fn neg_msg(
        &mut self,
        conn: &str,
        sub: &str,
        message: Vec<u8>,
    ) -> Result<neg::NegMsgResponse, tonic::Status> {
        let r = self.req(neg::NegMsgRequest {
            subscription_id: sub.into(),
            message,
            connection_id: conn.into(),
        });
        bounded(self.client.handle_neg_msg(r)).await
    }

    async fn neg_close(&mut self, conn: &str, sub: &str) -> Result<(), tonic::Status> {
        let r = self.req(neg::NegCloseRequest {
            subscription_id: sub.into(),
            connection_id: conn.into(),
        });
        bounded(self.client.handle_neg_close(r)).await.map(drop)
    }

    async fn sessions(&mut self) -> Result<Vec<neg::ClientSession>, tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.list_sessions(r))
            .await
            .map(|r| r.sessions)
    }

    async fn close_session(&mut self, conn: &str, sub: &str) -> Result<(), tonic::Status> {
        let r = self.req(neg::CloseSessionRequest {
            subscription_id: sub.into(),
            connection_id: conn.into(),
        });
        bounded(self.client.close_session(r)).await.map(drop)
    }

    /// One SyncWithPeer call read to its end.
    async fn sync(
        &mut self,
        body: neg::SyncPeerRequest,
    ) -> Result<Vec<neg::SyncProgress>, tonic::Status> {
        let r = self.req(body);
        let c = &mut self.client;
        tokio::time::timeout(CALL_LIMIT, async move {
            let mut stream = c.sync_with_peer(r).await?.into_inner();
            let mut all = Vec::new();
            while let Some(m) = stream.message().await? {
                all.push(m);
            }
            Ok(all)
        })
        .await
        .expect("SyncWithPeer timed out")
    }

    /// Calls ORLY's method `method` with a request that succeeds for an admin holding its
    /// right (peer calls name `peer`; NIP-77 calls use connection "rc", subscription "rs").
    async fn call(&mut self, method: &str, peer: &str) -> Result<(), tonic::Status> {
        match method {
            "Ready" => self.ready().await.map(drop),
            "Start" => self.start().await,
            "Stop" => self.stop().await,
            "HandleNegOpen" => {
                let init = initiator(&[]).initiate().unwrap();
                self.neg_open("rc", "rs", None, init).await.map(drop)
            }
            "HandleNegMsg" => self.neg_msg("rc", "rs", vec![0x61]).await.map(drop),
            "HandleNegClose" => self.neg_close("rc", "rs").await,
            "GetSyncStatus" => self.status().await.map(drop),
            "GetPeers" => self.peers().await.map(drop),
            "AddPeer" => self.add_peer(peer).await,
            "GetPeerSyncState" => self.peer_state(peer).await.map(drop),
            "RemovePeer" => self.remove_peer(peer).await,
            "TriggerSync" => self.trigger("").await,
            "ListSessions" => self.sessions().await.map(drop),
            "CloseSession" => self.close_session("", "rs").await,
            other => panic!("no call for {other}"),
        }
    }
}

/// `f` bounded by [`CALL_LIMIT`], its response's message.
async fn bounded<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(CALL_LIMIT, f)
        .await
        .expect("call timed out")
        .map(tonic::Response::into_inner)
}

/// A NIP-77 client (initiator) holding `items`, no frame limit.
fn initiator(items: &[Item]) -> Reconciler<VecStorage> {
    Reconciler::new(VecStorage::new(items.to_vec()), 0).unwrap()
}

fn items_of(events: &[Event]) -> Vec<Item> {
    events
        .iter()
        .map(|e| Item {
            t: e.created_at,
            id: e.id,
        })
        .collect()
}

fn hexes(ids: &[[u8; 32]]) -> BTreeSet<String> {
    ids.iter().map(hex::encode).collect()
}

/// The fixture's secured service over a store holding `events`, with `env` added to its
/// environment (its log in `fx.log_path(0)`).
fn service(fx: &Fixture, events: &[Event], env: &[(&'static str, &str)]) -> Proc {
    let data = fx.root.join("store");
    let mut vars = fx.env();
    vars.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    tokio::task::block_in_place(|| {
        if !events.is_empty() {
            import(&data, events);
        }
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ];
        start_command(
            service_command(&args, &vars, LOG, &fx.log_path(0)),
            &fx.log_path(0),
        )
    })
}

/// orly-relay over a store of its own holding `events`.
fn relay_with(fx: &Fixture, name: &str, events: &[Event]) -> Proc {
    let dir = fx.root.join(name);
    tokio::task::block_in_place(|| {
        if !events.is_empty() {
            import(&dir, events);
        }
        relay(&dir, &[])
    })
}

/// Polls `f` every 100 ms until it gives `Some`, for at most `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. every method, as ORLY's client calls it

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_client_calls_every_method() {
    tokio::time::timeout(TEST_LIMIT, every_method())
        .await
        .expect("test exceeded its time limit");
}

async fn every_method() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("alice", ALL_RIGHTS)]));
    // The service's store: 5 events of its own and 5 the relay has too; the relay: 20.
    let relay_events = notes("orly-neg-api", 20, T0);
    let own = notes("orly-neg-own", 5, T0 + 100);
    let mut stored = own.clone();
    stored.extend_from_slice(&relay_events[..5]);
    let rl = relay_with(&fx, "relay", &relay_events);
    let svc = service(&fx, &stored, &[]);
    let mut alice = Caller::new(&fx, &svc.addr, "alice").await;
    let peer = format!("ws://{}", rl.addr);

    // Ready, as ORLY's `orly sync --server` asks first.
    assert!(alice.ready().await.expect("Ready"), "Ready: ready=false");

    // The background sync: not running without peers, nothing synced.
    let st = alice.status().await.expect("GetSyncStatus");
    assert_eq!(
        (st.active, st.last_sync, st.peer_count, st.peer_states.len()),
        (false, 0, 0, 0),
        "{st:?}"
    );

    // SyncWithPeer with ORLY's request (no direction: down): 15 fetched, rounds as int32.
    let msgs = alice
        .sync(neg::SyncPeerRequest {
            peer_url: peer.clone(),
            filter: None,
            since: 0,
        })
        .await
        .unwrap_or_else(|st| panic!("SyncWithPeer: {st:?}\n{}", tail(&fx.log_text(0), 30)));
    let last = msgs.last().expect("at least one SyncProgress");
    assert!(
        last.complete && last.error.is_empty(),
        "not complete: {last:?}"
    );
    assert_eq!(last.fetched_count, 15, "{last:?}");
    assert_eq!(last.need_count, 15, "{last:?}");
    assert_eq!(last.have_count, 5, "{last:?}");
    assert_eq!(last.sent_count, 0, "down only: {last:?}");
    assert!(last.round >= 1, "{last:?}");
    assert!(
        msgs.iter().all(|m| m.peer_url.starts_with(&peer)),
        "{msgs:?}"
    );
    assert!(
        msgs.windows(2).all(|w| w[0].round <= w[1].round),
        "rounds never go back: {msgs:?}"
    );
    assert_eq!(
        msgs.iter().filter(|m| m.complete).count(),
        1,
        "only the last message is complete: {msgs:?}"
    );

    // Managed peers: add, list, state, trigger, remove.
    alice.add_peer(&peer).await.expect("AddPeer");
    let peers = alice.peers().await.expect("GetPeers");
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert!(peers[0].starts_with(&peer), "{peers:?}");
    let found = alice.peer_state(&peer).await.expect("GetPeerSyncState");
    assert!(found.found, "{found:?}");
    let state = found.state.expect("state of a found peer");
    assert!(state.peer_url.starts_with(&peer), "{state:?}");
    assert_eq!(state.status, "idle", "{state:?}");
    assert_eq!(
        (
            state.last_sync,
            state.events_synced,
            state.consecutive_failures
        ),
        (0, 0, 0)
    );
    let missing = alice
        .peer_state("ws://127.0.0.1:9/")
        .await
        .expect("GetPeerSyncState of an unknown peer");
    assert!(!missing.found && missing.state.is_none(), "{missing:?}");
    let st = alice.status().await.expect("GetSyncStatus");
    assert_eq!((st.active, st.peer_count), (false, 1), "{st:?}");
    assert_eq!(st.peer_states.len(), 1, "{st:?}");

    // TriggerSync runs the peer now (both ways, as ORLY's service syncs its peers): the
    // service's own 5 go up; the state says so.
    alice.trigger(&peer).await.expect("TriggerSync");
    let state = until("the triggered sync to finish", BACKGROUND_WAIT, || {
        let mut c = alice.clone();
        let peer = peer.clone();
        async move {
            let s = c.peer_state(&peer).await.expect("GetPeerSyncState").state?;
            (s.last_sync > 0 || s.status == "error").then_some(s)
        }
    })
    .await;
    assert_eq!(state.status, "idle", "{state:?}");
    assert_eq!(state.events_synced, 5, "{state:?}");
    assert_eq!(
        (state.consecutive_failures, state.last_error.as_str()),
        (0, "")
    );
    let st = alice.status().await.expect("GetSyncStatus");
    assert_eq!(st.last_sync, state.last_sync, "{st:?}");
    assert_eq!(st.peer_states[0].events_synced, 5, "{st:?}");
    let up = alice
        .sync(neg::SyncPeerRequest {
            peer_url: peer.clone(),
            filter: None,
            since: 0,
        })
        .await
        .expect("SyncWithPeer after the trigger");
    let up = up.last().expect("progress");
    assert_eq!(
        (up.have_count, up.need_count, up.complete),
        (0, 0, true),
        "the relay got the service's events: {up:?}"
    );

    // Start and Stop toggle GetSyncStatus.active.
    alice.start().await.expect("Start");
    assert!(alice.status().await.unwrap().active, "active after Start");
    alice.start().await.expect("Start again");
    assert!(alice.status().await.unwrap().active, "Start is idempotent");
    alice.stop().await.expect("Stop");
    assert!(!alice.status().await.unwrap().active, "inactive after Stop");

    alice.remove_peer(&peer).await.expect("RemovePeer");
    assert_eq!(alice.peers().await.unwrap(), Vec::<String>::new());
    assert!(!alice.peer_state(&peer).await.unwrap().found);
    assert_eq!(alice.status().await.unwrap().peer_count, 0);
    alice.trigger("").await.expect("TriggerSync of every peer");

    // HandleNegOpen/Msg/Close, ListSessions, CloseSession: a client holding nothing learns it
    // needs all 25 events the service has now.
    let mut client = initiator(&[]);
    let init = client.initiate().unwrap();
    let r = alice
        .neg_open("conn-1", "sub-1", None, init)
        .await
        .expect("HandleNegOpen");
    assert_eq!(r.error, "", "{r:?}");
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut reply = r.message;
    let mut rounds = 1;
    while let Some(next) = client.next(&reply, &mut have, &mut need).unwrap() {
        let r = alice
            .neg_msg("conn-1", "sub-1", next)
            .await
            .expect("HandleNegMsg");
        assert_eq!(r.error, "", "{r:?}");
        reply = r.message;
        rounds += 1;
    }
    assert_eq!(need.len(), 25, "the client needs every event");
    assert!(have.is_empty());
    let listed = alice.sessions().await.expect("ListSessions");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            listed[0].subscription_id.as_str(),
            listed[0].connection_id.as_str(),
            listed[0].round_count
        ),
        ("sub-1", "conn-1", rounds),
        "{listed:?}"
    );
    alice
        .neg_close("conn-1", "sub-1")
        .await
        .expect("HandleNegClose");
    assert!(alice.sessions().await.unwrap().is_empty());

    let init = || initiator(&[]).initiate().unwrap();
    for (conn, sub) in [("c1", "s"), ("c2", "s"), ("c1", "t")] {
        let r = alice.neg_open(conn, sub, None, init()).await.unwrap();
        assert_eq!(r.error, "", "{conn}/{sub}: {r:?}");
    }
    alice.close_session("", "s").await.expect("CloseSession");
    let left: Vec<(String, String)> = alice
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.connection_id, s.subscription_id))
        .collect();
    assert_eq!(
        left,
        [("c1".to_string(), "t".to_string())],
        "an empty connection_id closes every session with the subscription id"
    );
    alice.close_session("c2", "t").await.expect("CloseSession");
    assert_eq!(
        alice.sessions().await.unwrap().len(),
        1,
        "another connection's session stays"
    );
    alice.close_session("c1", "t").await.expect("CloseSession");
    assert!(alice.sessions().await.unwrap().is_empty());
    let r = alice.neg_msg("c1", "t", vec![0x61]).await.unwrap();
    assert!(r.error.starts_with("closed:"), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. rights, each call with exactly one audit record

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_method_needs_its_right_and_each_call_is_audited_once() {
    tokio::time::timeout(TEST_LIMIT, rights())
        .await
        .expect("test exceeded its time limit");
}

async fn rights() {
    const PEERS: &str = "manage_peers";
    const NIP77: &str = "serve_nip77";
    const SESSIONS: &str = "sessions";
    // In an order where each call of the admin holding the right succeeds.
    let table: [(&str, Option<&str>); 14] = [
        ("Ready", None),
        ("Start", Some(PEERS)),
        ("Stop", Some(PEERS)),
        ("HandleNegOpen", Some(NIP77)),
        ("HandleNegMsg", Some(NIP77)),
        ("HandleNegClose", Some(NIP77)),
        ("GetSyncStatus", Some(PEERS)),
        ("GetPeers", Some(PEERS)),
        ("AddPeer", Some(PEERS)),
        ("GetPeerSyncState", Some(PEERS)),
        ("RemovePeer", Some(PEERS)),
        ("TriggerSync", Some(PEERS)),
        ("ListSessions", Some(SESSIONS)),
        ("CloseSession", Some(SESSIONS)),
    ];
    let fx = Fixture::with_policy(&policy_toml(
        "",
        &[
            admin("all", ALL_RIGHTS),
            admin("bare", ""),
            admin("nopeers", r#"rights = ["serve_nip77", "sessions"]"#),
            admin("nonip77", r#"rights = ["manage_peers", "sessions"]"#),
            admin("nosessions", r#"rights = ["manage_peers", "serve_nip77"]"#),
        ],
    ));
    let svc = service(&fx, &notes("rights", 10, T0), &[]);
    let mut all = Caller::new(&fx, &svc.addr, "all").await;
    let mut bare = Caller::new(&fx, &svc.addr, "bare").await;
    let mut lacking = [
        (PEERS, Caller::new(&fx, &svc.addr, "nopeers").await),
        (NIP77, Caller::new(&fx, &svc.addr, "nonip77").await),
        (SESSIONS, Caller::new(&fx, &svc.addr, "nosessions").await),
    ];
    let peer = "wss://relay.example.com/";
    let mut failures = Vec::new();

    for (method, right) in table {
        let path = format!("{SERVICE}{method}");
        // Refused to an admin without the right: with no rights, and with the other two.
        if let Some(right) = right {
            let other = &mut lacking.iter_mut().find(|(r, _)| *r == right).unwrap().1;
            for who in [&mut bare, other] {
                let before = audit_records(&fx.audit_dir).len();
                match who.call(method, peer).await {
                    Err(st) if st.code() == Code::PermissionDenied => {
                        if !st.message().contains(right) {
                            failures.push(format!(
                                "{method} by {}: the status does not name {right}: {st:?}",
                                who.name
                            ));
                        }
                    }
                    other => failures.push(format!(
                        "{method} by {} (without {right}): expected PERMISSION_DENIED, got \
                         {other:?}",
                        who.name
                    )),
                }
                let recs = new_records(&fx.audit_dir, before, 1).await;
                if let Err(e) = one_refusal(&recs, &path, right, &who.name) {
                    failures.push(format!("{method} by {}: {e}", who.name));
                }
            }
        }
        // Served to the admin with it (Ready: to the one without any right too).
        let holders: Vec<&mut Caller> = match right {
            Some(_) => vec![&mut all],
            None => vec![&mut all, &mut bare],
        };
        for who in holders {
            let before = audit_records(&fx.audit_dir).len();
            if let Err(st) = who.call(method, peer).await {
                failures.push(format!("{method} by {}: refused {st:?}", who.name));
            }
            let recs = new_records(&fx.audit_dir, before, 1).await;
            match &recs[..] {
                [r] if s(r, "event") == "decision"
                    && r.get("allowed") == Some(&Value::Bool(true))
                    && s(r, "rpc") == path
                    && s(r, "admin") == who.name => {}
                _ => failures.push(format!(
                    "{method} by {}: expected exactly one allowed decision on {path}, got {}",
                    who.name,
                    serde_json::to_string(&recs).unwrap()
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. NIP-77 for a relay: the same answers as orly-relay's own

/// A WebSocket NIP-77 client of orly-relay.
struct Ws {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Ws {
    async fn connect(addr: &str) -> Self {
        let (ws, _) = tokio::time::timeout(
            CALL_LIMIT,
            tokio_tungstenite::connect_async(format!("ws://{addr}")),
        )
        .await
        .expect("connect timed out")
        .expect("connect");
        Ws { ws }
    }

    /// Sends `v`; returns the relay's next message other than an `AUTH` challenge.
    async fn ask(&mut self, v: Value) -> Value {
        tokio::time::timeout(
            CALL_LIMIT,
            self.ws.send(Message::Text(v.to_string().into())),
        )
        .await
        .expect("send timed out")
        .expect("send");
        loop {
            let frame = tokio::time::timeout(CALL_LIMIT, self.ws.next())
                .await
                .expect("no answer from the relay in time");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("relay sends JSON");
                    if v[0] != "AUTH" {
                        return v;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    }
}

/// What a reconciliation found: ids the client has and the other side lacks, and ids it needs.
#[derive(Debug, PartialEq)]
struct Found {
    have: BTreeSet<String>,
    need: BTreeSet<String>,
}

/// Reconciles `items` (as the initiator) with orly-relay over WebSocket, under `filter` (NIP-01
/// JSON). Returns the sets and the rounds.
async fn over_websocket(addr: &str, items: &[Item], filter: &Value) -> (Found, usize) {
    let mut ws = Ws::connect(addr).await;
    let mut client = initiator(items);
    let init = hex::encode(client.initiate().unwrap());
    let mut answer = ws.ask(json!(["NEG-OPEN", "w", filter, init])).await;
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut rounds = 0;
    loop {
        assert_eq!(answer[0], "NEG-MSG", "{answer}");
        rounds += 1;
        let msg = hex::decode(answer[2].as_str().unwrap()).unwrap();
        match client.next(&msg, &mut have, &mut need).unwrap() {
            Some(next) => answer = ws.ask(json!(["NEG-MSG", "w", hex::encode(next)])).await,
            None => break,
        }
    }
    let _ = ws
        .ws
        .send(Message::Text(json!(["NEG-CLOSE", "w"]).to_string().into()))
        .await;
    (
        Found {
            have: hexes(&have),
            need: hexes(&need),
        },
        rounds,
    )
}

/// Reconciles `items` (as the initiator) with the service through HandleNegOpen/HandleNegMsg,
/// as a relay hands them over for its client `conn`/`sub`; the session stays open. Returns the
/// sets and the rounds.
async fn through_service(
    c: &mut Caller,
    conn: &str,
    sub: &str,
    items: &[Item],
    filter: Option<api::Filter>,
) -> (Found, usize) {
    let mut client = initiator(items);
    let init = client.initiate().unwrap();
    let r = c
        .neg_open(conn, sub, filter, init)
        .await
        .expect("HandleNegOpen");
    assert_eq!(r.error, "", "{r:?}");
    let (mut reply, mut complete) = (r.message, r.complete);
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut rounds = 1;
    while let Some(next) = client.next(&reply, &mut have, &mut need).unwrap() {
        assert!(
            !complete,
            "round {rounds}: complete=true, but the client has more to ask"
        );
        let r = c.neg_msg(conn, sub, next).await.expect("HandleNegMsg");
        assert_eq!(r.error, "", "round {rounds}: {r:?}");
        assert!(
            r.have_ids.is_empty() && r.need_ids.is_empty(),
            "the responder learns no ids: {r:?}"
        );
        (reply, complete) = (r.message, r.complete);
        rounds += 1;
    }
    (
        Found {
            have: hexes(&have),
            need: hexes(&need),
        },
        rounds,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip77_through_the_service_matches_orly_relay() {
    tokio::time::timeout(TEST_LIMIT, delegation())
        .await
        .expect("test exceeded its time limit");
}

async fn delegation() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("relay", ALL_RIGHTS)]));
    // The same 400 events in orly-relay's store and in the service's; the client holds 250 of
    // them and 40 items of its own.
    let events = notes("orly-neg-77", 400, T0);
    let rl = relay_with(&fx, "relay", &events);
    let svc = service(&fx, &events, &[]);
    let mut c = Caller::new(&fx, &svc.addr, "relay").await;
    let mut client_items = items_of(&events[..250]);
    client_items.extend((0..40u8).map(|i| Item {
        t: T0 + 7 * u64::from(i),
        id: [i.wrapping_mul(37) ^ 0x5a; 32],
    }));
    let own: BTreeSet<String> = client_items[250..]
        .iter()
        .map(|i| hex::encode(i.id))
        .collect();

    // Every event (the persistent index), a time range (the index's range sums), kind 1 and
    // tag t=rust (sets the store loads).
    let (since, until) = (T0 + 100, T0 + 300);
    type Case = (
        &'static str,
        Value,
        Option<api::Filter>,
        Box<dyn Fn(&Event) -> bool>,
    );
    let cases: Vec<Case> = vec![
        ("no filter", json!({}), None, Box::new(|_| true)),
        (
            "since/until",
            json!({"since": since, "until": until}),
            Some(api::Filter {
                since: Some(since as i64),
                until: Some(until as i64),
                ..Default::default()
            }),
            Box::new(move |e| (since..=until).contains(&e.created_at)),
        ),
        (
            "kinds [1]",
            json!({"kinds": [1]}),
            Some(api::Filter {
                kinds: vec![1],
                ..Default::default()
            }),
            Box::new(|e| e.kind == 1),
        ),
        (
            "#t rust",
            json!({"#t": ["rust"]}),
            Some(api::Filter {
                tags: [(
                    "t".to_string(),
                    api::TagSet {
                        values: vec![b"rust".to_vec()],
                    },
                )]
                .into(),
                ..Default::default()
            }),
            Box::new(|e| {
                e.tags
                    .iter()
                    .any(|t| t.len() >= 2 && t[0] == "t" && t[1] == "rust")
            }),
        ),
    ];
    for (name, filter_json, filter_pb, wanted) in cases {
        let (ws, ws_rounds) = over_websocket(&rl.addr, &client_items, &filter_json).await;
        let sub = format!("sub {name}");
        let (grpc, rounds) =
            through_service(&mut c, "relay-conn-1", &sub, &client_items, filter_pb).await;
        assert_eq!(grpc, ws, "{name}: the service and orly-relay disagree");
        assert_eq!(rounds, ws_rounds, "{name}: rounds");
        assert!(
            rounds >= 2,
            "{name}: a reconciliation of more than one round"
        );
        // What a correct responder says: the client needs the matching events it lacks, and
        // has its own items and the events it holds that do not match.
        let need: BTreeSet<String> = events[250..]
            .iter()
            .filter(|e| wanted(e))
            .map(Event::id_hex)
            .collect();
        let mut have = own.clone();
        have.extend(
            events[..250]
                .iter()
                .filter(|e| !wanted(e))
                .map(Event::id_hex),
        );
        assert!(!need.is_empty(), "{name}: a case with something to fetch");
        assert_eq!(grpc.need, need, "{name}: need");
        assert_eq!(grpc.have, have, "{name}: have");

        // Listed while open, with its ids and rounds; gone after HandleNegClose.
        let listed = c.sessions().await.expect("ListSessions");
        let s = listed
            .iter()
            .find(|s| s.subscription_id == sub)
            .unwrap_or_else(|| panic!("{name}: session not listed: {listed:?}"));
        assert_eq!(s.connection_id, "relay-conn-1");
        assert_eq!(s.round_count as usize, rounds, "{name}: {s:?}");
        assert!(
            s.created_at > 0 && s.last_activity >= s.created_at,
            "{name}: {s:?}"
        );
        c.neg_close("relay-conn-1", &sub)
            .await
            .expect("HandleNegClose");
        let listed = c.sessions().await.unwrap();
        assert!(
            listed.iter().all(|s| s.subscription_id != sub),
            "{name}: closed but listed: {listed:?}"
        );
        let r = c.neg_msg("relay-conn-1", &sub, vec![0x61]).await.unwrap();
        assert!(r.error.starts_with("closed:"), "{name}: after close: {r:?}");
    }
}

/// What a NIP-77 answer was: the message, or the reason's machine-readable prefix.
#[derive(Debug, PartialEq)]
enum Answer {
    Message(Vec<u8>),
    Refused(String),
}

fn prefix(reason: &str) -> String {
    reason.split(':').next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip77_through_the_service_answers_odd_messages_as_orly_relay() {
    tokio::time::timeout(TEST_LIMIT, odd_messages())
        .await
        .expect("test exceeded its time limit");
}

async fn odd_messages() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("relay", ALL_RIGHTS)]));
    let events = notes("orly-neg-odd", 60, T0);
    let rl = relay_with(&fx, "relay", &events);
    let svc = service(&fx, &events, &[]);
    let mut c = Caller::new(&fx, &svc.addr, "relay").await;
    let mut ws = Ws::connect(&rl.addr).await;
    let good = initiator(&items_of(&events[..30])).initiate().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("another protocol version", vec![0x62]),
        ("version only", vec![0x61]),
        ("a valid first message", good),
        ("an unknown mode", hex::decode("61000007").unwrap()),
        ("a varint cut short", hex::decode("6181").unwrap()),
        ("an id list promising more ids", {
            let mut m = hex::decode("6100000203").unwrap();
            m.extend([0xab; 32]);
            m
        }),
        ("empty", vec![]),
    ];
    let mut failures = Vec::new();
    for (i, (what, msg)) in cases.into_iter().enumerate() {
        let sub = format!("odd{i}");
        let v = ws
            .ask(json!(["NEG-OPEN", sub, {}, hex::encode(&msg)]))
            .await;
        let relay = match v[0].as_str() {
            Some("NEG-MSG") => Answer::Message(hex::decode(v[2].as_str().unwrap()).unwrap()),
            Some("NEG-ERR") => Answer::Refused(prefix(v[2].as_str().unwrap())),
            _ => panic!("{what}: unexpected answer {v}"),
        };
        let r = c
            .neg_open("odd-conn", &sub, None, msg)
            .await
            .unwrap_or_else(|st| panic!("{what}: HandleNegOpen failed: {st:?}"));
        let service = if r.error.is_empty() {
            Answer::Message(r.message)
        } else {
            Answer::Refused(prefix(&r.error))
        };
        if service != relay {
            failures.push(format!(
                "{what}: orly-relay {relay:?}, the service {service:?}"
            ));
        }
    }
    // Sessions per client connection: the same cap, the same answer past it.
    let init = || hex::encode(initiator(&[]).initiate().unwrap());
    let mut ws = Ws::connect(&rl.addr).await;
    let (mut relay_first, mut service_first) = (None, None);
    for i in 0..12 {
        let sub = format!("cap{i}");
        let v = ws.ask(json!(["NEG-OPEN", sub, {}, init()])).await;
        if v[0] == "NEG-ERR" && relay_first.is_none() {
            relay_first = Some((i, prefix(v[2].as_str().unwrap())));
        }
        let r = c
            .neg_open("cap-conn", &sub, None, hex::decode(init()).unwrap())
            .await
            .unwrap();
        if !r.error.is_empty() && service_first.is_none() {
            service_first = Some((i, prefix(&r.error)));
        }
    }
    if relay_first.is_none() || relay_first != service_first {
        failures.push(format!(
            "the per-connection cap: orly-relay refused first at {relay_first:?}, the service at \
             {service_first:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire() {
    tokio::time::timeout(TEST_LIMIT, expiry())
        .await
        .expect("test exceeded its time limit");
}

async fn expiry() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("relay", ALL_RIGHTS)]));
    let events = notes("orly-neg-idle", 300, T0);
    let svc = service(
        &fx,
        &events,
        &[("ORLY_SYNC_NEGENTROPY_SESSION_TIMEOUT", "1s")],
    );
    let mut c = Caller::new(&fx, &svc.addr, "relay").await;
    // A client holding half the events: the first reply leaves more to ask.
    let mut client = initiator(&items_of(&events[..150]));
    let init = client.initiate().unwrap();
    let opened = Instant::now();
    let r = c.neg_open("idle-conn", "idle", None, init).await.unwrap();
    assert_eq!(r.error, "", "{r:?}");
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let next = client
        .next(&r.message, &mut have, &mut need)
        .unwrap()
        .expect("more to ask after the first reply");
    assert!(
        c.sessions()
            .await
            .unwrap()
            .iter()
            .any(|s| s.subscription_id == "idle"),
        "the session is listed once opened"
    );
    // Another session of the same client talks every 300 ms: it is not idle, so it stays.
    let r = c
        .neg_open(
            "idle-conn",
            "busy",
            None,
            initiator(&[]).initiate().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.error, "", "{r:?}");
    let start = Instant::now();
    loop {
        let r = c.neg_msg("idle-conn", "busy", vec![0x61]).await.unwrap();
        assert_eq!(
            r.error,
            "",
            "the busy session after {:?}: {r:?}",
            start.elapsed()
        );
        let listed = c.sessions().await.expect("ListSessions");
        if listed.iter().all(|s| s.subscription_id != "idle") {
            assert!(
                listed.iter().any(|s| s.subscription_id == "busy"),
                "a session with a message every 300 ms expired: {listed:?}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the idle session never expired: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(1),
        "expired after {:?}, before its idle timeout",
        opened.elapsed()
    );
    let r = c.neg_msg("idle-conn", "idle", next).await.unwrap();
    assert!(r.error.starts_with("closed:"), "after expiry: {r:?}");
    assert!(r.message.is_empty() && !r.complete, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. bytes that are not UTF-8

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

// ---------------------------------------------------------------------------------------------
// 5. reflection

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

// ---------------------------------------------------------------------------------------------
// 6. ORLY's `since`

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_bounds_what_sync_with_peer_fetches() {
    tokio::time::timeout(TEST_LIMIT, since())
        .await
        .expect("test exceeded its time limit");
}

async fn since() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("alice", ALL_RIGHTS)]));
    let events = notes("orly-neg-since", 10, T0); // created T0 .. T0+9
    let rl = relay_with(&fx, "relay", &events);
    let svc = service(&fx, &[], &[]);
    let mut alice = Caller::new(&fx, &svc.addr, "alice").await;
    let msgs = alice
        .sync(neg::SyncPeerRequest {
            peer_url: format!("ws://{}", rl.addr),
            filter: None,
            since: (T0 + 6) as i64,
        })
        .await
        .expect("SyncWithPeer with since");
    let last = msgs.last().expect("progress");
    assert!(last.complete, "{last:?}");
    assert_eq!(
        (last.need_count, last.fetched_count),
        (4, 4),
        "only the events created at or after since: {last:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. ORLY's client on loopback, without credentials

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_client_without_credentials_uses_the_loopback_service() {
    tokio::time::timeout(TEST_LIMIT, loopback())
        .await
        .expect("test exceeded its time limit");
}

async fn loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_events = notes("orly-neg-plain", 12, T0);
    let store = tmp.path().join("store");
    let relay_dir = tmp.path().join("relay");
    let (rl, svc) = tokio::task::block_in_place(|| {
        import(&relay_dir, &relay_events);
        import(&store, &relay_events[..4]);
        (relay(&relay_dir, &[]), sync_service(&store))
    });
    let mut c = Caller::plain(&svc.addr).await;
    let peer = format!("ws://{}", rl.addr);

    assert!(c.ready().await.expect("Ready"));
    let msgs = c
        .sync(neg::SyncPeerRequest {
            peer_url: peer.clone(),
            filter: None,
            since: 0,
        })
        .await
        .expect("SyncWithPeer");
    let last = msgs.last().expect("progress");
    assert!(last.complete, "{last:?}");
    assert_eq!(last.fetched_count, 8, "{last:?}");

    c.add_peer(&peer).await.expect("AddPeer");
    assert_eq!(c.peers().await.expect("GetPeers").len(), 1);
    assert!(c.peer_state(&peer).await.expect("GetPeerSyncState").found);
    c.start().await.expect("Start");
    assert!(c.status().await.expect("GetSyncStatus").active);
    c.stop().await.expect("Stop");
    assert!(!c.status().await.expect("GetSyncStatus").active);
    c.trigger(&peer).await.expect("TriggerSync");
    c.remove_peer(&peer).await.expect("RemovePeer");
    assert!(c.peers().await.unwrap().is_empty());

    let mut client = initiator(&[]);
    let r = c
        .neg_open("lc", "ls", None, client.initiate().unwrap())
        .await
        .expect("HandleNegOpen");
    assert_eq!(r.error, "", "{r:?}");
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut reply = r.message;
    while let Some(next) = client.next(&reply, &mut have, &mut need).unwrap() {
        let r = c.neg_msg("lc", "ls", next).await.expect("HandleNegMsg");
        assert_eq!(r.error, "", "{r:?}");
        reply = r.message;
    }
    assert_eq!(need.len(), 12, "the client needs every event");
    assert_eq!(c.sessions().await.expect("ListSessions").len(), 1);
    c.neg_close("lc", "ls").await.expect("HandleNegClose");
    c.neg_open("lc", "ls2", None, initiator(&[]).initiate().unwrap())
        .await
        .expect("HandleNegOpen");
    c.close_session("", "ls2").await.expect("CloseSession");
    assert!(c.sessions().await.unwrap().is_empty());
}
