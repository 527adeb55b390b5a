//! Writes the seed corpus, `fuzz/corpus/<target>/seed-*`: a handful of valid inputs per target,
//! made the way the tests make them (signed events, wire messages, negentropy exchanges over the
//! targets' fixed sets, protobuf requests, real audit directories, policies, minted tokens).
//! Run from `fuzz/`: `cargo run --example seeds` (any toolchain). Replaces the seed files only;
//! nothing else in `corpus/` is touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use orly::audit::{AuditChain, AuditEntry, AuditOptions, SyncCounts};
use orly::auth::{MintRequest, TokenSigningKey, mint};
use orly::event::wire::{ClientMessage, RelayMessage};
use orly::event::{Event, Filter, Keys, sign_event};
use orly::negentropy::{Item, Reconciler, VecStorage};
use orly::proto::orlydb::v1 as db;
use orly::proto::orlysync::common::v1 as common;
use orly::proto::orlysync::negentropy::v1 as sync;
use orly_fuzz::{
    Mix, TOKEN_AUDIENCE, TOKEN_CERT, TOKEN_ISSUER, TOKEN_NOW, TOKEN_SEP, audit_key,
    join_audit_input, neg_config, token_key_pem,
};
use prost::Message;
use serde_json::json;

type Seeds = Vec<(String, Vec<u8>)>;

fn seed(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> (String, Vec<u8>) {
    (name.into(), bytes.into())
}

fn events() -> Vec<Event> {
    let keys = Keys::from_seed(b"orly-fuzz-seeds", 0);
    let tag = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        sign_event(&keys, 1_700_000_000, 1, vec![tag(&["t", "nostr"])], "plain"),
        sign_event(
            &keys,
            1_700_000_001,
            30023,
            vec![tag(&["d", "x"]), tag(&["e", &"ab".repeat(32), "wss://r/"])],
            "quote \" backslash \\ newline\n tab\t controls \u{0}\u{1f}\u{7f} é 😀 \u{2028}",
        ),
        sign_event(&keys, 0, 5, vec![tag(&["e", &"cd".repeat(32)])], ""),
    ]
}

fn event_json() -> Seeds {
    let mut out: Seeds = events()
        .iter()
        .enumerate()
        .map(|(i, e)| seed(format!("event-{i}"), e.to_json()))
        .collect();
    let mut bad = events()[0].clone();
    bad.content.push('!');
    out.push(seed("bad-id", bad.to_json()));
    // The latest time accepted: one more is refused by verify (the protobuf time is int64).
    let keys = Keys::from_seed(b"orly-fuzz-seeds", 1);
    let last = sign_event(&keys, orly::event::MAX_CREATED_AT, 1, vec![], "last second");
    out.push(seed("last-second", last.to_json()));
    out
}

fn client_message() -> Seeds {
    let ev: serde_json::Value = serde_json::from_str(&events()[0].to_json()).unwrap_or_default();
    let (items, _) = neg_config(2);
    let init = Reconciler::new(VecStorage::new(items), 0)
        .and_then(|mut r| r.initiate())
        .unwrap_or_default();
    let msgs = [
        ClientMessage::Event(ev.clone()),
        ClientMessage::Req {
            sub: "sub1".into(),
            filters: vec![
                json!({"kinds": [1], "#t": ["nostr"], "since": 5}),
                json!({}),
            ],
        },
        ClientMessage::Close { sub: "sub1".into() },
        ClientMessage::Auth(ev),
        ClientMessage::NegOpen {
            sub: "neg".into(),
            filter: json!({"kinds": [1]}),
            hex: hex::encode(&init),
        },
        ClientMessage::NegMsg {
            sub: "neg".into(),
            hex: hex::encode(&init),
        },
        ClientMessage::NegClose { sub: "neg".into() },
    ];
    msgs.iter()
        .enumerate()
        .map(|(i, m)| seed(format!("msg-{i}"), m.to_json()))
        .collect()
}

