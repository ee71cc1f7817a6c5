//! Webhook ingestion: turning a delivered batch into stored chunks and queued jobs, durably and
//! once. The HTTP side (auth, limits, answers) is in `http::webhooks`; the processing of the
//! chunks is the worker pipeline's.

pub mod envelope;
pub mod store;
