//! [`BatchBuilder`]: a function whose handler gets a key's events together, and its
//! type-erased handler.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald::Event;
use herald::schema::CompiledSchema;

use super::handlers::{Decoded, ErasedHandler, decode_event};
use super::*;
use crate::flow::batch::Batch;

impl<E: Event> FunctionBuilder<E> {
    /// Batches the function's events: they are collected per key (one batch for the whole
    /// function without [`BatchBuilder::key`]) and the handler gets them together, as a
    /// `Vec<E>` in the order they were published (stream order), once `max_size` events joined or `timeout` passed
    /// since the first one, whichever comes first. Each event lands in exactly one batch; a
    /// retried or redriven batch gets the same events again. An event that breaks its schema
    /// is dead-lettered alone and joins no batch. Needs nats-server 2.12+ (the timeout is a
    /// scheduled message). `max_size` is 1 to 1000, `timeout` 1 s to 1 h.
    ///
    /// Set the function's other settings before `batch`; settings that decide per event
    /// (throttle, rate limit, singleton, priority, debounce, `cancel_on`, a keyed
    /// concurrency limit) cannot be combined with it.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "page.viewed")]
    /// # struct PageViewed { site: String, path: String }
    /// use std::time::Duration;
    /// use herald_worker::{Ctx, Function, HandlerError};
    ///
    /// // One insert per 100 views of a site, or every 5 s.
    /// let store_views = Function::new("store-views")
    ///     .on::<PageViewed>()
    ///     .batch(100, Duration::from_secs(5))
    ///     .key(|e: &PageViewed| e.site.clone())
    ///     .handler(|views: Vec<PageViewed>, _ctx: Ctx| async move {
    ///         tracing::info!(views = views.len(), "inserting a batch");
    ///         Ok::<(), HandlerError>(())
    ///     });
    /// assert!(store_views.check().is_ok());
    /// ```
    pub fn batch(mut self, max_size: u32, timeout: Duration) -> BatchBuilder<E> {
        self.settings.batch = Some(Batch {
            max_size,
            timeout,
            key: None,
        });
        BatchBuilder { function: self }
    }
}

/// A batched function under construction: [`key`](Self::key), then
/// [`handler`](Self::handler). Made by [`FunctionBuilder::batch`].
#[must_use = "a function does nothing until it gets a handler and is added to a worker"]
#[derive(Debug)]
pub struct BatchBuilder<E> {
    function: FunctionBuilder<E>,
}

impl<E: Event> BatchBuilder<E> {
    /// Batches per key: a batch holds the events of one key only.
    pub fn key<K, F>(mut self, key: F) -> Self
    where
        F: Fn(&E) -> K + Send + Sync + 'static,
        K: AsRef<str>,
    {
        let key_of: crate::flow::debounce::KeyOf = Arc::new(move |payload: &[u8]| {
            serde_json::from_slice::<E>(payload)
                .map(|event| key(&event).as_ref().to_owned())
                .map_err(|error| error.to_string())
        });
        if let Some(batch) = self.function.settings.batch.as_mut() {
            batch.key = Some(key_of);
        }
        self
    }

    /// Sets the handler: `async fn(Vec<E>, Ctx) -> Result<T, HandlerError>`. Its steps,
    /// retries and run record are the batch's (run key `F.<batch id>`).
    pub fn handler<F, Fut, T>(self, handler: F) -> Function
    where
        F: Fn(Vec<E>, Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
        T: Send + 'static,
    {
        self.function.typed(|schema| {
            Arc::new(BatchHandler::<E, F> {
                schema,
                handler,
                _event: PhantomData,
            })
        })
    }
}

struct BatchHandler<E, F> {
    schema: Option<Arc<CompiledSchema>>,
    handler: F,
    _event: PhantomData<fn(E)>,
}

impl<E, F, Fut, T> ErasedHandler for BatchHandler<E, F>
where
    E: Event,
    F: Fn(Vec<E>, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
    T: Send + 'static,
{
    fn prepare(
        &self,
        _payload: Bytes,
        _headers: Option<&async_nats::HeaderMap>,
        _ctx: Ctx,
        _writer_schema: Option<Arc<CompiledSchema>>,
    ) -> Decoded {
        // The runtime hands a batch function only batches (`prepare_batch`).
        Decoded::DecodeError("a batched function runs batches, not single events".to_owned())
    }

    fn check_member(
        &self,
        payload: &[u8],
        writer_schema: Option<&CompiledSchema>,
    ) -> Result<(), Decoded> {
        decode_event::<E>(self.schema.as_deref(), writer_schema, payload).map(drop)
    }

    fn prepare_batch(&self, members: Vec<(u64, Bytes)>, ctx: Ctx) -> Decoded {
        let mut events = Vec::with_capacity(members.len());
        for (sequence, payload) in members {
            match serde_json::from_slice::<E>(&payload) {
                Ok(event) => events.push(event),
                Err(error) => {
                    return Decoded::DecodeError(format!(
                        "the batch's member at stream sequence {sequence} does not decode as {}: {error}",
                        std::any::type_name::<E>()
                    ));
                }
            }
        }
        let future = (self.handler)(events, ctx);
        Decoded::Ready(Box::pin(async move { future.await.map(drop) }))
    }
}
