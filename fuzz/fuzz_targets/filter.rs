//! NIP-01 filters from outside (REQ, NEG-OPEN, `--filter`): strict parse, our JSON form and the
//! protobuf form (orly-db, the gRPC API) round-trip where that form can say the same, and
//! matching against fixed events agrees across the forms and with `matches_nothing`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orly::event::{Filter, MAX_CREATED_AT};
use orly::proto::orlysync::common::v1 as pb;
use orly_fuzz::fixed_events;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(f) = Filter::from_json(text) else {
        return;
    };
    let value = f.to_value();
    assert_eq!(Filter::from_value(&value).as_ref(), Ok(&f), "{value}");

    let p = pb::Filter::from(&f);
    let back = Filter::try_from(&p).expect("our own protobuf filter converts back");
    // The protobuf form cannot say "an empty list" (an empty repeated field is an absent one),
    // so callers of orly-db answer a filter that matches nothing themselves and never send it;
    // and its fields are narrower (int64 times, uint32 limit): values beyond are clamped.
    let narrow = |t: Option<u64>| t.is_none_or(|t| t <= i64::MAX as u64);
    let sent = !f.matches_nothing();
    if sent && narrow(f.since) && narrow(f.until) && f.limit.is_none_or(|l| l <= u32::MAX.into()) {
        assert_eq!(back, f, "protobuf round trip");
    }
    for ev in fixed_events() {
        let m = f.matches(ev);
        if f.matches_nothing() {
            assert!(!m, "matches_nothing but matched {}", ev.to_json());
        }
        if f.is_time_range_only() {
            let in_range = f.since.is_none_or(|s| ev.created_at >= s)
                && f.until.is_none_or(|u| ev.created_at <= u);
            assert_eq!(m, in_range);
        }
        if sent && ev.created_at <= MAX_CREATED_AT {
            assert_eq!(
                back.matches(ev),
                m,
                "protobuf form matches {}",
                ev.to_json()
            );
        }
    }
});
