//! Storage semantics, checked on a real fjall store in a temp dir.

use super::*;
use crate::event::{Keys, sign_event};

fn store() -> (tempfile::TempDir, FjallStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = FjallStore::open(dir.path()).unwrap();
    (dir, s)
}

fn ev(keys: &Keys, at: u64, kind: u16, tags: Vec<Vec<String>>, content: &str) -> Event {
    sign_event(keys, at, kind, tags, content)
}

fn all(s: &FjallStore) -> Vec<Event> {
    let mut v = Vec::new();
    s.query_blocking(&Filter::default(), Order::OldestFirst, |e| {
        v.push(e);
        true
    })
    .unwrap();
    v
}

fn tag(a: &str, b: &str) -> Vec<String> {
    vec![a.to_string(), b.to_string()]
}

#[test]
fn duplicates_and_ephemeral() {
    let (_d, s) = store();
    let k = Keys::from_seed(b"s", 0);
    let a = ev(&k, 10, 1, vec![], "a");
    let eph = ev(&k, 10, 20001, vec![], "e");
    let out = s.save_blocking(&[a.clone(), a.clone(), eph]).unwrap();
    assert_eq!(
        out,
        vec![
            SaveOutcome::Accepted,
            SaveOutcome::Duplicate,
            SaveOutcome::Ephemeral
        ]
    );
    assert_eq!(
        s.save_blocking(std::slice::from_ref(&a)).unwrap(),
        vec![SaveOutcome::Duplicate]
    );
    assert_eq!(all(&s), vec![a]);
}