fn relay_message() -> Seeds {
    let ev: serde_json::Value = serde_json::from_str(&events()[1].to_json()).unwrap_or_default();
    let msgs = [
        RelayMessage::Event {
            sub: "sub1".into(),
            event: ev,
        },
        RelayMessage::Eose { sub: "sub1".into() },
        RelayMessage::Ok {
            id: "ab".repeat(32),
            accepted: false,
            message: "blocked: no".into(),
        },
        RelayMessage::Closed {
            sub: "sub1".into(),
            message: "auth-required: who are you".into(),
        },
        RelayMessage::Notice {
            message: "hello".into(),
        },
        RelayMessage::Auth {
            challenge: "c0ffee".into(),
        },
        RelayMessage::NegMsg {
            sub: "neg".into(),
            hex: "6100".into(),
        },
        RelayMessage::NegErr {
            sub: "neg".into(),
            reason: "blocked: too many".into(),
            max: Some(100_000),
        },
    ];
    msgs.iter()
        .enumerate()
        .map(|(i, m)| seed(format!("msg-{i}"), m.to_json()))
        .collect()
}

fn filters() -> Vec<String> {
    vec![
        "{}".into(),
        format!(
            r##"{{"kinds":[1,7],"authors":["{}"],"#t":["a","b"],"since":5,"until":9,"limit":3}}"##,
            "ab".repeat(32)
        ),
        format!(r#"{{"ids":["{}"],"kinds":[]}}"#, "cd".repeat(32)),
        r##"{"#T":["Upper"],"#d":["article"],"until":18446744073709551615}"##.into(),
    ]
}

fn filter() -> Seeds {
    filters()
        .into_iter()
        .enumerate()
        .map(|(i, f)| seed(format!("filter-{i}"), f))
        .collect()
}

/// Another side's set against a role target's fixed set: half of it, plus items of its own.
fn other_side(items: &[Item], seed_: u64) -> Vec<Item> {
    let mut mix = Mix::new(seed_);
    let mut other: Vec<Item> = items.iter().step_by(2).copied().collect();
    other.extend((0..items.len() / 4 + 3).map(|_| Item {
        t: 1_700_000_000 + mix.next_u64() % 50,
        id: mix.id(),
    }));
    other
}

/// For every configuration byte: a client's message to the fixed server set (first and second
/// round), or a server's answer to the fixed client set's first message.
fn negentropy(server_role: bool) -> Seeds {
    let mut out = Seeds::new();
    for config in 0u8..8 {
        let (items, limit) = neg_config(config);
        let other = other_side(&items, u64::from(config));
        let (client_set, server_set) = if server_role {
            (other, items)
        } else {
            (items, other)
        };
        let (Ok(mut client), Ok(mut server)) = (
            Reconciler::new(VecStorage::new(client_set), limit),
            Reconciler::new(VecStorage::new(server_set), limit),
        ) else {
            continue;
        };
        let Ok(init) = client.initiate() else {
            continue;
        };
        let Ok(reply) = server.respond(&init) else {
            continue;
        };
        let with = |m: &[u8]| [&[config][..], m].concat();
        if server_role {
            out.push(seed(format!("config-{config}-init"), with(&init)));
            let (mut h, mut n) = (Vec::new(), Vec::new());
            if let Ok(Some(next)) = client.next(&reply, &mut h, &mut n) {
                out.push(seed(format!("config-{config}-round2"), with(&next)));
            }
        } else {
            out.push(seed(format!("config-{config}-reply"), with(&reply)));
        }
    }
    out
}

/// Arbitrary-driven targets: bytes of a few lengths (each decodes to some structured input).
fn random_bytes() -> Seeds {
    let mut mix = Mix::new(4242);
    [16usize, 128, 1024, 4096]
        .iter()
        .map(|&n| {
            let bytes: Vec<u8> = (0..n).map(|_| mix.next_u64() as u8).collect();
            seed(format!("random-{n}"), bytes)
        })
        .collect()
}

fn grpc_requests() -> Seeds {
    let filter = |f: &str| Filter::from_json(f).map(|f| common::Filter::from(&f)).ok();
    let rich = filter(&filters()[1]);
    let with = |which: u8, bytes: Vec<u8>| [vec![which], bytes].concat();
    let ev = common::Event::from(events()[1].clone());
    vec![
        seed(
            "sync-peer",
            with(
                0,
                sync::SyncPeerRequest {
                    peer_url: "wss://relay.example.com/".into(),
                    filter: rich.clone(),
                    since: 1_700_000_000,
                    direction: sync::Direction::Both as i32,
                    dry_run: false,
                    frame_size_limit: Some(60_000),
                    timeout_seconds: 30,
                }
                .encode_to_vec(),
            ),
        ),
        seed(
            "status",
            with(
                1,
                sync::GetSyncRequest {
                    sync_id: "sync-1".into(),
                }
                .encode_to_vec(),
            ),
        ),
        seed(
            "neg-open",
            with(
                1,
                sync::NegOpenRequest {
                    subscription_id: "sub-1".into(),
                    filter: rich.clone(),
                    initial_message: vec![0x61],
                    connection_id: "conn-1".into(),
                }
                .encode_to_vec(),
            ),
        ),
        seed(
            "add-peer",
            with(
                1,
                sync::AddPeerRequest {
                    peer_url: "wss://relay.example.com/".into(),
                    filter: rich.clone(),
                    direction: sync::Direction::Down as i32,
                }
                .encode_to_vec(),
            ),
        ),
        seed("event", with(2, ev.encode_to_vec())),
        seed(
            "query",
            with(
                3,
                db::QueryRequest {
                    filter: rich.clone(),
                    ascending: true,
                }
                .encode_to_vec(),
            ),
        ),
        seed(
            "count",
            with(
                4,
                db::CountRequest {
                    filter: rich.clone(),
                }
                .encode_to_vec(),
            ),
        ),
        seed(
            "reconcile-open",
            with(
                6,
                db::ReconcileRequest {
                    step: Some(db::reconcile_request::Step::Open(db::ReconcileOpen {
                        filter: rich,
                        frame_limit: 4096,
                        max_items: Some(1000),
                    })),
                }
                .encode_to_vec(),
            ),
        ),
        seed(
            "reconcile-message",
            with(
                6,
                db::ReconcileRequest {
                    step: Some(db::reconcile_request::Step::Message(vec![0x61, 0, 0, 2, 0])),
                }
                .encode_to_vec(),
            ),
        ),
        seed(
            "item-batch",
            with(
                8,
                db::NegentropyItemBatch {
                    created_at: vec![1, 2],
                    ids: vec![7; 64],
                }
                .encode_to_vec(),
            ),
        ),
        seed(
            "progress",
            with(
                10,
                sync::SyncProgress {
                    peer_url: "wss://relay.example.com/".into(),
                    round: 3,
                    have_count: 5,
                    need_count: 7,
                    error: "peer closed".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ),
    ]
}

fn entry(i: u64) -> AuditEntry {
    if i % 3 == 2 {
        AuditEntry::sync_finished()
            .admin("alice")
            .peer("wss://relay.example")
            .direction("down")
            .counts(SyncCounts {
                have: i,
                need: 2,
                fetched: 2,
                sent: 0,
                ..SyncCounts::default()
            })
            .duration_ms(12)
    } else if i % 2 == 0 {
        AuditEntry::decision(true, "policy: peer allowed")
            .admin("alice")
            .source("10.0.0.1:5000")
            .rpc("/orlysync.negentropy.v1.NegentropyService/SyncWithPeer")
            .filter(json!({"kinds": [1]}))
            .starts_sync()
    } else {
        AuditEntry::decision(false, "peer not allowed: wss://elsewhere/")
            .admin("alice")
            .source("10.0.0.1:5000")
            .rpc("/orlysync.negentropy.v1.NegentropyService/SyncWithPeer")
    }
}

/// The directory's HEAD.json and segments as one `audit_verify` input.
fn audit_input(dir: &Path) -> Vec<u8> {
    let head = fs::read(dir.join("HEAD.json")).unwrap_or_default();
    let mut segments = Vec::new();
    for i in 1.. {
        match fs::read(dir.join(format!("audit-{i:06}.jsonl"))) {
            Ok(b) => segments.push(b),
            Err(_) => break,
        }
    }
    join_audit_input(&head, &segments)
}

fn write_chain(dir: &Path, key: bool, opts: AuditOptions, n: u64) -> Result<(), String> {
    let chain = AuditChain::open(dir, key.then(audit_key), opts).map_err(|e| e.to_string())?;
    for i in 0..n {
        chain.append(entry(i)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn audit_verify(scratch: &Path) -> Result<Seeds, String> {
    let mut out = Seeds::new();
    let small = AuditOptions {
        checkpoint_every: 3,
        max_file_bytes: 2048,
    };
    for (name, key, opts, n) in [
        ("signed", true, AuditOptions::default(), 4),
        ("rotated", true, small, 9),
        ("unsigned", false, small, 5),
    ] {
        let dir = scratch.join(name);
        write_chain(&dir, key, opts, n)?;
        out.push(seed(name, audit_input(&dir)));
    }
    // A line someone else appended after the head: the restarted writer leaves it out and says
    // so in a recovery record.
    let dir = scratch.join("recovered");
    write_chain(&dir, true, AuditOptions::default(), 3)?;
    let seg = dir.join("audit-000001.jsonl");
    let mut bytes = fs::read(&seg).map_err(|e| e.to_string())?;
    bytes.extend_from_slice(b"{\"not\":\"a record\"}\n");
    fs::write(&seg, bytes).map_err(|e| e.to_string())?;
    write_chain(&dir, true, AuditOptions::default(), 1)?;
    out.push(seed("recovered", audit_input(&dir)));
    Ok(out)
}

fn policy() -> Result<Seeds, String> {
    let example = include_str!("../../policy/example.toml");
    let starter =
        orly::policy::starter_policy(&["alice".into(), "bob".into()]).map_err(|e| e.to_string())?;
    let minimal = "[[admin]]\nname = \"alice\"\npeers = [\"*\"]\ndirections = [\"down\"]\n\
                   max_events_per_sync = 10\nrate_per_minute = 1\nburst = 1\nmax_concurrent = 1\n";
    Ok(vec![
        seed("example", example),
        seed("starter", starter),
        seed("minimal", minimal),
    ])
}

fn token() -> Result<Seeds, String> {
    let key = TokenSigningKey::from_pkcs8_pem(&token_key_pem()).map_err(|e| e.to_string())?;
    let now = UNIX_EPOCH + Duration::from_secs(TOKEN_NOW - 10);
    let minted = |cert: Option<&'static [u8]>, ttl: u64| {
        mint(
            &key,
            &MintRequest {
                issuer: TOKEN_ISSUER,
                audience: TOKEN_AUDIENCE,
                admin: "spiffe://orly.local/admin/alice",
                ttl: Duration::from_secs(ttl),
                cert_der: cert,
                now,
            },
        )
        .map_err(|e| e.to_string())
    };
    let mut out = vec![
        seed(
            "bound",
            [&[0u8][..], minted(Some(TOKEN_CERT), 300)?.as_bytes()].concat(),
        ),
        seed(
            "unbound",
            [&[0u8][..], minted(None, 300)?.as_bytes()].concat(),
        ),
        seed(
            "expired",
            [&[0u8][..], minted(Some(TOKEN_CERT), 1)?.as_bytes()].concat(),
        ),
    ];
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()}).to_string();
    let cnf = orly::auth::cert_thumbprint_b64url(TOKEN_CERT);
    let claims = json!({
        "iss": TOKEN_ISSUER, "aud": [TOKEN_AUDIENCE, "other"], "sub": "alice",
        "exp": TOKEN_NOW + 60, "nbf": TOKEN_NOW - 60, "iat": TOKEN_NOW - 60, "jti": "j1",
        "cnf": {"x5t#S256": cnf},
    })
    .to_string();
    out.push(seed(
        "signed-claims",
        [
            &[1u8][..],
            header.as_bytes(),
            &[TOKEN_SEP],
            claims.as_bytes(),
        ]
        .concat(),
    ));
    Ok(out)
}

fn write(root: &Path, target: &str, seeds: Seeds) -> Result<(), String> {
    let dir = root.join(target);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for entry in fs::read_dir(&dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"))
        {
            fs::remove_file(&path).map_err(|e| e.to_string())?;
        }
    }
    for (name, bytes) in seeds {
        fs::write(dir.join(format!("seed-{name}")), bytes).map_err(|e| e.to_string())?;
    }
    println!("{target}: written");
    Ok(())
}

fn main() -> Result<(), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let scratch = std::env::temp_dir().join(format!("orly-fuzz-seeds-{}", std::process::id()));
    let audit = audit_verify(&scratch);
    let _ = fs::remove_dir_all(&scratch);
    write(&root, "event_json", event_json())?;
    write(&root, "event_forms", random_bytes())?;
    write(&root, "client_message", client_message())?;
    write(&root, "relay_message", relay_message())?;
    write(&root, "filter", filter())?;
    write(&root, "neg_server", negentropy(true))?;
    write(&root, "neg_client", negentropy(false))?;
    write(&root, "neg_differential", random_bytes())?;
    write(&root, "grpc_requests", grpc_requests())?;
    write(&root, "audit_verify", audit?)?;
    write(&root, "policy", policy()?)?;
    write(&root, "token", token()?)?;
    Ok(())
}
