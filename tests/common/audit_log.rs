//! The audit directory as a test sees it: the segments, every complete record (a line cut by a
//! crash is not one), waiting (bounded) for new records, and checks that a set of new records
//! is exactly one refusal with its reason. Part of the gateway harness (`gateway.rs`).

use super::{AUDIT_SETTLE, AUDIT_WAIT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Segments of `dir`, sorted.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every complete record in `dir`'s segments, in order.
pub fn audit_records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for f in segments(dir) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            out.push(serde_json::from_str(line.trim_end()).expect("audit line is JSON"));
        }
    }
    out
}

/// Total bytes of the segments.
pub fn log_bytes(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// Every file of `dir`, as (lossy) text.
pub fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(e.path()).unwrap_or_default(),
        ));
    }
    text
}

/// Waits (bounded) until `pred` holds for the records of `dir`.
pub async fn wait_records(dir: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let recs = audit_records(dir);
        if pred(&recs) {
            return recs;
        }
        assert!(
            start.elapsed() < AUDIT_WAIT,
            "timed out waiting for {what}; records:\n{}",
            recs.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) for `expect` records after the first `before`, then a moment more for any
/// extra ones; returns every record after `before`.
pub async fn new_records(dir: &Path, before: usize, expect: usize) -> Vec<Value> {
    let start = Instant::now();
    while audit_records(dir).len() < before + expect && start.elapsed() < AUDIT_WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(AUDIT_SETTLE).await;
    let mut all = audit_records(dir);
    all.split_off(before.min(all.len()))
}

pub fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// What the one record of a refusal must show; `None` is not checked.
#[derive(Clone, Copy, Default)]
pub struct Refused<'a> {
    /// Part of the reason.
    pub reason: &'a str,
    /// Match `reason` ignoring case.
    pub ignore_case: bool,
    /// The record names a source address.
    pub source: bool,
    pub rpc: Option<&'a str>,
    pub trace: Option<&'a str>,
    /// `Some("")`: the record names no admin.
    pub admin: Option<&'a str>,
}

/// Checks `recs` is exactly one denied decision showing `want`.
pub fn check_one_refusal(recs: &[Value], want: &Refused<'_>) -> Result<(), String> {
    let [r] = recs else {
        return Err(format!(
            "{} new audit records, expected exactly 1: {}",
            recs.len(),
            serde_json::to_string(recs).unwrap()
        ));
    };
    let mut errs = Vec::new();
    if s(r, "event") != "decision" {
        errs.push(format!("event {:?}, expected decision", s(r, "event")));
    }
    if r.get("allowed") != Some(&Value::Bool(false)) {
        errs.push(format!("allowed = {:?}, expected false", r.get("allowed")));
    }
    let named = if want.ignore_case {
        s(r, "reason")
            .to_lowercase()
            .contains(&want.reason.to_lowercase())
    } else {
        s(r, "reason").contains(want.reason)
    };
    if !named {
        errs.push(format!(
            "reason {:?} does not name the cause ({:?})",
            s(r, "reason"),
            want.reason
        ));
    }
    if want.source && s(r, "source").is_empty() {
        errs.push("no source address".into());
    }
    if let Some(rpc) = want.rpc
        && s(r, "rpc") != rpc
    {
        errs.push(format!("rpc {:?}, expected {rpc:?}", s(r, "rpc")));
    }
    if let Some(t) = want.trace
        && s(r, "trace_id") != t
    {
        errs.push(format!("trace_id {:?}, expected {t:?}", s(r, "trace_id")));
    }
    if let Some(a) = want.admin
        && s(r, "admin") != a
    {
        errs.push(format!("admin {:?}, expected {a:?}", s(r, "admin")));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; record: {r}", errs.join("; ")))
    }
}

/// Checks `recs` is exactly one refusal of `admin` on `rpc` whose reason contains `reason`.
pub fn one_refusal(recs: &[Value], rpc: &str, reason: &str, admin: &str) -> Result<(), String> {
    check_one_refusal(
        recs,
        &Refused {
            reason,
            rpc: Some(rpc),
            admin: Some(admin),
            ..Refused::default()
        },
    )
}

/// Checks `recs` is exactly one refusal from a source address, whose reason contains `reason`
/// in any case, of the call traced `trace` and of `admin` (each when given).
pub fn one_refusal_traced(
    recs: &[Value],
    reason: &str,
    trace: Option<&str>,
    admin: Option<&str>,
) -> Result<(), String> {
    check_one_refusal(
        recs,
        &Refused {
            reason,
            ignore_case: true,
            source: true,
            trace,
            admin,
            ..Refused::default()
        },
    )
}
