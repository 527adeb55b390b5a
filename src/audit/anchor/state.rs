//! `ANCHORS.json` in the audit directory: what the anchoring task has signed and published, so a
//! restart neither anchors a checkpoint twice nor loses the previous anchor's id (the next
//! anchor's `prev`), and anchors signed but not accepted by any relay yet are sent after it.
//!
//! Bookkeeping only: nothing here is evidence (an insider can edit this file; the anchors on the
//! relays are what an auditor trusts).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// The file name, beside the segments and `HEAD.json`.
pub const STATE_FILE: &str = "ANCHORS.json";

/// What has been anchored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnchorState {
    /// The log identity ([`super::log_id`]).
    pub log: String,
    /// The anchoring key (hex x-only public key) that signed `last_signed` and `pending`.
    pub anchor_pubkey: String,
    /// Id of the last anchor signed (published or pending): the next anchor's `prev`.
    pub last_signed: Option<String>,
    /// Seq of the checkpoint `last_signed` anchors.
    pub last_signed_seq: u64,
    /// The last anchor a relay accepted: (checkpoint seq, event id).
    pub published: Option<(u64, String)>,
    /// Anchors signed but not accepted by any relay yet, oldest first.
    pub pending: Vec<serde_json::Value>,
}

impl AnchorState {
    /// The pending anchors as events (ones that no longer parse are dropped with a warning:
    /// the file was edited).
    pub fn pending_events(&self) -> Vec<Event> {
        self.pending
            .iter()
            .filter_map(|v| match Event::from_value(v.clone()) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!(
                        "{STATE_FILE}: dropping a pending anchor that does not parse: {e}"
                    );
                    None
                }
            })
            .collect()
    }
}

/// Where the state of the log in `audit_dir` lives.
pub fn state_path(audit_dir: &Path) -> PathBuf {
    audit_dir.join(STATE_FILE)
}

/// Reads the state; a missing file is a fresh start. A file that does not parse is moved aside
/// (`ANCHORS.json.unreadable`) and anchoring starts afresh: anchors are evidence, not a gate.
pub fn load(path: &Path) -> Result<Option<AnchorState>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => Ok(Some(state)),
        Err(e) => {
            let aside = path.with_extension("json.unreadable");
            tracing::error!(
                "{} does not parse ({e}); moved to {} and anchoring starts afresh (the next \
                 anchor has no prev)",
                path.display(),
                aside.display()
            );
            fs::rename(path, &aside)
                .map_err(|e| format!("cannot move {} aside: {e}", path.display()))?;
            Ok(None)
        }
    }
}

/// Replaces the state atomically (temporary file, fsync, rename).
pub fn store(path: &Path, state: &AnchorState) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn state_round_trips_and_a_garbled_file_is_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = state_path(dir.path());
        assert_eq!(load(&path).expect("missing is fine"), None);
        let keys = crate::event::Keys::from_seed(b"s", 0);
        let ev = crate::event::sign_event(&keys, 1, 1, vec![], "x");
        let state = AnchorState {
            log: "l".into(),
            anchor_pubkey: "p".into(),
            last_signed: Some(ev.id_hex()),
            last_signed_seq: 7,
            published: Some((3, "i".into())),
            pending: vec![serde_json::from_str(&ev.to_json()).expect("json")],
        };
        store(&path, &state).expect("store");
        let back = load(&path).expect("load").expect("some");
        assert_eq!(back, state);
        assert_eq!(back.pending_events(), vec![ev]);

        fs::write(&path, b"{not json").expect("write");
        assert_eq!(load(&path).expect("moved aside"), None);
        assert!(path.with_extension("json.unreadable").exists());
        assert!(!path.exists());
    }
}
