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
