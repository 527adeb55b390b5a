//! ORLY's database subset (`orlydb.v1.DatabaseService`: Ready, GetPath, SaveEvent, QueryEvents,
//! QueryForIds, CountEvents) in both directions, with a client and a stub server compiled from
//! tests/proto/orly/database.proto (written from ORLY's field list, not from our proto/):
//! ORLY's clients against our real orly-db, and our sync service (ORLY_DB_TYPE=grpc) against a
//! database that offers only ORLY's subset, ending in the same state as over orly-db.

mod common;

use common::{Event, Keys, Proc, ids, import, notes, relay, sign_event, spawn_service};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tonic::{Code, Request, Response, Status};

#[allow(clippy::all, dead_code)]
mod orly_api {
    include!(concat!(env!("OUT_DIR"), "/orly_api/orlydb.v1.rs"));
}
use orly_api as api;
use orly_api::database_service_client::DatabaseServiceClient;

fn wire(e: &Event) -> api::Event {
    api::Event {
        id: e.id.to_vec(),
        pubkey: e.pubkey.to_vec(),
        created_at: e.created_at as i64,
        kind: u32::from(e.kind),
        tags: e
            .tags
            .iter()
            .map(|t| api::Tag {
                values: t.iter().map(|v| v.as_bytes().to_vec()).collect(),
            })
            .collect(),
        content: e.content.as_bytes().to_vec(),
        sig: e.sig.to_vec(),
    }
}

fn hex_id(b: &[u8]) -> String {
    hex::encode(b)
}

fn orly_db(dir: &Path, envs: &[(&str, &str)]) -> Proc {
    spawn_service(
        "orly-db",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        envs,
    )
}

async fn client(addr: &str) -> DatabaseServiceClient<tonic::transport::Channel> {
    DatabaseServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to orly-db")
}

fn by_kind(kinds: &[u32]) -> api::QueryEventsRequest {
    api::QueryEventsRequest {
        filter: Some(api::Filter {
            kinds: kinds.to_vec(),
            ..Default::default()
        }),
    }
}

