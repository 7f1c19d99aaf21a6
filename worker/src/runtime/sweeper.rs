//! The sweeper: dead-letters events that ran out of deliveries while no worker could
//! (protocol section 6), through the same [`FunctionLoop::settle`] as the worker.
//!
//! Each function has its own sweeper consumer on `NS_ADVISORIES`, filtered to the
//! MAX_DELIVERIES advisories of its consumer and shared by its replicas, so the worker that
//! settles an advisory runs the function and can record the run and call `on_failure`.
//! It publishes the `finished` activity record of each run it dead-letters (section 18).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;

use super::FunctionLoop;
use super::decide::{Outcome, decide};
use super::delivery::{Delivery, Unreadable};

/// The JSON of a MAX_DELIVERIES advisory (the fields the sweeper needs).
#[derive(Debug, serde::Deserialize)]
struct MaxDeliveriesAdvisory {
    stream: String,
    stream_seq: u64,
    deliveries: u64,
}

/// How long the sweeper waits before it reads an advisory again after a failure.
const SWEEP_RETRY: Duration = Duration::from_secs(5);

impl FunctionLoop {
    /// Pulls the function's MAX_DELIVERIES advisories until the worker stops.
    pub(crate) async fn sweep(self: Arc<Self>) {
        let shared = &self.shared;
        let namespace = shared.client.namespace();
        let stream_name = namespace.advisories_stream();
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(herald::protocol::sweeper_durable(&self.function.id)),
            // The advisories of both of the function's consumers (protocol section 3).
            filter_subjects: vec![
                herald::protocol::max_deliveries_advisory_subject(
                    &shared.events_stream,
                    &self.function.id,
                ),
                herald::protocol::max_deliveries_advisory_subject(
                    &shared.events_stream,
                    &herald::protocol::redrive_consumer(&self.function.id),
                ),
            ],
            // Every retained advisory: one raised before any replica of the function ran is
            // swept too. One already settled is recognised by its run record (below) or
            // dropped by the dead-letter stream's deduplication.
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        };
        let stop = shared.stop.clone();
        let mut failures: u32 = 0;
        while !stop.is_cancelled() {
            let round = async {
                let consumer = shared
                    .client
                    .jetstream()
                    .create_consumer_on_stream(config.clone(), &stream_name)
                    .await?;
                let mut batch = consumer
                    .batch()
                    .max_messages(16)
                    .expires(Duration::from_secs(5))
                    .messages()
                    .await?;
                while let Some(advisory) = batch.next().await {
                    self.sweep_one(advisory?).await;
                }
                Ok::<(), async_nats::Error>(())
            };
            let outcome = tokio::select! {
                outcome = round => outcome,
                () = stop.cancelled() => return,
            };
            match outcome {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(function = %self.function.id, %error, "dead-letter sweeper: pulling advisories failed; retrying");
                    let pause = crate::backoff::Backoff {
                        initial: Duration::from_millis(100),
                        max: Duration::from_secs(5),
                        jitter: 0.2,
                    }
                    .delay(failures);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    async fn sweep_one(&self, advisory: jetstream::Message) {
        let shared = &self.shared;
        let parsed: MaxDeliveriesAdvisory = match serde_json::from_slice(&advisory.payload) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(%error, "dead-letter sweeper: an advisory that is not JSON; dropped");
                let _ = advisory.ack().await;
                return;
            }
        };
        if parsed.stream != shared.events_stream {
            let _ = advisory.ack().await;
            return;
        }
        let original = match shared
            .client
            .jetstream()
            .get_stream(&shared.events_stream)
            .await
        {
            Ok(stream) => stream.get_raw_message(parsed.stream_seq).await,
            Err(error) => {
                tracing::warn!(%error, "dead-letter sweeper: cannot open the events stream");
                let _ = advisory.ack_with(AckKind::Nak(Some(SWEEP_RETRY))).await;
                return;
            }
        };
        let original = match original {
            Ok(original) => original,
            Err(error)
                if error.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                // Gone from the log (max age): there is nothing left to dead-letter.
                tracing::warn!(%error, seq = parsed.stream_seq, function = %self.function.id,
                    "dead-letter sweeper: the event that ran out of deliveries is no longer in the log");
                let _ = advisory.ack().await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "dead-letter sweeper: reading the event failed; retrying");
                let _ = advisory.ack_with(AckKind::Nak(Some(SWEEP_RETRY))).await;
                return;
            }
        };
        let deliveries = u32::try_from(parsed.deliveries).unwrap_or(u32::MAX);
        let (delivery, outcome) = match Delivery::swept(
            &self.function.id,
            advisory.message,
            &shared.client,
            original,
            deliveries,
            &shared.events_prefix,
        ) {
            Ok(delivery) => {
                let outcome = if self.run_finished(&delivery).await {
                    Outcome::AlreadyFinished
                } else {
                    Outcome::OutOfDeliveries
                };
                (delivery, outcome)
            }
            Err(unreadable) => match *unreadable {
                Unreadable::Envelope(delivery, error) => (delivery, Outcome::Unreadable(error)),
                Unreadable::NoMetadata(advisory, _) => {
                    super::delivery::settle_raw(shared.client.nats(), &advisory, b"").await;
                    return;
                }
            },
        };
        let facts = self.facts(&delivery, None, None);
        let settlement = decide(outcome, &facts);
        // The attempt's end, as a worker would have published it (protocol section 18): a
        // run dead-lettered here gets its `finished` record; one already finished gets none.
        let run = self.run_state(&delivery);
        let finished = self.finished_record(
            &delivery,
            run.as_deref(),
            None,
            &settlement,
            &opentelemetry::Context::current(),
        );
        self.settle(&delivery, None, settlement).await;
        self.publish_finished(finished).await;
    }

    /// Whether the run of a swept event is already recorded as finished (dead-lettered by a
    /// worker, or by an earlier sweep).
    async fn run_finished(&self, delivery: &Delivery) -> bool {
        let Some(run) = self.run_state(delivery) else {
            return false;
        };
        matches!(
            run.store.get::<crate::steps::RunRecord>(&run.run_key).await,
            Ok(Some(_))
        )
    }
}
