use super::*;
use std::time::{Duration, Instant};

#[test]
fn normalizes_accepted_urls() {
    let cases = [
        ("wss://relay.example.com", "wss://relay.example.com/"),
        ("WSS://Relay.Example.COM/", "wss://relay.example.com/"),
        ("wss://relay.example.com:443/", "wss://relay.example.com/"),
        ("ws://relay.example.com:80", "ws://relay.example.com/"),
        ("ws://127.0.0.1:7777", "ws://127.0.0.1:7777/"),
        (
            "wss://relay.example.com.:444/Path",
            "wss://relay.example.com:444/Path",
        ),
        ("wss://[::1]:7000/x?y=1", "wss://[::1]:7000/x?y=1"),
        ("wss://[FE80::1]", "wss://[fe80::1]/"),
        ("wss://r.example?k=v", "wss://r.example/?k=v"),
        ("wss://r.example:00443", "wss://r.example/"),
    ];
    for (raw, want) in cases {
        let url = normalize_peer_url(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(url.as_str(), want, "{raw}");
    }
}

#[test]
fn rejects_bad_urls() {
    use PeerUrlError::*;
    let long = format!("wss://{}.example", "a".repeat(MAX_PEER_URL_LEN));
    let cases: &[(&str, PeerUrlError)] = &[
        ("https://relay.example.com", Scheme),
        ("relay.example.com", MissingScheme),
        ("://relay.example.com", MissingScheme),
        ("wss://user:pw@relay.example.com", UserInfo),
        ("wss://@relay.example.com", UserInfo),
        ("wss://", MissingHost),
        ("wss:///path", MissingHost),
        ("wss://relay..example", BadHost),
        ("wss://rel ay.example", BadCharacter),
        ("wss://relay.example/\u{e9}", BadCharacter),
        ("wss://relay.example:", BadPort),
        ("wss://relay.example:0", BadPort),
        ("wss://relay.example:65536", BadPort),
        ("wss://relay.example:1:2", BadPort),
        ("wss://relay.example/#x", Fragment),
        ("wss://relay.example/a/../b", BadPath),
        ("wss://relay.example/a/%2E%2e/b", BadPath),
        ("wss://relay.example/a\\b", BadPath),
        ("wss://[::1", BadHost),
        ("wss://[zz]", BadHost),
        ("wss://[::1]x", BadHost),
        (long.as_str(), TooLong),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_peer_url(raw).as_ref(), Err(want), "{raw}");
    }
}

#[test]
fn errors_and_display_do_not_leak_secrets() {
    let e = normalize_peer_url("wss://alice:hunter2@relay.example").unwrap_err();
    assert!(!e.to_string().contains("hunter2"));
    let url = normalize_peer_url("wss://relay.example/p?token=hunter2").unwrap();
    assert_eq!(url.to_string(), "wss://relay.example/p?<redacted>");
    assert_eq!(url.path_and_query(), "/p?token=hunter2");
}

#[test]
fn glob_matches() {
    let cases = [
        ("abc", "abc", true),
        ("abc", "abd", false),
        ("*", "", true),
        ("*", "anything", true),
        ("a*", "abc", true),
        ("*c", "abc", true),
        ("a*c", "ac", true),
        ("a*c", "abbbc", true),
        ("a*c", "abbbd", false),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxcyyb", false),
        ("ab*ba", "aba", false),
        ("**x**", "yxy", true),
        ("*.example.org", "a.b.example.org", true),
        ("*.example.org", "example.org", false),
    ];
    for (pattern, text, want) in cases {
        assert_eq!(
            Glob::new(pattern).matches(text),
            want,
            "{pattern} vs {text}"
        );
    }
}

