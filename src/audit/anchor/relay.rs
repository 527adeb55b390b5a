//! Talking to anchor relays through the peer client sync uses ([`crate::peer::RelayConn`]):
//! publishing anchors (`EVENT`, counted by `OK`, NIP-42 AUTH with the anchoring key when the
//! relay asks) and fetching them back (`REQ`, paged until `EOSE`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::event::wire::Prefix;
use crate::event::{Event, Keys};
use crate::peer::{PeerOptions, PeerUrl, RelayConn, RelayMsg};

/// Events asked for per `REQ` page when fetching.
const PAGE: u64 = 500;
/// Most pages read from one relay (bounds a relay that keeps answering).
const MAX_PAGES: usize = 2_000;
/// Most distinct events taken from one relay (bounds a relay that ignores `limit`).
const MAX_EVENTS: usize = 200_000;

/// Sends `events` to the relay at `url` in order, one at a time, each answered by its `OK`.
/// Returns, per event, `Ok` when the relay accepted it (or already had it) and the relay's
/// reason when it refused; `Err` when the relay could not be reached or stopped answering.
pub async fn publish(
    url: &str,
    events: &[Event],
    opts: &PeerOptions,
) -> Result<Vec<Result<(), String>>, String> {
    let url = PeerUrl::parse(url).map_err(|e| e.to_string())?;
    let mut conn = RelayConn::connect(&url, opts)
        .await
        .map_err(|e| e.to_string())?;
    let mut auth = Auth::default();
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        out.push(publish_one(&mut conn, ev, &ev.id_hex(), opts, &mut auth).await?);
    }
    conn.close().await;
    Ok(out)
}

#[derive(Default)]
struct Auth {
    challenge: Option<String>,
    /// Id of our AUTH event while its `OK` is awaited.
    pending: Option<String>,
    done: bool,
}

async fn publish_one(
    conn: &mut RelayConn,
    event: &Event,
    id: &str,
    opts: &PeerOptions,
    auth: &mut Auth,
) -> Result<Result<(), String>, String> {
    conn.publish(event).await.map_err(|e| e.to_string())?;
    // Refused for want of AUTH: resent once our AUTH is accepted.
    let mut resend_after_auth = false;
    let mut sent_auth_for_this = false;
    // One deadline for the whole exchange (AUTH included): a relay that keeps sending other
    // messages cannot hold the anchorer.
    let deadline = tokio::time::Instant::now() + opts.reply_timeout * 2;
    loop {
        let msg = match tokio::time::timeout_at(deadline, conn.recv()).await {
            Err(_) => return Err(format!("no OK from {} in time", conn.url())),
            Ok(None) => return Err(format!("{} closed the connection", conn.url())),
            Ok(Some(Err(_malformed))) => continue,
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            RelayMsg::Auth { challenge } => {
                auth.challenge = Some(challenge);
                if resend_after_auth && auth.pending.is_none() && !sent_auth_for_this {
                    sent_auth_for_this = true;
                    start_auth(conn, opts, auth).await?;
                }
            }
            RelayMsg::Ok {
                id: ok_id,
                accepted,
                message,
            } if auth.pending.as_deref() == Some(ok_id.as_str()) => {
                auth.pending = None;
                if !accepted {
                    return Err(format!("{} refused our AUTH: {message}", conn.url()));
                }
                auth.done = true;
                if resend_after_auth {
                    resend_after_auth = false;
                    conn.publish(event).await.map_err(|e| e.to_string())?;
                }
            }
            RelayMsg::Ok {
                id: ok_id,
                accepted,
                message,
            } if ok_id == id => {
                if accepted {
                    return Ok(Ok(()));
                }
                let can_auth = Prefix::AuthRequired.starts(&message)
                    && opts.auth_keys.is_some()
                    && !auth.done
                    && !sent_auth_for_this;
                if !can_auth {
                    return Ok(Err(message));
                }
                resend_after_auth = true;
                if auth.challenge.is_some() && auth.pending.is_none() {
                    sent_auth_for_this = true;
                    start_auth(conn, opts, auth).await?;
                }
                // Else the challenge is still on its way: sent when it arrives.
            }
            _ => {}
        }
    }
}

