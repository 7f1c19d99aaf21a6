//! Batching (protocol section 19): an event joins its key's open batch in `ns-runs` by a
//! conditional write and is acked; the batch's timer (a scheduled message) or the event
//! that fills it starts the batch's run, which closes the batch, records its members and
//! marks each of them `batched` before the handler gets them all.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use herald::protocol::{self, header, runs};

use super::FunctionLoop;
use super::continuation::schedule_time;
use super::decide::Outcome;
use super::delivery::{Delivery, log};
use crate::DeadLetterReason;
use crate::flow::batch::{
    self, Batch, HEADER_BATCH, HEADER_BATCH_KEY, Join, Members, Open, members_key, open_key,
    timer_subject,
};
use crate::flow::debounce::key_token;
use crate::function::Decoded;
use crate::run_store::{Lifetime, RunStore, RunStoreError, Write, WriteError};
use crate::steps::{RunRecord, RunState, RunStatus};

/// Conflicting writes tried again (each means another event of the key came in between).
const ROUNDS: usize = 50;
/// Member records, markers and member events written or read at once.
const IN_FLIGHT: usize = 64;
/// How long past its timer an open batch is taken to have lost it (its run found no batch:
/// the worker that opened it stalled between the timer and the record): the next event of
/// the key sets a new one, due at once. A run that was only slow to start runs twice, the
/// second acked as finished.
const OVERDUE: Duration = Duration::from_secs(60);

/// What batching made of a delivery.
pub(super) enum Batched {
    /// Settled without a handler: the event joined a batch (or was refused).
    Settled(Outcome),
    /// A batch's run: the handler gets these members (stream sequence, data).
    Run(Vec<(u64, Bytes)>),
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

impl FunctionLoop {
    /// A batched function's delivery: an event joins its key's batch; a batch's run gets
    /// its members.
    pub(super) async fn batched(&self, delivery: &Delivery, run: &RunState) -> Batched {
        let Some(settings) = self.function.settings.batch.as_ref() else {
            return Batched::Run(Vec::new());
        };
        if let Some(batch) = delivery.header(HEADER_BATCH) {
            let token = delivery.header(HEADER_BATCH_KEY).unwrap_or("_");
            let members = self.batch_members(delivery, &run.store, batch, token);
            return match self.keep_alive(delivery, members).await {
                Ok(Some(members)) => Batched::Run(members),
                Ok(None) => {
                    log!(
                        delivery,
                        info,
                        batch,
                        "a timer of a batch that never opened; acked"
                    );
                    Batched::Settled(Outcome::Batched)
                }
                Err(error) => Batched::Settled(Outcome::StoreUnavailable(format!(
                    "the members of batch {batch} cannot be read: {error}"
                ))),
            };
        }
        let meta = &delivery.meta;
        let writer_schema = self
            .shared
            .writer_schemas
            .resolve(meta.data_schema.as_deref(), &meta.event_type)
            .await;
        match self
            .function
            .handler
            .check_member(&delivery.data, writer_schema.as_deref())
        {
            Ok(()) => {}
            Err(Decoded::SchemaViolation(violations)) => {
                return Batched::Settled(Outcome::Invalid {
                    reason: DeadLetterReason::SchemaViolation,
                    error: format!(
                        "the payload breaks the schema of {}: {violations}",
                        meta.event_type
                    ),
                });
            }
            Err(Decoded::DecodeError(error)) => {
                return Batched::Settled(Outcome::Invalid {
                    reason: DeadLetterReason::DecodeError,
                    error,
                });
            }
            Err(Decoded::Ready(_)) => {}
        }
        let token = match &settings.key {
            Some(key_of) => match key_of(&delivery.data) {
                Ok(key) => key_token(&key),
                Err(error) => {
                    return Batched::Settled(Outcome::Invalid {
                        reason: DeadLetterReason::DecodeError,
                        error: format!("the batch key cannot be read: {error}"),
                    });
                }
            },
            None => "_".to_owned(),
        };
        let join = self.join(delivery, &run.store, settings, &token);
        match self.keep_alive(delivery, join).await {
            Ok(batch) => {
                log!(delivery, debug, key = %token, batch, "joined a batch");
                Batched::Settled(Outcome::Batched)
            }
            Err(error) => Batched::Settled(Outcome::StoreUnavailable(format!(
                "the event cannot join its batch: {error}"
            ))),
        }
    }

