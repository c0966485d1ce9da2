-- Monitors: what PulseWatch checks. The constraints mirror the API's validation
-- (app/api/src/monitors.js), so a bad row cannot get in another way.
CREATE TABLE monitors (
    id               INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    url              TEXT        NOT NULL CHECK (char_length(url) <= 2048 AND url ~ '^https?://'),
    interval_seconds INTEGER     NOT NULL DEFAULT 60 CHECK (interval_seconds BETWEEN 10 AND 86400),
    timeout_ms       INTEGER     NOT NULL DEFAULT 5000 CHECK (timeout_ms BETWEEN 100 AND 30000),
    expected_status  SMALLINT    NOT NULL DEFAULT 200 CHECK (expected_status BETWEEN 100 AND 599),
    enabled          BOOLEAN     NOT NULL DEFAULT TRUE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (timeout_ms < interval_seconds * 1000)
);