#[test]
fn replaceable_keeps_newest_and_lowest_id_on_tie() {
    let (_d, s) = store();
    let k = Keys::from_seed(b"s", 1);
    let old = ev(&k, 10, 0, vec![], "old");
    let new = ev(&k, 20, 0, vec![], "new");
    assert_eq!(
        s.save_blocking(std::slice::from_ref(&old)).unwrap(),
        vec![SaveOutcome::Accepted]
    );
    assert_eq!(
        s.save_blocking(std::slice::from_ref(&new)).unwrap(),
        vec![SaveOutcome::Replaced]
    );
    assert_eq!(
        s.save_blocking(std::slice::from_ref(&old)).unwrap(),
        vec![SaveOutcome::Superseded]
    );
    assert_eq!(all(&s), vec![new.clone()]);
    // Superseded ids are "known": a sync will not fetch them again.
    assert_eq!(
        s.known_blocking(&[old.id, new.id, [9; 32]]).unwrap(),
        vec![true, true, false]
    );

    let t1 = ev(&k, 30, 10002, vec![], "x");
    let t2 = ev(&k, 30, 10002, vec![], "y");
    let (lo, hi) = if t1.id < t2.id { (t1, t2) } else { (t2, t1) };
    // Both orders, both in one batch: the lowest id wins.
    assert_eq!(
        s.save_blocking(&[hi.clone(), lo.clone()]).unwrap(),
        vec![SaveOutcome::Accepted, SaveOutcome::Replaced]
    );
    assert_eq!(
        s.save_blocking(std::slice::from_ref(&hi)).unwrap(),
        vec![SaveOutcome::Superseded]
    );
    let f = Filter::from_json(r#"{"kinds":[10002]}"#).unwrap();
    assert_eq!(s.neg_items_blocking(&f).unwrap(), vec![(30, lo.id)]);
    assert!(s.check_integrity().unwrap().problems.is_empty());
}

#[test]
fn addressable_is_per_d_tag() {
    let (_d, s) = store();
    let k = Keys::from_seed(b"s", 2);
    let a1 = ev(&k, 10, 30023, vec![tag("d", "a")], "a1");
    let b1 = ev(&k, 10, 30023, vec![tag("d", "b")], "b1");
    let a2 = ev(&k, 11, 30023, vec![tag("d", "a")], "a2");
    let out = s.save_blocking(&[a1, b1.clone(), a2.clone()]).unwrap();
    assert_eq!(
        out,
        vec![
            SaveOutcome::Accepted,
            SaveOutcome::Accepted,
            SaveOutcome::Replaced
        ]
    );
    let mut got = all(&s);
    got.sort_by_key(|e| e.content.clone());
    assert_eq!(got, vec![a2, b1]);
}

#[test]
fn deletion_removes_own_events_and_blocks_return() {
    let (_d, s) = store();
    let k = Keys::from_seed(b"s", 3);
    let other = Keys::from_seed(b"s", 4);
    let mine = ev(&k, 10, 1, vec![], "mine");
    let theirs = ev(&other, 10, 1, vec![], "theirs");
    let art = ev(&k, 10, 30023, vec![tag("d", "post")], "article");
    s.save_blocking(&[mine.clone(), theirs.clone(), art.clone()])
        .unwrap();
    let addr = format!("30023:{}:post", hex::encode(k.pubkey));
    let del = ev(
        &k,
        20,
        5,
        vec![
            tag("e", &mine.id_hex()),
            tag("e", &theirs.id_hex()),
            tag("a", &addr),
        ],
        "",
    );
    assert_eq!(
        s.save_blocking(std::slice::from_ref(&del)).unwrap(),
        vec![SaveOutcome::Accepted]
    );
    let left: Vec<_> = all(&s).into_iter().map(|e| e.id).collect();
    assert!(left.contains(&theirs.id), "another author's event stays");
    assert!(!left.contains(&mine.id) && !left.contains(&art.id));
    assert_eq!(
        s.save_blocking(&[mine.clone(), art.clone()]).unwrap(),
        vec![SaveOutcome::Deleted; 2]
    );
    // A newer version of the address after the deletion is allowed back.
    let art2 = ev(&k, 30, 30023, vec![tag("d", "post")], "again");
    assert_eq!(
        s.save_blocking(&[art2]).unwrap(),
        vec![SaveOutcome::Accepted]
    );
    assert!(s.check_integrity().unwrap().problems.is_empty());
}

#[test]
fn queries_use_indexes_and_order() {
    let (_d, s) = store();
    let k1 = Keys::from_seed(b"q", 1);
    let k2 = Keys::from_seed(b"q", 2);
    let mut evs = Vec::new();
    for i in 0..20u64 {
        let k = if i % 2 == 0 { &k1 } else { &k2 };
        let kind = if i % 3 == 0 { 7 } else { 1 };
        evs.push(ev(
            k,
            100 + i,
            kind,
            vec![tag("t", if i % 4 == 0 { "x" } else { "y" })],
            &i.to_string(),
        ));
    }
    s.save_blocking(&evs).unwrap();
    let filters = [
        "{}".to_string(),
        r#"{"kinds":[7]}"#.to_string(),
        format!(r#"{{"authors":["{}"]}}"#, hex::encode(k1.pubkey)),
        format!(
            r#"{{"authors":["{}"],"kinds":[1],"since":105}}"#,
            hex::encode(k2.pubkey)
        ),
        r##"{"#t":["x"],"until":110}"##.to_string(),
        r#"{"since":103,"until":107}"#.to_string(),
        format!(r#"{{"ids":["{}","{}"]}}"#, evs[3].id_hex(), evs[9].id_hex()),
    ];
    for fj in filters {
        let f = Filter::from_json(&fj).unwrap();
        let mut want: Vec<_> = evs
            .iter()
            .filter(|e| f.matches(e))
            .map(|e| (e.created_at, e.id))
            .collect();
        want.sort();
        assert_eq!(s.neg_items_blocking(&f).unwrap(), want, "{fj}");
        let mut newest = Vec::new();
        let mut lf = f.clone();
        lf.limit = Some(3);
        s.query_blocking(&lf, Order::NewestFirst, |e| {
            newest.push((e.created_at, e.id));
            true
        })
        .unwrap();
        let expect: Vec<_> = want.iter().rev().take(3).copied().collect();
        assert_eq!(newest, expect, "{fj} newest first with limit");
    }
}

#[test]
fn stats_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let k = Keys::from_seed(b"s", 5);
    {
        let s = FjallStore::open(dir.path()).unwrap();
        s.save_blocking(&[ev(&k, 5, 1, vec![], "a"), ev(&k, 9, 7, vec![], "b")])
            .unwrap();
        s.flush().unwrap();
    }
    let s = FjallStore::open(dir.path()).unwrap();
    let st = s.stats().unwrap();
    assert_eq!(st.events, 2);
    assert_eq!(st.by_kind.get(&1), Some(&1));
    assert_eq!(
        (st.first_created_at, st.last_created_at),
        (Some(5), Some(9))
    );
    assert!(st.disk_bytes > 0);
}
