-- Placement risk-control memory (SQLite): what the removal budget and the lost-site clock
-- must remember across a scheduler restart, so a restart never grants a fresh budget or
-- quietly puts replicas back on a site that is still silent. The scheduler rewrites a
-- service's rows whenever its memory changes, and deletes them on Release.

-- Replica removals per site inside the removal window, grouped by instant.
CREATE TABLE placement_removals (
    service     TEXT NOT NULL,
    site        TEXT NOT NULL,
    removed_at  INTEGER NOT NULL,
    replicas    INTEGER NOT NULL CHECK (replicas > 0),
    PRIMARY KEY (service, site, removed_at)
);

-- Sites declared lost (silent past the grace period), and when they reported again
-- (NULL while still silent; failback is paced from that instant).
CREATE TABLE placement_lost_sites (
    service       TEXT NOT NULL,
    site          TEXT NOT NULL,
    lost_since    INTEGER NOT NULL,
    recovered_at  INTEGER,
    PRIMARY KEY (service, site)
);
