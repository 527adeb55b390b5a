//! The REQ mix of the postgres bench: one seeded list of NIP-01 filters of the shapes clients
//! really send (by ids, a profile and a follows feed by authors + kinds, a kind in a time
//! window, a thread by `#e`, notifications by `#p`, a hashtag by `#t`, a broad limit-only
//! REQ), asked over a real WebSocket of an `orly-relay` over fjall and of one over PostgreSQL
//! holding the same events. Each REQ is read to its EOSE, then closed.
//!
//! Per store, one connection asks the REQs one after the other (keeping the ids each returns:
//! both stores hold the same events, so both must answer every REQ with the same set, which is
//! checked), then [`CONNS`] connections share them (the same number of events per REQ).
//!
//! `orly gen` makes `t` and `p` tags but no `e` tags, so [`threads`] adds replies and reactions
//! (kinds 1 and 7 with `e` and `p` tags, signed by the generated authors) that point mostly at
//! a few popular notes, as real threads do.

use super::{GEN_AUTHORS, Relay, SHARED_SEED, Side};
use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Connections of the concurrent pass.
const CONNS: usize = 4;
/// Longest wait for any one message of the relay (a stuck relay fails the bench).
const READ_LIMIT: Duration = Duration::from_secs(60);
/// Seed of the filter list.
const MIX_SEED: u64 = 17;
/// Hashtags `orly gen` puts in `t` tags.
const HASHTAGS: [&str; 4] = ["nostr", "relay", "sync", "zap"];

/// What the stored events hold that filters point at.
pub struct Corpus {
    /// Ids of the shared events.
    ids: Vec<String>,
    /// Their authors (hex), each once.
    authors: Vec<String>,
    /// Oldest and newest `created_at`.
    span: (u64, u64),
    /// Ids the replies and reactions point at (each once; popular ones among them).
    targets: Vec<String>,
}

/// Writes `count` replies and reactions to the events of `shared` into `out`, signed by the
/// generator's authors: 80 % to the 1 % most popular kind-1 notes, the rest to any note.
pub fn threads(shared: &Path, out: &Path, count: u64) -> Corpus {
    let mut notes: Vec<(String, String, u64)> = Vec::new();
    let mut ids = Vec::new();
    let mut authors = std::collections::BTreeSet::new();
    let mut span = (u64::MAX, 0);
    for line in BufReader::new(std::fs::File::open(shared).expect("open")).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.expect("read")).expect("json");
        let id = v["id"].as_str().expect("id").to_string();
        let pubkey = v["pubkey"].as_str().expect("pubkey").to_string();
        let t = v["created_at"].as_u64().expect("created_at");
        span = (span.0.min(t), span.1.max(t));
        authors.insert(pubkey.clone());
        if v["kind"] == 1 {
            notes.push((id.clone(), pubkey, t));
        }
        ids.push(id);
    }
    assert!(!notes.is_empty(), "no kind-1 notes to reply to");
    let keys: Vec<orly::event::Keys> = (0..GEN_AUTHORS)
        .map(|i| orly::event::Keys::from_seed(&SHARED_SEED.to_be_bytes(), i))
        .collect();
    let mut rng = StdRng::seed_from_u64(MIX_SEED);
    let popular = (notes.len() / 100).max(1);
    let mut targets = std::collections::BTreeSet::new();
    let mut w = BufWriter::new(std::fs::File::create(out).expect("create"));
    for i in 0..count {
        let (id, pubkey, t) = if rng.random_bool(0.8) {
            &notes[rng.random_range(0..popular)]
        } else {
            &notes[rng.random_range(0..notes.len())]
        };
        targets.insert(id.clone());
        let keys = &keys[rng.random_range(0..keys.len())];
        let at = t + rng.random_range(1..7200);
        let ev = if rng.random_bool(0.6) {
            let tags = vec![
                vec!["e".into(), id.clone()],
                vec!["p".into(), pubkey.clone()],
            ];
            orly::event::sign_event(keys, at, 7, tags, "+")
        } else {
            let tags = vec![
                vec!["e".into(), id.clone(), String::new(), "root".into()],
                vec!["p".into(), pubkey.clone()],
            ];
            orly::event::sign_event(keys, at, 1, tags, &format!("reply #{i}"))
        };
        writeln!(w, "{}", ev.to_json()).expect("write");
    }
    w.flush().expect("flush");
    Corpus {
        ids,
        authors: authors.into_iter().collect(),
        span,
        targets: targets.into_iter().collect(),
    }
}

/// The filter shapes of the mix, with their share (percent).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Shape {
    Ids,
    Profile,
    Follows,
    KindWindow,
    Thread,
    Notifications,
    Hashtag,
    Broad,
}

const MIX: [(Shape, u32); 8] = [
    (Shape::Ids, 15),
    (Shape::Profile, 12),
    (Shape::Follows, 13),
    (Shape::KindWindow, 15),
    (Shape::Thread, 15),
    (Shape::Notifications, 15),
    (Shape::Hashtag, 5),
    (Shape::Broad, 10),
];

