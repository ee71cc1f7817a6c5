//! The integration tests: one binary, a file per area, each test on its own database.

mod accounting;
mod admin_jobs;
mod cli;
mod console;
mod console_pages;
mod embedded;
mod health;
mod helpers;
mod isolation;
mod layers;
mod n8n_templates;
mod observability;
mod openapi;
mod pipeline;
mod platform;
mod platform_accounts;
mod platform_jwt;
mod platform_records;
mod platform_stats;
mod platform_syncs;
mod rls;
mod scheduler;
mod tokens;
mod truth;
mod vocabularies;
mod webhooks;
