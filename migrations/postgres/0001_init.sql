-- Call history for PostgreSQL: the same tables as the SQLite schema, in native types.

CREATE TABLE conversations (
    id          TEXT        NOT NULL PRIMARY KEY,
    name        TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX conversation_members_user ON conversation_members (user_id);

-- No foreign key to conversations: a call's history outlives its conversation.
CREATE TABLE calls (
    id              UUID        NOT NULL PRIMARY KEY,
    conversation_id TEXT,
    kind            TEXT        NOT NULL CHECK (kind IN ('direct', 'group')),
    media           TEXT        NOT NULL CHECK (media IN ('audio', 'video')),
    initiated_by    TEXT        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('ringing', 'ongoing', 'completed',
                                                           'missed', 'rejected', 'cancelled',
                                                           'busy', 'failed')),
    created_at      TIMESTAMPTZ NOT NULL,
    started_at      TIMESTAMPTZ,
    ended_at        TIMESTAMPTZ,
    end_reason      TEXT,
    ended_by        TEXT,
    version         BIGINT      NOT NULL
);

CREATE INDEX calls_history ON calls (created_at DESC, id DESC);
CREATE INDEX calls_conversation ON calls (conversation_id, created_at DESC, id DESC);
CREATE INDEX calls_live ON calls (status) WHERE status IN ('ringing', 'ongoing');

CREATE TABLE call_participants (
    call_id        UUID        NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id        TEXT        NOT NULL,
    position       BIGINT      NOT NULL,
    name           TEXT        NOT NULL,
    status         TEXT        NOT NULL CHECK (status IN ('invited', 'ringing', 'joined', 'left',
                                                          'declined', 'missed', 'busy')),
    joined_at      TIMESTAMPTZ,
    left_at        TIMESTAMPTZ,
    left_reason    TEXT        CHECK (left_reason IN ('left', 'disconnected', 'removed')),
    audio_muted    BOOLEAN     NOT NULL,
    video_enabled  BOOLEAN     NOT NULL,
    screen_sharing BOOLEAN     NOT NULL,
    PRIMARY KEY (call_id, user_id)
);

CREATE INDEX call_participants_user ON call_participants (user_id, call_id);

-- Media events and quality samples have no foreign key to calls: they are written in batches
-- that may reach the database before the call's first snapshot does.
CREATE TABLE media_events (
    id             BIGSERIAL   NOT NULL PRIMARY KEY,
    call_id        UUID        NOT NULL,
    user_id        TEXT        NOT NULL,
    at             TIMESTAMPTZ NOT NULL,
    audio_muted    BOOLEAN     NOT NULL,
    video_enabled  BOOLEAN     NOT NULL,
    screen_sharing BOOLEAN     NOT NULL
);

CREATE INDEX media_events_call ON media_events (call_id, at);

CREATE TABLE quality_samples (
    id          BIGSERIAL        NOT NULL PRIMARY KEY,
    call_id     UUID             NOT NULL,
    user_id     TEXT             NOT NULL,
    direction   TEXT             NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    kind        TEXT             NOT NULL CHECK (kind IN ('audio', 'video')),
    at          TIMESTAMPTZ      NOT NULL,
    bitrate_bps BIGINT           NOT NULL,
    packet_loss DOUBLE PRECISION NOT NULL,
    jitter_ms   DOUBLE PRECISION NOT NULL,
    rtt_ms      DOUBLE PRECISION NOT NULL
);

CREATE INDEX quality_samples_call ON quality_samples (call_id, at);
