//! [`Ctx::wait_for_event`]: a step that waits for another event, race-free.

use std::time::Duration;

use herald::Event;

use super::matcher::ensure_consumer;
use super::scan::scan;
use super::{Kind, Match, Registration, Resolution, check_pointer, resolve};
use crate::function::{Ctx, HandlerError, Publisher};
use crate::run_store::Lifetime;
use crate::runtime::continuation::{Continuation, publish_continuation};
use crate::steps::{RunState, StepRecord};

impl Ctx {
    /// Waits for an event of type `E` whose field at `matching`'s JSON pointer equals its
    /// value, for at most `timeout`; returns the event, or `None` when the timeout passed.
    ///
    /// Nothing sent after the run's trigger is missed: the wait looks back through the
    /// events stored since the trigger (so an event published a millisecond after it is
    /// found), and a shared matcher sees those stored later. While it waits the run holds no
    /// handler, permit or message (it parks, like a durable sleep, and any worker continues
    /// it); exactly one of the event and the timeout wakes it. Use it with `?`. The pointer
    /// must name a property of `E`'s schema. Needs nats-server 2.12+.
    ///
    /// ```no_run
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "billing.invoice_paid")]
    /// # struct InvoicePaid { invoice_id: String }
    /// # async fn handler(ctx: herald_worker::Ctx) -> Result<(), herald_worker::HandlerError> {
    /// use std::time::Duration;
    /// use herald_worker::Match;
    /// let paid = ctx
    ///     .wait_for_event::<InvoicePaid>("payment", Match::field("/invoice_id", "inv-42"), Duration::from_secs(3600))
    ///     .await?;
    /// match paid {
    ///     Some(invoice) => tracing::info!(invoice = %invoice.invoice_id, "paid"),
    ///     None => tracing::info!("not paid within the hour"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_event<E: Event>(
        &self,
        name: &str,
        matching: Match,
        timeout: Duration,
    ) -> Result<Option<E>, HandlerError> {
        check_pointer(&E::schema(), &matching.pointer).map_err(|reason| {
            HandlerError::terminal(format!("wait `{name}` for {}: {reason}", E::TYPE))
        })?;
        let run = self.run()?;
        let (key, step_key) = run.next_step_key(name);
        if let Some(StepRecord::Ok { output, .. }) =
            run.read_step(&key).await.map_err(HandlerError::from)?
        {
            run.step_done();
            return decode(name, &output);
        }
        let Publisher::Client(client) = &self.publisher else {
            return Err(HandlerError::terminal(
                "ctx.wait_for_event needs a worker connected to NATS",
            ));
        };
        let kv = run
            .store
            .kv()
            .ok_or_else(|| HandlerError::terminal("ctx.wait_for_event needs the runs bucket"))?;
        let registration = Registration {
            kind: Kind::Wait,
            function: self.function.to_string(),
            event_key: run.event_key().to_owned(),
            step: step_key.clone(),
            event_type: E::TYPE.to_owned(),
            pointer: matching.pointer.clone(),
            value: matching.value.clone(),
            after_seq: run.trigger_sequence,
        };
        let nats = |error: async_nats::Error| {
            HandlerError::retry(format!("wait `{name}` for {}: {error}", E::TYPE))
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
        // The wait's deadline, kept on its continuations across tries.
        let until = delivered
            .headers
            .get(WAIT_UNTIL)
            .and_then(|v| v.as_str().parse::<u64>().ok());
        let now = crate::steps::now_ms();
        if run.woken_for.as_deref() == Some(step_key.as_str())
            && until.is_none_or(|until| now + 1000 >= until)
        {
            // Woken without an outcome at its deadline: the timeout. Record it, unless a
            // match won.
            resolve(client, &kv, &registration, Resolution::Timeout)
                .await
                .map_err(nats)?;
            return self.outcome_of(run, &key, name).await;
        }
        let at_ms = run.bounded(until.unwrap_or(now + timeout.as_millis() as u64));
        let mut headers = delivered.headers.clone();
        headers.insert(WAIT_UNTIL, at_ms.to_string().as_str());
        let continuation = |at_ms| Continuation {
            function: &self.function,
            event_key: run.event_key(),
            payload: delivered.payload.clone(),
            original: Some(&headers),
            stream_sequence: self.stream_sequence,
            at_ms,
            wake: Some(&step_key),
            ttl_never: run.schedules_ttl,
        };
        // 1. The timeout, as the run's continuation; what wakes the run early is a fire of it.
        let (schedule, _) = publish_continuation(client, &continuation(at_ms))
            .await
            .map_err(nats)?;
        // From here the continuation is the run's one way on: a failure parks the run with
        // a continuation that tries the wait again shortly (a retry of this delivery as
        // well would run the rest of the run twice at once).
        let found = match self
            .register_and_look_back::<E>(client, &kv, &registration)
            .await
        {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, step = %step_key, "the wait could not be set up; trying again in 2 s");
                let retry_at = (crate::steps::now_ms() + 2000).min(at_ms);
                publish_continuation(client, &continuation(retry_at))
                    .await
                    .map_err(nats)?;
                *run.parked.lock() = Some(step_key);
                return Err(HandlerError {
                    kind: crate::function::ErrorKind::Suspend,
                    message: format!("wait `{name}` for {}: {error}", E::TYPE),
                });
            }
        };
        if let Some(found) = found {
            let record = super::resolve::outcome_record(Resolution::Event {
                id: &found.id,
                data: &found.data,
            });
            let bytes = serde_json::to_vec(&record).map_err(HandlerError::terminal)?;
            if kv.create(&key, bytes.into()).await.is_ok() {
                // This attempt goes on: its timeout is not needed.
                let _ = stream.purge().filter(&schedule).await;
                let _ = kv.delete(registration.key()).await;
                run.records.lock().push((key, record.clone()));
                run.step_done();
                let StepRecord::Ok { output, .. } = record else {
                    return Ok(None);
                };
                return decode(name, &output);
            }
            // The matcher recorded it first and fired the continuation: that delivery goes
            // on from here; this attempt parks.
        }
        // 5. Park: the records read so far live until the timeout (best effort: a record
        // that expires early is only written again by a later attempt).
        let records = run.records.lock().clone();
        for (record_key, record) in records {
            let _ = run
                .store
                .put(&record_key, &record, Lifetime::Beyond(at_ms))
                .await;
        }
        *run.parked.lock() = Some(step_key);
        Err(HandlerError {
            kind: crate::function::ErrorKind::Suspend,
            message: format!("waiting in step `{name}` for {}", E::TYPE),
        })
    }

    /// Stores the registration, makes sure the matcher consumer exists, reads the
    /// watermark, and looks back from the trigger up to it.
    async fn register_and_look_back<E: Event>(
        &self,
        client: &herald::Client,
        kv: &async_nats::jetstream::kv::Store,
        registration: &Registration,
    ) -> Result<Option<super::scan::Found>, async_nats::Error> {
        // 2. The registration, then 3. the matcher consumer: both exist before the watermark.
        kv.put(registration.key(), serde_json::to_vec(registration)?.into())
            .await?;
        ensure_consumer(client, E::TYPE).await?;
        let mut events = client
            .jetstream()
            .get_stream(client.namespace().events_stream())
            .await?;
        let watermark = events.info().await?.state.last_sequence;
        // 4. The look-back: events stored after the trigger, up to the watermark.
        scan(
            client,
            E::TYPE,
            &registration.pointer,
            &registration.value,
            registration.after_seq,
            watermark,
        )
        .await
    }

    /// The recorded outcome of a wait step.
    async fn outcome_of<E: Event>(
        &self,
        run: &RunState,
        key: &str,
        name: &str,
    ) -> Result<Option<E>, HandlerError> {
        match run
            .store
            .get_until::<StepRecord>(key, run.deadline())
            .await
            .map_err(HandlerError::from)?
        {
            Some(StepRecord::Ok { output, .. }) => {
                run.step_done();
                decode(name, &output)
            }
            _ => Err(HandlerError::retry(format!(
                "wait `{name}`: its outcome is not readable yet"
            ))),
        }
    }
}

/// `herald-wait-until: <Unix ms>`: on a wait's continuation, the wait's deadline.
pub const WAIT_UNTIL: &str = "herald-wait-until";

/// A wait's stored output: `null` (timed out) or `{"id", "data"}`.
fn decode<E: Event>(name: &str, output: &serde_json::Value) -> Result<Option<E>, HandlerError> {
    let Some(data) = output.get("data") else {
        return Ok(None);
    };
    serde_json::from_value(data.clone())
        .map(Some)
        .map_err(|error| {
            HandlerError::terminal(format!(
                "wait `{name}`: the awaited {} does not decode: {error}",
                E::TYPE
            ))
        })
}
