//! The refusal table: every way the secured service refuses a caller, one row each — at the TLS
//! handshake (no certificate, another CA, expired, revoked), at the token (absent, expired, not
//! yet valid, wrong audience or issuer, unknown key, `alg: none`, HS256 with the public key,
//! revoked, bound to another certificate or admin, unbound, garbage, a key-carrying header), at
//! identity, and at the policy — then the two refusals that need state (over rate, over
//! concurrency). Each row: what is sent → the status → exactly one record with its reason.
//! Rows are data; the runners below do the same thing for every row.

use super::*;

/// Whose certificate a row's channel (or token binding) uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Alice,
    Bob,
    Carol,
    /// From the right CA, not in the policy.
    Mallory,
    /// In the policy, revoked.
    Erin,
}

/// Which key signs a minted token.
#[derive(Clone, Copy)]
enum Signer {
    /// The key the service trusts.
    Service,
    /// A key the service has never seen (unknown kid).
    Stranger,
}

/// A token minted with these claims (valid for an hour from `issued_hours` from now).
#[derive(Clone, Copy)]
struct Mint {
    signer: Signer,
    sub: &'static str,
    bound_to: Option<Who>,
    iss: &'static str,
    aud: &'static str,
    issued_hours: i64,
}

impl Mint {
    /// What a good token of `sub`, bound to `who`'s certificate, carries.
    const fn of(sub: &'static str, who: Who) -> Self {
        Self {
            signer: Signer::Service,
            sub,
            bound_to: Some(who),
            iss: TOKEN_ISSUER,
            aud: TOKEN_AUDIENCE,
            issued_hours: 0,
        }
    }
    const ALICE: Self = Self::of("alice", Who::Alice);
}

/// The token a row sends.
enum Tok {
    Absent,
    Minted(Mint),
    /// Hand-made text (a crafted header, garbage, a token known to be revoked).
    Text(String),
}

/// One gRPC row: a `SyncWithPeer` call and what must come of it.
struct Row {
    name: &'static str,
    on: Who,
    token: Tok,
    peer: &'static str,
    direction: npb::Direction,
    kinds: Option<&'static [u32]>,
    code: Code,
    reason: &'static str,
    /// The admin the record names ("" when the refusal comes before one is known).
    admin: &'static str,
}

const ANY_PEER: &str = "ws://127.0.0.1:9/";
const CAROLS_RELAY: &str = "wss://relay.example.com";

impl Row {
    /// Alice's call to any peer with `token`, refused UNAUTHENTICATED for `reason`.
    fn alice(name: &'static str, token: Tok, reason: &'static str) -> Self {
        Self {
            name,
            on: Who::Alice,
            token,
            peer: ANY_PEER,
            direction: npb::Direction::Down,
            kinds: None,
            code: Code::Unauthenticated,
            reason,
            admin: "alice",
        }
    }

    /// `who`'s call with its own good token, refused `code` for `reason`.
    fn policy(
        name: &'static str,
        who: Who,
        sub: &'static str,
        code: Code,
        reason: &'static str,
    ) -> Self {
        Self {
            name,
            on: who,
            token: Tok::Minted(Mint::of(sub, who)),
            code,
            reason,
            admin: if matches!(who, Who::Mallory | Who::Erin) {
                ""
            } else {
                sub
            },
            ..Self::alice(name, Tok::Absent, reason)
        }
    }
}

/// Hand-crafted tokens an attacker would try, aimed at alice.
struct Crafted {
    alg_none: String,
    hs256_with_public_key: String,
    jku: String,
}

fn crafted(fx: &Fixture, alice: &IssuedCert) -> Crafted {
    let key = &fx.token_key;
    let alg_none = {
        let h = json!({"alg": "none", "kid": key.kid(), "typ": "JWT"});
        format!("{}.{}.", b64(&h), b64(&alice_claims(alice)))
    };
    let hs256_with_public_key = {
        // The classic key-confusion attack: HMAC keyed with the verifier's public key file.
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(key.kid().to_string());
        jsonwebtoken::encode(
            &h,
            &alice_claims(alice),
            &jsonwebtoken::EncodingKey::from_secret(fx.token_pub_pem.as_bytes()),
        )
        .unwrap()
    };
    let jku = {
        let h = json!({"alg": "EdDSA", "kid": key.kid(), "typ": "JWT",
                       "jku": "https://evil.example.net/keys.json"});
        // Signature is irrelevant: the header alone must be refused.
        format!("{}.{}.AAAA", b64(&h), b64(&alice_claims(alice)))
    };
    Crafted {
        alg_none,
        hs256_with_public_key,
        jku,
    }
}

