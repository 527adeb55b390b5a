//! `orly audit verify --anchors`: an intact log's checkpoints held against the anchors fetched
//! from the relays. Pure: no I/O, so every verdict is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::format::Anchor;
use crate::audit::VerifySummary;

/// Exit code: the log is intact, every checkpoint is anchored and every anchor matches.
pub const EXIT_ANCHORED: u8 = 0;
/// Exit code: the anchors contradict the log (rewritten history, or truncated).
pub const EXIT_CONTRADICTED: u8 = 3;
/// Exit code: no contradiction, but checkpoints without an anchor (or a broken anchor chain).
pub const EXIT_INCOMPLETE: u8 = 4;
/// Exit code: no anchor relay could be read.
pub const EXIT_UNREACHABLE: u8 = 5;

/// A checkpoint whose anchor says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The checkpoint's seq.
    pub seq: u64,
    /// What the anchor holds.
    pub anchored_hash: String,
    /// What the log holds there (`None`: the record at that seq is no longer a checkpoint).
    pub log_hash: Option<String>,
    /// The anchor's event id.
    pub anchor_id: String,
}

/// The verdict of the log against its anchors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnchorCheck {
    /// Anchors that belong to this log (distinct events).
    pub anchors: usize,
    /// Checkpoints with at least one matching anchor.
    pub anchored: usize,
    /// Checkpoints in the log.
    pub checkpoints: usize,
    /// The log's last seq.
    pub log_last_seq: u64,
    /// Checkpoints with no anchor at all (relays down when they were written, or anchors
    /// removed), by seq.
    pub unanchored: Vec<u64>,
    /// Checkpoints whose anchor disagrees with the log, by seq (the first is the first
    /// rewritten checkpoint).
    pub rewritten: Vec<Rewritten>,
    /// Anchored seqs past the end of the log: records the log no longer has.
    pub beyond_log: Vec<u64>,
    /// Anchors whose `prev` is not among the anchors found (an anchor was lost or deleted).
    pub missing_prev: Vec<String>,
    /// Records after the last anchored checkpoint: (first seq, last seq, from time, to time).
    pub uncovered: Option<(u64, u64, String, String)>,
    /// Relays that could not be read, with why.
    pub relay_errors: Vec<(String, String)>,
    /// Events from the relays that are not valid anchors of this log, with why.
    pub invalid: Vec<(String, String)>,
}

/// Holds the checkpoints of `log` against `anchors` (already checked to be this log's, by the
/// expected key).
pub fn check(log: &VerifySummary, anchors: &[Anchor]) -> AnchorCheck {
    let cps: BTreeMap<u64, &crate::audit::CheckpointInfo> =
        log.checkpoint_list.iter().map(|c| (c.seq, c)).collect();
    let ids: BTreeSet<&str> = anchors.iter().map(|a| a.id.as_str()).collect();
    let mut out = AnchorCheck {
        anchors: ids.len(),
        checkpoints: cps.len(),
        log_last_seq: log.last_seq,
        ..AnchorCheck::default()
    };
    let mut matched: BTreeSet<u64> = BTreeSet::new();
    let mut beyond = BTreeSet::new();
    for a in anchors {
        let p = &a.payload;
        if p.seq > log.last_seq {
            beyond.insert(p.seq);
        } else {
            match cps.get(&p.seq) {
                Some(c) if c.hash == p.hash => {
                    matched.insert(p.seq);
                }
                other => out.rewritten.push(Rewritten {
                    seq: p.seq,
                    anchored_hash: p.hash.clone(),
                    log_hash: other.map(|c| c.hash.clone()),
                    anchor_id: a.id.clone(),
                }),
            }
        }
        if let Some(prev) = &p.prev
            && !ids.contains(prev.as_str())
        {
            out.missing_prev.push(prev.clone());
        }
    }
    out.rewritten.sort_by_key(|r| r.seq);
    out.rewritten
        .dedup_by(|a, b| a.seq == b.seq && a.anchored_hash == b.anchored_hash);
    out.missing_prev.sort();
    out.missing_prev.dedup();
    out.beyond_log = beyond.into_iter().collect();
    out.anchored = matched.len();
    out.unanchored = cps
        .keys()
        .filter(|s| !matched.contains(s))
        .copied()
        .collect();
    let last_good = matched.iter().next_back().copied();
    if log.last_seq > last_good.unwrap_or(0) {
        let from_time = match last_good {
            Some(seq) => cps.get(&seq).map(|c| c.time.clone()),
            None => log.time_span.as_ref().map(|span| span.0.clone()),
        };
        let to_time = log.time_span.as_ref().map(|span| span.1.clone());
        out.uncovered = Some((
            last_good.unwrap_or(0) + 1,
            log.last_seq,
            from_time.unwrap_or_default(),
            to_time.unwrap_or_default(),
        ));
    }
    out
}

