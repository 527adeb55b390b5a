//! Per source IP rate limit (GCRA), applied before authentication: at accept and on every call.
//! Quota from the policy's `[service]` section, rebuilt when the policy reloads.
//!
//! Accounting: one sync is one connection and one call, and costs one token. The token taken at
//! accept pays for the connection's first call; later calls on it pay their own.
//!
//! Refusal: a closed socket tells a client nothing (it reports a transport error, with no hint
//! of when to come back), so a connection over the quota is still let through the TLS handshake,
//! unpaid: its call finds no token and is refused with `RESOURCE_EXHAUSTED` and the retry delay
//! (`google.rpc.RetryInfo`), audited like any refused call. Only past [`ANSWERED_FACTOR`] times
//! the quota is a connection closed before the handshake (audited as a refused connect), so a
//! flood from one address costs at most that many more handshakes than the quota allows.

use super::check::Check;
use super::refusal::Refusal;
use super::tls::ConnInfo;
use crate::policy::PolicyHandle;
use crate::service::CallInfo;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

/// How many times the quota of over-limit connections per IP still get a TLS handshake and a
/// refusal they can read (with its retry delay) before connections are closed unanswered.
pub(super) const ANSWERED_FACTOR: u32 = 4;

/// The limiters of one policy version.
struct Limiters {
    /// Tokens: connections and calls.
    quota: DefaultKeyedRateLimiter<IpAddr>,
    /// Over-quota connections answered with a refusal rather than closed.
    answered: DefaultKeyedRateLimiter<IpAddr>,
}

/// The per-IP limiter.
#[derive(Clone)]
pub struct IpLimiter {
    limiter: Arc<RwLock<Arc<Limiters>>>,
}

/// What happens to a new connection.
#[derive(Debug)]
pub enum ConnAdmission {
    /// Within the quota: the token taken pays for the connection's first call.
    Paid,
    /// Over the quota, but answered: the handshake goes ahead and the call is checked (and
    /// most likely refused with the retry delay).
    Unpaid,
    /// Far over the quota: close before the handshake.
    Closed(Refusal),
}

fn times(n: NonZeroU32, k: u32) -> NonZeroU32 {
    n.saturating_mul(NonZeroU32::new(k).unwrap_or(NonZeroU32::MIN))
}

fn build(policy: &crate::policy::Policy) -> Arc<Limiters> {
    let s = policy.service();
    let quota = Quota::per_minute(s.per_ip_rate_per_minute).allow_burst(s.per_ip_burst);
    let answered = Quota::per_minute(times(s.per_ip_rate_per_minute, ANSWERED_FACTOR))
        .allow_burst(times(s.per_ip_burst, ANSWERED_FACTOR));
    Arc::new(Limiters {
        quota: DefaultKeyedRateLimiter::keyed(quota),
        answered: DefaultKeyedRateLimiter::keyed(answered),
    })
}

impl IpLimiter {
    /// A limiter for the current policy. It follows reloads, and forgets idle addresses, only
    /// while [`IpLimiter::upkeep`] runs.
    pub fn new(policy: &PolicyHandle) -> Self {
        Self {
            limiter: Arc::new(RwLock::new(build(&policy.current()))),
        }
    }

    /// The limiter's upkeep, for its owner to run (it never ends by itself): rebuilds the
    /// limiters when the policy reloads, and every minute forgets addresses whose quota is full
    /// again, so memory follows the active clients.
    pub fn upkeep(&self, policy: &PolicyHandle) -> impl Future<Output = ()> + Send + 'static {
        let cell = self.limiter.clone();
        let mut rx = policy.subscribe();
        async move {
            let mut tidy = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() { break; }
                        let fresh = build(&rx.borrow_and_update());
                        if let Ok(mut g) = cell.write() { *g = fresh; }
                    }
                    _ = tidy.tick() => {
                        if let Ok(g) = cell.read() {
                            g.quota.retain_recent();
                            g.answered.retain_recent();
                        }
                    }
                }
            }
        }
    }

    fn current(&self) -> Arc<Limiters> {
        match self.limiter.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Takes one token for `ip`, or says when to come back.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.current().quota.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Refusal::exhausted(format!("rate limited: too many requests from {ip}"), wait)
        })
    }

    /// Decides on a new connection from `ip` (see the module comment).
    pub fn admit_connection(&self, ip: IpAddr) -> ConnAdmission {
        let l = self.current();
        match l.quota.check_key(&ip) {
            Ok(()) => ConnAdmission::Paid,
            Err(not_until) => match l.answered.check_key(&ip) {
                Ok(()) => ConnAdmission::Unpaid,
                Err(_) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    ConnAdmission::Closed(Refusal::exhausted(
                        format!("rate limited: too many connections from {ip}, closed before TLS"),
                        wait,
                    ))
                }
            },
        }
    }
}

impl Check for IpLimiter {
    fn check<'a>(
        &'a self,
        parts: &'a mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>> {
        Box::pin(async move {
            let conn = parts.extensions.get::<ConnInfo>().cloned();
            if let Some(call) = parts.extensions.get_mut::<CallInfo>() {
                call.source = conn.as_ref().map(|c| c.remote);
            }
            match conn {
                // The token taken when the connection was accepted pays for its first call.
                Some(c) if c.take_prepaid() => Ok(()),
                Some(c) => self.check_ip(c.remote.ip()),
                None => Err(Refusal::new(
                    tonic::Code::Unauthenticated,
                    "no transport identity",
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32) -> IpLimiter {
        let text = format!(
            "[service]\nper_ip_rate_per_minute = {rate}\nper_ip_burst = {burst}\nmax_concurrent_total = 4\n"
        );
        let policy = crate::policy::Policy::from_toml_str(&text).expect("policy");
        IpLimiter {
            limiter: Arc::new(RwLock::new(build(&policy))),
        }
    }

    #[test]
    fn over_quota_connections_are_answered_then_closed() {
        let l = limiter(1, 3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let kinds: Vec<&str> = (0..3 * (1 + ANSWERED_FACTOR as usize) + 2)
            .map(|_| match l.admit_connection(ip) {
                ConnAdmission::Paid => "paid",
                ConnAdmission::Unpaid => "unpaid",
                ConnAdmission::Closed(r) => {
                    assert!(r.retry_after.is_some(), "a close says when to come back");
                    "closed"
                }
            })
            .collect();
        let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(count("paid"), 3, "{kinds:?}");
        assert_eq!(count("unpaid"), 3 * ANSWERED_FACTOR as usize, "{kinds:?}");
        assert_eq!(count("closed"), 2, "{kinds:?}");
        // Another address has its own quota.
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(matches!(l.admit_connection(other), ConnAdmission::Paid));
    }
}
