-- Schema 2: leases, so that work one replica must do alone (a managed peer's background sync)
-- runs on one sync service at a time when several share this database. A lease is held until
-- `expires_at` (the database's clock, so replicas' clocks do not matter) and renewed by its
-- holder; once expired, any replica may take it.
CREATE TABLE orly_leases (
    name TEXT PRIMARY KEY CHECK (length(name) <= 4096),
    holder TEXT NOT NULL CHECK (length(holder) <= 256),
    expires_at TIMESTAMPTZ NOT NULL
);