/// Every gRPC row. `revoked` is a good alice token whose jti the policy revokes.
fn rows(c: Crafted, revoked: String) -> Vec<Row> {
    use Tok::{Absent, Minted, Text};
    let alice = Mint::ALICE;
    let down = npb::Direction::Down;
    vec![
        Row::alice("no token", Absent, "token required"),
        Row::alice(
            "expired token",
            Minted(Mint {
                issued_hours: -2,
                ..alice
            }),
            "expired",
        ),
        Row::alice(
            "not-yet-valid token",
            Minted(Mint {
                issued_hours: 1,
                ..alice
            }),
            "not yet valid",
        ),
        Row::alice(
            "wrong aud",
            Minted(Mint {
                aud: "some-other-service",
                ..alice
            }),
            "audience",
        ),
        Row::alice(
            "wrong iss",
            Minted(Mint {
                iss: "mallory",
                ..alice
            }),
            "issuer",
        ),
        Row::alice(
            "unknown kid",
            Minted(Mint {
                signer: Signer::Stranger,
                ..alice
            }),
            "unknown kid",
        ),
        Row::alice("alg none", Text(c.alg_none), "algorithm not allowed"),
        Row::alice(
            "HS256 signed with the public key",
            Text(c.hs256_with_public_key),
            "algorithm not allowed",
        ),
        Row::alice("revoked jti", Text(revoked), "revoked"),
        Row::alice(
            "another admin's valid token on this certificate",
            Minted(Mint::of("bob", Who::Bob)),
            "certificate binding mismatch",
        ),
        Row::alice(
            "token for another admin bound to this certificate",
            Minted(Mint::of("bob", Who::Alice)),
            "not to this certificate's admin",
        ),
        Row::alice(
            "unbound token",
            Minted(Mint {
                bound_to: None,
                ..alice
            }),
            "binding required",
        ),
        Row::alice("garbage token", Text("not-a-jwt".into()), "malformed"),
        Row::alice("jku header", Text(c.jku), "forbidden header jku"),
        Row {
            peer: "http://127.0.0.1:9/",
            token: Minted(alice),
            ..Row::alice("invalid request (http:// peer)", Absent, "invalid request")
        }
        .with_code(Code::InvalidArgument),
        Row::policy(
            "unknown identity (certificate from the right CA, not in the policy)",
            Who::Mallory,
            "mallory",
            Code::PermissionDenied,
            "unknown identity",
        ),
        Row::policy(
            "revoked admin",
            Who::Erin,
            "erin",
            Code::PermissionDenied,
            "admin revoked",
        ),
        Row {
            peer: "wss://evil.example.net/",
            ..Row::policy(
                "policy: peer not allowed",
                Who::Carol,
                "carol",
                Code::PermissionDenied,
                "peer not allowed",
            )
        },
        Row {
            peer: CAROLS_RELAY,
            direction: npb::Direction::Up,
            kinds: Some(&[1]),
            ..Row::policy(
                "policy: direction not allowed",
                Who::Carol,
                "carol",
                Code::PermissionDenied,
                "direction not allowed",
            )
        },
        Row {
            peer: CAROLS_RELAY,
            direction: down,
            kinds: Some(&[1, 7]),
            ..Row::policy(
                "policy: kinds out of scope",
                Who::Carol,
                "carol",
                Code::PermissionDenied,
                "kinds out of scope",
            )
        },
    ]
}

impl Row {
    fn with_code(self, code: Code) -> Self {
        Self { code, ..self }
    }
}

/// The service and everyone the table needs.
struct Table {
    fx: Fixture,
    svc: Proc,
    certs: Vec<(Who, IssuedCert)>,
    stranger: TokenSigningKey,
    failures: Vec<String>,
    /// Every token sent: none may appear in the audit files.
    tokens: Vec<String>,
}

impl Table {
    fn cert(&self, who: Who) -> &IssuedCert {
        &self
            .certs
            .iter()
            .find(|(w, _)| *w == who)
            .expect("certificate")
            .1
    }

