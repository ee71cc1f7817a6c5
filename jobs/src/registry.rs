//! The registry: which job kinds a worker runs, how each is called, and the queues it serves.

use std::{collections::HashMap, future::Future, pin::Pin};

use serde_json::Value;
use sqlx::PgConnection;

use crate::job::{JobError, JobMeta, PlainJob, TransactionalJob};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type PlainFn<C> = fn(C, JobMeta, Value) -> BoxFuture<'static, Result<(), JobError>>;
type TxFn<C> = for<'a> fn(
    &'a C,
    &'a JobMeta,
    Value,
    &'a mut PgConnection,
) -> BoxFuture<'a, Result<(), JobError>>;

pub(crate) enum Handler<C> {
    Plain(PlainFn<C>),
    Transactional(TxFn<C>),
}

impl<C> Clone for Handler<C> {
    fn clone(&self) -> Self {
        match self {
            Self::Plain(f) => Self::Plain(*f),
            Self::Transactional(f) => Self::Transactional(*f),
        }
    }
}

/// Job kinds and queues of one worker, over an application context `C` handed to every handler.
pub struct Registry<C> {
    pub(crate) handlers: HashMap<&'static str, Handler<C>>,
    pub(crate) queues: HashMap<String, usize>,
}

impl<C: Clone + Send + Sync + 'static> Default for Registry<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clone + Send + Sync + 'static> Registry<C> {
    pub fn new() -> Self {
        Self {
            handlers: HashMap::new(),
            queues: HashMap::new(),
        }
    }

    /// Serves `queue` with at most `concurrency` jobs running at once in this process.
    pub fn queue(mut self, queue: &str, concurrency: usize) -> Self {
        self.queues.insert(queue.to_string(), concurrency.max(1));
        self
    }

    pub fn plain<J: PlainJob<C>>(mut self) -> Self {
        self.handlers
            .insert(J::KIND, Handler::Plain(run_plain::<C, J>));
        self.queues.entry(J::QUEUE.to_string()).or_insert(10);
        self
    }

    pub fn transactional<J: TransactionalJob<C>>(mut self) -> Self {
        self.handlers
            .insert(J::KIND, Handler::Transactional(run_transactional::<C, J>));
        self.queues.entry(J::QUEUE.to_string()).or_insert(10);
        self
    }

    pub(crate) fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.handlers.keys().map(|k| k.to_string()).collect();
        kinds.sort();
        kinds
    }
}

fn decode<J: serde::de::DeserializeOwned>(kind: &str, args: Value) -> Result<J, JobError> {
    serde_json::from_value(args)
        .map_err(|e| JobError::permanent(format!("arguments of {kind} do not decode: {e}")))
}

fn run_plain<C: Send + Sync + 'static, J: PlainJob<C>>(
    ctx: C,
    meta: JobMeta,
    args: Value,
) -> BoxFuture<'static, Result<(), JobError>> {
    Box::pin(async move {
        let job: J = decode(J::KIND, args)?;
        job.run(&ctx, &meta).await
    })
}

fn run_transactional<'a, C: Send + Sync + 'static, J: TransactionalJob<C>>(
    ctx: &'a C,
    meta: &'a JobMeta,
    args: Value,
    tx: &'a mut PgConnection,
) -> BoxFuture<'a, Result<(), JobError>> {
    Box::pin(async move {
        let job: J = decode(J::KIND, args)?;
        job.run(ctx, meta, tx).await
    })
}
