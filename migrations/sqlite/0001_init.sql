-- Call history for SQLite.
--
-- Times are INTEGER unix milliseconds: they sort and compare as numbers, unlike sqlx's text
-- format whose fraction has a variable width. Call ids are hyphenated lower-case UUID text.
-- STRICT tables refuse a value of the wrong type instead of silently storing it.

CREATE TABLE conversations (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) STRICT;

CREATE INDEX conversation_members_user ON conversation_members (user_id);

-- No foreign key to conversations: a call's history outlives its conversation.
CREATE TABLE calls (
    id              TEXT    NOT NULL PRIMARY KEY,
    conversation_id TEXT,
    kind            TEXT    NOT NULL CHECK (kind IN ('direct', 'group')),
    media           TEXT    NOT NULL CHECK (media IN ('audio', 'video')),
    initiated_by    TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('ringing', 'ongoing', 'completed', 'missed',
                                                       'rejected', 'cancelled', 'busy', 'failed')),
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    ended_at        INTEGER,
    end_reason      TEXT,
    ended_by        TEXT,
    version         INTEGER NOT NULL
) STRICT;

CREATE INDEX calls_history ON calls (created_at DESC, id DESC);
CREATE INDEX calls_conversation ON calls (conversation_id, created_at DESC, id DESC);
CREATE INDEX calls_live ON calls (status) WHERE status IN ('ringing', 'ongoing');

CREATE TABLE call_participants (
    call_id        TEXT    NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id        TEXT    NOT NULL,
    position       INTEGER NOT NULL,
    name           TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('invited', 'ringing', 'joined', 'left',
                                                      'declined', 'missed', 'busy')),
    joined_at      INTEGER,
    left_at        INTEGER,
    left_reason    TEXT    CHECK (left_reason IN ('left', 'disconnected', 'removed')),
    audio_muted    INTEGER NOT NULL CHECK (audio_muted IN (0, 1)),
    video_enabled  INTEGER NOT NULL CHECK (video_enabled IN (0, 1)),
    screen_sharing INTEGER NOT NULL CHECK (screen_sharing IN (0, 1)),
    PRIMARY KEY (call_id, user_id)
) STRICT;

CREATE INDEX call_participants_user ON call_participants (user_id, call_id);

-- Media events and quality samples have no foreign key to calls: they are written in batches
-- that may reach the database before the call's first snapshot does.
CREATE TABLE media_events (
    id             INTEGER NOT NULL PRIMARY KEY,
    call_id        TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    at             INTEGER NOT NULL,
    audio_muted    INTEGER NOT NULL CHECK (audio_muted IN (0, 1)),
    video_enabled  INTEGER NOT NULL CHECK (video_enabled IN (0, 1)),
    screen_sharing INTEGER NOT NULL CHECK (screen_sharing IN (0, 1))
) STRICT;

CREATE INDEX media_events_call ON media_events (call_id, at);

CREATE TABLE quality_samples (
    id          INTEGER NOT NULL PRIMARY KEY,
    call_id     TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    direction   TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    kind        TEXT    NOT NULL CHECK (kind IN ('audio', 'video')),
    at          INTEGER NOT NULL,
    bitrate_bps INTEGER NOT NULL,
    packet_loss REAL    NOT NULL,
    jitter_ms   REAL    NOT NULL,
    rtt_ms      REAL    NOT NULL
) STRICT;

CREATE INDEX quality_samples_call ON quality_samples (call_id, at);
