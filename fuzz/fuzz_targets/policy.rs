//! Policy files (`--policy`, reloaded on change): TOML → validated [`Policy`], then every
//! decision the gateway makes with it, for a fixed set of peer URLs, directions, kinds and
//! authors. Nothing may panic; error messages print; a denial message (it may echo the
//! policy and the request) is printable ASCII, and a grant never exceeds the requested cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orly::policy::{Direction, Policy, SyncRequestView, normalize_peer_url};

const PEERS: [&str; 6] = [
    "wss://relay.example.com",
    "wss://a.example.org/path/x?y=1",
    "ws://127.0.0.1:7777",
    "WSS://Relay.Example.COM:443/",
    "wss://user@relay.example.com/",
    "ws://[::1]:80/a/../b",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::from_toml_str(text) {
        Ok(p) => p,
        Err(e) => {
            let _ = (e.to_string(), e.validation_errors().len());
            return;
        }
    };
    let _ = policy.service();
    let _ = policy.check_token_id("jti-1");
    let authors = [[0x3b; 32]];
    for admin in policy.admins() {
        for identity in admin.identities() {
            let _ = policy.admin_for_identity(identity).into_result();
        }
        let _ = policy.admin_by_name(admin.name()).into_result();
        let _ = (admin.limits(), policy.is_admin_revoked(admin.name()));
        for pattern in admin.peers() {
            let _ = pattern.as_str();
        }
        for peer in PEERS {
            if let Ok(url) = normalize_peer_url(peer) {
                let _ = admin.peers().iter().any(|p| p.matches(&url));
            }
            for direction in Direction::ALL {
                for (kinds, authors) in [
                    (None, None),
                    (Some(&[1u16, 30023][..]), Some(&authors[..])),
                    (Some(&[][..]), Some(&[][..])),
                ] {
                    let req = SyncRequestView {
                        peer_url: peer,
                        direction,
                        kinds,
                        authors,
                        requested_max_events: Some(1000),
                    };
                    match policy.authorize_sync(admin, &req) {
                        Ok(grant) => assert!(grant.max_events <= 1000),
                        Err(denial) => assert!(
                            denial
                                .message
                                .bytes()
                                .all(|b| b == b' ' || b.is_ascii_graphic()),
                            "a denial is printable ASCII: {denial:?}"
                        ),
                    }
                }
            }
        }
    }
});
