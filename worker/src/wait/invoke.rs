//! `ctx.invoke`: calling another function and awaiting its output (protocol section 12).
//! The call is a step that parks like a wait: its timeout is the run's continuation, the
//! callee's event goes to `ns.redrive.G` with an id derived from the caller's run and step
//! (so a call published again after a crash is the same run of the callee), and the
//! callee, when its run ends, records the caller's step and fires its continuation.

use std::time::Duration;

use async_nats::jetstream::kv;
use herald::Event;
use herald::protocol::{header, runs};
use serde::de::DeserializeOwned;

use super::WAIT_UNTIL;
use crate::function::{Ctx, ErrorKind, HandlerError, Publisher, check_function_id};
use crate::runtime::continuation::{Continuation, publish_continuation};
use crate::steps::StepRecord;

/// `herald-invoke-caller: <F>`: the callee's event was sent by function `F`'s `ctx.invoke`.
pub const HEADER_CALLER: &str = "herald-invoke-caller";
/// `herald-invoke-run: <event-key>`: the caller's run.
pub const HEADER_CALLER_RUN: &str = "herald-invoke-run";
/// `herald-invoke-step: <step-key>`: the caller's step.
pub const HEADER_CALLER_STEP: &str = "herald-invoke-step";

/// The id of a call: `invoke-<F>-<event-key>-<step>`, hashed like a run id when long.
pub(crate) fn call_id(function: &str, event_key: &str, step: &str) -> String {
    runs::event_key(&format!("invoke-{function}-{event_key}-{step}"))
}

/// What the caller's step records: `{"ok": output}` or `{"error": message}`.
pub(crate) fn call_record(result: Result<serde_json::Value, String>) -> StepRecord {
    let output = match result {
        Ok(output) => serde_json::json!({ "ok": output }),
        Err(error) => serde_json::json!({ "error": error }),
    };
    StepRecord::Ok {
        output,
        attempts: 1,
        duration_ms: 0,
        finished_at: herald::headers::format_time(std::time::SystemTime::now()),
    }
}

/// Records the outcome of a call in its caller's step (first outcome wins) and wakes the
/// caller. `headers` are the callee's delivery's.
pub(crate) async fn answer(
    client: &herald::Client,
    kv: &kv::Store,
    headers: &async_nats::HeaderMap,
    result: Result<serde_json::Value, String>,
) -> Result<(), async_nats::Error> {
    let (Some(caller), Some(run), Some(step)) = (
        headers.get(HEADER_CALLER),
        headers.get(HEADER_CALLER_RUN),
        headers.get(HEADER_CALLER_STEP),
    ) else {
        return Ok(());
    };
    let key = runs::step_record_key(&runs::run_key(caller.as_str(), run.as_str()), step.as_str());
    let value = serde_json::to_vec(&call_record(result))?;
    match kv.create(&key, value.into()).await {
        Ok(_) => {
            crate::cancel::fire_now(
                client,
                caller.as_str(),
                run.as_str(),
                None,
                Some(step.as_str()),
            )
            .await?;
            Ok(())
        }
        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error.into()),
    }
}

