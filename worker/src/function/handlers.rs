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
    /// `headers` are only cloned by handlers that hand out the whole [`Envelope`];
    /// `writer_schema` is the registered version named by `ce-dataschema`, when known.
    fn prepare(
        &self,
        payload: Bytes,
        headers: Option<&async_nats::HeaderMap>,
        ctx: Ctx,
        writer_schema: Option<Arc<CompiledSchema>>,
    ) -> Decoded;

    /// For a batched function: validates and decodes one event before it joins a batch
    /// (`Err` refuses it, as [`Decoded::SchemaViolation`] or [`Decoded::DecodeError`]).
    fn check_member(
        &self,
        _payload: &[u8],
        _writer_schema: Option<&CompiledSchema>,
    ) -> Result<(), Decoded> {
        Ok(())
    }

    /// For a batched function: decodes a batch's members (stream sequence, payload) and
    /// calls the handler with them.
    fn prepare_batch(&self, _members: Vec<(u64, Bytes)>, _ctx: Ctx) -> Decoded {
        Decoded::DecodeError("the function does not batch its events".to_owned())
    }
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
/// schema) and decodes a typed event: validation reads the bytes into a borrowed tree and
/// the event is decoded from that tree ([`CompiledSchema::decode_validated`]), so the text
/// is read once and no `serde_json::Value` is built for a valid payload.
pub(super) fn decode_event<E: Event>(
    local: Option<&CompiledSchema>,
    writer_schema: Option<&CompiledSchema>,
    payload: &[u8],
) -> Result<E, Decoded> {
    let decode_error = |error: serde_json::Error| {
        if error.is_syntax() || error.is_eof() {
            Decoded::DecodeError(format!("the payload is not JSON: {error}"))
        } else {
            Decoded::DecodeError(format!(
                "the payload does not decode as {}: {error}",
                std::any::type_name::<E>()
            ))
        }
    };
    match writer_schema.or(local) {
        Some(schema) => schema
            .decode_validated(payload)
            .map_err(|error| match error {
                herald::schema::DecodeError::Invalid(violations) => refused(&violations),
                herald::schema::DecodeError::Decode(error) => decode_error(error),
                other => Decoded::DecodeError(other.to_string()),
            }),
        None => serde_json::from_slice(payload).map_err(decode_error),
    }
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

/// Validates JSON text: a payload that is not JSON is a decode error, one that breaks the
/// schema a violation listing `path: message` pairs.
/// What a payload that fails its schema (or is not JSON) becomes.
fn refused(violations: &[herald::schema::Violation]) -> Decoded {
    match violations {
        [only] if only.path == "$" && only.message.starts_with("not JSON: ") => {
            Decoded::DecodeError(format!(
                "the payload is not JSON: {}",
                only.message.trim_start_matches("not JSON: ")
            ))
        }
        _ => Decoded::SchemaViolation(
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

fn check(schema: &CompiledSchema, payload: &[u8]) -> Result<(), Decoded> {
    schema
        .validate_json(payload)
        .map_err(|violations| refused(&violations))
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
        if let Some(schema) = &writer_schema
            && let Err(refused) = check(schema, &payload)
        {
            return refused;
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