impl AnchorCheck {
    /// The process exit code of `orly audit verify --anchors` for this verdict.
    pub fn exit_code(&self) -> u8 {
        if !self.rewritten.is_empty() || !self.beyond_log.is_empty() {
            EXIT_CONTRADICTED
        } else if !self.unanchored.is_empty() || !self.missing_prev.is_empty() {
            EXIT_INCOMPLETE
        } else {
            EXIT_ANCHORED
        }
    }
}

fn seqs(v: &[u64]) -> String {
    const SHOWN: usize = 50;
    let mut s: Vec<String> = v.iter().take(SHOWN).map(u64::to_string).collect();
    if v.len() > SHOWN {
        s.push(format!("… ({} more)", v.len() - SHOWN));
    }
    s.join(", ")
}

impl fmt::Display for AnchorCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (relay, why) in &self.relay_errors {
            writeln!(f, "anchor relay {relay} could not be read: {why}")?;
        }
        for (id, why) in self.invalid.iter().take(20) {
            writeln!(
                f,
                "ignored event {id}: not a valid anchor of this log: {why}"
            )?;
        }
        let verdict = match self.exit_code() {
            EXIT_CONTRADICTED => "CONTRADICTED",
            EXIT_INCOMPLETE => "INCOMPLETE",
            _ => "ANCHORED",
        };
        write!(
            f,
            "anchors: {verdict}: {} of {} checkpoints anchored ({} anchors found)",
            self.anchored, self.checkpoints, self.anchors
        )?;
        if let Some(first) = self.rewritten.first() {
            write!(
                f,
                "\nREWRITTEN: the first rewritten checkpoint is seq {}: anchored hash {} (anchor \
                 {}), the log has {}",
                first.seq,
                first.anchored_hash,
                first.anchor_id,
                first
                    .log_hash
                    .as_deref()
                    .unwrap_or("no checkpoint at that seq")
            )?;
            if self.rewritten.len() > 1 {
                let all: Vec<u64> = self.rewritten.iter().map(|r| r.seq).collect();
                write!(f, "\nrewritten checkpoints: seq {}", seqs(&all))?;
            }
        }
        if let Some(last) = self.beyond_log.last() {
            write!(
                f,
                "\nTRUNCATED: anchors for seq {} but the log ends at seq {}: the log no longer \
                 has seq {} to {last}",
                seqs(&self.beyond_log),
                self.log_last_seq,
                self.log_last_seq.saturating_add(1),
            )?;
        }
        if !self.unanchored.is_empty() {
            write!(
                f,
                "\ncheckpoints without an anchor: seq {}",
                seqs(&self.unanchored)
            )?;
        }
        if !self.missing_prev.is_empty() {
            write!(
                f,
                "\nanchor chain broken: previous anchors not found on any relay: {}",
                self.missing_prev.join(", ")
            )?;
        }
        match &self.uncovered {
            Some((first, last, from, to)) => write!(
                f,
                "\nnot covered by any anchor: seq {first} to {last} (from {from} to {to})"
            ),
            None => write!(f, "\nevery record is covered by an anchor"),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::audit::CheckpointInfo;
    use crate::audit::anchor::format::{ANCHOR_VERSION, AnchorPayload};

    fn summary() -> VerifySummary {
        let cp = |seq: u64| CheckpointInfo {
            seq,
            hash: format!("{seq:064x}"),
            time: format!("t{seq}"),
        };
        VerifySummary {
            files: 1,
            records: 13,
            last_seq: 13,
            last_hash: "x".into(),
            checkpoints: 3,
            checkpoints_verified: 3,
            checkpoints_unchecked: 0,
            checkpoints_unsigned: 0,
            head_signature: None,
            head_lag: 0,
            excluded: vec![],
            interrupted: vec![],
            running: vec![],
            recorded_interrupted: vec![],
            recorded_unconfirmed: vec![],
            overruled: vec![],
            checkpoint_list: vec![cp(3), cp(7), cp(11)],
            time_span: Some(Box::new(("t1".into(), "t13".into()))),
        }
    }

    fn anchor(seq: u64, hash: Option<&str>, prev: Option<&str>) -> Anchor {
        Anchor {
            id: format!("id{seq}"),
            created_at: seq,
            payload: AnchorPayload {
                v: ANCHOR_VERSION,
                log: "log".into(),
                seq,
                hash: hash.map_or_else(|| format!("{seq:064x}"), str::to_string),
                time: format!("t{seq}"),
                prev: prev.map(str::to_string),
            },
        }
    }

    fn chain() -> Vec<Anchor> {
        vec![
            anchor(3, None, None),
            anchor(7, None, Some("id3")),
            anchor(11, None, Some("id7")),
        ]
    }

    #[test]
    fn verdicts_of_a_log_against_its_anchors() {
        let log = summary();
        let ok = check(&log, &chain());
        assert_eq!(ok.exit_code(), EXIT_ANCHORED, "{ok}");
        assert_eq!((ok.anchored, ok.checkpoints), (3, 3));
        assert_eq!(ok.uncovered, Some((12, 13, "t11".into(), "t13".into())));

        // A rewritten history: the first checkpoint that differs is named.
        let mut rewritten = chain();
        rewritten[2] = anchor(11, Some(&"e".repeat(64)), Some("id7"));
        rewritten[1] = anchor(7, Some(&"f".repeat(64)), Some("id3"));
        let v = check(&log, &rewritten);
        assert_eq!(v.exit_code(), EXIT_CONTRADICTED);
        assert_eq!(v.rewritten.first().map(|r| r.seq), Some(7));
        assert!(
            v.to_string()
                .contains("the first rewritten checkpoint is seq 7"),
            "{v}"
        );
        assert_eq!(v.uncovered.as_ref().map(|u| u.0), Some(4));

        // An anchor for a record that is no longer a checkpoint.
        let mut moved = chain();
        moved.push(anchor(5, None, Some("id3")));
        let v = check(&log, &moved);
        assert_eq!(v.exit_code(), EXIT_CONTRADICTED);
        assert_eq!(v.rewritten[0].log_hash, None);

        // Anchors past the end: a truncated log.
        let mut beyond = chain();
        beyond.push(anchor(15, None, Some("id11")));
        beyond.push(anchor(19, None, Some("id15")));
        let v = check(&log, &beyond);
        assert_eq!(v.exit_code(), EXIT_CONTRADICTED);
        assert_eq!(v.beyond_log, vec![15, 19]);
        assert!(
            v.to_string().contains("the log no longer has seq 14 to 19"),
            "{v}"
        );

        // A checkpoint never anchored, and an anchor whose prev is gone: incomplete.
        let v = check(
            &log,
            &[anchor(3, None, None), anchor(11, None, Some("id7"))],
        );
        assert_eq!(v.exit_code(), EXIT_INCOMPLETE);
        assert_eq!(v.unanchored, vec![7]);
        assert_eq!(v.missing_prev, vec!["id7".to_string()]);

        // Nothing anchored: everything is uncovered, from the first record.
        let v = check(&log, &[]);
        assert_eq!(v.exit_code(), EXIT_INCOMPLETE);
        assert_eq!(v.uncovered, Some((1, 13, "t1".into(), "t13".into())));
    }
}
