//! Type-erased handlers: validate, decode and call.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use herald::Event;
use herald::schema::CompiledSchema;
use serde::Serialize;

use super::*;
use crate::envelope::Envelope;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a decoded event becomes before the handler runs.
pub(crate) enum Decoded {
    Ready(BoxFuture<Result<(), HandlerError>>),
    /// The payload broke the schema: (JSON path: message) list.
    SchemaViolation(String),
    /// The payload is not JSON, or not the handler's type.
    DecodeError(String),
}

/// A type-erased handler: validates, decodes and calls.
pub(crate) trait ErasedHandler: Send + Sync {
    /// `headers` are only cloned by handlers that hand out the whole [`Envelope`].
    /// `headers` are only cloned by handlers that hand out the whole [`Envelope`];
    /// `writer_schema` is the registered version named by `ce-dataschema`, when known.
    fn prepare(
        &self,
        payload: Bytes,
        headers: Option<&async_nats::HeaderMap>,
        ctx: Ctx,
        writer_schema: Option<Arc<CompiledSchema>>,
    ) -> Decoded;
}

pub(super) struct TypedHandler<E, F> {
    pub(super) schema: Option<Arc<CompiledSchema>>,
    pub(super) handler: F,
    pub(super) _event: PhantomData<fn(E)>,
}

impl<E, F, Fut, T> ErasedHandler for TypedHandler<E, F>
where
    E: Event,
    F: Fn(E, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
    T: Send + 'static,
{
    fn prepare(
        &self,
        payload: Bytes,
        _headers: Option<&async_nats::HeaderMap>,
        ctx: Ctx,
        writer_schema: Option<Arc<CompiledSchema>>,
    ) -> Decoded {
        let event =
            match decode_event::<E>(self.schema.as_deref(), writer_schema.as_deref(), &payload) {
                Ok(event) => event,
                Err(refused) => return refused,
            };
        let future = (self.handler)(event, ctx);
        Decoded::Ready(Box::pin(async move { future.await.map(drop) }))
    }
}

/// Validates (against the writer's registered version when it names one, else the local
/// schema) and decodes a typed event.
fn decode_event<E: Event>(
    local: Option<&CompiledSchema>,
    writer_schema: Option<&CompiledSchema>,
    payload: &[u8],
) -> Result<E, Decoded> {
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|error| Decoded::DecodeError(format!("the payload is not JSON: {error}")))?;
    if let Some(schema) = writer_schema.or(local) {
        violations(schema, &value)?;
    }
    serde_json::from_value(value).map_err(|error| {
        Decoded::DecodeError(format!(
            "the payload does not decode as {}: {error}",
            std::any::type_name::<E>()
        ))
    })
}

/// A typed handler whose output is kept for a function that invoked it.
pub(super) struct ReturningHandler<E, F> {
    pub(super) schema: Option<Arc<CompiledSchema>>,
    pub(super) handler: F,
    pub(super) _event: PhantomData<fn(E)>,
}

impl<E, F, Fut, O> ErasedHandler for ReturningHandler<E, F>
where
    E: Event,
    F: Fn(E, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    O: Serialize + Send + 'static,
{
    fn prepare(
        &self,
        payload: Bytes,
        _headers: Option<&async_nats::HeaderMap>,
        ctx: Ctx,
        writer_schema: Option<Arc<CompiledSchema>>,
    ) -> Decoded {
        let event =
            match decode_event::<E>(self.schema.as_deref(), writer_schema.as_deref(), &payload) {
                Ok(event) => event,
                Err(refused) => return refused,
            };
        let run = ctx.run.clone();
        let future = (self.handler)(event, ctx);
        Decoded::Ready(Box::pin(async move {
            let output = future.await?;
            if let Some(run) = run {
                let value = serde_json::to_value(&output).map_err(|error| {
                    HandlerError::terminal(format!("the output cannot be stored as JSON: {error}"))
                })?;
                *run.output.lock() = Some(value);
            }
            Ok(())
        }))
    }
}

fn violations(schema: &CompiledSchema, value: &serde_json::Value) -> Result<(), Decoded> {
    schema.validate(value).map_err(|violations| {
        Decoded::SchemaViolation(
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

pub(super) struct RawHandler<F> {
    pub(super) handler: F,
}

impl<F, Fut, T> ErasedHandler for RawHandler<F>
where
    F: Fn(Envelope, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
    T: Send + 'static,
{
    fn prepare(
        &self,
        payload: Bytes,
        headers: Option<&async_nats::HeaderMap>,
        ctx: Ctx,
        writer_schema: Option<Arc<CompiledSchema>>,
    ) -> Decoded {
        if let Some(schema) = &writer_schema {
            let value: serde_json::Value = match serde_json::from_slice(&payload) {
                Ok(value) => value,
                Err(error) => {
                    return Decoded::DecodeError(format!("the payload is not JSON: {error}"));
                }
            };
            if let Err(violation) = violations(schema, &value) {
                return violation;
            }
        }
        let envelope = Envelope {
            meta: Arc::clone(&ctx.envelope),
            data: payload,
            headers: headers.cloned().unwrap_or_default(),
        };
        let future = (self.handler)(envelope, ctx);
        Decoded::Ready(Box::pin(async move { future.await.map(drop) }))
    }
}
