//! `orly audit verify` (with `--anchors`: the log held against its public anchors) and `orly
//! audit anchor` (publishing anchors by hand), over `crate::audit` and `crate::audit::anchor`.
//! Anchors are only checked or published for a log that verifies locally with the audit public
//! key. Each command returns its exit code (documented in the binary's help and the README).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

use ed25519_dalek::VerifyingKey;

use crate::audit::anchor::check::{EXIT_CONTRADICTED, EXIT_UNREACHABLE};
use crate::audit::anchor::relay::{anchor_peer_options, publish};
use crate::audit::anchor::{
    Anchor, AnchorCheck, AnchorPayload, build_anchor, check, fetch_anchors, log_id,
};
use crate::audit::{VerifyReport, VerifySummary, load_verifying_key, verify};
use crate::cli::output;
use crate::errln;
use crate::event::Keys;

/// Parses `--anchor-pubkey`: 64 hex digits (an x-only Nostr public key).
pub fn parse_anchor_pubkey(hex_key: &str) -> Result<[u8; 32], String> {
    crate::event::decode_hex32(hex_key.trim())
        .map_err(|e| format!("--anchor-pubkey: not a 64-hex public key: {e}"))
}

/// Checks that every relay URL is ws:// or wss://.
pub fn check_relays(relays: &[String]) -> Result<(), String> {
    if relays.is_empty() {
        return Err("no relay given".into());
    }
    for r in relays {
        crate::peer::PeerUrl::parse(r).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Fetches the anchors of the log (its identity from `audit_key`) and holds the log against
/// them. The exit code is [`AnchorCheck::exit_code`], or [`EXIT_UNREACHABLE`] when no relay
/// could be read.
pub async fn verify_anchors(
    summary: &VerifySummary,
    audit_key: &VerifyingKey,
    relays: &[String],
    anchor_pubkey: &[u8; 32],
) -> (AnchorCheck, u8) {
    let opts = anchor_peer_options(None, None);
    let fetched = fetch_anchors(relays, anchor_pubkey, &log_id(audit_key), &opts).await;
    let mut verdict = check(summary, &fetched.anchors);
    let all_down = fetched.relay_errors.len() == relays.len();
    verdict.relay_errors = fetched.relay_errors;
    verdict.invalid = fetched.invalid;
    let code = if all_down {
        EXIT_UNREACHABLE
    } else {
        verdict.exit_code()
    };
    (verdict, code)
}

/// Publishes anchors by hand: for checkpoint `only` (or every checkpoint without an anchor),
/// each linked to the anchor of the nearest earlier checkpoint found. Refuses (exit 3) when the
/// anchors already on the relays contradict the log. Returns the exit code: 0 when every anchor
/// was accepted by at least one relay, [`EXIT_UNREACHABLE`] otherwise.
pub async fn anchor_by_hand(
    out: &mut impl Write,
    summary: &VerifySummary,
    audit_key: &VerifyingKey,
    keys: &Keys,
    relays: &[String],
    only: Option<u64>,
) -> std::io::Result<u8> {
    let log = log_id(audit_key);
    let opts = anchor_peer_options(Some(keys.clone()), None);
    let fetched = fetch_anchors(relays, &keys.pubkey, &log, &opts).await;
    for (relay, why) in &fetched.relay_errors {
        writeln!(out, "anchor relay {relay} could not be read: {why}")?;
    }
    if fetched.relay_errors.len() == relays.len() {
        writeln!(out, "no anchor relay could be read: nothing published")?;
        return Ok(EXIT_UNREACHABLE);
    }
    let verdict = check(summary, &fetched.anchors);
    if verdict.exit_code() == EXIT_CONTRADICTED {
        writeln!(out, "{verdict}")?;
        writeln!(out, "the anchors contradict this log: nothing published")?;
        return Ok(EXIT_CONTRADICTED);
    }
    let targets: Vec<_> = summary
        .checkpoint_list
        .iter()
        .filter(|c| match only {
            Some(seq) => c.seq == seq,
            None => verdict.unanchored.contains(&c.seq),
        })
        .cloned()
        .collect();
    if let Some(seq) = only
        && targets.is_empty()
    {
        writeln!(
            out,
            "seq {seq} is not a checkpoint of this log: nothing published"
        )?;
        return Ok(1);
    }
    if targets.is_empty() {
        writeln!(
            out,
            "every checkpoint is anchored already: nothing to publish"
        )?;
        return Ok(0);
    }
    // The anchor of the nearest earlier checkpoint is each new one's prev.
    let mut by_seq: BTreeMap<u64, String> = fetched
        .anchors
        .iter()
        .map(|a: &Anchor| (a.payload.seq, a.id.clone()))
        .collect();
    let mut events = Vec::new();
    for c in &targets {
        let payload = AnchorPayload {
            v: crate::audit::anchor::format::ANCHOR_VERSION,
            log: log.clone(),
            seq: c.seq,
            hash: c.hash.clone(),
            time: c.time.clone(),
            prev: by_seq.range(..c.seq).next_back().map(|(_, id)| id.clone()),
        };
        let ev = build_anchor(keys, now(), &payload);
        by_seq.insert(c.seq, ev.id_hex());
        events.push((c.seq, ev));
    }
    let evs: Vec<_> = events.iter().map(|(_, e)| e.clone()).collect();
    let results =
        futures_util::future::join_all(relays.iter().map(|r| publish(r, &evs, &opts))).await;
    let mut accepted = vec![0usize; evs.len()];
    for (relay, res) in relays.iter().zip(results) {
        let relay = crate::policy::redact_url(relay);
        match res {
            Ok(per) => {
                for (i, r) in per.into_iter().enumerate() {
                    match r {
                        Ok(()) => accepted[i] += 1,
                        Err(why) => writeln!(
                            out,
                            "{relay} refused seq {}: {}",
                            events[i].0,
                            crate::policy::redact_urls_in(&why)
                        )?,
                    }
                }
            }
            Err(why) => writeln!(out, "{relay}: {}", crate::policy::redact_urls_in(&why))?,
        }
    }
    let mut code = 0;
    for ((seq, ev), n) in events.iter().zip(accepted) {
        writeln!(
            out,
            "anchored checkpoint seq {seq}: event {} accepted by {n} of {} relays",
            ev.id_hex(),
            relays.len()
        )?;
        if n == 0 {
            code = EXIT_UNREACHABLE;
        }
    }
    Ok(code)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `orly audit verify DIR [--pubkey FILE] [--anchors URLS --anchor-pubkey HEX]`.
pub fn verify_command(
    dir: &Path,
    pubkey: Option<&Path>,
    anchors: &[String],
    anchor_pubkey: Option<&str>,
) -> anyhow::Result<u8> {
    let key = pubkey.map(load_verifying_key).transpose()?;
    let anchored = match (&key, anchor_pubkey) {
        (Some(k), Some(a)) if !anchors.is_empty() => {
            match parse_anchor_pubkey(a).and_then(|a| check_relays(anchors).map(|()| a)) {
                Ok(a) => Some((*k, a)),
                Err(e) => {
                    errln!("error: {e}");
                    return Ok(2);
                }
            }
        }
        _ => None,
    };
    let report = verify(dir, key.as_ref());
    output::print(|out| writeln!(out, "{report}"))?;
    let VerifyReport::Ok(summary) = &report else {
        if anchored.is_some() {
            output::print(|out| writeln!(out, "anchors not checked: the log itself is broken"))?;
        }
        return Ok(1);
    };
    let Some((key, anchor_pk)) = anchored else {
        return Ok(0);
    };
    let rt = tokio::runtime::Runtime::new()?;
    let (verdict, code) = rt.block_on(verify_anchors(summary, &key, anchors, &anchor_pk));
    output::print(|out| writeln!(out, "{verdict}"))?;
    Ok(code)
}

/// `orly audit anchor DIR --pubkey FILE --anchor-key FILE --relays URLS [--seq N]`.
pub fn anchor_command(
    dir: &Path,
    pubkey: &Path,
    anchor_key: &Path,
    relays: &[String],
    seq: Option<u64>,
) -> anyhow::Result<u8> {
    if let Err(e) = check_relays(relays) {
        errln!("error: --relays: {e}");
        return Ok(2);
    }
    let key = load_verifying_key(pubkey)?;
    let text = std::fs::read_to_string(anchor_key)
        .with_context(|| format!("cannot read {}", anchor_key.display()))?;
    let keys =
        Keys::from_hex(&text).map_err(|e| anyhow::anyhow!("{}: {e}", anchor_key.display()))?;
    let report = verify(dir, Some(&key));
    let VerifyReport::Ok(summary) = &report else {
        output::print(|out| writeln!(out, "{report}\nnothing anchored: the log is broken"))?;
        return Ok(1);
    };
    let rt = tokio::runtime::Runtime::new()?;
    let mut buf = Vec::new();
    let code = rt.block_on(anchor_by_hand(&mut buf, summary, &key, &keys, relays, seq))?;
    output::print(|out| out.write_all(&buf))?;
    Ok(code)
}
