//! The layering of DESIGN.md §3, checked on the source: data flows one way (bin → config →
//! gateway → service | cli → sync → peer + store → event), lower modules never import higher
//! ones, the CLI (`src/cli`, `src/bin/orly.rs`) never reaches into the gateway or the service
//! (`orly token` and `orly audit verify` use `auth` and `audit` directly), and `telemetry` is a
//! leaf every layer may use. An import is a `crate::MODULE` path in a module's files (or
//! `orly::MODULE` in a binary). Known exceptions are listed with the work that removes them; an
//! exception that no longer occurs fails the test too, so the list only shrinks.

use std::path::{Path, PathBuf};

/// (module, the modules it must not import). A module is `src/NAME/` (and `src/NAME.rs`).
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "negentropy",
        &[
            "event",
            "store",
            "peer",
            "sync",
            "relay",
            "service",
            "gateway",
            "cli",
            "config",
            "launcher",
            "auth",
            "audit",
            "policy",
            "telemetry",
        ],
    ),
    (
        "event",
        &[
            "store",
            "peer",
            "sync",
            "relay",
            "service",
            "gateway",
            "cli",
            "config",
            "launcher",
            "auth",
            "audit",
            "policy",
            "telemetry",
        ],
    ),
    (
        "store",
        &[
            "peer", "sync", "relay", "service", "gateway", "cli", "config", "launcher", "auth",
            "policy",
        ],
    ),
    (
        "peer",
        &[
            "store", "sync", "relay", "service", "gateway", "cli", "config", "launcher", "auth",
            "audit", "policy",
        ],
    ),
    (
        "sync",
        &[
            "relay", "service", "gateway", "cli", "config", "launcher", "auth", "audit", "policy",
        ],
    ),
    (
        "relay",
        &["sync", "service", "gateway", "cli", "config", "launcher"],
    ),
    (
        "telemetry",
        &[
            "config", "cli", "gateway", "service", "launcher", "sync", "relay", "store", "policy",
            "auth", "audit",
        ],
    ),
    (
        "auth",
        &[
            "gateway", "service", "cli", "config", "launcher", "policy", "audit",
        ],
    ),
    (
        "audit",
        &[
            "gateway", "service", "cli", "config", "launcher", "policy", "auth",
        ],
    ),
    (
        "policy",
        &[
            "gateway", "service", "cli", "config", "launcher", "auth", "audit",
        ],
    ),
    ("service", &["gateway", "cli", "config", "launcher"]),
    ("gateway", &["cli", "config", "launcher"]),
    // `config` holds the parsed command line of every binary (issue 13 §4: every flag and
    // variable is read there) and hands it to `cli`, which runs it: `cli` uses those types, and
    // `config` never imports `cli`.
    ("cli", &["gateway", "service", "launcher"]),
    ("config", &["cli", "launcher"]),
];

/// The binaries' own rules: `orly` is the CLI.
const FORBIDDEN_IN_BINS: &[(&str, &[&str])] = &[("orly.rs", &["gateway", "service"])];

/// Imports still to be removed: (file, module imported, what removes it).
const KNOWN: &[(&str, &str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module names `text` imports as `PREFIX::name`.
fn imported(text: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.push(name);
        }
        rest = after;
    }
    found
}

/// Every (file, forbidden module) import under `root`, by [`FORBIDDEN`] and [`FORBIDDEN_IN_BINS`].
fn violations(root: &Path) -> Vec<(String, String)> {
    let src = root.join("src");
    let mut out = Vec::new();
    let mut check = |file: &Path, prefix: &str, banned: &[&str]| {
        let text = std::fs::read_to_string(file).expect("read source");
        let rel = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for m in imported(&text, prefix) {
            if banned.contains(&m.as_str()) && !out.contains(&(rel.clone(), m.clone())) {
                out.push((rel.clone(), m));
            }
        }
    };
    for (module, banned) in FORBIDDEN {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        let single = src.join(format!("{module}.rs"));
        if single.exists() {
            files.push(single);
        }
        assert!(!files.is_empty(), "no sources for module {module}");
        for f in files {
            check(&f, "crate::", banned);
        }
    }
    for (bin, banned) in FORBIDDEN_IN_BINS {
        check(&src.join("bin").join(bin), "orly::", banned);
    }
    out.sort();
    out
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = violations(root);
    let unexpected: Vec<String> = found
        .iter()
        .filter(|(f, m)| !KNOWN.iter().any(|(kf, km, _)| kf == f && km == m))
        .map(|(f, m)| format!("{f} imports {m}"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "imports against DESIGN.md §3:\n  {}",
        unexpected.join("\n  ")
    );
    let gone: Vec<String> = KNOWN
        .iter()
        .filter(|(kf, km, _)| !found.iter().any(|(f, m)| f == kf && m == km))
        .map(|(f, m, why)| format!("{f} no longer imports {m} ({why}): remove it from KNOWN"))
        .collect();
    assert!(gone.is_empty(), "{}", gone.join("\n"));
}

#[test]
fn the_scanner_sees_imports_in_both_forms() {
    let text = "use crate::config::X;\nlet y = crate::gateway::Y;\nuse orly::service;";
    assert_eq!(imported(text, "crate::"), ["config", "gateway"]);
    assert_eq!(imported(text, "orly::"), ["service"]);
}