    fn token(&self, t: &Tok) -> Option<String> {
        match t {
            Tok::Absent => None,
            Tok::Text(s) => Some(s.clone()),
            Tok::Minted(m) => {
                let key = match m.signer {
                    Signer::Service => &self.fx.token_key,
                    Signer::Stranger => &self.stranger,
                };
                let hour = Duration::from_secs(3600);
                let now = SystemTime::now();
                let issued = if m.issued_hours < 0 {
                    now - hour * m.issued_hours.unsigned_abs() as u32
                } else {
                    now + hour * m.issued_hours as u32
                };
                let bound = m.bound_to.map(|w| self.cert(w));
                Some(
                    self.fx
                        .mint_with(key, m.sub, bound, m.iss, m.aud, issued, hour),
                )
            }
        }
    }
}

/// alice (one sync at a time), bob, carol (down from one relay, kind 1), dave (one request a
/// minute), erin (revoked); a CRL revoking one of alice's certificates; one token revoked.
fn table() -> (
    Table,
    Vec<(&'static str, Option<IssuedCert>, &'static str, &'static str)>,
    Crafted,
    String,
) {
    let mut fx = Fixture::without_policy();
    let certs: Vec<(Who, IssuedCert)> = [
        (Who::Alice, "alice"),
        (Who::Bob, "bob"),
        (Who::Carol, "carol"),
        (Who::Mallory, "mallory"),
        (Who::Erin, "erin"),
    ]
    .into_iter()
    .map(|(w, n)| (w, fx.client(n)))
    .collect();
    // Certificates the TLS layer must refuse.
    let revoked_alice = fx.client("alice");
    let expired_alice = fx.pki.issue_expired_client("alice").unwrap();
    let foreign_alice = TestPki::with_name("some other CA")
        .unwrap()
        .issue_client("alice")
        .unwrap();
    fx.set_crl(&[&revoked_alice]);
    let alice = &certs[0].1;
    let revoked_token = fx.token("alice", alice);
    let crafted = crafted(&fx, alice);
    let admins = [
        AdminSpec {
            max_concurrent: 1,
            ..open("alice")
        },
        open("bob"),
        AdminSpec {
            peers: "\"wss://relay.example.com\"",
            directions: "\"down\"",
            extra: "kinds = [1]",
            ..open("carol")
        },
        AdminSpec {
            rate_per_minute: 1,
            burst: 1,
            ..open("dave")
        },
        open("erin"),
    ];
    fx.write_policy(&policy_full(
        &admins,
        &[jti_of(&revoked_token)],
        &["erin"],
        16,
    ));
    // (case, certificate, reason in the record, alert the client sees)
    let tls_rows = vec![
        (
            "no client certificate",
            None,
            "no certificates",
            "CertificateRequired",
        ),
        (
            "certificate from another CA",
            Some(foreign_alice),
            "UnknownIssuer",
            "UnknownCA",
        ),
        (
            "expired certificate",
            Some(expired_alice),
            "expired",
            "CertificateExpired",
        ),
        (
            "revoked certificate",
            Some(revoked_alice),
            "revoked",
            "CertificateRevoked",
        ),
    ];
    let svc = start_service(&fx);
    let stranger = TokenSigningKey::from_pkcs8_pem(
        &orly::auth::generate_ed25519_pem_pair().unwrap().private_pem,
    )
    .unwrap();
    let t = Table {
        fx,
        svc,
        certs,
        stranger,
        failures: Vec::new(),
        tokens: Vec::new(),
    };
    (t, tls_rows, crafted, revoked_token)
}

pub(super) async fn refusal_table() {
    let (mut t, tls_rows, crafted, revoked) = table();
    for (name, cert, reason, alert) in tls_rows {
        tls_row(&mut t, name, cert.as_ref(), reason, alert).await;
    }
    tls_control(&mut t).await;
    let mut channels = Vec::new();
    for who in [Who::Alice, Who::Carol, Who::Mallory, Who::Erin] {
        channels.push((who, connect(&t.svc.addr, &t.fx.ca_pem, t.cert(who)).await));
    }
    for (i, row) in rows(crafted, revoked).into_iter().enumerate() {
        let ch = &channels
            .iter()
            .find(|(w, _)| *w == row.on)
            .expect("channel")
            .1;
        grpc_row(&mut t, ch, &trace_id(100 + i as u32), row).await;
    }
    over_rate(&mut t).await;
    let ch_alice = channels.swap_remove(0).1;
    over_concurrency(&mut t, &ch_alice).await;
    no_token_in_the_audit_files(&mut t);

    let Table {
        fx, svc, failures, ..
    } = t;
    drop(svc);
    if std::env::var_os("ORLY_TEST_DUMP_AUDIT").is_some() {
        for r in audit_records(&fx.audit_dir) {
            eprintln!("AUDIT {r}");
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} security case(s) failed:\n  - {}\n--- service log (tail) ---\n{}",
            failures.len(),
            failures.join("\n  - "),
            tail(&fx.log_text(0), 40)
        );
    }
}

