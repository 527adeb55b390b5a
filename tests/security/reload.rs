//! Hot reload of the secured service: a policy edit applies within seconds and a broken file
//! keeps the previous policy (neither the old wider one nor deny-all); a new server certificate
//! and CRL apply on SIGHUP without dropping connections; the service-wide concurrency cap follows
//! a policy reload.

use super::*;

/// Admitted (the stream opened, whatever the sync's outcome) or the refusal status.
async fn admitted(ch: &Channel, token: &str, trace: &str, peer: &str) -> Result<(), tonic::Status> {
    // The sync engine reports its own failures in progress messages, so a status here is a
    // refusal by the gateway.
    sync_call_traced(
        ch,
        Some(token),
        trace,
        sync_req(peer, npb::Direction::Down, 10),
    )
    .await
    .map(|_| ())
}

pub(super) async fn policy_reload() {
    let fx = Fixture::without_policy();
    let alice = fx.client("alice");
    fx.write_policy(&policy(&[open("alice")], &[]));
    let relay_dir = fx.root.join("relay");
    let rl = tokio::task::block_in_place(|| relay(&relay_dir, &[]));
    let svc = start_service(&fx);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let token = fx.token("alice", &alice);
    let allowed_peer = format!("ws://{}/", rl.addr);
    let other_peer = format!("ws://{}/elsewhere", rl.addr);

    admitted(&ch, &token, &trace_id(1), &other_peer)
        .await
        .expect("initial policy allows any peer");

    // Narrow alice to one peer.
    let one_peer = format!("\"ws://{}\"", rl.addr);
    let narrow = policy(
        &[AdminSpec {
            peers: &one_peer,
            ..open("alice")
        }],
        &[],
    );
    let reloads_before = fx.log_text(0).matches("policy reloaded").count();
    fx.write_policy(&narrow);
    let start = Instant::now();
    let mut n = 10;
    let denied = loop {
        n += 1;
        match admitted(&ch, &token, &trace_id(n), &other_peer).await {
            Err(st) => break Some((st, start.elapsed())),
            Ok(()) if start.elapsed() > RELOAD_LIMIT => break None,
            Ok(()) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let (st, took) = denied.unwrap_or_else(|| {
        panic!(
            "policy edit not applied within {RELOAD_LIMIT:?}\n{}",
            tail(&fx.log_text(0), 20)
        )
    });
    eprintln!("policy reload took effect after {took:?}");
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains("peer not allowed"), "{st:?}");
    let last = audit_records(&fx.audit_dir).pop().unwrap();
    assert_eq!(s(&last, "trace_id"), trace_id(n), "{last}");
    assert!(s(&last, "reason").contains("peer not allowed"), "{last}");
    admitted(&ch, &token, &trace_id(50), &allowed_peer)
        .await
        .expect("the narrowed policy still allows its one peer");
    assert!(
        wait_log(
            &fx.log_path(0),
            "policy reloaded",
            reloads_before + 1,
            Duration::from_secs(1)
        )
        .await,
        "no 'policy reloaded' in the log"
    );

    // A broken file: the previous (narrow) policy stays in force — neither the original open
    // one nor deny-all.
    fx.write_policy("[[admin]]\nname = \"alice\"\nthis is not toml at all ][\n");
    assert!(
        wait_log(
            &fx.log_path(0),
            "policy reload failed",
            1,
            Duration::from_secs(10)
        )
        .await,
        "the service never reported the broken policy\n{}",
        tail(&fx.log_text(0), 20)
    );
    let mut svc = svc;
    assert!(svc.alive(), "service died on a broken policy file");
    let st = admitted(&ch, &token, &trace_id(60), &other_peer)
        .await
        .expect_err("broken policy file must not reopen the old, wider policy");
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    admitted(&ch, &token, &trace_id(61), &allowed_peer)
        .await
        .expect("broken policy file must not close the gateway either");
}

pub(super) async fn cert_reload() {
    let mut fx = Fixture::without_policy();
    let alice = fx.client("alice");
    let alice2 = fx.client("alice");
    fx.set_crl(&[]);
    fx.write_policy(&policy(&[open("alice")], &[]));
    let mut svc = start_service(&fx);
    let token = fx.token("alice", &alice);
    let old_ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    list_syncs_traced(&old_ch, Some(&token), &trace_id(1))
        .await
        .expect("serving before reload");
    let before = tls_attempt(&svc.addr, &fx.ca_pem, Some(&alice)).await;
    assert!(before.summary.starts_with("accepted"), "{}", before.summary);
    assert_eq!(
        before.server_cert.as_deref(),
        Some(fx.server.cert_der.as_slice())
    );

    // New server certificate and key, swapped in with renames, then SIGHUP.
    let fresh = fx.pki.issue_localhost_server().unwrap();
    for (name, text) in [
        ("server.key", &fresh.key_pem),
        ("server.pem", &fresh.cert_pem),
    ] {
        let tmp = fx.root.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, fx.root.join(name)).unwrap();
    }
    svc.signal("HUP");

    let start = Instant::now();
    let after = loop {
        let o = tls_attempt(&svc.addr, &fx.ca_pem, Some(&alice)).await;
        if o.server_cert.as_deref() == Some(fresh.cert_der.as_slice())
            || start.elapsed() > Duration::from_secs(10)
        {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        svc.alive(),
        "service died on SIGHUP\n{}",
        tail(&fx.log_text(0), 20)
    );
    assert_eq!(
        after.server_cert.as_deref(),
        Some(fresh.cert_der.as_slice()),
        "new connections still get the old certificate ({})",
        after.summary
    );
    assert!(after.summary.starts_with("accepted"), "{}", after.summary);
    eprintln!("new certificate served after {:?}", start.elapsed());

    // New connections are served (with client auth), and the old connection lives on.
    let new_ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    list_syncs_traced(&new_ch, Some(&token), &trace_id(2))
        .await
        .expect("serving on a new connection after reload");
    list_syncs_traced(&old_ch, Some(&token), &trace_id(3))
        .await
        .expect("the connection made before the reload was dropped");
    // Client authentication still enforced after the reload.
    let anon = tls_attempt(&svc.addr, &fx.ca_pem, None).await;
    assert!(anon.summary.starts_with("refused"), "{}", anon.summary);
    assert!(
        fx.log_text(0).contains("TLS certificates reloaded"),
        "no reload in the log"
    );

    // The CRL reloads too: revoke a certificate that works now.
    let ok = tls_attempt(&svc.addr, &fx.ca_pem, Some(&alice2)).await;
    assert!(ok.summary.starts_with("accepted"), "{}", ok.summary);
    let crl = fx.pki.crl_revoking(&[&alice2]).unwrap();
    let crl_path = fx.crl_path.clone().unwrap();
    let tmp = fx.root.join("crl.pem.new");
    std::fs::write(&tmp, crl.pem).unwrap();
    std::fs::rename(&tmp, &crl_path).unwrap();
    svc.signal("HUP");
    let start = Instant::now();
    let (out, recs) = loop {
        let before = audit_records(&fx.audit_dir).len();
        let o = tls_attempt(&svc.addr, &fx.ca_pem, Some(&alice2)).await;
        if o.summary.starts_with("refused") {
            break (o, new_records(&fx.audit_dir, before, 1).await);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "revoked certificate still accepted 10 s after the CRL changed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        out.summary.contains("CertificateRevoked"),
        "{}",
        out.summary
    );
    one_refusal_traced(&recs, "revoked", None, None).unwrap();
    assert!(svc.alive());
}

pub(super) async fn total_cap_reload() {
    let fx = Fixture::without_policy();
    let alice = fx.client("alice");
    let bob = fx.client("bob");
    let admins = || [open("alice"), open("bob")];
    fx.write_policy(&policy_full(&admins(), &[], &[], 16));
    let svc = start_service(&fx);
    let (stall, stall_task) = stalling_relay().await;
    let ch_a = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let ch_b = connect(&svc.addr, &fx.ca_pem, &bob).await;
    let (ta, tb) = (fx.token("alice", &alice), fx.token("bob", &bob));
    let body = npb::SyncPeerRequest {
        timeout_seconds: 120,
        ..sync_req(&format!("ws://{stall}/"), npb::Direction::Down, 10)
    };

    // The operator sheds load: one sync at a time for the whole service.
    let reloads = fx.log_text(0).matches("policy reloaded").count();
    fx.write_policy(&policy_full(&admins(), &[], &[], 1));
    assert!(
        wait_log(
            &fx.log_path(0),
            "policy reloaded",
            reloads + 1,
            Duration::from_secs(10)
        )
        .await,
        "policy not reloaded"
    );
    let mut ca = NegentropyServiceClient::new(ch_a.clone());
    let held = tokio::time::timeout(
        CALL_LIMIT,
        ca.sync_with_peer(traced(body.clone(), Some(&ta), &trace_id(1))),
    )
    .await
    .expect("first call timed out")
    .expect("the first sync is within every limit");
    let mut cb = NegentropyServiceClient::new(ch_b.clone());
    let second = tokio::time::timeout(
        CALL_LIMIT,
        cb.sync_with_peer(traced(body.clone(), Some(&tb), &trace_id(2))),
    )
    .await
    .expect("second call timed out");
    drop(held);
    stall_task.abort();
    match second {
        Ok(_) => panic!(
            "max_concurrent_total lowered to 1 by a policy reload, yet a second sync was \
             admitted while the first was running: the service-wide cap ignores reloads"
        ),
        Err(st) => {
            assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
            assert!(st.message().contains("service limit"), "{st:?}");
        }
    }
}
