-- What admins did to participants of a call (remove, mute), with the acting user. `detail` is
-- a JSON object: `{"reason"}` for a removal, the muted sources (`{"audio": true, ...}`) for a
-- mute. No foreign key to calls, like media events.

CREATE TABLE admin_actions (
    id       BIGSERIAL   NOT NULL PRIMARY KEY,
    call_id  UUID        NOT NULL,
    action   TEXT        NOT NULL CHECK (action IN ('removed', 'muted')),
    by_user  TEXT        NOT NULL,
    user_id  TEXT        NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    detail   TEXT        NOT NULL
);

CREATE INDEX admin_actions_call ON admin_actions (call_id, at);