/// One raw connection attempt: refused with `alert`, and one `connect` record naming `reason`.
async fn tls_row(t: &mut Table, name: &str, cert: Option<&IssuedCert>, reason: &str, alert: &str) {
    let before = audit_records(&t.fx.audit_dir).len();
    let out = tls_attempt(&t.svc.addr, &t.fx.ca_pem, cert).await;
    if !out.summary.starts_with("refused") {
        t.failures
            .push(format!("[{name}] connection not refused: {}", out.summary));
    } else if !out.summary.contains(alert) {
        t.failures.push(format!(
            "[{name}] refused, but the client saw {:?}, expected the {alert} alert",
            out.summary
        ));
    }
    let recs = new_records(&t.fx.audit_dir, before, 1).await;
    if let Err(e) = one_refusal_traced(&recs, reason, None, None) {
        t.failures.push(format!("[{name}] {e}"));
    } else if s(&recs[0], "rpc") != "connect" {
        t.failures.push(format!(
            "[{name}] rpc {:?}, expected connect",
            s(&recs[0], "rpc")
        ));
    }
    eprintln!("[{name}] client: {}", out.summary);
}

/// Control: the same raw client with a good certificate is let in, and leaves no record.
async fn tls_control(t: &mut Table) {
    let before = audit_records(&t.fx.audit_dir).len();
    let out = tls_attempt(&t.svc.addr, &t.fx.ca_pem, Some(t.cert(Who::Alice))).await;
    if !out.summary.starts_with("accepted") {
        t.failures.push(format!(
            "[control: valid certificate] not accepted: {}",
            out.summary
        ));
    }
    let recs = new_records(&t.fx.audit_dir, before, 0).await;
    if !recs.is_empty() {
        t.failures.push(format!(
            "[control: valid certificate] a bare handshake left audit records: {recs:?}"
        ));
    }
}

/// One call: refused with the row's code (never echoing the token), one record with its reason.
async fn grpc_row(t: &mut Table, ch: &Channel, trace: &str, row: Row) {
    let token = t.token(&row.token);
    t.tokens.extend(token.clone());
    let mut body = sync_req(row.peer, row.direction, 10);
    if let Some(kinds) = row.kinds {
        body.filter = Some(cpb::Filter {
            kinds: kinds.to_vec(),
            ..Default::default()
        });
    }
    let before = audit_records(&t.fx.audit_dir).len();
    match sync_call_traced(ch, token.as_deref(), trace, body).await {
        Ok(msgs) => t.failures.push(format!(
            "[{}] not refused: the call was admitted ({} progress messages)",
            row.name,
            msgs.len()
        )),
        Err(st) => {
            if st.code() != row.code {
                t.failures.push(format!(
                    "[{}] status {:?} ({}), expected {:?}",
                    row.name,
                    st.code(),
                    st.message(),
                    row.code
                ));
            }
            if let Some(tok) = &token
                && tok.len() > 12
                && st.message().contains(tok.as_str())
            {
                t.failures
                    .push(format!("[{}] the status echoes the token", row.name));
            }
        }
    }
    let recs = new_records(&t.fx.audit_dir, before, 1).await;
    let admin = Some(row.admin).filter(|a| !a.is_empty());
    if let Err(e) = one_refusal_traced(&recs, row.reason, Some(trace), admin) {
        t.failures.push(format!("[{}] {e}", row.name));
    }
}

/// Dave may make one request a minute: the second is RESOURCE_EXHAUSTED with a retry delay.
async fn over_rate(t: &mut Table) {
    let name = "over rate";
    let dave = t.fx.client("dave");
    let ch_dave = connect(&t.svc.addr, &t.fx.ca_pem, &dave).await;
    let dave_token = t.fx.token("dave", &dave);
    t.tokens.push(dave_token.clone());
    if let Err(st) = list_syncs_traced(&ch_dave, Some(&dave_token), &trace_id(200)).await {
        t.failures
            .push(format!("[{name}] dave's first request refused: {st:?}"));
    }
    let trace = trace_id(201);
    let before = audit_records(&t.fx.audit_dir).len();
    let body = sync_req(ANY_PEER, npb::Direction::Down, 10);
    match sync_call_traced(&ch_dave, Some(&dave_token), &trace, body).await {
        Ok(_) => t.failures.push(format!(
            "[{name}] second request within the minute admitted"
        )),
        Err(st) => {
            if st.code() != Code::ResourceExhausted {
                t.failures.push(format!(
                    "[{name}] status {:?} ({}), expected ResourceExhausted",
                    st.code(),
                    st.message()
                ));
            }
            match st.get_details_retry_info() {
                Some(ri) if ri.retry_delay.is_some_and(|d| d > Duration::ZERO) => {}
                other => t.failures.push(format!(
                    "[{name}] no usable google.rpc.RetryInfo in the status: {other:?}"
                )),
            }
        }
    }
    let recs = new_records(&t.fx.audit_dir, before, 1).await;
    if let Err(e) = one_refusal_traced(&recs, "rate limited", Some(&trace), Some("dave")) {
        t.failures.push(format!("[{name}] {e}"));
    }
}

