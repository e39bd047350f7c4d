-- The webhook outbox: one row per event and receiver URL, until that receiver took it or the
-- server gave up on it. `seq` (the rowid) grows with every insert, so it orders the events of
-- a call for each URL; the head of each (call_id, url) queue is the only row delivered.

CREATE TABLE webhook_outbox (
    seq             INTEGER NOT NULL PRIMARY KEY,
    event_id        TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    call_id         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL
) STRICT;

CREATE INDEX webhook_outbox_queue ON webhook_outbox (call_id, url, seq);
