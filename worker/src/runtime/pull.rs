//! A consumer's lane: one task asks for messages as places in the window free up, reads
//! every answer from one inbox and runs each delivery as a future of its own.

use std::pin::Pin;
use std::sync::Arc;

use async_nats::jetstream;
use futures::FutureExt;
use futures::future::OptionFuture;

use super::FunctionLoop;
use super::consumer::LaneKind;
use super::deliveries::Deliveries;
use super::inbox::{Answer, Inbox};
use super::request::{PULL_EXPIRES, Requested};

/// A group of at least this many messages (a busy consumer) runs in a task of its own, so
/// that a replica's deliveries spread over its cores; fewer run in the lane's task, where
/// they are read. Measured in `herald bench consume` (the README's sixteenth round), 96
/// against 16, 32 and 64: `idempotent(false)` averaged 1.00 of the raw client over seven
/// runs at 96 (0.88–1.05) against 0.93 over eight at 32 (0.89–1.03).
const OWN_TASK_AT: usize = 96;

/// A pull request not yet sent ([`FunctionLoop::request`]).
type Requesting<'a> = Pin<Box<dyn Future<Output = Requested> + Send + 'a>>;

impl FunctionLoop {
    /// Reads one of the function's consumers, in this one task: asks for messages as
    /// places in the window free up ([`super::request`]) and reads every answer from one
    /// inbox ([`super::inbox`]), so that the consumer's events come to one reader in the
    /// order the server sends them, whatever request it served. Messages that arrived
    /// together are read as a group, whose runs are looked up in one request
    /// ([`super::group`]); a few run here as futures of this task ([`super::deliveries`]):
    /// no spawn and no cross-thread wake-up per message; a large group gets a task of its
    /// own. A retiring redrive consumer ([`super::converge`]) is read until it is empty,
    /// then deleted, and the task ends.
    ///
    /// At shutdown the open pull requests stay at the server until they expire (at most
    /// `PULL_EXPIRES`), and the server may still deliver to them. Messages that arrive
    /// after the stop are held and handed back together when the requests have ended:
    /// handed back earlier, the server could deliver them to the same open requests again
    /// (each time spending a delivery); dropped with the subscription, they would wait out
    /// `ack_wait`.
    pub(crate) async fn pull_loop(
        self: Arc<Self>,
        kind: LaneKind,
        consumer: jetstream::consumer::PullConsumer,
        retiring: bool,
    ) {
        let Some(mut inbox) = self.open_inbox().await else {
            return;
        };
        let mut requesting: Option<Requesting<'_>> = Some(Box::pin(self.request(
            kind,
            consumer,
            retiring,
            inbox.subject(),
        )));
        let mut deliveries = Deliveries::new(&self);
        let (handoff, mut handed) = tokio::sync::mpsc::unbounded_channel();
        // Reading the inbox until the requests have ended after the last one was sent.
        let mut reading = true;
        let mut stopping = false;
        let mut retired = false;
        let mut held = Vec::new();
        let stop = self.shared.stop.clone();
        loop {
            tokio::select! {
                biased;
                () = deliveries.progress() => {}
                Some(acks) = handed.recv() => deliveries.adopt(acks),
                () = stop.cancelled(), if !stopping => {
                    stopping = true;
                    requesting = None;
                    // Places of messages that did not come go back now.
                    inbox.give_back_places();
                }
                answer = inbox.answer(), if reading => match answer {
                    Some(Answer::Message(message, _)) if stopping => held.push(message),
                    Some(Answer::Message(message, place)) => {
                        let mut messages = vec![(message, place)];
                        loop {
                            match inbox.answer().now_or_never() {
                                Some(Some(Answer::Message(message, place))) => {
                                    messages.push((message, place));
                                }
                                Some(Some(Answer::Released)) => {}
                                Some(Some(Answer::Failed(error))) => {
                                    self.answer_failed(kind, retired, &error);
                                }
                                Some(None) => {
                                    (reading, requesting) = (false, None);
                                    break;
                                }
                                None => break,
                            }
                        }
                        if messages.len() >= OWN_TASK_AT {
                            let (function, handoff) = (Arc::clone(&self), handoff.clone());
                            self.shared.tracker.spawn(async move {
                                let mut deliveries = Deliveries::for_group(&function, handoff);
                                deliveries.add(messages);
                                while !deliveries.is_idle() {
                                    deliveries.progress().await;
                                }
                                deliveries.finish().await;
                            });
                        } else {
                            deliveries.add(messages);
                        }
                    }
                    Some(Answer::Released) => {}
                    Some(Answer::Failed(error)) => self.answer_failed(kind, retired, &error),
                    None => {
                        tracing::warn!(function = %self.function.id, consumer = self.lane(kind).binding.id(),
                            "the connection is closed: no more messages are read");
                        (reading, requesting) = (false, None);
                    }
                },
                Some(requested) = OptionFuture::from(requesting.as_mut()), if requesting.is_some() => {
                    requesting = match requested {
                        Requested::Sent { consumer, retiring, places } => {
                            inbox.sent(places, PULL_EXPIRES);
                            Some(Box::pin(self.request(kind, *consumer, retiring, inbox.subject())))
                        }
                        Requested::Retired => {
                            retired = true;
                            None
                        }
                        Requested::Over => None,
                    };
                }
            }
            if reading && requesting.is_none() && inbox.pending() == 0 {
                // No request is open, and none will be: another replica takes what
                // arrived after the stop.
                reading = false;
                for message in held.drain(..) {
                    super::delivery::settle_raw(self.shared.client.nats(), &message, b"-NAK").await;
                }
            }
            if !reading && deliveries.is_idle() {
                break;
            }
        }
        // Groups still running confirm their own acks from now on.
        handed.close();
        while let Ok(acks) = handed.try_recv() {
            deliveries.adopt(acks);
        }
        deliveries.finish().await;
    }

    /// Subscribes to the lane's inbox, retrying until the worker stops (`None`).
    async fn open_inbox(&self) -> Option<Inbox> {
        let mut failures = 0;
        loop {
            let nats = self.shared.client.nats();
            match Inbox::open(nats).await {
                Ok(inbox) => return Some(inbox),
                Err(error) => {
                    failures += 1;
                    tracing::warn!(function = %self.function.id, %error,
                        "cannot subscribe to the pull requests' inbox; retrying");
                    if self.pause(failures).await {
                        return None;
                    }
                }
            }
        }
    }

    /// A status ended the open pull requests: the binding is checked before the next pull
    /// (unless the consumer was retired and deleted, which ends its requests).
    fn answer_failed(&self, kind: LaneKind, retired: bool, error: &str) {
        if retired {
            tracing::debug!(function = %self.function.id, %error, "the retired consumer's pull requests ended");
        } else {
            self.request_failed(kind, &error);
        }
    }
}
