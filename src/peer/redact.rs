//! How a URL is shown to anyone — audit records, responses, logs, traces, progress: user
//! information, query and fragment replaced by `<redacted>`. Below every module that shows a
//! peer URL (the sync service, the policy, the audit anchors), so they all use this one rule.

/// What replaces a secret in a shown URL.
const REDACTED: &str = "<redacted>";

/// A URL as it may be shown to anyone (audit records, responses, logs, traces): user information
/// (`user:pass@`), the query and the fragment are each replaced by `<redacted>`; scheme, host,
/// port and path stay. Works on any text, valid URL or not (a refused URL is shown too), and
/// never fails.
///
/// Conservative on purpose: user information is everything between `://` (or the start, when
/// there is no scheme) and the last `@` before the query, so a password that holds `/` is
/// hidden too, at the price of also hiding a path before an `@` in it.
pub(crate) fn redact_url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(at) => raw.split_at(at + 3),
        None => ("", raw),
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before, after) = rest.split_at(end);
    let mut out = String::with_capacity(raw.len().min(256) + 2 * REDACTED.len());
    out.push_str(scheme);
    match before.rfind('@') {
        Some(at) => {
            out.push_str(REDACTED);
            out.push_str(&before[at..]);
        }
        None => out.push_str(before),
    }
    if after.starts_with('?') {
        out.push('?');
        out.push_str(REDACTED);
    }
    if after.contains('#') {
        out.push('#');
        out.push_str(REDACTED);
    }
    out
}

/// `text` with every URL in it (a run of non-space characters around `://`, up to a space or a
/// quote) passed through [`redact_url`]: for free text such as an error message that may quote
/// a URL. Applied twice, it changes nothing more; a `<` or `>` in a URL (`?a=<b>&auth=…`) does
/// not end it, so nothing after them escapes the redaction.
pub(crate) fn redact_urls_in(text: &str) -> String {
    let ends_url = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`');
    let mut out = String::with_capacity(text.len().min(1024));
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| {
                i + rest[i..].chars().next().map_or(1, char::len_utf8)
            });
        let end = rest[at..].find(ends_url).map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `text` with `raw_url` redacted wherever it is quoted — as is or `{:?}`-escaped — even in a
/// form [`redact_urls_in`] cannot spot (no scheme, as in `user:pass@host`), then every URL in it
/// ([`redact_urls_in`]): for a message about a URL a client sent.
pub(crate) fn redact_quoting(text: &str, raw_url: &str) -> String {
    let mut text = text.to_string();
    if !raw_url.is_empty() {
        let shown = redact_url(raw_url);
        text = text
            .replace(&format!("{raw_url:?}"), &format!("{shown:?}"))
            .replace(raw_url, &shown);
    }
    redact_urls_in(&text)
}
