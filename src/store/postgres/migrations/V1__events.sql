-- orly's event store on PostgreSQL, schema 1. The same NIP-01 state as the fjall keyspaces
-- (see src/store/keys.rs): events and their indexes, the heads of replaceable and addressable
-- families, tombstones, superseded ids, and the negentropy bucket index.

CREATE TABLE events (
    id BYTEA PRIMARY KEY CHECK (length(id) = 32),
    pubkey BYTEA NOT NULL CHECK (length(pubkey) = 32),
    kind INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 65535),
    created_at BIGINT NOT NULL CHECK (created_at >= 0),
    raw TEXT NOT NULL
);
-- The negentropy order, and the time-range REQ.
CREATE INDEX events_by_time ON events (created_at, id);
CREATE INDEX events_by_kind ON events (kind, created_at, id);
-- Authors with or without kinds.
CREATE INDEX events_by_author_kind ON events (pubkey, kind, created_at, id);

-- Single-letter tags; values are hashed (sha256, 16 bytes) so any value has a bounded key.
CREATE TABLE event_tags (
    event_id BYTEA NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    name SMALLINT NOT NULL,
    value_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, name, value_hash)
);
CREATE INDEX event_tags_by_value ON event_tags (name, value_hash, created_at, event_id);

-- head key (pubkey ++ kind [++ hash(d)]) -> the stored version.
CREATE TABLE heads (
    head BYTEA PRIMARY KEY,
    created_at BIGINT NOT NULL,
    id BYTEA NOT NULL
);
-- deleted id -> the pubkey that deleted it.
CREATE TABLE tombstones (
    id BYTEA PRIMARY KEY,
    deleter BYTEA NOT NULL
);
-- address -> created_at of its newest deletion (versions at or before it stay deleted).
CREATE TABLE addr_tombstones (
    head BYTEA PRIMARY KEY,
    until_at BIGINT NOT NULL
);
-- ids dropped because a newer version is stored.
CREATE TABLE superseded (
    id BYTEA PRIMARY KEY
);
-- The persistent negentropy index: per 1 024-second bucket of created_at, the event count and
-- the exact (unreduced) sum of each 64-bit little-endian limb of the ids, so concurrent
-- writers add their deltas with one atomic upsert; readers reduce it modulo 2^256. (No CHECK on
-- count: a negative delta is the candidate row of the upsert, and CHECK sees it before the
-- conflict does.)
CREATE TABLE neg_buckets (
    bucket BIGINT PRIMARY KEY,
    count BIGINT NOT NULL,
    s0 NUMERIC NOT NULL,
    s1 NUMERIC NOT NULL,
    s2 NUMERIC NOT NULL,
    s3 NUMERIC NOT NULL
);
