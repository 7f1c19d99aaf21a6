//! A consumer's lane: one task asks for messages as places in the window free up, reads
//! every answer from one inbox and runs each delivery as a future of its own.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_nats::jetstream;
use futures::future::OptionFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use super::FunctionLoop;
use super::confirm::AckedPlain;
use super::consumer::LaneKind;
use super::group::Ready;
use super::inbox::{Answer, Inbox};
use super::request::{PULL_EXPIRES, Requested};

/// How long after a plain ack its confirmation is sent at the latest (at most a third of
/// `ack_wait`), unless enough acks wait for one sooner.
const CONFIRM_AFTER: Duration = Duration::from_millis(100);

/// The most plain acks that wait for one confirmation.
const CONFIRM_AT_MOST: usize = 1024;

/// A pull request not yet sent ([`FunctionLoop::request`]).
type Requesting<'a> = Pin<Box<dyn Future<Output = Requested> + Send + 'a>>;

impl FunctionLoop {
    /// Reads one of the function's consumers, in this one task: asks for messages as
    /// places in the window free up ([`super::request`]), reads every answer from one
    /// inbox ([`super::inbox`]), and runs each delivery as a future of this task, holding
    /// one place: no spawn and no cross-thread wake-up per message, and the events of a
    /// consumer read in the order they come, whatever request the server served. Messages
    /// that arrived together are read as a group, whose runs are looked up in one request
    /// ([`super::group`]). A retiring redrive consumer ([`super::converge`]) is read until
    /// it is empty, then deleted, and the task ends.
    ///
    /// The acks of plain first deliveries are confirmed at most 100 ms after the first of
    /// them (or once 1,024 wait), so that a run whose ack was lost is recorded before it
    /// comes back ([`super::confirm`]).
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
        // What waits: deliveries that did not settle when started ([`Self::start`]),
        // look-ups, which give back deliveries to run, and unreadable messages.
        let mut running: FuturesUnordered<Running<'_>> = FuturesUnordered::new();
        // Reading the inbox until the requests have ended after the last one was sent.
        let mut reading = true;
        let mut stopping = false;
        let mut retired = false;
        let mut held = Vec::new();
        let stop = self.shared.stop.clone();
        let (mut acked, mut epoch) = (Vec::new(), self.epoch());
        let mut confirming = FuturesUnordered::new();
        let confirm_after = (self.function.settings.ack_wait / 3).min(CONFIRM_AFTER);
        let mut confirm_at = Box::pin(tokio::time::sleep(Duration::ZERO));
        let mut confirm_armed = false;
        loop {
            tokio::select! {
                biased;
                Some(done) = running.next(), if !running.is_empty() => {
                    self.done(done, &mut running, &mut acked);
                }
                () = stop.cancelled(), if !stopping => {
                    stopping = true;
                    requesting = None;
                    // Places of messages that did not come go back now.
                    inbox.give_back_places();
                }
                answer = inbox.answer(), if reading => match answer {
                    Some(Answer::Message(message, _)) if stopping => held.push(message),
                    Some(Answer::Message(message, place)) => {
                        if acked.is_empty() {
                            // Taken before any of the acks it will confirm was sent.
                            epoch = self.epoch();
                        }
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
                        let bytes = messages.iter().map(|(message, _)| message.length).sum();
                        self.pace.record_sizes(bytes, messages.len());
                        let group = self.read_group(messages, |ready| {
                            self.start(ready, &mut running, &mut acked);
                        });
                        if !group.to_look_up.is_empty() {
                            let look_up = self.look_up(group.to_look_up).map(Done::LookedUp);
                            running.push(Box::pin(look_up));
                        }
                        for unreadable in group.unreadable {
                            let settle = self.unreadable(unreadable).map(|()| Done::Settled(None));
                            running.push(Box::pin(settle));
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
                () = &mut confirm_at, if confirm_armed => {
                    confirm_armed = false;
                    confirming.push(self.confirm(std::mem::take(&mut acked), epoch));
                }
                Some(()) = confirming.next(), if !confirming.is_empty() => {}
            }
            if acked.len() >= CONFIRM_AT_MOST {
                confirm_armed = false;
                confirming.push(self.confirm(std::mem::take(&mut acked), epoch));
            } else if !acked.is_empty() && !confirm_armed {
                confirm_at
                    .as_mut()
                    .reset(tokio::time::Instant::now() + confirm_after);
                confirm_armed = true;
            }
            if reading && requesting.is_none() && inbox.pending() == 0 {
                // No request is open, and none will be: another replica takes what
                // arrived after the stop.
                reading = false;
                for message in held.drain(..) {
                    let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
                }
            }
            if !reading && running.is_empty() {
                break;
            }
        }
        if !acked.is_empty() {
            confirming.push(self.confirm(acked, epoch));
        }
        while confirming.next().await.is_some() {}
    }

    /// Subscribes to the lane's inbox, retrying until the worker stops (`None`).
    async fn open_inbox(&self) -> Option<Inbox> {
        let mut failures = 0;
        loop {
            let nats = self.shared.client.nats();
            match Inbox::open(nats, self.shared.client.jetstream().clone()).await {
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

    /// Starts a delivery: polls it once where it is made, as most settle without waiting
    /// (a quick handler, an ack written into the client's buffer); one that waits (I/O, a
    /// timer, a permit) goes to `running`, which polls it again with the drain's waker (a
    /// future pushed into the set is polled at the set's next poll), so the do-nothing
    /// waker of this first poll is never the only one it has.
    ///
    /// A delivery settled here costs one allocation and one copy of its future; one pushed
    /// into the set as it was made cost a task node, three copies of the (2 KB) future, and
    /// the set's queue on the way in and out.
    fn start<'a>(
        &'a self,
        ready: Ready,
        running: &mut FuturesUnordered<Running<'a>>,
        acked: &mut Vec<AckedPlain>,
    ) {
        let mut delivery: Running<'a> = Box::pin(self.deliver(ready).map(Done::Settled));
        match delivery
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(done) => self.done(done, running, acked),
            Poll::Pending => running.push(delivery),
        }
    }

    /// What the drain does with a future's result.
    fn done<'a>(
        &'a self,
        done: Done,
        running: &mut FuturesUnordered<Running<'a>>,
        acked: &mut Vec<AckedPlain>,
    ) {
        match done {
            Done::Settled(Some(plain)) => acked.push(plain),
            Done::Settled(None) => {}
            Done::LookedUp(ready) => {
                for ready in ready {
                    self.start(ready, running, acked);
                }
            }
        }
    }
}

/// What a future of the drain gives back.
enum Done {
    /// A delivery was settled: `Some` for a plain first delivery acked without a record.
    Settled(Option<AckedPlain>),
    /// A group's look-up: its deliveries, ready to run.
    LookedUp(Vec<Ready>),
}

/// A future of the drain that waits: a delivery that did not settle when started, a
/// look-up, an unreadable message's settlement.
type Running<'a> = std::pin::Pin<Box<dyn Future<Output = Done> + Send + 'a>>;
