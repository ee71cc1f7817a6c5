-- The dead jobs of one tag (in syncbridge, one integration's), counted on its console's dashboard
-- and retried or cancelled by tag, without reading every finished job of the table.
CREATE INDEX jobs_dead_tag_idx ON jobs (tag) WHERE state = 'failed';