    /// Appends the event to its key's open batch, or opens one; returns the batch id.
    async fn join(
        &self,
        delivery: &Delivery,
        store: &RunStore,
        settings: &Batch,
        token: &str,
    ) -> Result<String, Failure> {
        let function = &*self.function.id;
        let key = open_key(function, token);
        let event_key = runs::event_key(delivery.event_id());
        let member = (delivery.stream_sequence, event_key.clone());
        for round in 0..ROUNDS {
            let mut opened = None;
            let (sequence, open) = read_open(store, &key).await?;
            let decision = batch::join(open.as_ref(), &event_key, settings.max_size);
            if decision == Join::Member {
                return Ok(open.map(|o| o.batch).unwrap_or_default());
            }
            // A redelivered event may have joined a batch that ran since: its marker was
            // written before that batch's record was replaced, so before the read above.
            if round == 0
                && delivery.delivered > 1
                && let Some(record) =
                    read_leader::<RunRecord>(store, &event_key_run(function, &event_key)).await?
                && record.status == RunStatus::Batched
            {
                return Ok(record.detail.unwrap_or_default());
            }
            let next = match (decision, open) {
                (Join::Append { closes }, Some(mut open)) => {
                    let now = crate::steps::now_ms();
                    if !closes && now > open.timer_ms + OVERDUE.as_millis() as u64 {
                        // Its timer is lost: a new one, due at once.
                        self.set_timer(delivery, &open.batch, token, now).await?;
                        open.timer_ms = now;
                    }
                    open.members.push(member.clone());
                    open.closed = closes;
                    open
                }
                (_, previous) => {
                    if let Some(previous) = previous {
                        // Closed (or full): its members are recorded before it is replaced.
                        freeze(store, function, token, &previous).await?;
                    }
                    let batch = batch::new_batch_id();
                    let now = crate::steps::now_ms();
                    // The timer first: a batch never exists without one.
                    let due = now + settings.timeout.as_millis() as u64;
                    self.set_timer(delivery, &batch, token, due).await?;
                    opened = Some(batch.clone());
                    Open {
                        batch,
                        first_ms: now,
                        timer_ms: due,
                        members: vec![member.clone()],
                        closed: settings.max_size == 1,
                    }
                }
            };
            let value = serde_json::to_vec(&next).map_err(|e| Box::new(e) as Failure)?;
            let write = Write {
                key: &key,
                value: value.into(),
                expected: sequence,
                ttl: None,
            };
            match store.write_if(&write).await {
                Ok(_) => {
                    if next.closed {
                        // Full: its run starts now rather than at the timeout.
                        let subject =
                            timer_subject(self.shared.client.namespace(), function, &next.batch);
                        crate::cancel::fire_schedule(
                            &self.shared.client,
                            function,
                            &subject,
                            None,
                            None,
                        )
                        .await?;
                    }
                    return Ok(next.batch);
                }
                Err(error) => {
                    if let Some(batch) = opened {
                        // Another event opened the key's batch first: this timer would
                        // fire a run of a batch that never opened.
                        self.remove_timer(&batch).await;
                    }
                    match error {
                        WriteError::Conflict => continue,
                        WriteError::Failed(error) => return Err(error.into()),
                    }
                }
            }
        }
        Err(format!("the open batch {key} kept changing ({ROUNDS} tries)").into())
    }

