//! NIP-01 storage rules applied to one verified event inside a write batch: ephemeral events
//! pass through, replaceable and addressable families keep the newest (ties to the lowest id),
//! deletions remove their author's targets and keep them from coming back.

use super::*;

/// Applies NIP-01 storage rules for one verified event inside the batch.
pub(super) fn ingest_one(ov: &mut Overlay<'_>, ev: &Event) -> Result<SaveOutcome, StoreError> {
    let class = ev.class();
    if class == KindClass::Ephemeral {
        return Ok(SaveOutcome::Ephemeral);
    }
    if ov.contains(Slot::Events, &ev.id)? {
        return Ok(SaveOutcome::Duplicate);
    }
    if let Some(deleter) = ov.get(Slot::Tombstones, &ev.id)?
        && deleter[..] == ev.pubkey[..]
    {
        return Ok(SaveOutcome::Deleted);
    }
    let mut outcome = SaveOutcome::Accepted;
    if let Some(head) = keys::head_key(ev) {
        if class == KindClass::Addressable
            && let Some(t) = ov.get(Slot::AddrTombstones, &head)?
            && ev.created_at <= be_u64(&t)
        {
            return Ok(SaveOutcome::Deleted);
        }
        if let Some(cur) = ov.get(Slot::Heads, &head)? {
            let (cur_t, cur_id) =
                keys::split_suffix(&cur).ok_or_else(|| StoreError::Corrupt("head".into()))?;
            // Newest wins; on a tie the lowest id wins.
            if (cur_t, std::cmp::Reverse(cur_id)) >= (ev.created_at, std::cmp::Reverse(ev.id)) {
                ov.insert(Slot::Superseded, ev.id.to_vec(), Vec::new());
                return Ok(SaveOutcome::Superseded);
            }
            remove_event(ov, &cur_id)?;
            ov.insert(Slot::Superseded, cur_id.to_vec(), Vec::new());
            outcome = SaveOutcome::Replaced;
        }
        ov.insert(Slot::Heads, head, keys::time_key(ev.created_at, &ev.id));
    }
    if class == KindClass::Deletion {
        apply_deletion(ov, ev)?;
    }
    ov.insert(Slot::Events, ev.id.to_vec(), ev.to_json().into_bytes());
    for (slot, key) in keys::index_keys(ev) {
        ov.insert(slot, key, Vec::new());
    }
    Ok(outcome)
}

/// NIP-09: `e` tags delete the author's own events; `a` tags delete addressable versions up to
/// the deletion's time. Tombstones keep them from coming back through a later sync.
fn apply_deletion(ov: &mut Overlay<'_>, del: &Event) -> Result<(), StoreError> {
    for t in &del.tags {
        match (t.first().map(String::as_str), t.get(1)) {
            (Some("e"), Some(v)) => {
                let Ok(target) = decode_hex32(v) else {
                    continue;
                };
                if let Some(bytes) = ov.get(Slot::Events, &target)? {
                    let ev = decode_event(&bytes)?;
                    if ev.pubkey != del.pubkey || ev.class() == KindClass::Deletion {
                        continue;
                    }
                    remove_event(ov, &target)?;
                    if let Some(h) = keys::head_key(&ev) {
                        ov.remove(Slot::Heads, h);
                    }
                }
                ov.insert(Slot::Tombstones, target.to_vec(), del.pubkey.to_vec());
            }
            (Some("a"), Some(v)) => {
                let mut parts = v.splitn(3, ':');
                let (Some(kind), Some(pk), d) =
                    (parts.next(), parts.next(), parts.next().unwrap_or(""))
                else {
                    continue;
                };
                let (Ok(kind), Ok(pk)) = (kind.parse::<u16>(), decode_hex32(pk)) else {
                    continue;
                };
                if pk != del.pubkey || KindClass::of(kind) != KindClass::Addressable {
                    continue;
                }
                let addr = keys::address_key(&pk, kind, d);
                if let Some(cur) = ov.get(Slot::Heads, &addr)?
                    && let Some((t, id)) = keys::split_suffix(&cur)
                    && t <= del.created_at
                {
                    remove_event(ov, &id)?;
                    ov.remove(Slot::Heads, addr.clone());
                    ov.insert(Slot::Tombstones, id.to_vec(), del.pubkey.to_vec());
                }
                let prev = ov
                    .get(Slot::AddrTombstones, &addr)?
                    .map(|b| be_u64(&b))
                    .unwrap_or(0);
                ov.insert(
                    Slot::AddrTombstones,
                    addr,
                    prev.max(del.created_at).to_be_bytes().to_vec(),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

fn remove_event(ov: &mut Overlay<'_>, id: &EventId) -> Result<(), StoreError> {
    let Some(bytes) = ov.get(Slot::Events, id)? else {
        return Ok(());
    };
    let ev = decode_event(&bytes)?;
    for (slot, key) in keys::index_keys(&ev) {
        ov.remove(slot, key);
    }
    ov.remove(Slot::Events, id.to_vec());
    Ok(())
}

fn be_u64(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}
