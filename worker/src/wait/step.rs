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

/// One of the events a [`Ctx::wait_for_any`] waits for.
#[derive(Debug, Clone)]
pub struct Awaited {
    event_type: &'static str,
    matching: Match,
    /// Why the pointer does not fit the type's schema, if it does not.
    invalid: Option<String>,
}

impl Awaited {
    /// An event of type `E` matching `matching` (its pointer checked against `E`'s schema).
    pub fn of<E: Event>(matching: Match) -> Awaited {
        Awaited {
            event_type: E::TYPE,
            invalid: check_pointer(&E::schema(), &matching.pointer).err(),
            matching,
        }
    }
}

/// The event a [`Ctx::wait_for_any`] got.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyEvent {
    /// Its type.
    pub event_type: String,
    /// Its id (`ce-id`).
    pub id: String,
    /// Its data.
    pub data: serde_json::Value,
}

impl AnyEvent {
    /// Whether it is an `E`.
    pub fn is<E: Event>(&self) -> bool {
        self.event_type == E::TYPE
    }

    /// Its data as an `E`.
    pub fn decode<E: Event>(&self) -> Result<E, serde_json::Error> {
        serde_json::from_value(self.data.clone())
    }
}

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
        let got = self
            .wait_for_any(name, vec![Awaited::of::<E>(matching)], timeout)
            .await?;
        got.map(|event| {
            event.decode::<E>().map_err(|error| {
                HandlerError::terminal(format!(
                    "wait `{name}`: the awaited {} does not decode: {error}",
                    E::TYPE
                ))
            })
        })
        .transpose()
    }

    /// Waits for the first of several events (each a type and a match), for at most
    /// `timeout`: as [`wait_for_event`](Self::wait_for_event), with one outcome for all.
    ///
    /// ```no_run
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "billing.invoice_paid")]
    /// # struct InvoicePaid { invoice_id: String }
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "billing.invoice_voided")]
    /// # struct InvoiceVoided { invoice_id: String }
    /// # async fn handler(ctx: herald_worker::Ctx) -> Result<(), herald_worker::HandlerError> {
    /// use std::time::Duration;
    /// use herald_worker::{Awaited, Match};
    /// let first = ctx
    ///     .wait_for_any(
    ///         "paid or voided",
    ///         vec![
    ///             Awaited::of::<InvoicePaid>(Match::field("/invoice_id", "inv-42")),
    ///             Awaited::of::<InvoiceVoided>(Match::field("/invoice_id", "inv-42")),
    ///         ],
    ///         Duration::from_secs(3600),
    ///     )
    ///     .await?;
    /// if let Some(event) = first.filter(|e| e.is::<InvoicePaid>()) {
    ///     let paid: InvoicePaid = event.decode().map_err(herald_worker::HandlerError::terminal)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_any(
        &self,
        name: &str,
        awaited: Vec<Awaited>,
        timeout: Duration,
    ) -> Result<Option<AnyEvent>, HandlerError> {
        if awaited.is_empty() {
            return Err(HandlerError::terminal(format!(
                "wait `{name}`: no event to wait for"
            )));
        }
        if let Some(awaited) = awaited.iter().find(|a| a.invalid.is_some()) {
            return Err(HandlerError::terminal(format!(
                "wait `{name}` for {}: {}",
                awaited.event_type,
                awaited.invalid.clone().unwrap_or_default()
            )));
        }
        let types: Vec<&str> = awaited.iter().map(|a| a.event_type).collect();
        let types = types.join(" or ");
        let run = self.run()?;
        let (key, step_key) = run.next_step_key(name);
        if let Some(StepRecord::Ok { output, .. }) = run
            .read_parking_step(&key, &step_key)
            .await
            .map_err(HandlerError::from)?
        {
            run.step_done();
            return Ok(decode_any(&output));
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
        let mut registrations: Vec<Registration> = awaited
            .iter()
            .map(|a| Registration {
                kind: Kind::Wait,
                function: self.function.to_string(),
                event_key: run.event_key().to_owned(),
                step: step_key.clone(),
                event_type: a.event_type.to_owned(),
                pointer: a.matching.pointer.clone(),
                value: a.matching.value.clone(),
                after_seq: run.trigger_sequence,
                siblings: Vec::new(),
            })
            .collect();
        let keys: Vec<String> = registrations.iter().map(Registration::key).collect();
        for registration in &mut registrations {
            let own = registration.key();
            registration.siblings = keys.iter().filter(|k| **k != own).cloned().collect();
        }
        let registration = registrations[0].clone();
        let nats = |error: async_nats::Error| {
            HandlerError::retry(format!("wait `{name}` for {types}: {error}"))
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
        let set_up = async {
            let Some((event_type, found)) = self
                .register_and_look_back(client, &kv, &registrations)
                .await?
            else {
                return Ok(None);
            };
            let record = super::resolve::outcome_record(
                Resolution::Event {
                    event_type: &event_type,
                    id: &found.id,
                    data: &found.data,
                },
                super::resolve::Resolver::LookBack,
            );
            super::resolve::record_look_back(&kv, &key, &record).await
        };
        let goes_on = match set_up.await {
            Ok(goes_on) => goes_on,
            Err(error) => {
                tracing::warn!(%error, step = %step_key, "the wait could not be set up; trying again in 2 s");
                let retry_at = (crate::steps::now_ms() + 2000).min(at_ms);
                publish_continuation(client, &continuation(retry_at))
                    .await
                    .map_err(nats)?;
                *run.parked.lock() = Some(step_key);
                return Err(HandlerError {
                    kind: crate::function::ErrorKind::Suspend,
                    message: format!("wait `{name}` for {types}: {error}"),
                });
            }
        };
        if let Some(record) = goes_on {
            // The look-back decided: this attempt goes on, its timeout is not needed.
            let _ = stream.purge().filter(&schedule).await;
            for key in &keys {
                let _ = kv.delete(key).await;
            }
            run.records.lock().push((key, record.clone()));
            run.step_done();
            let StepRecord::Ok { output, .. } = record else {
                return Ok(None);
            };
            return Ok(decode_any(&output));
        }
        // Otherwise a matcher recorded the event first and fires the continuation: that
        // delivery goes on from here; this attempt parks.
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
            message: format!("waiting in step `{name}` for {types}"),
        })
    }

    /// Stores the registrations, makes sure their matcher consumers exist, reads the
    /// watermark, and looks back from the trigger up to it: the first match, by stream
    /// order, with its type.
    async fn register_and_look_back(
        &self,
        client: &herald::Client,
        kv: &async_nats::jetstream::kv::Store,
        registrations: &[Registration],
    ) -> Result<Option<(String, super::scan::Found)>, async_nats::Error> {
        // 2. The registrations, then 3. the matcher consumers: all exist before the watermark.
        for registration in registrations {
            kv.put(registration.key(), serde_json::to_vec(registration)?.into())
                .await?;
            ensure_consumer(client, &registration.event_type).await?;
        }
        let mut events = client
            .jetstream()
            .get_stream(client.namespace().events_stream())
            .await?;
        let watermark = events.info().await?.state.last_sequence;
        // 4. The look-back: events stored after the trigger, up to the watermark.
        let mut first: Option<(String, super::scan::Found)> = None;
        for registration in registrations {
            let found = scan(
                client,
                &registration.event_type,
                &registration.pointer,
                &registration.value,
                registration.after_seq,
                watermark,
            )
            .await?;
            if let Some(found) = found
                && first
                    .as_ref()
                    .is_none_or(|(_, f)| found.sequence < f.sequence)
            {
                first = Some((registration.event_type.clone(), found));
            }
        }
        Ok(first)
    }

    /// The recorded outcome of a wait step.
    async fn outcome_of(
        &self,
        run: &RunState,
        key: &str,
        name: &str,
    ) -> Result<Option<AnyEvent>, HandlerError> {
        // From the leader: the record may have been written by the resolver an instant ago.
        match crate::run_store::until(run.deadline(), || {
            run.store.get_from_leader::<StepRecord>(key)
        })
        .await
        .map_err(HandlerError::from)?
        {
            Some(StepRecord::Ok { output, .. }) => {
                run.step_done();
                Ok(decode_any(&output))
            }
            _ => Err(HandlerError::retry(format!(
                "wait `{name}`: its outcome is not readable yet"
            ))),
        }
    }
}

/// `herald-wait-until: <Unix ms>`: on a wait's continuation, the wait's deadline.
pub const WAIT_UNTIL: &str = "herald-wait-until";

/// A wait's stored output: `null` (timed out) or `{"type", "id", "data"}`.
fn decode_any(output: &serde_json::Value) -> Option<AnyEvent> {
    let data = output.get("data")?;
    Some(AnyEvent {
        event_type: output
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned(),
        id: output
            .get("id")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned(),
        data: data.clone(),
    })
}