    /// Schedules the batch's run at `at_ms`: `ce-id` the batch id, the opening event's type,
    /// source and trace context, `herald-batch` and `herald-batch-key`.
    async fn set_timer(
        &self,
        delivery: &Delivery,
        batch: &str,
        token: &str,
        at_ms: u64,
    ) -> Result<(), Failure> {
        let namespace = self.shared.client.namespace();
        // A binary-mode event of the opener's type and source (whatever mode the opener
        // came in), and its trace context.
        let meta = &delivery.meta;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::SPEC_VERSION, header::SPEC_VERSION_VALUE);
        headers.insert(header::ID, batch);
        headers.insert(header::TYPE, &*meta.event_type);
        headers.insert(header::SOURCE, &*meta.source);
        for name in [header::TRACEPARENT, header::TRACESTATE] {
            if let Some(value) = delivery.header(name) {
                headers.insert(name, value);
            }
        }
        headers.insert(HEADER_BATCH, batch);
        headers.insert(HEADER_BATCH_KEY, token);
        headers.insert(
            header::NATS_SCHEDULE,
            protocol::schedule_at(&schedule_time(at_ms)),
        );
        headers.insert(
            header::NATS_SCHEDULE_TARGET,
            namespace.redrive_subject(&self.function.id).as_str(),
        );
        if self.shared.schedules_ttl {
            headers.insert(header::NATS_TTL, header::TTL_NEVER);
        }
        let body = serde_json::json!({ "batch": batch, "key": token }).to_string();
        self.shared
            .client
            .jetstream()
            .send_publish(
                timer_subject(namespace, &self.function.id, batch),
                PublishMessage::build()
                    .payload(Bytes::from(body))
                    .headers(headers),
            )
            .await?
            .await?;
        Ok(())
    }

    /// Removes the timer of a batch that did not open (its run would find no batch and be
    /// acked; this saves the delivery).
    async fn remove_timer(&self, batch: &str) {
        let subject = timer_subject(self.shared.client.namespace(), &self.function.id, batch);
        let js = self.shared.client.jetstream();
        let purged = match js.get_stream_no_info(&self.shared.events_stream).await {
            Ok(stream) => stream
                .purge()
                .filter(subject)
                .await
                .map(drop)
                .map_err(Failure::from),
            Err(error) => Err(error.into()),
        };
        if let Err(error) = purged {
            tracing::debug!(function = %self.function.id, batch, %error, "the timer of a batch that did not open stays; its run will be acked");
        }
    }

    /// A batch's members, read when its run starts: from the key's open batch (closed,
    /// recorded and removed here) or from the batch's member record; `None` when the batch
    /// never opened (its timer outlived a failed first write).
    async fn batch_members(
        &self,
        delivery: &Delivery,
        store: &RunStore,
        batch: &str,
        token: &str,
    ) -> Result<Option<Vec<(u64, Bytes)>>, Failure> {
        let function = &*self.function.id;
        let key = open_key(function, token);
        let mut members = None;
        let mut read = false;
        for _ in 0..ROUNDS {
            let (sequence, open) = read_open(store, &key).await?;
            let Some(mut open) = open.filter(|o| o.batch == batch) else {
                // From the leader: a replica that has not applied the record yet would
                // make a batch that ran look like one that never opened.
                members = read_leader::<Members>(store, &members_key(function, batch))
                    .await?
                    .map(|m| m.members);
                read = true;
                break;
            };
            let mut last = sequence;
            if !open.closed {
                open.closed = true;
                let value = serde_json::to_vec(&open).map_err(|e| Box::new(e) as Failure)?;
                let write = Write {
                    key: &key,
                    value: value.into(),
                    expected: sequence,
                    ttl: None,
                };
                match store.write_if(&write).await {
                    Ok(written) => last = written,
                    Err(WriteError::Conflict) => continue,
                    Err(WriteError::Failed(error)) => return Err(error.into()),
                }
            }
            freeze(store, function, token, &open).await?;
            // The next event opens the key's next batch; one that came first did already.
            let _ = store.delete_if(&key, last).await;
            members = Some(open.members);
            read = true;
            break;
        }
        if !read {
            return Err(format!("the open batch {key} kept changing ({ROUNDS} tries)").into());
        }
        let Some(mut members) = members else {
            return Ok(None);
        };
        // In the order they were published, whatever order they joined in.
        members.sort_unstable();
        log!(
            delivery,
            debug,
            batch,
            members = members.len(),
            "a batch's run starts"
        );
        Ok(Some(self.load_members(delivery, &members).await?))
    }

