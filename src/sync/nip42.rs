//! NIP-42 on the sync's side: the relay's latest challenge, our AUTH awaiting its `OK`, and the
//! work the relay refused with `auth-required`, parked until our AUTH is accepted. It decides;
//! the job signs and sends (`RelayConn::authenticate`).

use super::SyncError;
use super::ranges::Range;
use crate::event::Keys;

/// AUTH events sent before giving up (a relay may rotate its challenge under load).
const MAX_AUTH_ATTEMPTS: u32 = 3;

/// Work refused with `auth-required`, resumed once our AUTH is accepted.
#[derive(Debug, Default)]
pub(super) struct Parked {
    /// Time ranges whose session was refused.
    pub(super) ranges: Vec<Range>,
    /// Ids whose fetch was refused.
    pub(super) need: Vec<[u8; 32]>,
    /// Ids whose upload was refused.
    pub(super) have: Vec<[u8; 32]>,
}

impl Parked {
    fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.need.is_empty() && self.have.is_empty()
    }
}

/// What an `OK` meant for our AUTH.
#[derive(Debug)]
pub(super) enum AuthOk {
    /// Not the answer to our AUTH.
    NotOurs,
    /// Accepted: the parked work, to resume.
    Accepted(Parked),
    /// Refused, but the relay has a newer challenge: answer it (call [`Nip42::answer`]).
    Retry,
}

/// The NIP-42 state of one sync.
pub(super) struct Nip42 {
    keys: Option<Keys>,
    /// The relay's latest challenge (only the latest is valid).
    challenge: Option<String>,
    /// Id of our AUTH event awaiting its `OK`; nothing new is sent meanwhile.
    pending: Option<String>,
    authed: bool,
    /// The challenge our pending (or last) AUTH answered.
    answered: Option<String>,
    attempts: u32,
    parked: Parked,
}

impl Nip42 {
    /// Authenticates with `keys` when the relay asks; without keys, a demand for AUTH fails
    /// the job.
    pub(super) fn new(keys: Option<Keys>) -> Self {
        Self {
            keys,
            challenge: None,
            pending: None,
            authed: false,
            answered: None,
            attempts: 0,
            parked: Parked::default(),
        }
    }

    /// Our AUTH awaits its `OK`: whatever we sent now would be refused again.
    pub(super) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Nothing waits for our AUTH.
    pub(super) fn is_idle(&self) -> bool {
        self.pending.is_none() && self.parked.is_empty()
    }

    /// The work refused until we authenticate.
    pub(super) fn parked(&mut self) -> &mut Parked {
        &mut self.parked
    }

    /// The relay's `AUTH` challenge: whether to answer it now (proactively, once).
    pub(super) fn on_challenge(&mut self, challenge: String) -> bool {
        self.challenge = Some(challenge);
        self.keys.is_some() && !self.authed && self.pending.is_none()
    }

    /// The relay refused something with `reason` (`auth-required:`), or challenged us: the
    /// key and challenge to answer with, `None` when our AUTH is already on its way, or why
    /// we cannot authenticate. After this, send the AUTH and call [`Nip42::sent`].
    pub(super) fn answer(&mut self, reason: &str) -> Result<Option<(Keys, String)>, SyncError> {
        let Some(keys) = &self.keys else {
            return Err(SyncError::Auth(format!(
                "{reason} (no key: use --auth-key-file or ORLY_SYNC_AUTH_KEY)"
            )));
        };
        if self.pending.is_some() {
            return Ok(None);
        }
        if self.authed {
            return Err(SyncError::Auth(format!(
                "{reason} (after a successful AUTH)"
            )));
        }
        let Some(challenge) = self.challenge.clone() else {
            return Err(SyncError::Auth(format!(
                "{reason} (relay sent no AUTH challenge)"
            )));
        };
        self.attempts += 1;
        Ok(Some((keys.clone(), challenge)))
    }

    /// Our AUTH event `id`, answering `challenge`, was sent.
    pub(super) fn sent(&mut self, id: String, challenge: String) {
        self.pending = Some(id);
        self.answered = Some(challenge);
    }

