-- Probing and health (SQLite).

-- Per-endpoint probe settings beyond the check address (kind, timing, params), as JSON;
-- NULL means TCP connect with the world's [health] timing.
ALTER TABLE endpoints ADD COLUMN probe TEXT;

-- Operator health overrides, one per probe target. Every change also writes an audit row.
CREATE TABLE health_overrides (
    target_id   TEXT PRIMARY KEY,
    mode        TEXT NOT NULL CHECK (mode IN ('force_up', 'force_down', 'drain')),
    reason      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
