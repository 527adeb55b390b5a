//! `orly import / export / stats / gen` end to end: real binaries, real stores in temp dirs.
//!
//! Expectations are computed here, from the input lines parsed with serde_json, with NIP-01's
//! storage rules written out again — never by asking the store code what it would do.

mod common;
use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// Helpers: run the CLI, read its summary, compute what the store must hold.

/// Runs `orly` and returns (exit code, stdout bytes, stderr text): gen output is compared
/// byte for byte.
fn orly_raw(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new(bin("orly"))
        .args(args)
        .env_remove("ORLY_DATA_DIR")
        .output()
        .expect("run orly");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), out.stdout, err)
}

fn gen_bytes(args: &[&str]) -> Vec<u8> {
    let mut all = vec!["gen"];
    all.extend_from_slice(args);
    let (code, out, err) = orly_raw(&all);
    assert_eq!(code, 0, "orly gen {args:?} failed: {err}");
    out
}

fn lines_of(bytes: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

fn parse_all(bytes: &[u8]) -> Vec<Value> {
    lines_of(bytes)
        .iter()
        .map(|l| serde_json::from_slice(l).expect("generated line is JSON"))
        .collect()
}

/// `orly import FILE`; returns (exit code, stderr). Never allowed to panic.
fn import_file(file: &Path, dir: &Path) -> (i32, String) {
    let (code, _, err) = orly(&[
        "import",
        file.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(!err.contains("panicked"), "import panicked:\n{err}");
    (code, err)
}

/// The counters of the `imported N lines in Xs: accepted a, ...` summary line.
fn summary(stderr: &str) -> BTreeMap<String, u64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("imported "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let mut m = BTreeMap::new();
    let (head, counts) = line.split_once(": ").expect("summary has ': '");
    let lines = head.split_whitespace().nth(1).expect("imported N");
    m.insert("lines".to_string(), lines.parse().expect("line count"));
    for part in counts.split(", ") {
        let (name, n) = part.split_once(' ').expect("'name n'");
        m.insert(name.to_string(), n.parse().expect("count"));
    }
    m
}

/// `line N: reason` reports on stderr, by line number.
fn rejections(stderr: &str) -> BTreeMap<u64, String> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("line ")?;
            let (n, reason) = rest.split_once(": ")?;
            Some((n.parse().ok()?, reason.to_string()))
        })
        .collect()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// What a NIP-01 store holds after ingesting `events` (all valid) in any order: regular events
/// as they are, replaceable (0, 3, 10000..=19999) newest per (pubkey, kind) and addressable
/// (30000..=39999) newest per (pubkey, kind, d), a tie going to the lowest id; ephemeral
/// (20000..=29999) never. Kind 5 is treated as regular, so it must reference nothing.
fn expected_stored<'a>(events: impl IntoIterator<Item = &'a Value>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut heads: BTreeMap<(String, u64, String), (u64, String)> = BTreeMap::new();
    for v in events {
        let kind = v["kind"].as_u64().unwrap();
        let at = v["created_at"].as_u64().unwrap();
        let id = id_of(v);
        let pubkey = v["pubkey"].as_str().unwrap().to_string();
        let tags = v["tags"].as_array().unwrap();
        let first = |name: &str| {
            tags.iter()
                .find(|t| t[0] == name)
                .and_then(|t| t[1].as_str())
                .map(str::to_string)
        };
        if kind == 5 {
            assert!(
                first("e").is_none() && first("a").is_none(),
                "deletions are not modelled here"
            );
        }
        let head = match kind {
            20000..=29999 => continue,
            0 | 3 | 10000..=19999 => Some((pubkey, kind, String::new())),
            30000..=39999 => Some((pubkey, kind, first("d").unwrap_or_default())),
            _ => None,
        };
        if let Some(h) = head {
            match heads.get(&h) {
                // Newest wins; on equal time the lowest id.
                Some((t, cur)) if (*t, std::cmp::Reverse(cur)) >= (at, std::cmp::Reverse(&id)) => {
                    continue;
                }
                Some((_, cur)) => {
                    out.remove(cur);
                }
                None => {}
            }
            heads.insert(h, (at, id.clone()));
        }
        out.insert(id, v.clone());
    }
    out
}

