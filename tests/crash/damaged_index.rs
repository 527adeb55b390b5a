//! `orly stats --check` finds a damaged index: each case damages one thing in a copy of a clean
//! store, opening its fjall keyspaces directly (as a crash or a bad disk would leave them, with no
//! help from orly's write path), and the CLI must exit 1 naming the keyspace and the event, in
//! its text and its JSON output.

use super::harness::copy_dir;
use crate::common::*;
use serde_json::Value;
use std::path::Path;

const T0: u64 = 1_700_000_000;

/// Runs one damage against the store in `dir`, through fjall itself.
fn damage(dir: &Path, f: impl FnOnce(&fjall::Database)) {
    let db = fjall::Database::builder(dir)
        .open()
        .expect("open the store with fjall");
    f(&db);
    db.persist(fjall::PersistMode::SyncAll).expect("persist");
}

fn keyspace(db: &fjall::Database, name: &str) -> fjall::Keyspace {
    assert!(db.keyspace_exists(name), "the store has no keyspace {name}");
    db.keyspace(name, fjall::KeyspaceCreateOptions::default)
        .expect("keyspace")
}

/// `orly stats --check` (text and `--json`): exit 1 both times; returns the problems.
fn problems(dir: &Path, case: &str) -> Vec<String> {
    let d = dir.to_str().unwrap();
    let (code, out, err) = orly(&["stats", "--check", "--data-dir", d]);
    assert_eq!(code, 1, "{case}: stats --check must fail: {out}{err}");
    let (jcode, json, jerr) = orly(&["stats", "--check", "--json", "--data-dir", d]);
    assert_eq!(
        jcode, 1,
        "{case}: stats --check --json must fail: {json}{jerr}"
    );
    let v: Value = serde_json::from_str(&json).expect("stats --json is JSON");
    let list: Vec<String> = v["integrity"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().expect("a problem is text").to_string())
        .collect();
    assert!(!list.is_empty(), "{case}: exit 1 but no problem listed");
    assert!(
        out.contains(&format!("{} problems", list.len())),
        "{case}: {out}"
    );
    for p in &list {
        assert!(
            out.contains(p.as_str()),
            "{case}: text output lacks {p:?}:\n{out}"
        );
    }
    list
}

fn time_key(e: &Event) -> Vec<u8> {
    [&e.created_at.to_be_bytes()[..], &e.id[..]].concat()
}

#[test]
fn stats_check_names_a_damaged_index() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    let events = notes("damaged", 40, T0);
    import(&clean, &events);
    assert_eq!(crate::check(&clean, "the undamaged store"), 40);
    let victim = &events[7];
    let vid = victim.id_hex();
    assert!(
        !victim.tags.is_empty(),
        "the victim needs a tag index entry"
    );
    let store = |name: &str| {
        let d = tmp.path().join(name);
        copy_dir(&clean, &d);
        d
    };

    // 1. An event gone while its index entries remain: every index names it.
    let dir = store("event-gone");
    damage(&dir, |db| {
        keyspace(db, "events").remove(victim.id.to_vec()).unwrap()
    });
    let found = problems(&dir, "event removed");
    for index in ["ByTime", "ByKind", "ByAuthorKind", "ByTag"] {
        assert!(
            found.iter().any(
                |p| p.starts_with(&format!("{index}: entry without its event"))
                    && p.ends_with(&vid)
            ),
            "event removed: {index} not named: {found:?}"
        );
    }

    // 2. A dangling index entry for an event that never existed.
    let dir = store("dangling");
    let ghost = [0x5au8; 32];
    let key = [&1u16.to_be_bytes()[..], &T0.to_be_bytes(), &ghost].concat();
    damage(&dir, |db| {
        keyspace(db, "by_kind")
            .insert(key, Vec::<u8>::new())
            .unwrap()
    });
    let found = problems(&dir, "dangling entry");
    assert_eq!(
        found,
        vec![format!(
            "ByKind: entry without its event: {}",
            hex::encode([&1u16.to_be_bytes()[..], &T0.to_be_bytes(), &ghost].concat())
        )],
        "dangling entry"
    );

    // 3. One index entry of a stored event lost.
    let dir = store("entry-gone");
    let key = [
        &victim.pubkey[..],
        &victim.kind.to_be_bytes(),
        &time_key(victim),
    ]
    .concat();
    damage(&dir, |db| {
        let ks = keyspace(db, "by_author_kind");
        assert!(
            ks.contains_key(&key).unwrap(),
            "by_author_kind key layout changed"
        );
        ks.remove(key).unwrap();
    });
    let found = problems(&dir, "entry removed");
    assert_eq!(
        found,
        vec![format!("ByAuthorKind: missing entry for {vid}")],
        "entry removed"
    );

    // 4. A value of the negentropy index lost: its group of buckets (up to 16), each reported.
    let dir = store("bucket-gone");
    damage(&dir, |db| {
        let ks = keyspace(db, "neg_index");
        let first = ks.first_key_value().expect("a bucket").key().unwrap();
        ks.remove(first).unwrap();
    });
    let found = problems(&dir, "bucket removed");
    assert!(
        (1..=16).contains(&found.len())
            && found
                .iter()
                .all(|p| p.starts_with("NegIndex: bucket ") && p.ends_with("missing")),
        "bucket removed: {found:?}"
    );

    // The copies were the damage, not the copying: the original is still clean.
    assert_eq!(crate::check(&clean, "the undamaged store, at the end"), 40);
}
