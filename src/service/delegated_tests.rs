//! Delegated NIP-77 sessions over a real fjall store, driven by the reference `negentropy`
//! crate as the relay's client.

use super::*;
use crate::event::{Event, Keys, sign_event};
use crate::store::FjallStore;
use ::negentropy as reference;
use std::collections::{BTreeSet, HashSet};

type Client = reference::Negentropy<'static, reference::NegentropyStorageVector>;

fn events(seed: &[u8], n: u64, kind: u16) -> Vec<Event> {
    let k = Keys::from_seed(seed, 0);
    (0..n)
        .map(|i| {
            sign_event(
                &k,
                1_700_000_000 + i * 37,
                kind,
                vec![],
                &format!("{seed:?} {i}"),
            )
        })
        .collect()
}

async fn store_with(evs: &[Event]) -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = FjallStore::open(dir.path()).unwrap();
    s.save(evs.to_vec()).await.unwrap();
    (dir, Arc::new(s))
}

fn client(evs: &[Event], frame_limit: u64) -> Client {
    let mut v = reference::NegentropyStorageVector::with_capacity(evs.len());
    for e in evs {
        v.insert(e.created_at, reference::Id::from_byte_array(e.id))
            .unwrap();
    }
    v.seal().unwrap();
    reference::Negentropy::owned(v, frame_limit).unwrap()
}

fn key(conn: &str, sub: &str) -> SessionKey {
    SessionKey::new(conn, sub).unwrap()
}

/// Runs a whole reconciliation through `open`/`message`; returns (have, need, replies).
async fn reconcile(
    s: &DelegatedSessions,
    k: &SessionKey,
    filter: Filter,
    mut c: Client,
) -> (BTreeSet<[u8; 32]>, BTreeSet<[u8; 32]>, Vec<Reply>) {
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut replies = vec![
        s.open(k.clone(), filter, c.initiate().unwrap())
            .await
            .unwrap(),
    ];
    loop {
        let last = replies.last().unwrap().message.clone();
        match c.reconcile_with_ids(&last, &mut have, &mut need).unwrap() {
            Some(next) => replies.push(s.message(k, next).await.unwrap()),
            None => break,
        }
    }
    let ids = |v: Vec<reference::Id>| v.into_iter().map(|i| i.to_bytes()).collect();
    (ids(have), ids(need), replies)
}

#[tokio::test]
async fn a_delegated_session_finds_exactly_the_differences() {
    let shared = events(b"shared", 3000, 1);
    let ours = events(b"service only", 40, 1);
    let theirs = events(b"client only", 25, 1);
    let (_d, store) = store_with(&[shared.clone(), ours.clone()].concat()).await;
    // A small frame limit makes it take several rounds.
    let limits = DelegatedLimits {
        frame_limit: 4096,
        ..DelegatedLimits::default()
    };
    let s = DelegatedSessions::new(store, limits);
    let k = key("conn-1", "sub-1");
    let c = client(&[shared, theirs.clone()].concat(), 4096);
    let (have, need, replies) = reconcile(&s, &k, Filter::default(), c).await;

    // The client has what only it holds and needs what only the service holds.
    let want_have: BTreeSet<_> = theirs.iter().map(|e| e.id).collect();
    let want_need: BTreeSet<_> = ours.iter().map(|e| e.id).collect();
    assert_eq!(have, want_have);
    assert_eq!(need, want_need);
    assert!(
        replies.len() > 1,
        "a 4096-byte frame limit needs several rounds"
    );
    assert!(
        replies.last().unwrap().complete,
        "the last reply carries no more ranges"
    );
    assert!(replies[..replies.len() - 1].iter().all(|r| !r.complete));

    // The session stays open (the client may continue or close) and is listed with its rounds.
    let listed = s.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, k);
    assert_eq!(listed[0].rounds as usize, replies.len());
    assert!(
        listed[0].created_at > 1_700_000_000 && listed[0].last_activity >= listed[0].created_at
    );
    assert!(s.close(&k));
    assert!(!s.close(&k));
    assert!(s.is_empty());
}