/// `orly export [extra..]` parsed with serde_json, in output order.
fn export(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["export", "--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, out, err) = orly(&args);
    assert_eq!(code, 0, "export {extra:?} failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("exported line is JSON"))
        .collect()
}

fn id_set(events: &[Value]) -> BTreeSet<String> {
    events.iter().map(id_of).collect()
}

fn times(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|v| v["created_at"].as_u64().unwrap())
        .collect()
}

/// A store in `dir` with a small mixed data set (every kind class but deletion, repeated
/// authors so replaceables collide); returns every generated event and what must be stored.
fn fixture(dir: &Path) -> (Vec<Value>, BTreeMap<String, Value>) {
    let bytes = gen_bytes(&[
        "--count",
        "3000",
        "--seed",
        "21",
        "--authors",
        "8",
        "--kinds",
        "0,1,3,7,10002,30023",
        "--span-days",
        "3",
    ]);
    let file = dir.with_extension("jsonl");
    std::fs::write(&file, &bytes).unwrap();
    let (code, err) = import_file(&file, dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&err)["rejected"], 0, "{err}");
    let all = parse_all(&bytes);
    let want = expected_stored(&all);
    (all, want)
}

// ---------------------------------------------------------------------------------------------
// The "done when" of the foundation issue: 100 000 events, 1% corrupt.

/// Corruption number `i` of line `line` (`next` is another valid line, for a foreign sig), and
/// a word the rejection reason must contain: each kind of damage is caught by the right check.
fn corrupt(i: usize, line: &[u8], next: &[u8]) -> (Vec<u8>, &'static str) {
    let text = std::str::from_utf8(line).unwrap();
    let why = match i {
        500 | 501 => "too long",
        _ => match i % 14 {
            0 | 12 => "signature",
            1 | 7 | 8 => "id does not match", // the pubkey is part of what the id hashes
            _ => "malformed",
        },
    };
    (damage(i, text, next), why)
}

fn damage(i: usize, text: &str, next: &[u8]) -> Vec<u8> {
    let line = text.as_bytes();
    let v: Value = serde_json::from_str(text).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut v = v.clone();
        f(v.as_object_mut().unwrap());
        v.to_string().into_bytes()
    };
    // Changes the hex digit at `at` inside field `field`'s value to another lowercase digit.
    let flip = |field: &str, at: usize| {
        let start = text.find(&format!("\"{field}\":\"")).unwrap() + field.len() + 4;
        let mut b = line.to_vec();
        b[start + at] = if b[start + at] == b'0' { b'1' } else { b'0' };
        b
    };
    let content_at = text.find("\"content\":\"").unwrap() + 11;
    let insert_in_content = |bytes: &[u8]| {
        let mut b = line[..content_at].to_vec();
        b.extend_from_slice(bytes);
        b.extend_from_slice(&line[content_at..]);
        b
    };
    match i {
        500 => edit(&|m| {
            m.insert("content".into(), "x".repeat(10 << 20).into());
        }),
        501 => edit(&|m| {
            m.insert("content".into(), "y".repeat(300 << 10).into());
        }),
        _ => match i % 14 {
            0 => flip("sig", i % 128),
            1 => edit(&|m| {
                let c = format!("{}!", m["content"].as_str().unwrap());
                m.insert("content".into(), c.into());
            }),
            2 => line[..line.len() * (1 + i % 7) / 8].to_vec(),
            3 => match i % 3 {
                0 => edit(&|m| {
                    let s = m["id"].as_str().unwrap()[1..].to_string();
                    m.insert("id".into(), s.into());
                }),
                1 => edit(&|m| {
                    let s = format!("{}00", m["pubkey"].as_str().unwrap());
                    m.insert("pubkey".into(), s.into());
                }),
                _ => edit(&|m| {
                    let s = m["sig"].as_str().unwrap()[2..].to_string();
                    m.insert("sig".into(), s.into());
                }),
            },
            4 => edit(&|m| {
                m.insert("kind".into(), 70000.into());
            }),
            5 => {
                let at = v["created_at"].as_u64().unwrap();
                text.replace(&format!("\"created_at\":{at}"), "\"created_at\":1e30")
                    .into_bytes()
            }
            6 => insert_in_content(match i % 3 {
                0 => &b"\xff"[..],
                1 => &b"\xc3"[..],
                _ => &b"\xed\xa0\x80"[..], // a UTF-8 encoded surrogate
            }),
            7 => flip("pubkey", i % 64),
            8 => flip("id", i % 64),
            9 => edit(&|m| {
                m.remove("sig");
            }),
            10 => edit(&|m| {
                let t = if i.is_multiple_of(2) {
                    json!(-1)
                } else {
                    json!(u64::MAX as f64)
                };
                m.insert("created_at".into(), t);
            }),
            11 => insert_in_content(b"\\ud800"),
            12 => {
                let other: Value = serde_json::from_slice(next).unwrap();
                edit(&|m| {
                    m.insert("sig".into(), other["sig"].clone());
                })
            }
            _ => b"[\"EVENT\",1]".to_vec(),
        },
    }
}

