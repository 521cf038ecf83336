-- ASN client groups (issue 5, client groups): a group may name autonomous system numbers
-- besides or instead of prefixes. JSON is TEXT, as everywhere in this schema.

-- The group's AS numbers as a JSON array of integers; '[]' = prefixes only.
ALTER TABLE client_groups ADD COLUMN asns TEXT NOT NULL DEFAULT '[]';
