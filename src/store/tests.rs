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

pub(super) fn all(s: &FjallStore) -> Vec<Event> {
    let mut v = Vec::new();
    s.query_blocking(&Filter::default(), Order::OldestFirst, |e| {
        v.push(e);
        true
    })
    .unwrap();
    v
}

/// The (created_at, id) of the events `f` matches, in negentropy order: what a query must give.
fn matching(evs: &[Event], f: &Filter) -> Vec<NegItem> {
    let mut want: Vec<_> = evs
        .iter()
        .filter(|e| f.matches(e))
        .map(|e| (e.created_at, e.id))
        .collect();
    want.sort();
    want
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
    assert_eq!(
        s.neg_items_blocking(&f, usize::MAX).unwrap(),
        vec![(30, lo.id)]
    );
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
        format!(
            r#"{{"authors":["{}","{}"],"since":103,"until":112}}"#,
            hex::encode(k1.pubkey),
            hex::encode(k2.pubkey)
        ),
        r##"{"#t":["x"],"until":110}"##.to_string(),
        // Tag and kinds, no authors (a thread, notifications): read by tag, kinds checked.
        r##"{"#t":["x"],"kinds":[7]}"##.to_string(),
        r##"{"#t":["x","y"],"kinds":[1],"since":104,"until":117}"##.to_string(),
        r#"{"since":103,"until":107}"#.to_string(),
        format!(r#"{{"ids":["{}","{}"]}}"#, evs[3].id_hex(), evs[9].id_hex()),
    ];
    for fj in filters {
        let f = Filter::from_json(&fj).unwrap();
        let want = matching(&evs, &f);
        assert_eq!(s.neg_items_blocking(&f, usize::MAX).unwrap(), want, "{fj}");
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

/// Queries over several index ranges (kinds, tag values, author × kind pairs, and more ranges
/// than are merged at once) give each event once, in order, and stop at the limit; counts and
/// capped negentropy sets agree with them.
#[test]
fn merged_ranges_give_each_event_once_in_order() {
    let (_d, s) = store();
    let k1 = Keys::from_seed(b"m", 1);
    let k2 = Keys::from_seed(b"m", 2);
    let mut evs = Vec::new();
    for i in 0..40u64 {
        let k = if i % 2 == 0 { &k1 } else { &k2 };
        // Several events share each second, so ties are broken by id across ranges.
        let at = 500 + i / 3;
        let kind = [1u16, 7, 30023, 4][i as usize % 4];
        let mut tags = vec![tag("t", "a")];
        if i % 3 == 0 {
            // Under both tag values: one index entry each, one event.
            tags.push(tag("t", "b"));
        }
        if kind == 30023 {
            tags.push(tag("d", &i.to_string()));
        }
        evs.push(ev(k, at, kind, tags, &i.to_string()));
    }
    s.save_blocking(&evs).unwrap();
    let many_kinds: Vec<String> = (0..=(super::fjall_store::MERGE_FANOUT as u16 + 10))
        .map(|k| k.to_string())
        .collect();
    let many_tags: Vec<String> = (0..super::fjall_store::MERGE_FANOUT + 100)
        .map(|i| format!("\"aa{i:05}\""))
        .collect();
    let filters = [
        r#"{"kinds":[1,7,4]}"#.to_string(),
        r##"{"#t":["a","b"]}"##.to_string(),
        r##"{"#t":["b","a"],"kinds":[7],"since":503}"##.to_string(),
        format!(
            r#"{{"authors":["{}","{}"],"kinds":[1,4,30023],"until":510}}"#,
            hex::encode(k1.pubkey),
            hex::encode(k2.pubkey)
        ),
        format!(r#"{{"kinds":[{}]}}"#, many_kinds.join(",")),
        // Past the fanout, with "a" and "b" in different groups: events under both come
        // from two groups and must still come once.
        format!(r##"{{"#t":["a","b",{}]}}"##, many_tags.join(",")),
    ];
    for fj in filters {
        let f = Filter::from_json(&fj).unwrap();
        let want = matching(&evs, &f);
        assert!(want.len() > 3, "{fj} matches too little to test");
        for (order, expect) in [
            (Order::OldestFirst, want.clone()),
            (Order::NewestFirst, want.iter().rev().copied().collect()),
        ] {
            let mut got = Vec::new();
            s.query_blocking(&f, order, |e| {
                got.push((e.created_at, e.id));
                true
            })
            .unwrap();
            assert_eq!(got, expect, "{fj} {order:?}");
            let mut lf = f.clone();
            lf.limit = Some(2);
            let mut got = Vec::new();
            s.query_blocking(&lf, order, |e| {
                got.push((e.created_at, e.id));
                true
            })
            .unwrap();
            assert_eq!(got, expect[..2], "{fj} {order:?} limit 2");
        }
        assert_eq!(s.count_blocking(&f).unwrap(), want.len() as u64, "{fj}");
        assert_eq!(s.neg_items_blocking(&f, want.len()).unwrap(), want, "{fj}");
        match s.neg_items_blocking(&f, want.len() - 1) {
            Err(StoreError::TooMany { max }) => assert_eq!(max, want.len() - 1),
            other => panic!("{fj}: over the cap gave {other:?}"),
        }
    }
    // The persistent index costs no memory per item: the cap does not apply to it.
    let set = s.neg_storage_blocking(&Filter::default(), 1).unwrap();
    assert!(set.is_indexed());
    assert_eq!(set.size(), evs.len());
}

/// A store whose directory disappears (or whose disk fills) cannot flush its memtables; fjall
/// retries forever, and `flush` must still come back so a stopping service exits.
#[test]
fn flush_comes_back_when_tables_cannot_be_written() {
    let (dir, s) = store();
    let k = Keys::from_seed(b"f", 0);
    s.save_blocking(&[ev(&k, 5, 1, vec![], "a")]).unwrap();
    std::fs::remove_dir_all(dir.path()).unwrap();
    let started = std::time::Instant::now();
    let _ = s.flush_within(Some(std::time::Duration::from_secs(1)));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Loaded sets share the store's memory budget: a set that does not fit is refused as busy
/// (giving back what it took), and dropping a set gives its share back.
#[test]
fn loaded_sets_share_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = FjallStore::open_with_budget(dir.path(), 10).unwrap();
    let k = Keys::from_seed(b"b", 0);
    let evs: Vec<Event> = (0..6).map(|i| ev(&k, 100 + i, 1, vec![], "x")).collect();
    s.save_blocking(&evs).unwrap();
    let kind1 = Filter::from_json(r#"{"kinds":[1]}"#).unwrap();
    let first = s.neg_storage_blocking(&kind1, 100).unwrap();
    assert_eq!(first.size(), 6);
    assert_eq!(s.inner_budget_used(), 6);
    match s.neg_storage_blocking(&kind1, 100) {
        Err(StoreError::Busy(m)) => assert!(m.contains("10 items"), "{m}"),
        other => panic!("over the budget: {:?}", other.map(|s| s.size())),
    }
    assert_eq!(
        s.inner_budget_used(),
        6,
        "a refused set gives back what it took"
    );
    // The index is not loaded: not counted.
    let all = s.neg_storage_blocking(&Filter::default(), 100).unwrap();
    assert!(all.is_indexed());
    assert_eq!(s.inner_budget_used(), 6);
    drop(first);
    assert_eq!(s.inner_budget_used(), 0);
    assert_eq!(s.neg_storage_blocking(&kind1, 100).unwrap().size(), 6);
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

/// Events at times chosen to hit bucket edges, dense seconds and empty stretches.
fn spread_events(n: u64, seed: &[u8]) -> Vec<Event> {
    let k = Keys::from_seed(seed, 0);
    (0..n)
        .map(|i| {
            let t = match i % 4 {
                0 => 1_000_000 + (i % 7),            // dense: a few seconds
                1 => 1_000_000 + 1024 * (i % 5) - 1, // last second of buckets
                2 => 1_000_000 + 1024 * (i % 5),     // first second of buckets
                _ => 900_000 + i * 997,              // spread out
            };
            ev(&k, t, 1, vec![], &format!("{seed:?} {i}"))
        })
        .collect()
}

fn vec_set(s: &FjallStore, f: &Filter) -> crate::negentropy::VecStorage {
    crate::negentropy::VecStorage::from_pairs(s.neg_items_blocking(f, usize::MAX).unwrap())
}

/// Every answer of the index-backed set equals the in-memory set's, for ranges that start and
/// end inside buckets, on bucket edges, and cover everything.
#[test]
fn indexed_set_answers_like_the_loaded_set() {
    use crate::negentropy::{Bound, Item, NegStorage};
    let (_d, s) = store();
    s.save_blocking(&spread_events(600, b"a")).unwrap();
    let ranges = [
        (None, None),
        (Some(1_000_000), None),
        (Some(1_000_003), Some(1_002_047)),
        (Some(999_999), Some(1_000_000)),
        (Some(1_003_000), Some(1_003_000)),
        (Some(5), Some(6)),
    ];
    for (since, until) in ranges {
        let f = Filter {
            since,
            until,
            ..Filter::default()
        };
        // Read as needed; read ahead from the start, from the middle, from both (two
        // background reads), or from the middle once the first item is read. The background
        // reads hand their pieces over as the reconciliation reaches them; items further on
        // are read directly, here from the end backwards first.
        for ahead in 0..5 {
            let mut want = vec_set(&s, &f);
            let mut got = s.neg_storage_blocking(&f, usize::MAX).unwrap();
            assert!(got.is_indexed());
            let half = got.size() / 2;
            match ahead {
                1 => got.prefetch(0),
                2 => got.prefetch(half),
                3 => {
                    got.prefetch(half);
                    got.prefetch(0);
                }
                4 => got.expect_reads(Some(half)),
                _ => {}
            }
            let n = want.size();
            assert_eq!(got.size(), n, "{f:?}");
            let mut items = Vec::new();
            want.for_each(0, n, &mut |_, it| {
                items.push(*it);
                true
            })
            .unwrap();
            if ahead >= 3 {
                for i in (0..n).rev().step_by(5) {
                    got.for_each(i, i + 1, &mut |j, it| {
                        assert_eq!((j, it), (i, &items[i]), "{f:?}");
                        true
                    })
                    .unwrap();
                }
            }
            got.expect_reads(None);
            let mut seen = Vec::new();
            got.for_each(0, n, &mut |i, it| {
                seen.push((i, *it));
                true
            })
            .unwrap();
            assert_eq!(seen, items.iter().copied().enumerate().collect::<Vec<_>>());
            let cuts: Vec<usize> = (0..=n).step_by(7).chain([n]).collect();
            for &a in &cuts {
                for &b in cuts.iter().filter(|&&b| b >= a) {
                    assert_eq!(
                        got.fingerprint(a, b).unwrap(),
                        want.fingerprint(a, b).unwrap(),
                        "{f:?} {a}..{b}"
                    );
                }
            }
            let mut bounds = vec![Bound::INFINITY];
            for it in items.iter().step_by(3) {
                bounds.push(Bound::at(it));
                bounds.push(Bound::at(&Item {
                    t: it.t + 1,
                    id: [0; 32],
                }));
                bounds.push(Bound::between(
                    &Item {
                        t: it.t,
                        id: [0; 32],
                    },
                    it,
                ));
            }
            for b in &bounds {
                for (lo, hi) in [(0, n), (n / 3, n), (0, n / 2)] {
                    assert_eq!(
                        got.lower_bound(lo, hi, b).unwrap(),
                        want.lower_bound(lo, hi, b).unwrap(),
                        "{f:?} {b:?} in {lo}..{hi}"
                    );
                }
            }
            assert!(
                got.fingerprint(1, 0).is_err() && got.for_each(0, n + 1, &mut |_, _| true).is_err()
            );
        }
        // A set dropped while it reads ahead stops the read and returns.
        let mut dropped = s.neg_storage_blocking(&f, usize::MAX).unwrap();
        dropped.prefetch(0);
        drop(dropped);
    }
}

/// Replacements and deletions keep the index equal to the time index; a session keeps the
/// view it opened with while the store changes.
#[test]
fn index_follows_replacements_and_deletions_and_sessions_see_a_snapshot() {
    use crate::negentropy::NegStorage;
    let (_d, s) = store();
    let k = Keys::from_seed(b"idx", 1);
    let notes = spread_events(200, b"b");
    s.save_blocking(&notes).unwrap();
    let whole = Filter::default();
    let mut before = s.neg_storage_blocking(&whole, usize::MAX).unwrap();
    let fp_before = before.fingerprint(0, before.size()).unwrap();
    // Same batch: a profile and its replacement; later: a deletion of some notes.
    let p1 = ev(&k, 1_000_100, 0, vec![], "p1");
    let p2 = ev(&k, 1_000_200, 0, vec![], "p2");
    s.save_blocking(&[p1, p2]).unwrap();
    let victims: Vec<Vec<String>> = notes
        .iter()
        .step_by(9)
        .map(|e| tag("e", &e.id_hex()))
        .collect();
    let author = Keys::from_seed(b"b", 0);
    s.save_blocking(&[ev(&author, 1_000_300, 5, victims, "gone")])
        .unwrap();
    let report = s.check_integrity().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let mut after = s.neg_storage_blocking(&whole, usize::MAX).unwrap();
    let mut want = vec_set(&s, &whole);
    assert_eq!(after.size(), want.size());
    assert_eq!(
        after.fingerprint(0, after.size()).unwrap(),
        want.fingerprint(0, want.size()).unwrap()
    );
    assert_eq!(
        before.size(),
        200,
        "the old session still sees its snapshot"
    );
    assert_eq!(before.fingerprint(0, 200).unwrap(), fp_before);
}

/// A store written before the index existed gets it built at open; `orly check` reports an
/// index that disagrees with the events.
#[test]
fn index_is_rebuilt_for_old_stores_and_checked() {
    use crate::negentropy::NegStorage;
    let dir = tempfile::tempdir().unwrap();
    let evs = spread_events(300, b"c");
    {
        let s = FjallStore::open(dir.path()).unwrap();
        s.save_blocking(&evs).unwrap();
        // Make it look like an old store: no index, no marker.
        s.forget_neg_index();
        let report = s.check_integrity().unwrap();
        assert!(
            report.problems.iter().any(|p| p.starts_with("NegIndex")),
            "{:?}",
            report.problems
        );
        s.flush().unwrap();
    }
    let s = FjallStore::open(dir.path()).unwrap();
    assert!(s.check_integrity().unwrap().problems.is_empty());
    let mut set = s
        .neg_storage_blocking(&Filter::default(), usize::MAX)
        .unwrap();
    let mut want = vec_set(&s, &Filter::default());
    assert_eq!(set.size(), 300);
    assert_eq!(
        set.fingerprint(0, 300).unwrap(),
        want.fingerprint(0, 300).unwrap()
    );
}

/// An index written by layout 2 (one bucket per value) reads as damaged to this layout, and
/// is rebuilt at the next open, which marks the store layout 3: then every bucket is right and
/// the set's fingerprints are the time index's.
#[test]
fn a_layout_2_negentropy_index_is_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let k = Keys::from_seed(b"layout2", 0);
    // Spread over a month: many groups of buckets, most holding several.
    let evs: Vec<Event> = (0..400)
        .map(|i| sign_event(&k, 1_700_000_000 + i * 6_553, 1, vec![], &format!("n{i}")))
        .collect();
    {
        let s = FjallStore::open(dir.path()).unwrap();
        s.save_blocking(&evs).unwrap();
        assert!(s.check_integrity().unwrap().problems.is_empty());
        s.write_layout_2_neg_index();
        let report = s.check_integrity().unwrap();
        assert!(
            report.problems.iter().any(|p| p.starts_with("NegIndex")),
            "the old format is not read as this one: {:?}",
            report.problems
        );
        s.flush().unwrap();
    }
    let s = FjallStore::open(dir.path()).unwrap();
    assert!(s.check_integrity().unwrap().problems.is_empty());
    assert_eq!(
        s.meta(keys::LAYOUT_KEY),
        Some(keys::LAYOUT.to_be_bytes().to_vec())
    );
    assert_eq!(s.meta(neg_index::OLD_BUILT_KEY), None);
    let mut set = s
        .neg_storage_blocking(&Filter::default(), usize::MAX)
        .unwrap();
    let mut want = vec_set(&s, &Filter::default());
    assert_eq!(set.size(), 400);
    for (a, b) in [(0, 400), (0, 1), (17, 233), (399, 400)] {
        assert_eq!(
            set.fingerprint(a, b).unwrap(),
            want.fingerprint(a, b).unwrap(),
            "{a}..{b}"
        );
    }
}

/// Keyspaces of an older layout are dropped at open, and the store still answers every query.
#[test]
fn retired_keyspaces_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let k = Keys::from_seed(b"r", 1);
    let evs: Vec<Event> = (0..10).map(|i| ev(&k, 100 + i, 1, vec![], "x")).collect();
    {
        let s = FjallStore::open(dir.path()).unwrap();
        s.save_blocking(&evs).unwrap();
        s.flush().unwrap();
    }
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let old = db
            .keyspace("by_author", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        old.insert(k.pubkey, b"").unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let s = FjallStore::open(dir.path()).unwrap();
    let f = Filter::from_json(&format!(
        r#"{{"authors":["{}"],"since":105}}"#,
        hex::encode(k.pubkey)
    ))
    .unwrap();
    assert_eq!(s.neg_items_blocking(&f, usize::MAX).unwrap().len(), 5);
    assert!(s.check_integrity().unwrap().problems.is_empty());
    drop(s);
    let db = fjall::Database::builder(dir.path()).open().unwrap();
    assert!(!db.keyspace_exists("by_author"));
}

/// Stores carry their layout; one written by a newer layout is refused, not misread.
#[test]
fn a_store_of_a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(FjallStore::open(dir.path()).unwrap());
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let marked = meta.get(b"layout").unwrap().expect("layout marker");
        assert_eq!(marked.as_ref(), keys::LAYOUT.to_be_bytes());
        meta.insert(b"layout", (keys::LAYOUT + 1).to_be_bytes())
            .unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = FjallStore::open(dir.path()).err().expect("refused");
    assert!(err.to_string().contains("newer orly"), "{err}");
}

/// Author queries without kinds seek from kind to kind (down to the last kind, 65535) and keep
/// their time bounds in every range.
#[test]
fn author_queries_find_every_kind_within_the_time_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let s = FjallStore::open(dir.path()).unwrap();
    let (a, b) = (Keys::from_seed(b"ak", 1), Keys::from_seed(b"ak", 2));
    let mut evs = Vec::new();
    for (i, kind) in [1u16, 7, 1984, 40_000, 65_535].into_iter().enumerate() {
        for t in 0..4u64 {
            evs.push(ev(&a, 100 + t * 10 + i as u64, kind, vec![], "a"));
            evs.push(ev(&b, 100 + t * 10 + i as u64, kind, vec![], "b"));
        }
    }
    s.save_blocking(&evs).unwrap();
    for fj in [
        format!(r#"{{"authors":["{}"]}}"#, hex::encode(a.pubkey)),
        format!(
            r#"{{"authors":["{}"],"since":111,"until":125}}"#,
            hex::encode(a.pubkey)
        ),
        format!(
            r#"{{"authors":["{}","{}"],"since":130}}"#,
            hex::encode(a.pubkey),
            hex::encode(b.pubkey)
        ),
    ] {
        let f = Filter::from_json(&fj).unwrap();
        let want = matching(&evs, &f);
        assert!(!want.is_empty(), "{fj}");
        assert_eq!(s.neg_items_blocking(&f, usize::MAX).unwrap(), want, "{fj}");
    }
}
