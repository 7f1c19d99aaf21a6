//! The deliveries one task runs: each a future of the task, holding one place in the
//! window, and the confirmation of their plain acks ([`super::confirm`]). A lane's task
//! runs the messages that come a few at a time; a large group gets a task of its own
//! ([`super::pull`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::time::Sleep;

use super::FunctionLoop;
use super::confirm::{AckedPlain, Epoch};
use super::group::{Held, Ready};

/// How long after a plain ack its confirmation is sent at the latest (at most a third of
/// `ack_wait`), unless enough acks wait for one sooner.
const CONFIRM_AFTER: Duration = Duration::from_millis(100);

/// The most plain acks that wait for one confirmation.
const CONFIRM_AT_MOST: usize = 1024;

/// A future of a task's deliveries that waits: a delivery that did not settle when
/// started, a look-up, an unreadable message's settlement.
type Running<'a> = Pin<Box<dyn Future<Output = Done> + Send + 'a>>;

/// A confirmation under way.
type Confirming<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Plain acks a group's task hands to its lane to confirm, with the epoch taken before
/// them: one confirmation per lane every 100 ms, however many groups ran.
pub(super) type HandedAcks = (Vec<AckedPlain>, Option<Epoch>);

/// What a future of the deliveries gives back.
enum Done {
    /// A delivery was settled: `Some` for a plain first delivery acked without a record,
    /// with its place in the window.
    Settled(Option<AckedPlain>, Held),
    /// A group's look-up: its deliveries, ready to run.
    LookedUp(Vec<Ready>),
}

/// The deliveries of one task, and their plain acks waiting for a confirmation.
pub(super) struct Deliveries<'a> {
    function: &'a FunctionLoop,
    /// What waits: deliveries that did not settle when started ([`Deliveries::start`]),
    /// look-ups, which give back deliveries to run, and unreadable messages.
    running: FuturesUnordered<Running<'a>>,
    acked: Vec<AckedPlain>,
    /// Taken before any of `acked` was sent.
    epoch: Option<Epoch>,
    confirming: FuturesUnordered<Confirming<'a>>,
    confirm_at: Pin<Box<Sleep>>,
    confirm_armed: bool,
    confirm_after: Duration,
    /// The places in the window of the deliveries settled in this turn, given back together
    /// at its end ([`Deliveries::give_back`]): a semaphore takes its lock for every release.
    freed: Held,
    /// A group's task: where its plain acks go to be confirmed (its lane's task).
    handoff: Option<tokio::sync::mpsc::UnboundedSender<HandedAcks>>,
}

impl<'a> Deliveries<'a> {
    pub(super) fn new(function: &'a FunctionLoop) -> Deliveries<'a> {
        Deliveries {
            function,
            running: FuturesUnordered::new(),
            acked: Vec::new(),
            epoch: function.epoch(),
            confirming: FuturesUnordered::new(),
            confirm_at: Box::pin(tokio::time::sleep(Duration::ZERO)),
            confirm_armed: false,
            confirm_after: (function.function.settings.ack_wait / 3).min(CONFIRM_AFTER),
            freed: None,
            handoff: None,
        }
    }

    /// The deliveries of a group's own task, whose plain acks its lane confirms.
    pub(super) fn for_group(
        function: &'a FunctionLoop,
        handoff: tokio::sync::mpsc::UnboundedSender<HandedAcks>,
    ) -> Deliveries<'a> {
        Deliveries {
            handoff: Some(handoff),
            ..Deliveries::new(function)
        }
    }

    /// Takes plain acks a group's task handed over, to confirm them with these.
    pub(super) fn adopt(&mut self, (acked, epoch): HandedAcks) {
        if self.acked.is_empty() {
            self.epoch = epoch;
        } else if self.epoch != epoch {
            // Something changed between the two: confirmed against neither, every run is
            // recorded (see `confirm.rs`).
            self.epoch = None;
        }
        self.acked.extend(acked);
        self.after_acks();
    }