impl Ctx {
    /// Calls function `function` with `input` and waits for its output (what its
    /// [`returning`](crate::FunctionBuilder::returning) handler returned; `null` for a plain
    /// handler), for at most `timeout`. The callee runs under its own retries and limits; its
    /// failure (dead letter, cancel, skip) or the timeout fails this step with a terminal
    /// error, so retries do not compound. A call made again after a crash is the same call:
    /// the callee runs once. While it waits the run parks. Use it with `?`.
    ///
    /// ```no_run
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "quote.requested")]
    /// # struct QuoteRequested { sku: String }
    /// # async fn handler(ctx: herald_worker::Ctx) -> Result<(), herald_worker::HandlerError> {
    /// use std::time::Duration;
    /// let price: u64 = ctx
    ///     .invoke("price", "compute-quote", &QuoteRequested { sku: "a-1".into() }, Duration::from_secs(60))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn invoke<G: Event, O: DeserializeOwned>(
        &self,
        name: &str,
        function: &str,
        input: &G,
        timeout: Duration,
    ) -> Result<O, HandlerError> {
        check_function_id(function).map_err(|e| HandlerError::terminal(e.to_string()))?;
        let run = self.run()?;
        let (key, step_key) = run.next_step_key(name);
        let decode = |output: &serde_json::Value| -> Result<O, HandlerError> {
            if let Some(error) = output.get("error") {
                return Err(HandlerError::terminal(format!(
                    "invoke `{name}`: function {function} failed: {}",
                    error.as_str().unwrap_or_default()
                )));
            }
            let ok = output.get("ok").cloned().unwrap_or(serde_json::Value::Null);
            serde_json::from_value(ok).map_err(|error| {
                HandlerError::terminal(format!(
                    "invoke `{name}`: the output of {function} does not decode: {error}"
                ))
            })
        };
        if let Some(StepRecord::Ok { output, .. }) = run
            .read_parking_step(&key, &step_key)
            .await
            .map_err(HandlerError::from)?
        {
            run.step_done();
            return decode(&output);
        }
        let Publisher::Client(client) = &self.publisher else {
            return Err(HandlerError::terminal(
                "ctx.invoke needs a worker connected to NATS",
            ));
        };
        let kv = run
            .store
            .kv()
            .ok_or_else(|| HandlerError::terminal("ctx.invoke needs the runs bucket"))?;
        let nats = |error: async_nats::Error| {
            HandlerError::retry(format!("invoke `{name}` of {function}: {error}"))
        };
        let namespace = client.namespace();
        let stream = client
            .jetstream()
            .get_stream_no_info(namespace.events_stream())
            .await
            .map_err(|e| nats(e.into()))?;
        let delivered = stream
            .get_raw_message(self.stream_sequence)
            .await
            .map_err(|e| nats(e.into()))?;
        let until = delivered
            .headers
            .get(WAIT_UNTIL)
            .and_then(|v| v.as_str().parse::<u64>().ok());
        let now = crate::steps::now_ms();
        if run.woken_for.as_deref() == Some(step_key.as_str())
            && until.is_none_or(|until| now + 1000 >= until)
        {
            // The deadline passed without an answer: record the timeout, unless one came.
            let record = call_record(Err(format!("no answer within {timeout:?}")));
            let _ = kv
                .create(
                    &key,
                    serde_json::to_vec(&record)
                        .map_err(HandlerError::terminal)?
                        .into(),
                )
                .await;
            return match run
                .read_parking_step(&key, &step_key)
                .await
                .map_err(HandlerError::from)?
            {
                Some(StepRecord::Ok { output, .. }) => {
                    run.step_done();
                    decode(&output)
                }
                _ => Err(HandlerError::retry(format!(
                    "invoke `{name}`: its outcome is not readable yet"
                ))),
            };
        }
        let at_ms = run.bounded(until.unwrap_or(now + timeout.as_millis() as u64));
        let mut headers = delivered.headers.clone();
        headers.insert(WAIT_UNTIL, at_ms.to_string().as_str());
        // 1. The timeout, as the run's continuation.
        publish_continuation(
            client,
            &Continuation {
                function: &self.function,
                event_key: run.event_key(),
                payload: delivered.payload.clone(),
                original: Some(&headers),
                stream_sequence: self.stream_sequence,
                at_ms,
                wake: Some(&step_key),
                ttl_never: run.schedules_ttl,
            },
        )
        .await
        .map_err(nats)?;
        // 2. The call: to the callee alone, as the same message however often it is sent.
        let id = call_id(&self.function, run.event_key(), &step_key);
        let mut call = async_nats::HeaderMap::new();
        call.insert(header::NATS_MSG_ID, id.as_str());
        call.insert(header::SPEC_VERSION, header::SPEC_VERSION_VALUE);
        call.insert(header::ID, id.as_str());
        call.insert(header::TYPE, G::TYPE);
        call.insert(
            header::SOURCE,
            format!("urn:herald:function:{}", self.function).as_str(),
        );
        call.insert(HEADER_CALLER, self.function.as_ref());
        call.insert(HEADER_CALLER_RUN, run.event_key());
        call.insert(HEADER_CALLER_STEP, step_key.as_str());
        let body = serde_json::to_vec(input).map_err(HandlerError::terminal)?;
        let sent = async {
            client
                .jetstream()
                .send_publish(
                    namespace.redrive_subject(function),
                    async_nats::jetstream::message::PublishMessage::build()
                        .payload(body.into())
                        .headers(call),
                )
                .await?
                .await?;
            Ok::<(), async_nats::Error>(())
        };
        if let Err(error) = sent.await {
            // The continuation is the run's way on: try the call again shortly from there.
            tracing::warn!(%error, step = %step_key, "the call could not be sent; trying again in 2 s");
            let retry_at = (crate::steps::now_ms() + 2000).min(at_ms);
            publish_continuation(
                client,
                &Continuation {
                    function: &self.function,
                    event_key: run.event_key(),
                    payload: delivered.payload.clone(),
                    original: Some(&headers),
                    stream_sequence: self.stream_sequence,
                    at_ms: retry_at,
                    wake: Some(&step_key),
                    ttl_never: run.schedules_ttl,
                },
            )
            .await
            .map_err(nats)?;
        }
        // 3. Park; the callee's answer (or the deadline) wakes the run.
        *run.parked.lock() = Some(step_key);
        Err(HandlerError {
            kind: ErrorKind::Suspend,
            message: format!("waiting in step `{name}` for function {function}"),
        })
    }
}