    /// The members' data, read from the events stream by sequence, in order; a member no
    /// longer in the stream (past its `max_age`) is left out with a warning.
    async fn load_members(
        &self,
        delivery: &Delivery,
        members: &[batch::Member],
    ) -> Result<Vec<(u64, Bytes)>, Failure> {
        let js = self.shared.client.jetstream();
        let stream = js.get_stream_no_info(&self.shared.events_stream).await?;
        let reads: Vec<_> = members
            .iter()
            .map(|&(sequence, _)| {
                let stream = stream.clone();
                let prefix = self.shared.events_prefix.clone();
                async move { load_member(&stream, &prefix, sequence).await }
            })
            .collect();
        let loaded: Vec<Option<(u64, Bytes)>> = futures::stream::iter(reads)
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        let missing = loaded.iter().filter(|m| m.is_none()).count();
        if missing > 0 {
            log!(
                delivery,
                warn,
                missing,
                "members of the batch are no longer in the events stream (past max_age) or unreadable; the batch runs without them"
            );
        }
        Ok(loaded.into_iter().flatten().collect())
    }
}

/// A member's data, read from the events stream by sequence (`None`: no longer there, or
/// not an event).
async fn load_member(
    stream: &async_nats::jetstream::stream::Stream<()>,
    prefix: &str,
    sequence: u64,
) -> Result<Option<(u64, Bytes)>, Failure> {
    match stream.get_raw_message(sequence).await {
        Ok(message) => {
            let read = crate::envelope::read(
                Some(&message.headers),
                &message.payload,
                message.subject.as_str(),
                prefix,
                sequence,
            );
            Ok(read.ok().map(|read| (sequence, read.data)))
        }
        Err(error)
            if error.kind()
                == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
        {
            Ok(None)
        }
        Err(error) => Err(Box::new(error)),
    }
}

/// A record read from the bucket's leader (`None`: absent, deleted or not decodable).
async fn read_leader<T: serde::de::DeserializeOwned>(
    store: &RunStore,
    key: &str,
) -> Result<Option<T>, RunStoreError> {
    Ok(store
        .read_versioned(key)
        .await?
        .and_then(|(_, value)| value)
        .and_then(|value| serde_json::from_slice(&value).ok()))
}

/// The key's open batch and its last sequence (0 when it has none).
async fn read_open(store: &RunStore, key: &str) -> Result<(u64, Option<Open>), RunStoreError> {
    Ok(match store.read_versioned(key).await? {
        None => (0, None),
        Some((sequence, None)) => (sequence, None),
        // A record that does not decode is replaced like a closed one would be.
        Some((sequence, Some(value))) => (sequence, serde_json::from_slice(&value).ok()),
    })
}

/// Records a closed batch's members (`F.<batch id>.m`) and marks each member `batched`
/// (`F.<event-key>`), before the key's record may be replaced. Writing twice writes the
/// same.
async fn freeze(
    store: &RunStore,
    function: &str,
    token: &str,
    open: &Open,
) -> Result<(), RunStoreError> {
    let members = Members {
        key: token.to_owned(),
        members: open.members.clone(),
    };
    store
        .put(
            &members_key(function, &open.batch),
            &members,
            Lifetime::Retention,
        )
        .await?;
    let marker = RunRecord::now(RunStatus::Batched, Some(open.batch.clone()));
    let writes: Vec<_> = open
        .members
        .iter()
        .map(|(_, event_key)| {
            let key = event_key_run(function, event_key);
            let (store, marker) = (store.clone(), marker.clone());
            async move { store.put(&key, &marker, Lifetime::Retention).await }
        })
        .collect();
    futures::stream::iter(writes)
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// `F.<event-key>`: an event's run record, which marks it batched.
fn event_key_run(function: &str, event_key: &str) -> String {
    format!("{function}.{event_key}")
}