/// Alice may run one sync at a time: hold one open on a relay that never answers, then ask for
/// a second; walking away from the first cancels it, audited as finished.
async fn over_concurrency(t: &mut Table, ch_alice: &Channel) {
    let name = "over concurrency";
    let (stall_addr, stall_task) = stalling_relay().await;
    let alice_token = t.fx.token("alice", t.cert(Who::Alice));
    t.tokens.push(alice_token.clone());
    let held_trace = trace_id(300);
    let mut c = NegentropyServiceClient::new(ch_alice.clone());
    let body = npb::SyncPeerRequest {
        timeout_seconds: 120,
        ..sync_req(&format!("ws://{stall_addr}/"), npb::Direction::Down, 10)
    };
    let held = tokio::time::timeout(
        CALL_LIMIT,
        c.sync_with_peer(traced(body.clone(), Some(&alice_token), &held_trace)),
    )
    .await
    .expect("first sync call timed out");
    let held = match held {
        Err(st) => {
            t.failures.push(format!(
                "[{name}] the first (held) sync was refused: {st:?}"
            ));
            stall_task.abort();
            return;
        }
        Ok(held) => held,
    };
    let trace = trace_id(301);
    let before = audit_records(&t.fx.audit_dir).len();
    let mut c2 = NegentropyServiceClient::new(ch_alice.clone());
    let second = tokio::time::timeout(
        CALL_LIMIT,
        c2.sync_with_peer(traced(body.clone(), Some(&alice_token), &trace)),
    )
    .await
    .expect("second sync call timed out");
    match second {
        Ok(_) => t.failures.push(format!(
            "[{name}] a second concurrent sync was admitted (max_concurrent = 1)"
        )),
        Err(st) => {
            if st.code() != Code::ResourceExhausted {
                t.failures.push(format!(
                    "[{name}] status {:?} ({}), expected ResourceExhausted",
                    st.code(),
                    st.message()
                ));
            }
            if st.get_details_retry_info().is_none() {
                t.failures.push(format!("[{name}] no google.rpc.RetryInfo"));
            }
        }
    }
    let recs = new_records(&t.fx.audit_dir, before, 1).await;
    if let Err(e) = one_refusal_traced(
        &recs,
        "too many concurrent syncs",
        Some(&trace),
        Some("alice"),
    ) {
        t.failures.push(format!("[{name}] {e}"));
    }
    drop(held);
    let start = Instant::now();
    let finished = loop {
        let f = audit_records(&t.fx.audit_dir)
            .into_iter()
            .find(|r| s(r, "event") == "sync_finished" && s(r, "trace_id") == held_trace);
        if f.is_some() || start.elapsed() > AUDIT_WAIT {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match finished {
        None => t.failures.push(format!(
            "[{name}] the cancelled held sync left no sync_finished record"
        )),
        Some(r) if !s(&r, "error").contains("cancel") => t.failures.push(format!(
            "[{name}] the held sync's record does not say it was cancelled: {r}"
        )),
        Some(_) => {}
    }
    stall_task.abort();
}

/// No token text anywhere in the audit directory: not whole, not its signature.
fn no_token_in_the_audit_files(t: &mut Table) {
    let audit_text = all_text(&t.fx.audit_dir);
    for tok in t.tokens.iter().filter(|tok| tok.len() > 40) {
        let sig = tok.rsplit('.').next().unwrap_or("");
        if audit_text.contains(tok.as_str()) || (sig.len() > 20 && audit_text.contains(sig)) {
            t.failures.push(format!(
                "token text found in the audit files: {}...",
                &tok[..20]
            ));
        }
    }
}
