//! The messages of a consumer that arrived together: read once, their runs looked up in one
//! request (plain first deliveries left out), then each run as its own future of the
//! drain ([`super::pull`]).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use super::confirm::AckedPlain;
use super::decide::{Outcome, decide};
use super::delivery::{Delivery, Source, Unreadable, terminate_foreign};
use super::{FunctionLoop, panic_message};
use crate::steps::RunState;

/// The longest a group's read of run records may take before each delivery reads its own.
const GROUP_READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// A message's place in its function's window of messages held at once, released when the
/// delivery is settled.
pub(crate) type Held = Option<OwnedSemaphorePermit>;

/// What the group's read said about a run's stored outcome.
#[derive(Debug)]
pub(super) enum Known {
    /// Not read (or the read failed): the run reads it itself.
    Unknown,
    /// No outcome is stored.
    Absent,
    /// The stored outcome, undecoded.
    Stored(bytes::Bytes),
}

impl From<Option<bytes::Bytes>> for Known {
    fn from(value: Option<bytes::Bytes>) -> Known {
        value.map_or(Known::Absent, Known::Stored)
    }
}

/// A delivery read and ready to run.
pub(crate) struct Ready {
    delivery: Box<Delivery>,
    run: Option<Arc<RunState>>,
    known: Known,
    held: Held,
}

/// A group, read: what waits for the group's look-up, what is unreadable (what runs at
/// once went to [`FunctionLoop::read_group`]'s `run_now`).
#[derive(Default)]
pub(crate) struct Group {
    pub(crate) to_look_up: Vec<Ready>,
    pub(crate) unreadable: Vec<Unreadable>,
}

impl FunctionLoop {
    /// Reads the messages of one group. A delivery whose run may already be recorded waits
    /// for the group's look-up; a plain first delivery, or one of a function that keeps no
    /// run records, is ready at once: it is given to `run_now`, which starts it before the
    /// next message is read.
    pub(crate) fn read_group(
        &self,
        messages: Vec<(async_nats::Message, Held)>,
        mut run_now: impl FnMut(Ready),
    ) -> Group {
        let mut group = Group::default();
        let looks_up = self.function.settings.idempotent && self.shared.runs.is_some();
        for (message, held) in messages {
            let client = &self.shared.client;
            match Delivery::read(
                &self.function.id,
                message,
                client,
                &self.shared.events_prefix,
            ) {
                Ok(mut delivery) => {
                    delivery.plain = self.is_plain(&delivery);
                    let run = self.run_state(&delivery);
                    let (known, to_look_up) = match &run {
                        _ if delivery.plain => (Known::Absent, false),
                        Some(_) if looks_up => (Known::Unknown, true),
                        _ => (Known::Unknown, false),
                    };
                    let ready = Ready {
                        delivery,
                        run,
                        known,
                        held,
                    };
                    if to_look_up {
                        group.to_look_up.push(ready);
                    } else {
                        run_now(ready);
                    }
                }
                Err(unreadable) => group.unreadable.push(*unreadable),
            }
        }
        group
    }

    /// Runs one delivery to its settlement. Returns the delivery's run when it was a plain
    /// first delivery acked without a record, whose ack the drain then confirms
    /// ([`super::confirm`]), and its place in the window, which the drain gives back with
    /// the others it settled in the same turn ([`super::deliveries`]).
    ///
    /// A combinator, not an `async fn`: an `async fn` keeps its arguments beside the locals
    /// it moves them into, and this future is made, moved and held for every message.
    pub(crate) fn deliver(
        &self,
        ready: Ready,
    ) -> impl Future<Output = (Option<AckedPlain>, Held)> + '_ {
        let Ready {
            delivery,
            run,
            known,
            held,
        } = ready;
        let plain = run.as_ref().filter(|_| delivery.plain).map(Arc::clone);
        // A panic outside the handler (a Deserialize impl, say) must not take the other
        // messages of the pull down with it.
        AssertUnwindSafe(self.process(delivery, run, known))
            .catch_unwind()
            .map(move |processed| {
                let acked = match processed {
                    Ok(reply) => reply.zip(plain),
                    Err(panic) => {
                        tracing::error!(function = %self.function.id, panic = %panic_message(&panic),
                            "panic while handling a delivery; it comes back after ack_wait");
                        None
                    }
                };
                (acked, held)
            })
    }

    /// Reads the stored outcomes of `group`'s runs in one request and says what each found;
    /// when the read fails (or gives up within a third of `ack_wait`: a cluster electing
    /// the bucket's leader, say), each run reads its own record, with retries, while
    /// keeping its message alive. No progress acks are sent meanwhile.
    pub(crate) async fn look_up(&self, mut group: Vec<Ready>) -> Vec<Ready> {
        let Some(store) = self.shared.runs.as_ref() else {
            return group;
        };
        let keys: Vec<&str> = group
            .iter()
            .filter_map(|ready| ready.run.as_ref().map(|r| r.run_key.as_str()))
            .collect();
        let within = (self.function.settings.ack_wait / 3).min(GROUP_READ_WITHIN);
        let found: Option<HashMap<String, bytes::Bytes>> = match store.get_many(&keys, within).await
        {
            Ok(found) => Some(found),
            Err(error) => {
                tracing::debug!(function = %self.function.id, %error, "reading a group's run records failed; reading them one by one");
                None
            }
        };
        if let Some(mut found) = found {
            for ready in &mut group {
                if let Some(run) = &ready.run {
                    ready.known = Known::from(found.remove(&run.run_key));
                }
            }
        }
        group
    }

    /// Settles a message that cannot be read as a delivery.
    pub(crate) async fn unreadable(&self, unreadable: Unreadable) {
        match unreadable {
            Unreadable::NoMetadata(message, error) => {
                terminate_foreign(self.shared.client.nats(), &message, &error).await;
            }
            Unreadable::Envelope(delivery, error) => {
                let facts = self.facts(&delivery, None, None);
                let settlement = decide(Outcome::Unreadable(error), &facts);
                self.settle(&delivery, None, settlement).await;
            }
        }
    }

    /// Whether a delivery is a plain first delivery (protocol section 7): the first delivery
    /// of an event from the log, published with `Nats-Msg-Id` = `ce-id` into an events
    /// stream whose duplicate window covers its retention, to a function that reads the
    /// log from new events and keeps no other records per run. No run of that event can
    /// exist: an earlier copy of it would have been dropped by the stream.
    fn is_plain(&self, delivery: &Delivery) -> bool {
        let settings = &self.function.settings;
        self.shared.dedup_covers_retention
            && settings.idempotent
            && settings.start == crate::function::StartFrom::New
            && !settings.records_every_run()
            && delivery.source == Source::Consumer
            && delivery.delivered == 1
            && delivery.subject().starts_with(&self.shared.events_prefix)
            && delivery.msg_id_is_id
    }
}
