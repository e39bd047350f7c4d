-- The webhook outbox for PostgreSQL: the same table as the SQLite schema, in native types.
-- One writer inserts rows, so `seq` values commit in the order they were drawn.

CREATE TABLE webhook_outbox (
    seq             BIGSERIAL   NOT NULL PRIMARY KEY,
    event_id        UUID        NOT NULL,
    url             TEXT        NOT NULL,
    call_id         UUID        NOT NULL,
    body            TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        BIGINT      NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX webhook_outbox_queue ON webhook_outbox (call_id, url, seq);