#[tokio::test]
async fn filters_and_caps_are_the_relays() {
    let notes = events(b"notes", 50, 1);
    let reactions = events(b"reactions", 30, 7);
    let (_d, store) = store_with(&[notes.clone(), reactions.clone()].concat()).await;
    let limits = DelegatedLimits {
        max_per_connection: 2,
        max_sessions: 3,
        max_records: 40,
        ..DelegatedLimits::default()
    };
    let s = DelegatedSessions::new(store, limits);

    // A kind filter: only that kind is compared (an empty client needs exactly the 30).
    let f = Filter {
        kinds: Some([7].into()),
        ..Filter::default()
    };
    let (have, need, _) = reconcile(&s, &key("c1", "r"), f, client(&[], 0)).await;
    assert!(have.is_empty());
    let want: BTreeSet<_> = reactions.iter().map(|e| e.id).collect();
    assert_eq!(need, want);

    // A loaded set over the record cap is blocked, with the cap, and holds no slot.
    let f = Filter {
        kinds: Some([1].into()),
        ..Filter::default()
    };
    let err = s
        .open(key("c1", "big"), f, client(&[], 0).initiate().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err, DelegatedError::Blocked { max: 40 });
    assert_eq!(
        err.reason(),
        "blocked: this query matches too many records (max 40)"
    );
    assert_eq!(s.len(), 1);

    // Per connection: the third session of c1 is refused; re-opening an id replaces it.
    let init = || client(&[], 0).initiate().unwrap();
    s.open(key("c1", "a"), Filter::default(), init())
        .await
        .unwrap();
    let err = s
        .open(key("c1", "b"), Filter::default(), init())
        .await
        .unwrap_err();
    assert_eq!(
        err.reason(),
        "closed: at most 2 open sessions per connection"
    );
    s.open(key("c1", "a"), Filter::default(), init())
        .await
        .unwrap();
    assert_eq!(s.len(), 2, "re-opening replaced the session");
    let a = s
        .list()
        .into_iter()
        .find(|i| i.key == key("c1", "a"))
        .unwrap();
    assert_eq!(a.rounds, 1, "the replaced session's rounds start again");

    // In total: three sessions, then busy for any connection.
    s.open(key("c2", "a"), Filter::default(), init())
        .await
        .unwrap();
    let err = s
        .open(key("c3", "a"), Filter::default(), init())
        .await
        .unwrap_err();
    assert!(
        err.reason().starts_with("error: busy: "),
        "{}",
        err.reason()
    );
    assert_eq!(s.len(), 3);
}

#[tokio::test]
async fn bad_messages_end_the_session_with_a_reason() {
    let (_d, store) = store_with(&events(b"x", 10, 1)).await;
    let s = DelegatedSessions::new(store, DelegatedLimits::default());
    let k = key("c", "s");

    let err = s.message(&k, vec![0x61]).await.unwrap_err();
    assert_eq!(err.reason(), "closed: no open session with this id");

    // A malformed message (right version, truncated range) is invalid and closes the session.
    s.open(
        k.clone(),
        Filter::default(),
        client(&[], 0).initiate().unwrap(),
    )
    .await
    .unwrap();
    let err = s.message(&k, vec![0x61, 0x05]).await.unwrap_err();
    assert!(err.reason().starts_with("invalid: "), "{}", err.reason());
    assert!(s.is_empty(), "the session is gone after an error");

    // A malformed opening message holds no slot either.
    let err = s
        .open(k.clone(), Filter::default(), vec![0x61, 0xff])
        .await
        .unwrap_err();
    assert!(err.reason().starts_with("invalid: "), "{}", err.reason());
    assert!(s.is_empty());

    // Ids are checked before anything is opened.
    let long = "x".repeat(MAX_SUBSCRIPTION_ID + 1);
    assert!(SessionKey::new("c", &long).is_err());
    assert!(SessionKey::new("c", "").is_err());
    assert!(SessionKey::new(&"c".repeat(MAX_CONNECTION_ID + 1), "s").is_err());
    assert!(
        SessionKey::new("", "s").is_ok(),
        "a relay may use no connection id"
    );
}

#[tokio::test]
async fn sessions_close_by_subscription_connection_and_idleness() {
    let (_d, store) = store_with(&events(b"y", 5, 1)).await;
    let limits = DelegatedLimits {
        idle: Duration::from_millis(200),
        ..DelegatedLimits::default()
    };
    let s = Arc::new(DelegatedSessions::new(store, limits));
    let init = || client(&[], 0).initiate().unwrap();
    for (c, sub) in [("c1", "a"), ("c1", "b"), ("c2", "a"), ("c3", "z")] {
        s.open(key(c, sub), Filter::default(), init())
            .await
            .unwrap();
    }
    // CloseSession with no connection id: that subscription on every connection.
    assert_eq!(s.close_subscription("", "a"), 2);
    let left: HashSet<_> = s.list().into_iter().map(|i| i.key).collect();
    assert_eq!(left, [key("c1", "b"), key("c3", "z")].into());
    // With a connection id: only there.
    assert_eq!(s.close_subscription("c2", "z"), 0);
    assert_eq!(s.close_subscription("c3", "z"), 1);
    assert_eq!(s.close_connection("c1"), 1);
    assert!(s.is_empty());

    // Idle sessions expire through the expiry task; an active one is kept.
    s.open(key("c", "idle"), Filter::default(), init())
        .await
        .unwrap();
    s.open(key("c", "busy"), Filter::default(), init())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let s = s.clone();
        tokio::spawn(async move {
            s.run_expiry(async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Keep "busy" active: each message (a fresh first message is a valid one) is answered.
        let msg = client(&[], 0).initiate().unwrap();
        s.message(&key("c", "busy"), msg).await.unwrap();
    }
    let left: Vec<_> = s.list().into_iter().map(|i| i.key).collect();
    assert_eq!(
        left,
        vec![key("c", "busy")],
        "the idle session expired, the active one stayed"
    );
    let err = s.message(&key("c", "idle"), vec![0x61]).await.unwrap_err();
    assert_eq!(err.reason(), "closed: no open session with this id");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the expiry task stops at shutdown")
        .unwrap();
}