async fn start_auth(conn: &RelayConn, opts: &PeerOptions, auth: &mut Auth) -> Result<(), String> {
    let (Some(keys), Some(challenge)) = (&opts.auth_keys, &auth.challenge) else {
        return Ok(());
    };
    let id = conn
        .authenticate(keys, challenge)
        .await
        .map_err(|e| e.to_string())?;
    auth.pending = Some(id);
    Ok(())
}

/// Fetches every event matching `filter` from the relay at `url`, newest first in pages of up
/// to [`PAGE`] (`until` moved back to the oldest seen each page), until a page brings nothing
/// new. Anchors that share one `created_at` beyond a relay's page size can be missed (they are
/// then reported as unanchored, never as matching). Events are
/// returned as sent (checked by the caller), by id.
pub async fn fetch(url: &str, filter: &Value, opts: &PeerOptions) -> Result<Vec<Event>, String> {
    let url = PeerUrl::parse(url).map_err(|e| e.to_string())?;
    let mut conn = RelayConn::connect(&url, opts)
        .await
        .map_err(|e| e.to_string())?;
    let mut found: BTreeMap<String, Event> = BTreeMap::new();
    let mut until: Option<u64> = None;
    for page in 0..MAX_PAGES {
        let mut f = filter.clone();
        f["limit"] = PAGE.into();
        if let Some(u) = until {
            f["until"] = u.into();
        }
        let sub = format!("anchors-{page}");
        conn.req(&sub, vec![f]).await.map_err(|e| e.to_string())?;
        let (mut new, mut oldest, mut seen) = (0usize, u64::MAX, 0u64);
        let deadline = tokio::time::Instant::now() + opts.reply_timeout * 2;
        loop {
            let msg = match tokio::time::timeout_at(deadline, conn.recv()).await {
                Err(_) => return Err(format!("no EOSE from {url} in time")),
                Ok(None) => return Err(format!("{url} closed the connection")),
                Ok(Some(Err(_))) => continue,
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                RelayMsg::Event { sub: s, event } if s == sub => {
                    seen += 1;
                    // Not one of ours if it does not even parse; checked fully by the caller.
                    if let Ok(ev) = Event::from_value(event) {
                        oldest = oldest.min(ev.created_at);
                        if found.insert(ev.id_hex(), ev).is_none() {
                            new += 1;
                        }
                        if found.len() > MAX_EVENTS {
                            return Err(format!(
                                "{url} sent more than {MAX_EVENTS} events for one log"
                            ));
                        }
                    }
                }
                RelayMsg::Eose { sub: s } if s == sub => break,
                RelayMsg::Closed { sub: s, message } if s == sub => {
                    return Err(format!("{url} closed the subscription: {message}"));
                }
                _ => {}
            }
        }
        let _ = conn.close_sub(&sub).await;
        // A relay may cap `limit` below ours, so a short page does not mean the end: only a page
        // with nothing new does (`until` is inclusive, so the oldest event comes back).
        if new == 0 || seen == 0 || oldest == u64::MAX {
            break;
        }
        until = Some(oldest);
    }
    conn.close().await;
    Ok(found.into_values().collect())
}

/// Peer options for anchor relays: short timeouts (a relay that does not answer is retried
/// later, not waited for), the anchoring key for NIP-42.
pub fn anchor_peer_options(keys: Option<Keys>, ca_file: Option<std::path::PathBuf>) -> PeerOptions {
    PeerOptions {
        connect_timeout: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(10),
        ca_file,
        auth_keys: keys,
        max_message_bytes: 4 << 20,
    }
}