    /// An `OK` for event `id`.
    pub(super) fn on_ok(
        &mut self,
        id: &str,
        accepted: bool,
        message: &str,
    ) -> Result<AuthOk, SyncError> {
        if self.pending.as_deref() != Some(id) {
            return Ok(AuthOk::NotOurs);
        }
        self.pending = None;
        if !accepted {
            // A busy relay may have replaced the challenge we answered (NIP-42: only the
            // latest is valid); answer the latest, a bounded number of times.
            let newer = self.challenge.is_some() && self.challenge != self.answered;
            if newer && self.attempts < MAX_AUTH_ATTEMPTS {
                return Ok(AuthOk::Retry);
            }
            return Err(SyncError::Auth(format!(
                "relay refused our AUTH: {message}"
            )));
        }
        self.authed = true;
        Ok(AuthOk::Accepted(std::mem::take(&mut self.parked)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Option<Keys> {
        Some(Keys::from_seed(b"nip42 test", 0))
    }

    #[test]
    fn without_a_key_or_a_challenge_auth_fails_with_the_reason() {
        let mut a = Nip42::new(None);
        assert!(!a.on_challenge("c1".into()), "no key: no proactive AUTH");
        let e = a.answer("auth-required: sign in").unwrap_err();
        assert_eq!(
            e.to_string(),
            "authentication failed: auth-required: sign in (no key: use --auth-key-file or \
             ORLY_SYNC_AUTH_KEY)"
        );
        let mut a = Nip42::new(keys());
        let e = a.answer("auth-required: x").unwrap_err();
        assert!(
            e.to_string().ends_with("(relay sent no AUTH challenge)"),
            "{e}"
        );
    }

    #[test]
    fn one_auth_in_flight_parks_work_and_resumes_it() {
        let mut a = Nip42::new(keys());
        assert!(a.on_challenge("c1".into()));
        let (_, ch) = a.answer("auth").unwrap().expect("answer the challenge");
        assert_eq!(ch, "c1");
        a.sent("id1".into(), ch);
        assert!(a.is_pending() && !a.is_idle());
        assert!(
            a.answer("auth-required: again").unwrap().is_none(),
            "already on its way"
        );
        assert!(!a.on_challenge("c2".into()), "not while one is pending");
        a.parked().ranges.push((1, 2));
        a.parked().need.push([7; 32]);
        assert!(matches!(a.on_ok("other", true, ""), Ok(AuthOk::NotOurs)));
        let Ok(AuthOk::Accepted(parked)) = a.on_ok("id1", true, "") else {
            panic!("accepted")
        };
        assert_eq!((parked.ranges, parked.need), (vec![(1, 2)], vec![[7; 32]]));
        assert!(a.is_idle());
        let e = a.answer("auth-required: still").unwrap_err();
        assert!(e.to_string().ends_with("(after a successful AUTH)"), "{e}");
    }

    #[test]
    fn a_refused_auth_is_retried_on_a_newer_challenge_three_times_at_most() {
        let mut a = Nip42::new(keys());
        a.on_challenge("c1".into());
        let (_, ch) = a.answer("auth").unwrap().unwrap();
        a.sent("id1".into(), ch);
        // Same challenge: refused for good.
        let e = a.on_ok("id1", false, "invalid: bad").unwrap_err();
        assert_eq!(
            e.to_string(),
            "authentication failed: relay refused our AUTH: invalid: bad"
        );

        let mut a = Nip42::new(keys());
        for n in 1..=3 {
            a.on_challenge(format!("c{n}"));
            let (_, ch) = a.answer("x").unwrap().unwrap();
            a.sent(format!("id{n}"), ch);
            a.on_challenge(format!("c{}", n + 1));
            let r = a.on_ok(&format!("id{n}"), false, "invalid: stale");
            if n < 3 {
                assert!(matches!(r, Ok(AuthOk::Retry)), "attempt {n}: {r:?}");
            } else {
                assert!(r.is_err(), "a fourth AUTH is not sent");
            }
        }
    }
}