#[test]
fn glob_has_no_catastrophic_backtracking() {
    // Exponential for a backtracking matcher: many stars, every piece matches everywhere, and
    // the final piece never matches. Here each piece is found once, left to right.
    let text = "a".repeat(100_000);
    let patterns = [
        format!("{}b*", "*a".repeat(200)),
        format!("{}b", "a*".repeat(200)),
        format!("*{}*", "aaaaaaaaab*".repeat(50)),
    ];
    let started = Instant::now();
    for pattern in &patterns {
        let glob = Glob::new(pattern);
        for _ in 0..10 {
            assert!(!glob.matches(&text), "{pattern}");
        }
    }
    let path = format!("wss://r.example/{}", "*a".repeat(300));
    let pattern = PeerPattern::parse(&format!("{path}*b")).expect("pattern");
    let url = normalize_peer_url(&format!("wss://r.example/{}", "a".repeat(2000))).expect("url");
    assert!(!pattern.matches(&url));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn patterns_match_normalized_urls() {
    let cases = [
        ("*", "ws://anything.example:9/x?y", true),
        ("wss://relay.example.com", "wss://relay.example.com", true),
        (
            "wss://relay.example.com",
            "WSS://RELAY.example.com:443/",
            true,
        ),
        (
            "wss://relay.example.com:443",
            "wss://relay.example.com",
            true,
        ),
        (
            "wss://relay.example.com",
            "wss://relay.example.com/other",
            false,
        ),
        ("wss://relay.example.com", "ws://relay.example.com", false),
        (
            "wss://relay.example.com/*",
            "wss://relay.example.com/a/b",
            true,
        ),
        ("wss://*.example.org/*", "wss://a.example.org", true),
        ("wss://*.example.org/*", "wss://a.b.example.org/x", true),
        ("wss://*.example.org/*", "wss://example.org", false),
        (
            "wss://*.example.org/*",
            "wss://evil.com/a.example.org/",
            false,
        ),
        (
            "wss://*.example.org/*",
            "wss://a.example.org.evil.com/",
            false,
        ),
        ("ws://127.0.0.1:*", "ws://127.0.0.1:7777", true),
        ("ws://127.0.0.1:*", "ws://127.0.0.1:7777/deep", false),
        ("ws://127.0.0.1:*", "ws://127.0.0.10:7777", false),
        ("*://relay.example.com", "ws://relay.example.com", true),
        ("wss://Relay.Example.com", "wss://relay.example.com", true),
    ];
    for (pattern, raw, want) in cases {
        let p = PeerPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        let url = normalize_peer_url(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(p.matches(&url), want, "{pattern} vs {raw}");
    }
}

#[test]
fn rejects_bad_patterns() {
    for bad in [
        "",
        "relay.example.com",
        "https://relay.example.com",
        "wss://",
        "wss://u@relay.example.com",
        "wss://relay example",
        "wss://relay.example/#f",
        "wss://re$lay.example",
    ] {
        assert!(
            PeerPattern::parse(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
}

/// Reference matcher: textbook dynamic programming, obviously correct and slow.
fn reference_match(pattern: &[u8], text: &[u8]) -> bool {
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        if p == b'*' {
            next[0] = row[0];
            for j in 1..=text.len() {
                next[j] = row[j] || next[j - 1];
            }
        } else {
            for j in 1..=text.len() {
                next[j] = row[j - 1] && text[j - 1] == p;
            }
        }
        row = next;
    }
    row[text.len()]
}

fn all_strings(alphabet: &[u8], max_len: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..max_len {
        let mut grown = Vec::new();
        for s in &frontier {
            for &c in alphabet {
                grown.push(format!("{s}{}", c as char));
            }
        }
        out.extend(grown.iter().cloned());
        frontier = grown;
    }
    out
}

#[test]
fn glob_agrees_with_reference_exhaustively() {
    let patterns = all_strings(b"ab*", 5);
    let texts = all_strings(b"ab", 6);
    for pattern in &patterns {
        let glob = Glob::new(pattern);
        for text in &texts {
            let want = reference_match(pattern.as_bytes(), text.as_bytes());
            assert_eq!(glob.matches(text), want, "{pattern:?} vs {text:?}");
        }
    }
}

#[test]
fn redact_url_hides_userinfo_query_and_fragment_of_any_text() {
    let cases = [
        ("wss://relay.example/", "wss://relay.example/"),
        (
            "ws://user:hunter2@relay.example:7777/p?auth=s3cret&x=1#frag",
            "ws://<redacted>@relay.example:7777/p?<redacted>#<redacted>",
        ),
        (
            "wss://relay.example/?auth=s3cret",
            "wss://relay.example/?<redacted>",
        ),
        ("wss://@relay.example", "wss://<redacted>@relay.example"),
        // A password with '/' or '@' in it is hidden whole.
        ("ws://u:p/a@ss@host/x", "ws://<redacted>@host/x"),
        // Not a URL we accept, shown anyway: http, no scheme, empty.
        ("http://u:p@h/?k=v", "http://<redacted>@h/?<redacted>"),
        ("user:pw@host", "<redacted>@host"),
        ("", ""),
        ("wss://relay.example/#x", "wss://relay.example/#<redacted>"),
    ];
    for (raw, want) in cases {
        assert_eq!(redact_url(raw), want, "{raw}");
    }
}

#[test]
fn redact_urls_in_text_finds_each_url() {
    let text = "invalid relay URL \"http://bob:hunter2@h.example/?auth=s3cret\": scheme must be \
                ws or wss; also wss://x.example/?t=1 and ws://a:b@c";
    let out = redact_urls_in(text);
    for secret in ["hunter2", "s3cret", "t=1", "a:b"] {
        assert!(!out.contains(secret), "{secret} in {out}");
    }
    assert_eq!(
        out,
        "invalid relay URL \"http://<redacted>@h.example/?<redacted>\": scheme must be ws or \
         wss; also wss://x.example/?<redacted> and ws://<redacted>@c"
    );
    assert_eq!(redact_urls_in("no url here"), "no url here");
    assert_eq!(redact_urls_in("://"), "://");
    // Multi-byte text before a URL.
    assert_eq!(redact_urls_in("é ws://u@h"), "é ws://<redacted>@h");
    // Angle brackets inside a URL do not end it (nothing after them escapes).
    assert_eq!(
        redact_urls_in("to ws://h/?a=<b>&auth=s3cret: refused"),
        "to ws://h/?<redacted> refused"
    );
    assert_eq!(redact_urls_in("<ws://a:b@h/>"), "<ws://<redacted>@h/>");
}

#[test]
fn redacting_twice_changes_nothing_more() {
    for text in [
        "cannot connect to ws://127.0.0.1:9/?auth=s3cret: refused",
        "invalid relay URL \"http://bob:hunter2@h.example/?auth=s3cret\": scheme",
        "ws://u:p@h/p?q#f and wss://h/?x=1",
        "user:pw@host",
    ] {
        let once = redact_urls_in(text);
        assert_eq!(redact_urls_in(&once), once, "{text}");
        let quoted = redact_quoting(text, "user:pw@host");
        assert_eq!(redact_quoting(&quoted, "user:pw@host"), quoted, "{text}");
        assert!(
            !quoted.contains("s3cret") && !quoted.contains("pw@"),
            "{quoted}"
        );
    }
}