/// Every method of ORLY's subset against the real orly-db, as ORLY's client calls them (no
/// credentials, loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_client_uses_every_method_of_orly_db() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let evs = notes("orlyapi", 12, 1_700_000_000); // kinds 1 and 7, tags t=rust|nostr
    import(&dir, &evs);
    let db = orly_db(&dir, &[]);
    let mut c = client(&db.addr).await;

    assert!(c.ready(api::Empty {}).await.unwrap().into_inner().ready);
    let path = c.get_path(api::Empty {}).await.unwrap().into_inner().path;
    assert_eq!(
        std::fs::canonicalize(&path).unwrap(),
        std::fs::canonicalize(&dir).unwrap(),
        "GetPath names the store's directory"
    );

    // SaveEvent: new, then the same again (exists), with NIP-01 semantics for replaceables.
    let k = Keys::from_seed(b"orlyapi-save", 0);
    let note = sign_event(
        &k,
        1_700_000_100,
        1,
        vec![vec!["t".into(), "rust".into()]],
        "hi",
    );
    let save = |e: &Event| api::SaveEventRequest {
        event: Some(wire(e)),
    };
    assert!(!c.save_event(save(&note)).await.unwrap().into_inner().exists);
    assert!(c.save_event(save(&note)).await.unwrap().into_inner().exists);
    let newer = sign_event(&k, 1_700_000_200, 0, vec![], r#"{"name":"b"}"#);
    let older = sign_event(&k, 1_700_000_150, 0, vec![], r#"{"name":"a"}"#);
    assert!(
        !c.save_event(save(&newer))
            .await
            .unwrap()
            .into_inner()
            .exists
    );
    let st = c.save_event(save(&older)).await.unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    assert!(st.message().starts_with("blocked"), "{st:?}");

    // Bad input: a clear INVALID_ARGUMENT naming the field, never INTERNAL; nothing stored.
    let mut bad = wire(&note);
    bad.tags = vec![api::Tag {
        values: vec![b"t".to_vec(), vec![0xff, 0xfe]],
    }];
    let st = c
        .save_event(api::SaveEventRequest { event: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("event.tags[0][1]"), "{st:?}");
    let mut bad = wire(&note);
    bad.content = vec![0xc3];
    let st = c
        .save_event(api::SaveEventRequest { event: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("event.content"), "{st:?}");
    let mut forged = wire(&note);
    forged.content = b"changed".to_vec();
    let st = c
        .save_event(api::SaveEventRequest {
            event: Some(forged),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "forged event: {st:?}");
    let mut tags = std::collections::HashMap::new();
    tags.insert(
        "#t".to_string(),
        api::TagSet {
            values: vec![vec![0x80]],
        },
    );
    let st = c
        .count_events(api::QueryEventsRequest {
            filter: Some(api::Filter {
                tags,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("filter.tags"), "{st:?}");

    // QueryEvents: every kind-1 event, newest first, in batches.
    let mut want_k1: Vec<&Event> = evs.iter().filter(|e| e.kind == 1).collect();
    want_k1.push(&note);
    want_k1.sort_by_key(|e| std::cmp::Reverse(e.created_at));
    let mut s = c.query_events(by_kind(&[1])).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(b) = s.message().await.unwrap() {
        got.extend(b.events);
    }
    assert_eq!(
        got.iter().map(|e| hex_id(&e.id)).collect::<Vec<_>>(),
        want_k1.iter().map(|e| e.id_hex()).collect::<Vec<_>>()
    );
    assert_eq!(got[0], wire(want_k1[0]), "every field as stored");

    // A tag filter keyed ORLY's way ("#t") and a limit.
    let mut tags = std::collections::HashMap::new();
    tags.insert(
        "#t".to_string(),
        api::TagSet {
            values: vec![b"rust".to_vec()],
        },
    );
    let rust = api::Filter {
        tags,
        ..Default::default()
    };
    let want_rust: Vec<String> = {
        let mut v: Vec<&Event> = evs
            .iter()
            .chain([&note])
            .filter(|e| e.tags.iter().any(|t| t[1] == "rust"))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.created_at));
        v.iter().map(|e| e.id_hex()).collect()
    };
    let mut s = c
        .query_events(api::QueryEventsRequest {
            filter: Some(api::Filter {
                limit: Some(2),
                ..rust.clone()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(b) = s.message().await.unwrap() {
        got.extend(b.events.iter().map(|e| hex_id(&e.id)));
    }
    assert_eq!(got, want_rust[..2]);

    // QueryForIds: id, pubkey and created_at of each match.
    let items = c
        .query_for_ids(api::QueryEventsRequest {
            filter: Some(rust.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let mut got: Vec<String> = items.iter().map(|i| hex_id(&i.id)).collect();
    got.sort();
    let mut want = want_rust.clone();
    want.sort();
    assert_eq!(got, want);
    for i in &items {
        let e = evs
            .iter()
            .chain([&note])
            .find(|e| e.id.as_slice() == i.id)
            .unwrap();
        assert_eq!(
            (i.pubkey.as_slice(), i.timestamp),
            (e.pubkey.as_slice(), e.created_at as i64)
        );
    }

    // CountEvents.
    let n = c
        .count_events(api::QueryEventsRequest { filter: Some(rust) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((n.count as usize, n.approximate), (want_rust.len(), false));
    let all = c
        .count_events(api::QueryEventsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.count as usize,
        evs.len() + 2,
        "12 imported, the note and the newer kind 0"
    );
    db.terminate();
}

/// With ORLY_DB_TOKEN set, ORLY's methods are behind it like ours: without the secret each is
/// UNAUTHENTICATED (so ORLY's credential-less client is for token-less loopback setups).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_methods_need_the_db_token_when_set() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "orly-db-secret-0123456789";
    let db = orly_db(&tmp.path().join("db"), &[("ORLY_DB_TOKEN", secret)]);
    let mut c = client(&db.addr).await;
    let q = || by_kind(&[1]);
    let results: Vec<(&str, Status)> = vec![
        ("Ready", c.ready(api::Empty {}).await.unwrap_err()),
        ("GetPath", c.get_path(api::Empty {}).await.unwrap_err()),
        (
            "SaveEvent",
            c.save_event(api::SaveEventRequest::default())
                .await
                .unwrap_err(),
        ),
        ("QueryEvents", c.query_events(q()).await.err().unwrap()),
        ("QueryForIds", c.query_for_ids(q()).await.unwrap_err()),
        ("CountEvents", c.count_events(q()).await.unwrap_err()),
    ];
    for (name, st) in results {
        assert_eq!(st.code(), Code::Unauthenticated, "{name}: {st:?}");
    }
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", db.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {secret}").parse().unwrap();
    let mut authed = DatabaseServiceClient::with_interceptor(ch, move |mut r: Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    });
    assert!(
        authed
            .ready(api::Empty {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert_eq!(
        authed.count_events(q()).await.unwrap().into_inner().count,
        0
    );
    db.terminate();
}

/// A database server that offers only ORLY's subset, over an in-memory set.
#[derive(Clone, Default)]
struct OrlyDbStub {
    events: Arc<Mutex<BTreeMap<Vec<u8>, api::Event>>>,
}

impl OrlyDbStub {
    fn put(&self, evs: &[Event]) {
        let mut m = self.events.lock().unwrap();
        for e in evs {
            m.insert(e.id.to_vec(), wire(e));
        }
    }

    /// Sorted hex ids held.
    fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .events
            .lock()
            .unwrap()
            .keys()
            .map(|k| hex_id(k))
            .collect();
        v.sort();
        v
    }

    /// Matching events, newest first, `limit` honoured: ORLY's filter semantics, read from the
    /// wire by hand (tag keys with or without '#').
    fn matching(&self, f: Option<api::Filter>) -> Vec<api::Event> {
        let f = f.unwrap_or_default();
        let tag_ok = |e: &api::Event| {
            f.tags.iter().all(|(k, set)| {
                let name = k.trim_start_matches('#').as_bytes();
                e.tags.iter().any(|t| {
                    t.values.len() > 1 && t.values[0] == name && set.values.contains(&t.values[1])
                })
            })
        };
        let mut v: Vec<api::Event> = self
            .events
            .lock()
            .unwrap()
            .values()
            .filter(|e| f.ids.is_empty() || f.ids.contains(&e.id))
            .filter(|e| f.kinds.is_empty() || f.kinds.contains(&e.kind))
            .filter(|e| f.authors.is_empty() || f.authors.contains(&e.pubkey))
            .filter(|e| f.since.is_none_or(|s| e.created_at >= s))
            .filter(|e| f.until.is_none_or(|u| e.created_at <= u))
            .filter(|e| tag_ok(e))
            .cloned()
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.created_at));
        if let Some(l) = f.limit {
            v.truncate(l as usize);
        }
        v
    }
}

type Batches = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<api::EventBatch, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl api::database_service_server::DatabaseService for OrlyDbStub {
    async fn ready(&self, _: Request<api::Empty>) -> Result<Response<api::ReadyResponse>, Status> {
        Ok(Response::new(api::ReadyResponse { ready: true }))
    }
    async fn get_path(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<api::PathResponse>, Status> {
        Ok(Response::new(api::PathResponse {
            path: "memory".into(),
        }))
    }
    async fn save_event(
        &self,
        r: Request<api::SaveEventRequest>,
    ) -> Result<Response<api::SaveEventResponse>, Status> {
        let e = r
            .into_inner()
            .event
            .ok_or_else(|| Status::invalid_argument("no event"))?;
        let exists = self
            .events
            .lock()
            .unwrap()
            .insert(e.id.clone(), e)
            .is_some();
        Ok(Response::new(api::SaveEventResponse { exists }))
    }
    type QueryEventsStream = Batches;
    async fn query_events(
        &self,
        r: Request<api::QueryEventsRequest>,
    ) -> Result<Response<Batches>, Status> {
        let evs = self.matching(r.into_inner().filter);
        let batches: Vec<Result<api::EventBatch, Status>> = evs
            .chunks(7)
            .map(|c| Ok(api::EventBatch { events: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }
    async fn query_for_ids(
        &self,
        r: Request<api::QueryEventsRequest>,
    ) -> Result<Response<api::IdPkTsList>, Status> {
        let items = self
            .matching(r.into_inner().filter)
            .into_iter()
            .enumerate()
            .map(|(i, e)| api::IdPkTs {
                id: e.id,
                pubkey: e.pubkey,
                timestamp: e.created_at,
                serial: i as u64,
            })
            .collect();
        Ok(Response::new(api::IdPkTsList { items }))
    }
    async fn count_events(
        &self,
        r: Request<api::QueryEventsRequest>,
    ) -> Result<Response<api::CountEventsResponse>, Status> {
        let count = self.matching(r.into_inner().filter).len() as i32;
        Ok(Response::new(api::CountEventsResponse {
            count,
            approximate: false,
        }))
    }
}

type StubServer = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Serves `stub` on 127.0.0.1 port 0: its address, the stop switch and the server task.
async fn serve_stub(stub: OrlyDbStub) -> (String, tokio::sync::oneshot::Sender<()>, StubServer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(api::database_service_server::DatabaseServiceServer::new(
                stub,
            ))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    (addr, stop_tx, server)
}

/// Runs `orly sync` in client mode against the service; panics unless it completes.
fn client_sync(relay_url: &str, service: &str) {
    let (code, out, err) = common::orly(&[
        "sync", relay_url, "--server", service, "--dir", "both", "--json",
    ]);
    assert_eq!(code, 0, "client sync failed: {err}\n{out}");
}

fn sync_service(envs: &[(&str, &str)]) -> Proc {
    spawn_service("orly-sync-negentropy", &["--listen", "127.0.0.1:0"], envs)
}

/// Our sync service over a database with only ORLY's subset ends in the same state as over
/// orly-db: both sides hold the union. ORLY's env names (ORLY_SYNC_NEGENTROPY_DB_TYPE/_SERVER)
/// configure it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_service_over_orly_database_subset_matches_orly_db() {
    let tmp = tempfile::tempdir().unwrap();
    let local = notes("orlysub-local", 30, 1_700_000_000);
    let remote = notes("orlysub-remote", 40, 1_700_000_500);
    let shared = notes("orlysub-shared", 20, 1_700_001_000);
    let mine: Vec<Event> = local.iter().chain(&shared).cloned().collect();
    let theirs: Vec<Event> = remote.iter().chain(&shared).cloned().collect();
    let mut union: Vec<String> = local
        .iter()
        .chain(&remote)
        .chain(&shared)
        .map(|e| e.id_hex())
        .collect();
    union.sort();

    // Over our orly-db.
    let (db_dir, relay_a) = (tmp.path().join("db"), tmp.path().join("relay-a"));
    import(&db_dir, &mine);
    import(&relay_a, &theirs);
    let rl = relay(&relay_a, &[]);
    let db = orly_db(&db_dir, &[]);
    let svc = sync_service(&[("ORLY_DB_TYPE", "grpc"), ("ORLY_GRPC_SERVER", &db.addr)]);
    client_sync(&format!("ws://{}", rl.addr), &svc.addr);
    svc.terminate();
    db.terminate();
    rl.terminate();
    let over_db = (ids(&db_dir), ids(&relay_a));

    // Over the stub of ORLY's database, named ORLY's way.
    let stub = OrlyDbStub::default();
    stub.put(&mine);
    let (stub_addr, stop_tx, server) = serve_stub(stub.clone()).await;
    let relay_b = tmp.path().join("relay-b");
    import(&relay_b, &theirs);
    let rl = relay(&relay_b, &[]);
    let svc = sync_service(&[
        ("ORLY_SYNC_NEGENTROPY_DB_TYPE", "grpc"),
        ("ORLY_SYNC_NEGENTROPY_DB_SERVER", &stub_addr),
    ]);
    let url = format!("ws://{}", rl.addr);
    let svc_addr = svc.addr.clone();
    tokio::task::spawn_blocking(move || client_sync(&url, &svc_addr))
        .await
        .unwrap();
    // Again: nothing left to do, and nothing changes.
    let url = format!("ws://{}", rl.addr);
    let svc_addr = svc.addr.clone();
    tokio::task::spawn_blocking(move || client_sync(&url, &svc_addr))
        .await
        .unwrap();
    svc.terminate();
    rl.terminate();
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    let over_stub = (stub.ids(), ids(&relay_b));

    assert_eq!(over_db.0, union, "orly-db holds the union");
    assert_eq!(over_db.1, union, "relay (over orly-db run) holds the union");
    assert_eq!(
        over_stub, over_db,
        "same end state over ORLY's subset as over orly-db"
    );
}

/// orly-relay over a database with only ORLY's subset (ORLY_DB_TYPE=grpc) serves NIP-77, REQ
/// and EVENT: a direct-mode sync against it leaves both sides with the union, and a second sync
/// finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_over_orly_database_subset_serves_a_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let local = notes("orlyrel-local", 25, 1_700_000_000);
    let remote = notes("orlyrel-remote", 35, 1_700_000_500);
    let shared = notes("orlyrel-shared", 10, 1_700_001_000);
    let mut union: Vec<String> = local
        .iter()
        .chain(&remote)
        .chain(&shared)
        .map(|e| e.id_hex())
        .collect();
    union.sort();
    let stub = OrlyDbStub::default();
    stub.put(&remote);
    stub.put(&shared);
    let (stub_addr, stop_tx, server) = serve_stub(stub.clone()).await;
    let rl = spawn_service(
        "orly-relay",
        &["--listen", "127.0.0.1:0"],
        &[("ORLY_DB_TYPE", "grpc"), ("ORLY_GRPC_SERVER", &stub_addr)],
    );
    let dir = tmp.path().join("local");
    import(
        &dir,
        &local.iter().chain(&shared).cloned().collect::<Vec<_>>(),
    );
    for round in 0..2 {
        let url = format!("ws://{}", rl.addr);
        let d = dir.to_str().unwrap().to_string();
        let out = tokio::task::spawn_blocking(move || {
            common::orly(&["sync", &url, "--data-dir", &d, "--dir", "both", "--json"])
        })
        .await
        .unwrap();
        assert_eq!(out.0, 0, "sync {round} failed: {}\n{}", out.2, out.1);
        if round == 1 {
            let last: serde_json::Value =
                serde_json::from_str(out.1.lines().last().unwrap()).unwrap();
            assert_eq!(
                (&last["fetched"], &last["sent"]),
                (&serde_json::json!(0), &serde_json::json!(0)),
                "second sync has nothing to do: {last}"
            );
        }
    }
    rl.terminate();
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    assert_eq!(stub.ids(), union, "the relay's database holds the union");
    assert_eq!(ids(&dir), union, "the local store holds the union");
}

/// ORLY's service-level names are aliases of ours: ORLY_SYNC_NEGENTROPY_LISTEN places the
/// service when neither --listen nor ours is set, and an alias that disagrees with our variable
/// stops the service at start instead of silently picking one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_env_names_are_aliases() {
    let stub = OrlyDbStub::default();
    let (stub_addr, stop_tx, server) = serve_stub(stub).await;
    let svc = spawn_service(
        "orly-sync-negentropy",
        &[],
        &[
            ("ORLY_SYNC_NEGENTROPY_LISTEN", "127.0.0.1:0"),
            ("ORLY_SYNC_NEGENTROPY_DB_TYPE", "grpc"),
            ("ORLY_SYNC_NEGENTROPY_DB_SERVER", &stub_addr),
        ],
    );
    let port: u16 = svc.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(
        port, 50064,
        "listens where ORLY_SYNC_NEGENTROPY_LISTEN says"
    );
    svc.terminate();
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();

    let out = std::process::Command::new(common::bin("orly-sync-negentropy"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("ORLY_GRPC_SERVER")
        .env("ORLY_DB_TYPE", "fjall")
        .env("ORLY_SYNC_NEGENTROPY_DB_TYPE", "grpc")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ORLY_SYNC_NEGENTROPY_DB_TYPE") && err.contains("disagree"),
        "{err}"
    );
}
