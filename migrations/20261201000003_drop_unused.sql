-- Never read or written since the seed: integrations' settings have their own columns.
ALTER TABLE integration_sources DROP COLUMN config;