#[test]
fn hundred_thousand_events_with_one_percent_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let generated = gen_bytes(&["--count", "100000", "--seed", "7"]);
    let t_gen = t0.elapsed();
    let lines = lines_of(&generated);
    assert_eq!(lines.len(), 100_000);

    // 1000 corrupted lines, one in each block of 100, at varying offsets.
    let bad: BTreeMap<usize, usize> = (0..1000).map(|i| (i * 100 + (i * 37) % 100, i)).collect();
    assert_eq!(bad.len(), 1000);
    let mut input = Vec::with_capacity(generated.len() + (11 << 20));
    let mut valid = Vec::with_capacity(lines.len());
    let mut reasons = BTreeMap::new();
    for (n, line) in lines.iter().enumerate() {
        match bad.get(&n) {
            Some(&i) => {
                let (bytes, why) = corrupt(i, line, lines[(n + 1) % lines.len()]);
                input.extend_from_slice(&bytes);
                reasons.insert(n as u64 + 1, why);
            }
            None => {
                input.extend_from_slice(line);
                valid.push(serde_json::from_slice::<Value>(line).unwrap());
            }
        }
        input.push(b'\n');
    }
    let want = expected_stored(&valid);
    let replaceable = valid
        .iter()
        .filter(|v| matches!(v["kind"].as_u64(), Some(0 | 3)))
        .count();
    assert!(
        replaceable > 40_000 && want.len() + 40_000 < valid.len(),
        "the data set must exercise replaceable events"
    );
    let file = tmp.path().join("corrupt.jsonl");
    std::fs::write(&file, &input).unwrap();

    let (d1, d2) = (tmp.path().join("one"), tmp.path().join("two"));
    let t1 = Instant::now();
    let (code, err) = import_file(&file, &d1);
    let t_import = t1.elapsed();
    assert_eq!(code, 0, "{err}");
    let named = rejections(&err);
    let expected_named: BTreeSet<u64> = reasons.keys().copied().collect();
    let missing: Vec<_> = expected_named
        .iter()
        .filter(|n| !named.contains_key(n))
        .collect();
    let extra: Vec<_> = named
        .iter()
        .filter(|(n, _)| !expected_named.contains(n))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "bad lines not named: {missing:?}; good lines rejected: {extra:?}"
    );
    let wrong_check: Vec<_> = named
        .iter()
        .filter(|(n, reason)| !reason.contains(reasons[*n]))
        .map(|(n, reason)| format!("line {n}: {reason} (expected {:?})", reasons[n]))
        .collect();
    assert!(
        wrong_check.is_empty(),
        "caught by the wrong check:\n{}",
        wrong_check.join("\n")
    );
    let s = summary(&err);
    assert_eq!(s["lines"], 100_000);
    assert_eq!(s["rejected"], 1000);
    assert_eq!(s["accepted"], want.len() as u64, "{s:?}");
    assert_eq!(
        s["accepted"] + s["replaced"] + s["superseded"],
        99_000,
        "{s:?}"
    );

    let t2 = Instant::now();
    let stored = export(&d1, &[]);
    let t_export = t2.elapsed();
    assert_eq!(stored.len(), want.len(), "export has duplicates or misses");
    let got = id_set(&stored);
    let want_ids: BTreeSet<String> = want.keys().cloned().collect();
    assert!(
        got == want_ids,
        "stored set differs: {} missing, {} unexpected",
        want_ids.difference(&got).count(),
        got.difference(&want_ids).count()
    );
    for v in &stored {
        assert_eq!(
            v,
            &want[&id_of(v)],
            "stored event differs from its input line"
        );
    }

    // orly export | orly import into a second store.
    let t3 = Instant::now();
    let mut exporter = Command::new(bin("orly"))
        .args(["export", "--data-dir", d1.to_str().unwrap()])
        .env_remove("ORLY_DATA_DIR")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let piped = Command::new(bin("orly"))
        .args(["import", "-", "--data-dir", d2.to_str().unwrap()])
        .env_remove("ORLY_DATA_DIR")
        .stdin(exporter.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(exporter.wait().unwrap().success(), "export in pipe failed");
    let err2 = String::from_utf8_lossy(&piped.stderr);
    assert!(piped.status.success(), "import in pipe failed: {err2}");
    let s2 = summary(&err2);
    assert_eq!(s2["rejected"], 0, "{err2}");
    assert_eq!(s2["accepted"], want.len() as u64, "{err2}");
    assert_eq!(s2["superseded"] + s2["replaced"], 0, "{err2}");
    let t_pipe = t3.elapsed();
    assert_eq!(id_set(&export(&d2, &[])), want_ids);
    eprintln!(
        "timings: gen {t_gen:.1?}, import {t_import:.1?}, export {t_export:.1?}, \
         export|import {t_pipe:.1?}, total {:.1?}",
        t0.elapsed()
    );
}

