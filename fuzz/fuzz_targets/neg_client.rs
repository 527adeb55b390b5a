//! A NIP-77 message from a server, read by our reconciler as the client (what `orly sync` does
//! with a relay's NEG-MSG) after its initial message over a small fixed set, and by the
//! reference implementation in the same state. The first byte picks the set and frame limit.
//!
//! Checked: the next message is well formed and within the frame limit; `have` holds only ids
//! of our set; where both implementations accept the message they produce the same next message
//! and the same have/need.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orly::negentropy::{Reconciler, VecStorage, check_message};
use orly_fuzz::{neg_config, reference};
use std::collections::HashSet;

fuzz_target!(|data: &[u8]| {
    let Some((&config, msg)) = data.split_first() else {
        return;
    };
    let (items, limit) = neg_config(config);
    let ours_ids: HashSet<[u8; 32]> = items.iter().map(|i| i.id).collect();
    let mut ours = Reconciler::new(VecStorage::new(items.clone()), limit).expect("valid limit");
    let first = ours.initiate().expect("initiate");
    let mut theirs = reference(&items, limit).expect("the reference takes the set");
    assert_eq!(
        first,
        theirs.initiate().expect("initiate"),
        "initial messages differ"
    );

    let (mut have, mut need) = (Vec::new(), Vec::new());
    let Ok(next) = ours.next(msg, &mut have, &mut need) else {
        return;
    };
    if let Some(next) = &next {
        check_message(next).expect("our next message is well formed");
        if limit != 0 {
            assert!(
                next.len() as u64 <= limit,
                "next message of {} bytes",
                next.len()
            );
        }
    }
    for id in &have {
        assert!(ours_ids.contains(id), "have holds an id we do not have");
    }
    let (mut th, mut tn) = (Vec::new(), Vec::new());
    if let Ok(their_next) = theirs.reconcile_with_ids(msg, &mut th, &mut tn) {
        assert_eq!(next, their_next, "next messages differ");
        let set = |v: &[[u8; 32]]| v.iter().copied().collect::<HashSet<_>>();
        let tset = |v: &[negentropy::Id]| v.iter().map(|i| *i.as_bytes()).collect::<HashSet<_>>();
        assert_eq!(set(&have), tset(&th), "have differs");
        assert_eq!(set(&need), tset(&tn), "need differs");
    }
});
