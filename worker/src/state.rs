//! [`State`]: shared state handed to every call of a handler, as axum's `State`.

use std::future::Future;

use herald::Event;

use crate::envelope::Envelope;
use crate::function::{Ctx, Function, FunctionBuilder, HandlerError};

/// State shared by every call of a handler: a database pool, an HTTP client, settings.
/// It is cloned for each call, so keep it cheap to clone (an `Arc`, a pool handle).
///
/// ```
/// use herald_worker::{Ctx, Function, HandlerError, State};
/// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
/// # #[event(type = "source.connected")]
/// # struct SourceConnected { source_id: String }
///
/// #[derive(Clone)]
/// struct Sources {
///     base_url: String,
/// }
///
/// async fn backfill(
///     event: SourceConnected,
///     _ctx: Ctx,
///     State(sources): State<Sources>,
/// ) -> Result<(), HandlerError> {
///     let _url = format!("{}/{}", sources.base_url, event.source_id);
///     Ok(())
/// }
///
/// let function = Function::new("backfill-user-data")
///     .on::<SourceConnected>()
///     .attempts(5) // settings first, the state last, then the handler
///     .state(Sources { base_url: "https://api.example.com".into() })
///     .handler(backfill);
/// assert!(function.check().is_ok());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State<S>(pub S);

/// A function with its state, waiting for its handler; made by
/// [`FunctionBuilder::state`].
#[derive(Debug)]
#[must_use = "a function needs a handler"]
pub struct StatefulBuilder<E, S> {
    builder: FunctionBuilder<E>,
    state: S,
}

impl<E> FunctionBuilder<E> {
    /// Hands `state` to every call of the handler as its third argument, [`State<S>`].
    /// Call it after the settings, right before [`handler`](StatefulBuilder::handler).
    pub fn state<S>(self, state: S) -> StatefulBuilder<E, S>
    where
        S: Clone + Send + Sync + 'static,
    {
        StatefulBuilder {
            builder: self,
            state,
        }
    }
}

impl<E: Event, S: Clone + Send + Sync + 'static> StatefulBuilder<E, S> {
    /// Sets the handler: `async fn(E, Ctx, State<S>) -> Result<T, HandlerError>`.
    pub fn handler<F, Fut, T>(self, handler: F) -> Function
    where
        F: Fn(E, Ctx, State<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.state;
        self.builder
            .handler(move |event: E, ctx: Ctx| handler(event, ctx, State(state.clone())))
    }
}

impl<S: Clone + Send + Sync + 'static> StatefulBuilder<Envelope, S> {
    /// Sets the handler of an untyped function:
    /// `async fn(Envelope, Ctx, State<S>) -> Result<T, HandlerError>`.
    pub fn handler<F, Fut, T>(self, handler: F) -> Function
    where
        F: Fn(Envelope, Ctx, State<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.state;
        self.builder
            .handler(move |event: Envelope, ctx: Ctx| handler(event, ctx, State(state.clone())))
    }
}