    /// True when no delivery runs (confirmations may still be under way).
    pub(super) fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// Reads messages that arrived together and starts them: one look-up for the runs of
    /// those that need it ([`super::group`]), the rest run at once.
    pub(super) fn add(&mut self, messages: Vec<(async_nats::Message, Held)>) {
        let function = self.function;
        if self.acked.is_empty() {
            // Taken before any of the acks it will confirm was sent.
            self.epoch = function.epoch();
        }
        let bytes = messages.iter().map(|(message, _)| message.length).sum();
        function.pace.record_sizes(bytes, messages.len());
        let group = function.read_group(messages, |ready| self.start(ready));
        if !group.to_look_up.is_empty() {
            let look_up = function.look_up(group.to_look_up).map(Done::LookedUp);
            self.running.push(Box::pin(look_up));
        }
        for unreadable in group.unreadable {
            let settle = function
                .unreadable(unreadable)
                .map(|()| Done::Settled(None, None));
            self.running.push(Box::pin(settle));
        }
        self.after_acks();
        self.give_back();
    }

    /// Drives the deliveries and confirmations: ready when one of them made progress,
    /// pending (woken by them) when none can.
    pub(super) fn poll_progress(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut progress = false;
        while let Poll::Ready(Some(done)) = self.running.poll_next_unpin(cx) {
            self.done(done);
            progress = true;
        }
        if self.confirm_armed && self.confirm_at.as_mut().poll(cx).is_ready() {
            self.confirm_now();
            progress = true;
        }
        while let Poll::Ready(Some(())) = self.confirming.poll_next_unpin(cx) {
            progress = true;
        }
        if progress {
            self.after_acks();
            self.give_back();
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits for progress (see [`Deliveries::poll_progress`]).
    pub(super) async fn progress(&mut self) {
        std::future::poll_fn(|cx| self.poll_progress(cx)).await;
    }

    /// Confirms what is left and waits for every confirmation.
    pub(super) async fn finish(mut self) {
        if !self.acked.is_empty() {
            self.confirm_now();
        }
        while self.confirming.next().await.is_some() {}
    }

    /// Starts a delivery: polls it once where it is made, as most settle without waiting
    /// (a quick handler, an ack written into the client's buffer); one that waits (I/O, a
    /// timer, a permit) goes to `running`, which polls it again with the task's waker (a
    /// future pushed into the set is polled at the set's next poll), so the do-nothing
    /// waker of this first poll is never the only one it has.
    ///
    /// A delivery settled here costs one allocation and one copy of its future; one pushed
    /// into the set as it was made cost a task node, three copies of the (2 KB) future, and
    /// the set's queue on the way in and out.
    fn start(&mut self, ready: Ready) {
        let delivery = self.function.deliver(ready);
        let mut delivery: Running<'a> =
            Box::pin(delivery.map(|(acked, held)| Done::Settled(acked, held)));
        match delivery
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(done) => self.done(done),
            Poll::Pending => self.running.push(delivery),
        }
    }

    /// What the task does with a future's result.
    fn done(&mut self, done: Done) {
        match done {
            Done::Settled(acked, held) => {
                if let Some(plain) = acked {
                    self.acked.push(plain);
                }
                self.free(held);
            }
            Done::LookedUp(ready) => {
                for ready in ready {
                    self.start(ready);
                }
            }
        }
    }

    /// Keeps a settled delivery's place until the turn ends.
    fn free(&mut self, held: Held) {
        let Some(held) = held else {
            return;
        };
        match &mut self.freed {
            Some(freed) if Arc::ptr_eq(freed.semaphore(), held.semaphore()) => freed.merge(held),
            // Another window (not expected: a task reads one lane): the places held so far
            // go back first.
            freed => *freed = Some(held),
        }
    }

    /// Gives the places of the deliveries settled in this turn back to the window.
    fn give_back(&mut self) {
        self.freed = None;
    }

    /// Confirms at once when enough plain acks wait; otherwise makes sure a confirmation
    /// is due within `confirm_after`.
    fn after_acks(&mut self) {
        if self.acked.len() >= CONFIRM_AT_MOST {
            self.confirm_now();
        } else if !self.acked.is_empty() && !self.confirm_armed {
            self.confirm_at
                .as_mut()
                .reset(tokio::time::Instant::now() + self.confirm_after);
            self.confirm_armed = true;
        }
    }

    fn confirm_now(&mut self) {
        self.confirm_armed = false;
        let mut acked = std::mem::take(&mut self.acked);
        if let Some(handoff) = &self.handoff {
            match handoff.send((acked, self.epoch)) {
                Ok(()) => return,
                // The lane has ended (shutdown): confirmed here.
                Err(tokio::sync::mpsc::error::SendError((back, _))) => acked = back,
            }
        }
        self.confirming
            .push(Box::pin(self.function.confirm(acked, self.epoch)));
    }
}
