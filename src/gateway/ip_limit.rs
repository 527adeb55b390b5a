//! Per source IP rate limit (GCRA), applied before authentication: at accept and on every call.
//! Quota from the policy's `[service]` section, rebuilt when the policy reloads.

use super::check::Check;
use super::refusal::Refusal;
use super::tls::ConnInfo;
use crate::policy::PolicyHandle;
use crate::service::CallInfo;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

/// The per-IP limiter.
#[derive(Clone)]
pub struct IpLimiter {
    limiter: Arc<RwLock<Arc<DefaultKeyedRateLimiter<IpAddr>>>>,
}

fn build(policy: &crate::policy::Policy) -> Arc<DefaultKeyedRateLimiter<IpAddr>> {
    let s = policy.service();
    let quota = Quota::per_minute(s.per_ip_rate_per_minute).allow_burst(s.per_ip_burst);
    Arc::new(DefaultKeyedRateLimiter::keyed(quota))
}

impl IpLimiter {
    /// A limiter following `policy`.
    pub fn new(policy: PolicyHandle) -> Self {
        let me = Self {
            limiter: Arc::new(RwLock::new(build(&policy.current()))),
        };
        let cell = me.limiter.clone();
        let mut rx = policy.subscribe();
        tokio::spawn(async move {
            let mut tidy = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() { break; }
                        let fresh = build(&rx.borrow_and_update());
                        if let Ok(mut g) = cell.write() { *g = fresh; }
                    }
                    _ = tidy.tick() => {
                        if let Ok(g) = cell.read() { g.retain_recent(); }
                    }
                }
            }
        });
        me
    }

    /// Takes one token for `ip`, or says when to come back.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let limiter = match self.limiter.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Refusal::exhausted(format!("rate limited: too many requests from {ip}"), wait)
        })
    }
}

impl Check for IpLimiter {
    fn check<'a>(
        &'a self,
        parts: &'a mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>> {
        Box::pin(async move {
            let remote = parts.extensions.get::<ConnInfo>().map(|c| c.remote);
            if let Some(call) = parts.extensions.get_mut::<CallInfo>() {
                call.source = remote;
            }
            match remote {
                Some(addr) => self.check_ip(addr.ip()),
                None => Err(Refusal::new(
                    tonic::Code::Unauthenticated,
                    "no transport identity",
                )),
            }
        })
    }
}
