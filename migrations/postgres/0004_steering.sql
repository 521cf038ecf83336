-- Steering settings (issue: capacity-aware steering, gray shifting, guarded failover).
-- JSON is TEXT, as everywhere in this schema.

-- PoPs that fail together; NULL = the PoP is its own failure domain.
ALTER TABLE pops ADD COLUMN failure_domain TEXT;

-- A service's steering settings (capacity model, cost weights, guardrails, all-down
-- policy) as JSON; '{}' = every default.
ALTER TABLE services ADD COLUMN steering TEXT NOT NULL DEFAULT '{}';

-- A service's gray (canary) rule as JSON; NULL = none.
ALTER TABLE services ADD COLUMN gray TEXT;

-- An endpoint's capacity, queries per second; NULL = bounded by its PoP's capacity.
ALTER TABLE endpoints ADD COLUMN capacity DOUBLE PRECISION;

-- A client group's declared demand, queries per second; NULL = observed only.
ALTER TABLE client_groups ADD COLUMN demand DOUBLE PRECISION;
