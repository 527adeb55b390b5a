//! What to sync: a [`SyncRequest`] is built only from parts that are valid by construction (a
//! [`PeerUrl`], a [`FrameLimit`], a parsed filter), so a job never checks its request again.

use super::Direction;
use crate::event::Filter;
use crate::negentropy::FrameLimit;
use crate::peer::{PeerOptions, PeerUrl};

/// What to sync. Built with [`SyncRequest::new`] and the `with_*` calls; read with the getters.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    peer_url: PeerUrl,
    filter: Filter,
    since: Option<u64>,
    direction: Direction,
    frame_limit: Option<FrameLimit>,
    max_events: Option<u64>,
    peer: PeerOptions,
}

impl SyncRequest {
    /// A sync of the events matching `filter` (its `limit` is ignored) with the relay at
    /// `peer_url`, moving them `direction`; no `since`, a negotiated frame limit, no event cap
    /// and default connection options until set.
    pub fn new(peer_url: PeerUrl, filter: Filter, direction: Direction) -> Self {
        Self {
            peer_url,
            filter,
            since: None,
            direction,
            frame_limit: None,
            max_events: None,
            peer: PeerOptions::default(),
        }
    }

    /// Only events at or after `since` (combined with the filter's own `since`).
    pub fn with_since(mut self, since: Option<u64>) -> Self {
        self.since = since;
        self
    }

    /// The negentropy frame size limit; `None` = negotiate from the relay's NIP-11
    /// `max_message_length` (60 000 when it says nothing).
    pub fn with_frame_limit(mut self, limit: Option<FrameLimit>) -> Self {
        self.frame_limit = limit;
        self
    }

    /// Most events to move (fetched + sent): the sync service's policy for the admin (reported
    /// as such, [`super::SyncError::Capped`]); `None` = no cap.
    pub fn with_max_events(mut self, max: Option<u64>) -> Self {
        self.max_events = max;
        self
    }

    /// Connection options (timeouts, CA file, NIP-42 key).
    pub fn with_peer_options(mut self, peer: PeerOptions) -> Self {
        self.peer = peer;
        self
    }

    /// The same sync with another relay URL (the form the gateway's policy authorized).
    pub fn with_peer_url(mut self, peer_url: PeerUrl) -> Self {
        self.peer_url = peer_url;
        self
    }

    /// The same sync in `direction`.
    pub fn with_direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// The relay.
    pub fn peer_url(&self) -> &PeerUrl {
        &self.peer_url
    }

    /// Which events.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Only events at or after this time.
    pub fn since(&self) -> Option<u64> {
        self.since
    }

    /// Which way events move.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The frame limit asked for (`None`: negotiated).
    pub fn frame_limit(&self) -> Option<FrameLimit> {
        self.frame_limit
    }

    /// The event cap.
    pub fn max_events(&self) -> Option<u64> {
        self.max_events
    }

    /// Connection options.
    pub fn peer_options(&self) -> &PeerOptions {
        &self.peer
    }

    /// The filter the job reconciles: the request's, without `limit`, with `since` applied.
    pub(super) fn effective_filter(&self) -> Filter {
        let mut filter = self.filter.clone();
        filter.limit = None;
        if let Some(s) = self.since {
            filter.since = Some(filter.since.map_or(s, |f| f.max(s)));
        }
        filter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_narrows_the_filter_and_limit_is_ignored() {
        let url = PeerUrl::parse("ws://127.0.0.1:7777").unwrap();
        let filter = Filter::from_json(r#"{"kinds":[1],"since":100,"limit":5}"#).unwrap();
        let req = SyncRequest::new(url.clone(), filter.clone(), Direction::Both);
        let f = req.effective_filter();
        assert_eq!(
            (f.since, f.limit, f.kinds),
            (Some(100), None, filter.kinds.clone())
        );
        assert_eq!(
            req.clone().with_since(Some(50)).effective_filter().since,
            Some(100)
        );
        assert_eq!(
            req.clone().with_since(Some(150)).effective_filter().since,
            Some(150)
        );
        let req = req
            .with_frame_limit(FrameLimit::new(4096).ok())
            .with_max_events(Some(7));
        assert_eq!(req.peer_url(), &url);
        assert_eq!(req.direction(), Direction::Both);
        assert_eq!(req.frame_limit().map(FrameLimit::get), Some(4096));
        assert_eq!(req.max_events(), Some(7));
    }
}
