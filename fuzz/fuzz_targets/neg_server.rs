//! A NIP-77 message from a client, answered by our reconciler as the server (what `orly-relay`
//! and orly-db do with NEG-OPEN/NEG-MSG) over a small fixed set, and by the reference
//! implementation over the same set. The first byte picks the set and the frame limit.
//!
//! Checked: what `check_message` (the relay's early refusal) passes, the reconciler answers; an
//! answer is well formed and within the frame limit; where both implementations answer, they
//! answer the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orly::negentropy::{PROTOCOL_VERSION, Reconciler, VecStorage, check_message};
use orly_fuzz::{neg_config, reference};

fuzz_target!(|data: &[u8]| {
    let Some((&config, msg)) = data.split_first() else {
        return;
    };
    let (items, limit) = neg_config(config);
    let mut ours = Reconciler::new(VecStorage::new(items.clone()), limit).expect("valid limit");
    let reply = ours.respond(msg);
    if msg.first() == Some(&PROTOCOL_VERSION) {
        // A well-formed message is answered (so a refused one is malformed). Not the converse:
        // like the reference, the reconciler stops reading once its answer fills the frame.
        assert!(
            check_message(msg).is_err() || reply.is_ok(),
            "well formed but refused: {reply:?}"
        );
    }
    let Ok(reply) = reply else {
        return;
    };
    check_message(&reply).expect("our answer is well formed");
    if limit != 0 {
        assert!(
            reply.len() as u64 <= limit,
            "answer of {} bytes",
            reply.len()
        );
    }
    let mut theirs = reference(&items, limit).expect("the reference takes the set");
    if let Ok(their_reply) = theirs.reconcile(msg) {
        assert_eq!(
            hex::encode(&reply),
            hex::encode(&their_reply),
            "answers differ"
        );
    }
});
