-- Isobar store, initial schema (PostgreSQL).
-- Integers are BIGINT (Rust i64); timestamps are Unix milliseconds; JSON is stored as TEXT
-- so both backends read and write the same strings.

-- Singleton row holding the version of the world currently in force. Appliers lock it
-- FOR UPDATE, which serializes concurrent applies.
CREATE TABLE config_state (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    version     BIGINT NOT NULL CHECK (version >= 0),
    updated_at  BIGINT NOT NULL
);
INSERT INTO config_state (id, version, updated_at) VALUES (1, 0, 0);

-- World-wide settings by section name ("defaults", "health"), as JSON.
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE regions (
    name  TEXT PRIMARY KEY,
    lat   DOUBLE PRECISION NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon   DOUBLE PRECISION NOT NULL CHECK (lon BETWEEN -180 AND 180)
);

CREATE TABLE pops (
    name           TEXT PRIMARY KEY,
    region         TEXT NOT NULL REFERENCES regions (name),
    lat            DOUBLE PRECISION NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon            DOUBLE PRECISION NOT NULL CHECK (lon BETWEEN -180 AND 180),
    capacity       BIGINT NOT NULL CHECK (capacity >= 0),
    replica_slots  BIGINT NOT NULL CHECK (replica_slots >= 0),
    labels         TEXT NOT NULL
);

CREATE TABLE zones (
    name  TEXT PRIMARY KEY
);

-- Canonical master-file lines; position keeps the zone's sorted order.
CREATE TABLE zone_records (
    zone      TEXT NOT NULL REFERENCES zones (name) ON DELETE CASCADE,
    position  BIGINT NOT NULL,
    text      TEXT NOT NULL,
    PRIMARY KEY (zone, position)
);

CREATE TABLE services (
    name     TEXT PRIMARY KEY,
    ttl      BIGINT CHECK (ttl >= 0),
    answers  BIGINT CHECK (answers >= 1),
    ecs      BOOLEAN NOT NULL,
    demand   TEXT NOT NULL
);

CREATE TABLE endpoints (
    service       TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
    pop           TEXT NOT NULL REFERENCES pops (name),
    address       TEXT NOT NULL,
    check_target  TEXT,
    weight        BIGINT NOT NULL CHECK (weight >= 0),
    labels        TEXT NOT NULL,
    PRIMARY KEY (service, pop, address)
);

CREATE TABLE client_groups (
    name    TEXT PRIMARY KEY,
    cidrs   TEXT NOT NULL,
    region  TEXT NOT NULL REFERENCES regions (name)
);

-- Scheduler state: the latest placement per service. policy and decision are opaque.
CREATE TABLE placements (
    service     TEXT PRIMARY KEY,
    policy      TEXT NOT NULL,
    decision    TEXT NOT NULL,
    version     BIGINT NOT NULL CHECK (version >= 0),
    updated_at  BIGINT NOT NULL
);

-- Orchestrator reports: ready replicas per service and site.
CREATE TABLE site_status (
    service         TEXT NOT NULL,
    site            TEXT NOT NULL,
    ready_replicas  BIGINT NOT NULL CHECK (ready_replicas >= 0),
    endpoints       TEXT NOT NULL,
    reported_at     BIGINT NOT NULL,
    PRIMARY KEY (service, site)
);

CREATE TABLE audit_log (
    id              BIGSERIAL PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    detail          TEXT NOT NULL,
    config_version  BIGINT NOT NULL
);
