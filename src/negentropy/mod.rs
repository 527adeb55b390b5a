//! Negentropy item sets: the (created_at, id) pairs of the store that match a filter, sealed
//! into the storage the reconciliation runs over, for both the initiator (sync) and the relay.

use crate::event::Filter;
use crate::store::{Store, StoreError};
pub use negentropy::{Id, Negentropy, NegentropyStorageVector};

/// NIP-77 protocol version spoken here.
pub const PROTOCOL_VERSION: u8 = 0x61;

/// A sealed item set for `filter`, read from `store`.
pub async fn item_set(
    store: &dyn Store,
    filter: &Filter,
) -> Result<NegentropyStorageVector, StoreError> {
    let items = store.neg_items(filter.clone()).await?;
    seal(items)
}

/// Seals sorted or unsorted (created_at, id) pairs into a negentropy storage.
pub fn seal(items: Vec<(u64, [u8; 32])>) -> Result<NegentropyStorageVector, StoreError> {
    let mut v = NegentropyStorageVector::with_capacity(items.len());
    for (t, id) in items {
        v.insert(t, Id::from_byte_array(id))
            .map_err(|e| StoreError::Engine(format!("negentropy: {e:?}")))?;
    }
    v.seal()
        .map_err(|e| StoreError::Engine(format!("negentropy: {e:?}")))?;
    Ok(v)
}

/// Checks a NIP-77 message's structure before it reaches the reconciler: version 0x61, then
/// whole ranges (varint timestamp, id prefix of at most 32 bytes, mode Skip, Fingerprint with 16
/// bytes, or IdList with n × 32 bytes). The negentropy crate reads a varint cut off at the end
/// of the input as a short value, which would turn a truncated message into "nothing differs";
/// this refuses it instead.
pub fn check_message(msg: &[u8]) -> Result<(), String> {
    let (&version, mut rest) = msg.split_first().ok_or("empty message")?;
    if version != PROTOCOL_VERSION {
        return Err(format!("unsupported protocol version 0x{version:02x}"));
    }
    let mut range = 0usize;
    while !rest.is_empty() {
        range += 1;
        let at = |what: &str| format!("range {range}: {what}");
        varint(&mut rest).map_err(|e| at(&format!("timestamp: {e}")))?;
        let len = varint(&mut rest).map_err(|e| at(&format!("id prefix length: {e}")))?;
        if len > 32 {
            return Err(at(&format!("id prefix of {len} bytes")));
        }
        take(&mut rest, len as usize).map_err(|e| at(&e))?;
        match varint(&mut rest).map_err(|e| at(&format!("mode: {e}")))? {
            0 => {}
            1 => take(&mut rest, 16).map_err(|e| at(&format!("fingerprint: {e}")))?,
            2 => {
                let n = varint(&mut rest).map_err(|e| at(&format!("id count: {e}")))?;
                let bytes = usize::try_from(n)
                    .ok()
                    .and_then(|n| n.checked_mul(32))
                    .ok_or_else(|| at("id count too large"))?;
                take(&mut rest, bytes).map_err(|e| at(&format!("id list: {e}")))?;
            }
            m => return Err(at(&format!("unknown mode {m}"))),
        }
    }
    Ok(())
}

fn varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = b.split_first().ok_or("ends inside a varint")?;
        *b = rest;
        v = v.checked_mul(128).ok_or("varint overflows")? | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
        if i == 9 {
            break;
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn take(b: &mut &[u8], n: usize) -> Result<(), String> {
    if b.len() < n {
        return Err(format!("needs {n} bytes, {} left", b.len()));
    }
    *b = &b[n..];
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_messages_and_refuses_truncated_ones() {
        let items: Vec<(u64, [u8; 32])> = (0..3000u64).map(|i| (1000 + i / 3, sha(i))).collect();
        let mine = seal(items.iter().copied().filter(|(t, _)| t % 7 != 0).collect()).unwrap();
        let theirs = seal(items.iter().copied().filter(|(t, _)| t % 5 != 0).collect()).unwrap();
        for limit in [0u64, 4096] {
            let mut client = Negentropy::borrowed(&mine, limit).unwrap();
            let mut server = Negentropy::borrowed(&theirs, limit).unwrap();
            let mut msg = client.initiate().unwrap();
            let (mut have, mut need) = (Vec::new(), Vec::new());
            loop {
                check_message(&msg).unwrap();
                let reply = server.reconcile(&msg).unwrap();
                check_message(&reply).unwrap();
                match client
                    .reconcile_with_ids(&reply, &mut have, &mut need)
                    .unwrap()
                {
                    Some(m) => msg = m,
                    None => break,
                }
            }
        }
        for bad in [
            &[][..],
            &[0x62],
            &[0x61, 0x81],
            &[0x61, 0x4f],
            &[0x61, 0x00, 0x00],
            &[0x61, 0, 0, 1, 1, 2],
            &[0x61, 0, 0, 7],
        ] {
            assert!(check_message(bad).is_err(), "{bad:?}");
        }
        assert!(
            check_message(&[0x61]).is_ok(),
            "version only: nothing more to say"
        );
    }

    fn sha(i: u64) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(i.to_be_bytes()).into()
    }
}
