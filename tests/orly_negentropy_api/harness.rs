//! What the tests of ORLY's sync service API share: ORLY's client, compiled from
//! tests/proto/orly/ (`api`, `neg`); the `Caller` that makes ORLY's calls as one admin (or as
//! ORLY's client on loopback, without credentials); the secured service and the orly-relay a test
//! starts; a NIP-77 initiator.

use super::common::*;
use super::gateway::*;

use orly::negentropy::{Item, Reconciler, VecStorage};
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
pub(super) use orly_api::orlysync::common::v1 as api;
pub(super) use orly_api::orlysync::negentropy::v1 as neg;
use orly_api::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;

pub(super) type Client = NegentropyServiceClient<Channel>;

pub(super) const T0: u64 = 1_700_000_000;
/// `RUST_LOG` of the services these tests start.
pub(super) const LOG: &str = "info,fjall=warn,lsm_tree=warn,h2=warn,tower=warn,hyper=warn";

pub(super) const ALL_RIGHTS: &str = r#"rights = ["manage_peers", "serve_nip77", "sessions"]"#;

/// An admin with any peer, any direction, and the policy lines `extra` (its rights).
pub(super) fn admin<'a>(name: &'a str, extra: &'a str) -> AdminSpec<'a> {
    AdminSpec {
        extra,
        ..AdminSpec::open(name)
    }
}

/// One admin's token and ORLY client (over its mTLS channel).
#[derive(Clone)]
pub(super) struct Caller {
    pub(super) name: String,
    pub(super) token: String,
    pub(super) client: Client,
}

impl Caller {
    pub(super) async fn new(fx: &Fixture, addr: &str, name: &str) -> Self {
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
    pub(super) async fn plain(addr: &str) -> Self {
        Caller {
            name: "(loopback)".into(),
            token: String::new(),
            client: NegentropyServiceClient::new(channel(addr).await),
        }
    }

    pub(super) fn req<T>(&self, body: T) -> tonic::Request<T> {
        if self.token.is_empty() {
            return tonic::Request::new(body);
        }
        request(body, &self.token)
    }

    pub(super) async fn ready(&mut self) -> Result<bool, tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.ready(r)).await.map(|r| r.ready)
    }

    pub(super) async fn start(&mut self) -> Result<(), tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.start(r)).await.map(drop)
    }

    pub(super) async fn stop(&mut self) -> Result<(), tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.stop(r)).await.map(drop)
    }

    pub(super) async fn status(&mut self) -> Result<neg::SyncStatusResponse, tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.get_sync_status(r)).await
    }

    pub(super) async fn peers(&mut self) -> Result<Vec<String>, tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.get_peers(r)).await.map(|r| r.peers)
    }

    pub(super) async fn add_peer(&mut self, url: &str) -> Result<(), tonic::Status> {
        let r = self.req(neg::AddPeerRequest {
            peer_url: url.into(),
        });
        bounded(self.client.add_peer(r)).await.map(drop)
    }

    pub(super) async fn remove_peer(&mut self, url: &str) -> Result<(), tonic::Status> {
        let r = self.req(neg::RemovePeerRequest {
            peer_url: url.into(),
        });
        bounded(self.client.remove_peer(r)).await.map(drop)
    }

    pub(super) async fn trigger(&mut self, url: &str) -> Result<(), tonic::Status> {
        let r = self.req(neg::TriggerSyncRequest {
            peer_url: url.into(),
            filter: None,
        });
        bounded(self.client.trigger_sync(r)).await.map(drop)
    }

    pub(super) async fn peer_state(
        &mut self,
        url: &str,
    ) -> Result<neg::PeerSyncStateResponse, tonic::Status> {
        let r = self.req(neg::PeerSyncStateRequest {
            peer_url: url.into(),
        });
        bounded(self.client.get_peer_sync_state(r)).await
    }

    pub(super) async fn neg_open(
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

    pub(super) async fn neg_msg(
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

    pub(super) async fn neg_close(&mut self, conn: &str, sub: &str) -> Result<(), tonic::Status> {
        let r = self.req(neg::NegCloseRequest {
            subscription_id: sub.into(),
            connection_id: conn.into(),
        });
        bounded(self.client.handle_neg_close(r)).await.map(drop)
    }

    pub(super) async fn sessions(&mut self) -> Result<Vec<neg::ClientSession>, tonic::Status> {
        let r = self.req(api::Empty {});
        bounded(self.client.list_sessions(r))
            .await
            .map(|r| r.sessions)
    }

    pub(super) async fn close_session(
        &mut self,
        conn: &str,
        sub: &str,
    ) -> Result<(), tonic::Status> {
        let r = self.req(neg::CloseSessionRequest {
            subscription_id: sub.into(),
            connection_id: conn.into(),
        });
        bounded(self.client.close_session(r)).await.map(drop)
    }

    /// One SyncWithPeer call read to its end.
    pub(super) async fn sync(
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
    pub(super) async fn call(&mut self, method: &str, peer: &str) -> Result<(), tonic::Status> {
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
pub(super) async fn bounded<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(CALL_LIMIT, f)
        .await
        .expect("call timed out")
        .map(tonic::Response::into_inner)
}

/// A NIP-77 client (initiator) holding `items`, no frame limit.
pub(super) fn initiator(items: &[Item]) -> Reconciler<VecStorage> {
    Reconciler::new(VecStorage::new(items.to_vec()), 0).unwrap()
}

/// The fixture's secured service over a store holding `events`, with `env` added to its
/// environment (its log in `fx.log_path(0)`).
pub(super) fn service(fx: &Fixture, events: &[Event], env: &[(&'static str, &str)]) -> Proc {
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
pub(super) fn relay_with(fx: &Fixture, name: &str, events: &[Event]) -> Proc {
    let dir = fx.root.join(name);
    tokio::task::block_in_place(|| {
        if !events.is_empty() {
            import(&dir, events);
        }
        relay(&dir, &[])
    })
}
