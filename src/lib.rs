//! syncbridge: brings customer records delivered by n8n into the customer-success platform.
//!
//! `main.rs` only wires: it parses the command line ([`cli`]), loads [`config`], starts
//! [`telemetry`] and hands over to [`app`], which runs the `web`, `worker` and `scheduler`
//! processes over the [`db`] layer. [`domain`] holds the pure rules, free of HTTP and SQL.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod jwt;
pub mod mapping;
pub mod matching;
pub mod n8n;
pub mod pipeline;
pub mod scheduler;
pub mod sync;
pub mod tasks;
pub mod telemetry;
pub mod worker;