impl Shape {
    fn describe(self) -> &'static str {
        match self {
            Shape::Ids => "ids (1-20 ids)",
            Shape::Profile => "profile: 1 author, kind 1, limit 20",
            Shape::Follows => "follows feed: 10-150 authors, kinds 1+7, limit 100",
            Shape::KindWindow => "kind 1 since/until (1 h-1 day), limit 100",
            Shape::Thread => "thread: #e 1-3 notes, kinds 1+7, limit 500",
            Shape::Notifications => "notifications: #p 1 author, kinds 1+7, limit 50",
            Shape::Hashtag => "hashtag: #t, kind 1, limit 50",
            Shape::Broad => "broad: limit 50-500 only",
        }
    }
}

fn pick<'a, R: Rng>(rng: &mut R, from: &'a [String], n: usize) -> Vec<&'a String> {
    (0..n)
        .map(|_| &from[rng.random_range(0..from.len())])
        .collect()
}

/// `n` filters (JSON) drawn from [`MIX`] with a fixed seed.
fn mix(c: &Corpus, n: usize) -> Vec<(Shape, String)> {
    use serde_json::json;
    let mut rng = StdRng::seed_from_u64(MIX_SEED);
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    (0..n)
        .map(|_| {
            let mut r = rng.random_range(0..total);
            let shape = MIX
                .iter()
                .find(|(_, w)| {
                    let hit = r < *w;
                    r = r.saturating_sub(*w);
                    hit
                })
                .map(|(s, _)| *s)
                .unwrap_or(Shape::Broad);
            let f = match shape {
                Shape::Ids => {
                    let k = rng.random_range(1..=20);
                    json!({ "ids": pick(&mut rng, &c.ids, k) })
                }
                Shape::Profile => {
                    json!({ "authors": pick(&mut rng, &c.authors, 1), "kinds": [1], "limit": 20 })
                }
                Shape::Follows => {
                    let k = rng.random_range(10..=150);
                    json!({ "authors": pick(&mut rng, &c.authors, k), "kinds": [1, 7], "limit": 100 })
                }
                Shape::KindWindow => {
                    let width = rng.random_range(3_600..=86_400);
                    let since = rng.random_range(c.span.0..=c.span.1.saturating_sub(width));
                    json!({ "kinds": [1], "since": since, "until": since + width, "limit": 100 })
                }
                Shape::Thread => {
                    let k = rng.random_range(1..=3);
                    json!({ "#e": pick(&mut rng, &c.targets, k), "kinds": [1, 7], "limit": 500 })
                }
                Shape::Notifications => {
                    json!({ "#p": pick(&mut rng, &c.authors, 1), "kinds": [1, 7], "limit": 50 })
                }
                Shape::Hashtag => {
                    let t = HASHTAGS[rng.random_range(0..HASHTAGS.len())];
                    json!({ "#t": [t], "kinds": [1], "limit": 50 })
                }
                Shape::Broad => {
                    let limit = [50, 100, 500][rng.random_range(0..3)];
                    json!({ "limit": limit })
                }
            };
            (shape, f.to_string())
        })
        .collect()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One REQ's answer: the events up to EOSE, their ids (sorted) when asked for, and its time.
#[derive(Default, Clone)]
struct Answer {
    events: usize,
    ids: Vec<String>,
    secs: f64,
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(READ_LIMIT, ws.next())
            .await
            .expect("relay silent")
            .expect("connection closed")
            .expect("websocket");
        match msg {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Close(c) => panic!("relay closed the connection: {c:?}"),
            _ => {}
        }
    }
}