/// Versions of one profile (kind 0), one relay list (10002) and one article slot (30023) that
/// share a `created_at`: the lowest id must win, whatever the order, batch or file they came in.
#[test]
fn replaceable_ties_go_to_the_lowest_id_in_any_order() {
    let keys = Keys::from_seed(b"ties", 0);
    let d = |v: &str| vec![vec!["d".to_string(), v.to_string()]];
    let mut events = Vec::new();
    for i in 0..6 {
        events.push(sign_event(
            &keys,
            1_700_000_100,
            0,
            vec![],
            &format!("profile {i}"),
        ));
        events.push(sign_event(
            &keys,
            1_700_000_100,
            10002,
            vec![],
            &format!("relays {i}"),
        ));
        events.push(sign_event(
            &keys,
            1_700_000_100,
            30023,
            d("a"),
            &format!("post {i}"),
        ));
        events.push(sign_event(
            &keys,
            1_700_000_099,
            30023,
            d("b"),
            &format!("older {i}"),
        ));
    }
    // An older version, and a version of slot "b" that is newer than every tie.
    events.push(sign_event(&keys, 1_700_000_000, 0, vec![], "old profile"));
    events.push(sign_event(&keys, 1_700_000_200, 30023, d("b"), "newest b"));
    let values: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.to_json()).unwrap())
        .collect();
    let want: BTreeSet<String> = expected_stored(&values).into_keys().collect();
    assert_eq!(want.len(), 4);
    let lowest_profile = events
        .iter()
        .filter(|e| e.kind == 0)
        .map(|e| e.id_hex())
        .min();
    assert!(
        want.contains(&lowest_profile.unwrap()),
        "model picks the lowest id"
    );

    let tmp = tempfile::tempdir().unwrap();
    let mut reversed = events.clone();
    reversed.reverse();
    let mut by_id = events.clone();
    by_id.sort_by_key(|e| e.id);
    for (name, order) in [
        ("forward", &events),
        ("reversed", &reversed),
        ("by id", &by_id),
    ] {
        let one = tmp.path().join(format!("{name}-one-file"));
        import(&one, order);
        assert_eq!(id_set(&export(&one, &[])), want, "{name}, one batch");
        // One import per event: every comparison goes through the stored head.
        let many = tmp.path().join(format!("{name}-one-by-one"));
        for e in order.iter() {
            import(&many, std::slice::from_ref(e));
        }
        assert_eq!(id_set(&export(&many, &[])), want, "{name}, one import each");
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input: named, never a panic, nothing lost.

#[test]
fn bad_input_is_named_skipped_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let base = gen_bytes(&["--count", "300", "--seed", "5"]);
    let base_file = tmp.path().join("base.jsonl");
    std::fs::write(&base_file, &base).unwrap();
    let (code, err) = import_file(&base_file, &dir);
    assert_eq!(code, 0, "{err}");
    let mut want: BTreeSet<String> = expected_stored(&parse_all(&base)).into_keys().collect();
    assert_eq!(id_set(&export(&dir, &[])), want);

    let good = notes("good", 80, 1_700_000_000);
    let line = good[0].to_json();
    let at = good[0].created_at;
    assert_eq!(good[0].kind, 7);
    let big = |n: usize| format!("{{\"content\":\"{}\"}}", "z".repeat(n)).into_bytes();
    let with = |from: &str, to: &str| {
        assert!(line.contains(from), "{from}");
        line.replacen(from, to, 1).into_bytes()
    };
    let id = good[0].id_hex();
    let pk = hex::encode(good[0].pubkey);
    let sig = hex::encode(good[0].sig);
    let content_at = line.find("\"content\":\"").unwrap() + 11;
    let raw_in_content = |b: &[u8]| {
        [
            &line.as_bytes()[..content_at],
            b,
            &line.as_bytes()[content_at..],
        ]
        .concat()
    };
    // The event's fields as a JSON array, in the order a positional decoder would take them.
    let spare = good.last().unwrap();
    let as_array = json!([
        spare.id_hex(),
        hex::encode(spare.pubkey),
        spare.created_at,
        spare.kind,
        spare.tags,
        spare.content,
        hex::encode(spare.sig)
    ])
    .to_string();
    // (case, bad line, words one of which the reason must contain: what a reader needs to fix it)
    let case =
        |name: &'static str, bad: Vec<u8>, needles: &'static [&'static str]| (name, bad, needles);
    let table = vec![
        case(
            "truncated",
            line.as_bytes()[..line.len() / 2].to_vec(),
            &["EOF", "truncated"],
        ),
        case(
            "cut in hex",
            line.as_bytes()[..12].to_vec(),
            &["EOF", "truncated"],
        ),
        case("short id", with(&id, &id[1..]), &["id"]),
        case("long pubkey", with(&pk, &format!("{pk}ab")), &["pubkey"]),
        case("short sig", with(&sig, &sig[..126]), &["sig"]),
        case("non-hex id", with(&id, &format!("zz{}", &id[2..])), &["id"]),
        case(
            "kind 70000",
            with("\"kind\":7,", "\"kind\":70000,"),
            &["kind", "70000"],
        ),
        case(
            "kind 7.5",
            with("\"kind\":7,", "\"kind\":7.5,"),
            &["kind", "7.5"],
        ),
        case(
            "created_at 1e30",
            with(&format!("{at}"), "1e30"),
            &["created_at", "1e30", "1e+30"],
        ),
        case(
            "created_at 2^64",
            with(&format!("{at}"), "18446744073709551616"),
            &["created_at", "18446744073709551616", "e+19"],
        ),
        case(
            "created_at -1",
            with(&format!("{at}"), "-1"),
            &["created_at", "-1"],
        ),
        case(
            "invalid UTF-8 in content",
            raw_in_content(b"\xff\xfe"),
            &["unicode", "utf"],
        ),
        case(
            "UTF-8 encoded surrogate",
            raw_in_content(b"\xed\xa0\x80"),
            &["unicode", "utf"],
        ),
        case(
            "lone surrogate escape",
            raw_in_content(b"\\ud800"),
            &["surrogate", "escape"],
        ),
        case(
            "invalid UTF-8 outside strings",
            b"\xff\xff".to_vec(),
            &["expected", "utf"],
        ),
        case("10 MB line", big(10 << 20), &["too long", "too large"]),
        case(
            "just over the cap",
            big(256 << 10),
            &["too long", "too large"],
        ),
        case("not an object: array", b"[1,2,3]".to_vec(), &["object"]),
        case("not an object: string", b"\"hello\"".to_vec(), &["object"]),
        case("not an object: null", b"null".to_vec(), &["object"]),
        case("not an object: number", b"42".to_vec(), &["object"]),
        case(
            "valid event as an array",
            as_array.into_bytes(),
            &["object"],
        ),
        case("empty object", b"{}".to_vec(), &["missing"]),
        case("NUL bytes", b"\0\0\0".to_vec(), &["expected", "control"]),
        case(
            "two objects",
            format!("{line}{line}").into_bytes(),
            &["trailing"],
        ),
    ];
    assert!(good.len() > 2 * table.len() + 4);
    // Every case runs; what is wrong is gathered and reported together at the end.
    let mut problems = Vec::new();
    let mut wrongly_stored = BTreeSet::new();
    for (i, (case, bad, needles)) in table.iter().enumerate() {
        let (first, last) = (&good[2 * i + 2], &good[2 * i + 3]);
        let mut body = first.to_json().into_bytes();
        body.push(b'\n');
        body.extend_from_slice(bad);
        body.push(b'\n');
        body.extend_from_slice(last.to_json().as_bytes());
        body.push(b'\n');
        let file = tmp.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&file, &body).unwrap();
        let (code, err) = import_file(&file, &dir);
        assert_eq!(code, 0, "{case}: exit code; stderr:\n{err}");
        let named = rejections(&err);
        match named.get(&2) {
            None => problems.push(format!("{case}: line 2 not named as rejected: {err}")),
            Some(reason)
                if !needles
                    .iter()
                    .any(|n| reason.to_lowercase().contains(&n.to_lowercase())) =>
            {
                problems.push(format!(
                    "{case}: unclear reason {reason:?} (wants {needles:?})"
                ))
            }
            Some(_) => {}
        }
        if named.keys().any(|n| *n != 2) {
            problems.push(format!("{case}: good lines rejected: {err}"));
        }
        let s = summary(&err);
        assert_eq!(
            s["accepted"] - u64::from(!named.contains_key(&2)),
            2,
            "{case}: {err}"
        );
        want.extend([first.id_hex(), last.id_hex()]);
        let got = id_set(&export(&dir, &[]));
        let lost: Vec<_> = want.difference(&got).collect();
        assert!(lost.is_empty(), "{case}: lost {lost:?}");
        for extra in got.difference(&want) {
            if wrongly_stored.insert(extra.clone()) {
                problems.push(format!(
                    "{case}: stored {extra} from a line it should refuse"
                ));
            }
        }
    }
    // Events the table wrongly let in stay; the checks below are about everything else.
    want.extend(wrongly_stored);

    // Blank lines are skipped silently but still counted, so later line numbers stay right.
    let file = tmp.path().join("blank.jsonl");
    let mut body = b"\n   \n\t\n\r\n".to_vec();
    body.extend_from_slice(good[0].to_json().as_bytes());
    body.extend_from_slice(b"\n\n{\"id\":\n");
    std::fs::write(&file, &body).unwrap();
    let (code, err) = import_file(&file, &dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        rejections(&err).keys().copied().collect::<Vec<_>>(),
        vec![7],
        "{err}"
    );
    let s = summary(&err);
    assert_eq!(
        (s["lines"], s["rejected"], s["accepted"]),
        (7, 1, 1),
        "{err}"
    );
    want.insert(good[0].id_hex());

    // A last line without its newline, 10 MB long.
    let file = tmp.path().join("tail.jsonl");
    let mut body = good[1].to_json().into_bytes();
    body.push(b'\n');
    body.extend_from_slice(&big(10 << 20));
    std::fs::write(&file, &body).unwrap();
    let (code, err) = import_file(&file, &dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        rejections(&err).keys().copied().collect::<Vec<_>>(),
        vec![2],
        "{err}"
    );
    want.insert(good[1].id_hex());
    assert_eq!(id_set(&export(&dir, &[])), want);

    let (code, out, err) = orly(&[
        "stats",
        "--check",
        "--json",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["integrity"]["problems"], json!([]));
    assert_eq!(st["stats"]["events"], want.len());

    // A file that cannot be opened is an error, not an empty import.
    let (code, _, err) = orly(&[
        "import",
        tmp.path().join("nope.jsonl").to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("nope.jsonl") && !err.contains("panicked"),
        "{err}"
    );
    assert!(
        problems.is_empty(),
        "bad input handling:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Export: order and filters.

#[test]
fn export_order_newest_first_or_ascending() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (_, want) = fixture(&dir);
    let want_ids: BTreeSet<String> = want.keys().cloned().collect();
    let desc = export(&dir, &[]);
    let asc = export(&dir, &["--ascending"]);
    assert_eq!(desc.len(), want.len());
    assert_eq!(asc.len(), want.len());
    assert_eq!(id_set(&desc), want_ids);
    assert_eq!(id_set(&asc), want_ids);
    let (td, ta) = (times(&desc), times(&asc));
    assert!(
        td.windows(2).all(|w| w[0] >= w[1]),
        "default export is not newest first"
    );
    assert!(
        ta.windows(2).all(|w| w[0] <= w[1]),
        "--ascending is not oldest first"
    );
    assert!(td[0] > td[td.len() - 1], "data set needs distinct times");
    let filtered = export(&dir, &["--ascending", "--filter", r#"{"kinds":[1]}"#]);
    assert!(times(&filtered).windows(2).all(|w| w[0] <= w[1]));
    let filtered = export(&dir, &["--filter", r#"{"kinds":[1,7]}"#]);
    assert!(times(&filtered).windows(2).all(|w| w[0] >= w[1]));
}

/// NIP-01 matching, written out independently of the product.
fn matches(f: &Value, v: &Value) -> bool {
    let f = f.as_object().unwrap();
    let at = v["created_at"].as_u64().unwrap();
    let in_list =
        |key: &str, x: &Value| f.get(key).is_none_or(|l| l.as_array().unwrap().contains(x));
    let tag_ok =
        f.iter()
            .filter(|(k, _)| k.starts_with('#'))
            .all(|(k, vals)| {
                v["tags"].as_array().unwrap().iter().any(|t| {
                    t[0].as_str() == Some(&k[1..]) && vals.as_array().unwrap().contains(&t[1])
                })
            });
    in_list("ids", &v["id"])
        && in_list("authors", &v["pubkey"])
        && in_list("kinds", &v["kind"])
        && f.get("since").is_none_or(|s| at >= s.as_u64().unwrap())
        && f.get("until").is_none_or(|u| at <= u.as_u64().unwrap())
        && tag_ok
}

#[test]
fn export_filters_match_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (_, want) = fixture(&dir);
    let stored: Vec<&Value> = want.values().collect();
    let mut ts: Vec<u64> = stored
        .iter()
        .map(|v| v["created_at"].as_u64().unwrap())
        .collect();
    ts.sort();
    let (t1, t2) = (ts[ts.len() / 4], ts[ts.len() * 3 / 4]);
    let authors: BTreeSet<&str> = stored
        .iter()
        .map(|v| v["pubkey"].as_str().unwrap())
        .collect();
    let a: Vec<&str> = authors.into_iter().collect();
    let some = stored[stored.len() / 3];
    let (e1, e2) = (id_of(stored[0]), id_of(stored[stored.len() - 1]));
    let exact = some["created_at"].as_u64().unwrap();
    let filters = vec![
        json!({"kinds": [1]}),
        json!({"kinds": [0, 3]}),
        json!({"kinds": [10002, 30023]}),
        json!({"authors": [a[0]]}),
        json!({"authors": [a[1], a[2]], "kinds": [7]}),
        json!({"#t": ["zap"]}),
        json!({"#t": ["sync", "relay"], "kinds": [1]}),
        json!({"#p": [a[3]]}),
        json!({"#p": [a[3]], "#t": ["nostr"]}),
        json!({"#d": ["slot-1"], "kinds": [30023]}),
        json!({"since": t1}),
        json!({"until": t2}),
        json!({"since": t1, "until": t2}),
        json!({"since": t1, "until": t2, "kinds": [7]}),
        json!({"since": t1, "until": t2, "#t": ["nostr"]}),
        json!({"authors": [a[0]], "#t": ["nostr", "zap"], "since": t1}),
        json!({"since": exact, "until": exact}),
        json!({"ids": [e1, e2, "00".repeat(32)]}),
        json!({"ids": [e1], "kinds": [65535]}),
        json!({"kinds": [12345]}),
        json!({"authors": ["11".repeat(32)]}),
    ];
    for f in &filters {
        let mut expect: Vec<u64> = stored
            .iter()
            .filter(|v| matches(f, v))
            .map(|v| v["created_at"].as_u64().unwrap())
            .collect();
        let expect_ids: BTreeSet<String> = stored
            .iter()
            .filter(|v| matches(f, v))
            .map(|v| id_of(v))
            .collect();
        let empty_on_purpose = f
            .get("kinds")
            .is_some_and(|k| k[0] == 12345 || k[0] == 65535)
            || f["authors"][0] == "11".repeat(32);
        assert_eq!(
            expect_ids.is_empty(),
            empty_on_purpose,
            "fixture does not exercise {f}"
        );
        let got = export(&dir, &["--filter", &f.to_string()]);
        assert_eq!(got.len(), expect_ids.len(), "{f}: count");
        assert_eq!(id_set(&got), expect_ids, "{f}");
        expect.sort_by(|x, y| y.cmp(x));
        assert_eq!(times(&got), expect, "{f}: order");
    }

    // limit: the newest `limit` of the matching events.
    let got = export(&dir, &["--filter", r#"{"kinds":[1],"limit":25}"#]);
    assert_eq!(got.len(), 25);
    let got_ids = id_set(&got);
    assert!(got_ids.iter().all(|id| want[id]["kind"] == 1));
    let cut = *times(&got).last().unwrap();
    for v in stored.iter().filter(|v| v["kind"] == 1) {
        if v["created_at"].as_u64().unwrap() > cut {
            assert!(got_ids.contains(&id_of(v)), "limit skipped a newer event");
        }
    }
}

#[test]
fn malformed_filter_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    import(&dir, &notes("f", 5, 1_700_000_000));
    for bad in [
        "{",
        "[]",
        "null",
        r#"{"kinds":"1"}"#,
        r#"{"kinds":[70000]}"#,
        r#"{"kinds":[-1]}"#,
        r#"{"authors":["abc"]}"#,
        r#"{"ids":[1]}"#,
        r#"{"since":-1}"#,
        r#"{"until":"soon"}"#,
        r#"{"limit":1.5}"#,
        r##"{"#tt":["x"]}"##,
        r#"{"bogus":1}"#,
    ] {
        let (code, out, err) = orly(&[
            "export",
            "--filter",
            bad,
            "--data-dir",
            dir.to_str().unwrap(),
        ]);
        assert_ne!(code, 0, "{bad}: accepted");
        assert!(out.is_empty(), "{bad}: printed events");
        assert!(
            err.contains("filter") && !err.contains("panicked"),
            "{bad}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Stats and gen.

#[test]
fn stats_match_the_stored_events() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (_, want) = fixture(&dir);
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for v in want.values() {
        *by_kind.entry(v["kind"].to_string()).or_default() += 1;
    }
    let t: Vec<u64> = want
        .values()
        .map(|v| v["created_at"].as_u64().unwrap())
        .collect();
    let (first, last) = (*t.iter().min().unwrap(), *t.iter().max().unwrap());

    let (code, out, err) = orly(&["stats", "--json", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let st: Value = serde_json::from_str(&out).expect("stats --json is JSON");
    let s = &st["stats"];
    assert_eq!(s["events"], want.len());
    assert_eq!(s["first_created_at"], first);
    assert_eq!(s["last_created_at"], last);
    assert!(s["disk_bytes"].as_u64().unwrap() > 0);
    let got: BTreeMap<String, u64> = s["by_kind"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect();
    assert_eq!(got, by_kind);

    let (code, out, err) = orly(&["stats", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("events: {}\n", want.len())), "{out}");
    assert!(
        out.contains(&format!("first created_at: {first}\n")),
        "{out}"
    );
    assert!(out.contains(&format!("last created_at: {last}\n")), "{out}");
    for (k, n) in &by_kind {
        assert!(out.contains(&format!("kind {k}: {n}\n")), "{out}");
    }

    let (code, out, err) = orly(&[
        "stats",
        "--check",
        "--json",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["integrity"]["problems"], json!([]));
    assert_eq!(st["integrity"]["events"], want.len());
}

#[test]
fn gen_is_deterministic_and_skip_slices_the_sequence() {
    let a = gen_bytes(&["--count", "400", "--seed", "3"]);
    let b = gen_bytes(&["--count", "400", "--seed", "3"]);
    let c = gen_bytes(&["--count", "400", "--seed", "4"]);
    assert_eq!(lines_of(&a).len(), 400);
    assert!(a == b, "same seed, different bytes");
    assert!(a != c, "different seeds, same bytes");
    let (ia, ic) = (id_set(&parse_all(&a)), id_set(&parse_all(&c)));
    assert_eq!(ia.len(), 400, "ids repeat within one sequence");
    assert!(ia.is_disjoint(&ic), "different seeds share events");

    let tail = gen_bytes(&["--count", "150", "--seed", "3", "--skip", "250"]);
    assert_eq!(lines_of(&tail), lines_of(&a)[250..]);
    let mid = gen_bytes(&["--count", "1", "--seed", "3", "--skip", "7"]);
    assert_eq!(lines_of(&mid), lines_of(&a)[7..8]);
    assert!(gen_bytes(&["--count", "0", "--seed", "3"]).is_empty());
}

/// sha256 of NIP-01's `[0,pubkey,created_at,kind,tags,content]`. serde_json escapes exactly
/// NIP-01's set for the characters gen emits (no control characters but \n and \t).
fn nip01_id(v: &Value) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let arr = json!([
        0,
        v["pubkey"],
        v["created_at"],
        v["kind"],
        v["tags"],
        v["content"]
    ]);
    Sha256::digest(serde_json::to_string(&arr).unwrap().as_bytes()).into()
}

#[test]
fn every_generated_event_verifies() {
    let bytes = gen_bytes(&[
        "--count",
        "2000",
        "--seed",
        "9",
        "--authors",
        "13",
        "--kinds",
        "0,1,3,5,7,10002,20001,30023,40000,65535",
    ]);
    let all = parse_all(&bytes);
    let mut kinds = BTreeSet::new();
    for v in &all {
        let id = nip01_id(v);
        assert_eq!(hex::encode(id), v["id"], "id of {v}");
        let pk: [u8; 32] = hex::decode(v["pubkey"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let sig: [u8; 64] = hex::decode(v["sig"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let pk = secp256k1::XOnlyPublicKey::from_byte_array(pk).expect("pubkey on the curve");
        let sig = secp256k1::schnorr::Signature::from_byte_array(sig);
        secp256k1::schnorr::verify(&sig, &id, &pk).unwrap_or_else(|e| panic!("sig of {v}: {e}"));
        kinds.insert(v["kind"].as_u64().unwrap());
    }
    assert_eq!(kinds.len(), 10, "every requested kind appears");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let file = tmp.path().join("gen.jsonl");
    std::fs::write(&file, &bytes).unwrap();
    let (code, err) = import_file(&file, &dir);
    assert_eq!(code, 0, "{err}");
    let s = summary(&err);
    assert_eq!(s["rejected"], 0, "import rejected generated events: {err}");
    let ephemeral = all.iter().filter(|v| v["kind"] == 20001).count() as u64;
    assert_eq!(s["ephemeral"], ephemeral);
    let want = expected_stored(&all);
    assert_eq!(id_set(&export(&dir, &[])), want.into_keys().collect());
}
