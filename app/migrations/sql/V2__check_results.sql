-- One row per HTTP check the worker made. Deleting a monitor deletes its history.
CREATE TABLE check_results (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    monitor_id  INTEGER     NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    checked_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ok          BOOLEAN     NOT NULL,
    status_code SMALLINT CHECK (status_code BETWEEN 100 AND 599),
    latency_ms  INTEGER     NOT NULL CHECK (latency_ms >= 0),
    error       TEXT
);

-- The worker asks for the latest check per monitor; the API lists a monitor's recent checks.
CREATE INDEX check_results_monitor_checked_at ON check_results (monitor_id, checked_at DESC);