/// Sends `["REQ", sub, filter]`, reads to its EOSE, then closes the subscription.
async fn ask(ws: &mut Ws, sub: &str, filter: &str, keep_ids: bool) -> Answer {
    let t = Instant::now();
    ws.send(Message::text(format!(r#"["REQ","{sub}",{filter}]"#)))
        .await
        .expect("send REQ");
    let mut a = Answer::default();
    loop {
        let text = next_text(ws).await;
        if text.starts_with(r#"["EVENT""#) {
            a.events += 1;
            if keep_ids {
                let v: serde_json::Value = serde_json::from_str(&text).expect("EVENT json");
                assert_eq!(v[1], sub, "EVENT of another subscription");
                a.ids.push(v[2]["id"].as_str().expect("id").to_string());
            }
        } else if text.starts_with(r#"["EOSE""#) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("EOSE json");
            assert_eq!(v[1], sub, "EOSE of another subscription");
            break;
        } else {
            panic!("REQ {filter}: unexpected {text}");
        }
    }
    a.secs = t.elapsed().as_secs_f64();
    ws.send(Message::text(format!(r#"["CLOSE","{sub}"]"#)))
        .await
        .expect("send CLOSE");
    a.ids.sort_unstable();
    a
}

/// Asks every filter of `reqs` over `conns` connections to `url` (each takes the next REQ not
/// yet asked): the wall time from the first REQ to the last EOSE (connections are open before),
/// and the answers in the order of `reqs`.
async fn pass(
    url: &str,
    reqs: &Arc<Vec<(Shape, String)>>,
    conns: usize,
    keep_ids: bool,
) -> (f64, Vec<Answer>) {
    let mut sockets = Vec::new();
    for _ in 0..conns {
        // No Nagle: a REQ written right after the previous CLOSE would wait for the relay's
        // delayed ACK (40 ms), and every REQ would measure that.
        let (ws, _) = tokio::time::timeout(
            READ_LIMIT,
            tokio_tungstenite::connect_async_with_config(url, None, true),
        )
        .await
        .expect("connect timed out")
        .expect("connect");
        sockets.push(ws);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(c, mut ws)| {
            let (reqs, next) = (reqs.clone(), next.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, filter)) = reqs.get(i) else {
                        break;
                    };
                    got.push((
                        i,
                        ask(&mut ws, &format!("c{c}r{i}"), filter, keep_ids).await,
                    ));
                }
                let _ = ws.close(None).await;
                got
            })
        })
        .collect();
    let mut answers = vec![Answer::default(); reqs.len()];
    for task in tasks {
        for (i, a) in task.await.expect("client task") {
            answers[i] = a;
        }
    }
    (t.elapsed().as_secs_f64(), answers)
}

/// The figures of one store: one connection (answers with their ids), then [`CONNS`].
struct Run {
    sequential: (f64, Vec<Answer>),
    concurrent: (f64, Vec<Answer>),
}

fn measure(rt: &tokio::runtime::Runtime, side: &Side, reqs: &Arc<Vec<(Shape, String)>>) -> Run {
    let relay = Relay::start(side);
    let url = relay.url();
    rt.block_on(async {
        let sequential = pass(&url, reqs, 1, true).await;
        let concurrent = pass(&url, reqs, CONNS, false).await;
        Run {
            sequential,
            concurrent,
        }
    })
}

/// Runs the mix of `reqs` REQs against `fjall` and `pg` (both holding the same `held` events)
/// and prints REQs/s beside each other.
pub fn run(fjall: &Side, pg: &Side, corpus: &Corpus, held: u64, reqs: usize) {
    let filters = Arc::new(mix(corpus, reqs));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let f = measure(&rt, fjall, &filters);
    let p = measure(&rt, pg, &filters);
    for (i, (shape, filter)) in filters.iter().enumerate() {
        let (a, b) = (&f.sequential.1[i], &p.sequential.1[i]);
        assert!(
            a.ids == b.ids,
            "REQ {i} ({shape:?}) {filter}: fjall returned {} events, postgres {} ({} ids differ)",
            a.events,
            b.events,
            a.ids
                .iter()
                .filter(|id| b.ids.binary_search(id).is_err())
                .count()
                + b.ids
                    .iter()
                    .filter(|id| a.ids.binary_search(id).is_err())
                    .count()
        );
        for (name, run) in [("fjall", &f), ("postgres", &p)] {
            assert_eq!(
                run.concurrent.1[i].events, a.events,
                "REQ {i} {filter}: {name} returned another number of events to {CONNS} \
                 connections than to one"
            );
        }
    }
    let returned: usize = f.sequential.1.iter().map(|a| a.events).sum();
    let rate = |secs: f64| reqs as f64 / secs;
    println!(
        "\nREQ mix over {held} events: {reqs} REQs (seeded), each read to EOSE then closed, over \
         a WebSocket to orly-relay (no goal in issue 17; ratio = postgres / fjall rate):"
    );
    println!(
        "  events returned: {returned} per pass, the same ids on both stores REQ by REQ (checked)"
    );
    for (name, fs, ps) in [
        ("1 connection, in order", f.sequential.0, p.sequential.0),
        ("4 connections at once ", f.concurrent.0, p.concurrent.0),
    ] {
        println!(
            "  {name}: fjall {:.0} REQ/s ({fs:.2} s), postgres {:.0} REQ/s ({ps:.2} s), rate \
             ratio {:.2}",
            rate(fs),
            rate(ps),
            fs / ps
        );
    }
    println!("  by shape, 1 connection (mean per REQ; share; events per REQ):");
    for (shape, share) in MIX {
        let of = |answers: &[Answer]| -> (usize, f64, usize) {
            let mut n = 0;
            let mut secs = 0.0;
            let mut events = 0;
            for (a, _) in answers
                .iter()
                .zip(filters.iter())
                .filter(|(_, r)| r.0 == shape)
            {
                n += 1;
                secs += a.secs;
                events += a.events;
            }
            (n, secs / n.max(1) as f64, events / n.max(1))
        };
        let (n, fm, ev) = of(&f.sequential.1);
        let (_, pm, _) = of(&p.sequential.1);
        println!(
            "    {:<52} fjall {:>7.3} ms, postgres {:>7.3} ms, time ratio {:>5.2} ({n} REQs, \
             {share} %, {ev} events)",
            shape.describe(),
            fm * 1e3,
            pm * 1e3,
            pm / fm
        );
    }
}
