//! The pull loop: permits first, then at most that many messages; each batch drained as
//! futures of one task.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

use super::FunctionLoop;
use super::confirm::AckedPlain;
use super::consumer::LaneKind;
use super::group::Ready;

/// The most messages asked for in one pull request.
const MAX_PULL: usize = 1024;

/// The shortest interval between confirmations of plain acks.
const CONFIRM_AT_LEAST_EVERY: Duration = Duration::from_millis(100);

/// How long one pull request waits for messages before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

impl FunctionLoop {
    /// Takes places in the window of one of the function's consumers, then pulls at most
    /// that many messages from it. A retiring redrive consumer ([`super::converge`]) is
    /// read until it is empty, then deleted, and the loop ends.
    pub(crate) async fn pull_loop(
        self: Arc<Self>,
        kind: LaneKind,
        mut consumer: jetstream::consumer::PullConsumer,
        mut retiring: bool,
    ) {
        let mut failures: u32 = 0;
        let stop = self.shared.stop.clone();
        let concurrency = self.function.settings.concurrency.max(1);
        let lane = self.lane(kind);
        loop {
            if retiring && self.retire(&mut consumer).await {
                return;
            }
            // Pull again once half the target is free (as nats.go's consumers do): fewer,
            // larger pull requests, while the open ones keep delivering. Places beyond the
            // target are waited for too, then given back: the target moves with the pace.
            let target = self.pace.target(concurrency, lane.window_size);
            let beyond = lane.window_size - target;
            let wanted = u32::try_from((target / 2).max(1) + beyond).unwrap_or(u32::MAX);
            let mut permit = tokio::select! {
                permit = Arc::clone(&lane.window).acquire_many_owned(wanted) => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                () = stop.cancelled() => return,
            };
            drop(permit.split(beyond));
            let extra = lane
                .window
                .available_permits()
                .min(target - permit.num_permits());
            if extra > 0
                && let Ok(more) = Arc::clone(&lane.window)
                    .try_acquire_many_owned(u32::try_from(extra).unwrap_or(0))
            {
                permit.merge(more);
            }
            if permit.num_permits() > MAX_PULL {
                drop(permit.split(permit.num_permits() - MAX_PULL));
            }
            if lane.binding.take_lost() {
                match self.converge().await {
                    Ok(fresh) => {
                        tracing::info!(function = %self.function.id, consumer = lane.binding.id(),
                            "consumer re-created or re-bound");
                        match kind {
                            LaneKind::Events => consumer = fresh.events,
                            LaneKind::Redrive => {
                                // Gone, and no longer wanted: nothing is left to read.
                                let Some(redrive) = fresh.redrive else { return };
                                consumer = redrive.consumer;
                                retiring = redrive.retiring;
                            }
                        }
                    }
                    Err(error) => {
                        drop(permit);
                        lane.binding.lost();
                        failures += 1;
                        tracing::warn!(function = %self.function.id, %error, "consumer not available; retrying");
                        if self.pause(failures).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let batch = consumer
                .batch()
                .max_messages(permit.num_permits())
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            match batch {
                Ok(batch) => {
                    failures = 0;
                    let function = Arc::clone(&self);
                    self.shared
                        .tracker
                        .spawn(async move { function.drain(kind, batch, permit).await });
                }
                Err(error) => {
                    drop(permit);
                    failures += 1;
                    lane.binding.lost();
                    tracing::warn!(function = %self.function.id, %error, "pull failed; retrying");
                    if self.pause(failures).await {
                        return;
                    }
                }
            }
        }
    }

    /// A pull request ended with an error: the binding is checked before the next pull.
    fn request_failed(&self, kind: LaneKind, error: &dyn std::fmt::Display) {
        let binding = &self.lane(kind).binding;
        tracing::warn!(function = %self.function.id, consumer = binding.id(), %error,
            "pull request ended with an error");
        binding.lost();
    }

    /// Waits before a retry; true if the worker is stopping.
    async fn pause(&self, failures: u32) -> bool {
        let pause = crate::backoff::Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            jitter: 0.2,
        }
        .delay(failures);
        tokio::select! {
            () = tokio::time::sleep(pause) => false,
            () = self.shared.stop.cancelled() => true,
        }
    }

    /// Runs the messages of one pull request concurrently, each holding one place in the
    /// window. They run as futures of this one task rather than a task each: no spawn and no
    /// cross-thread wake-up per message. Messages that arrived together are read as a group,
    /// whose runs are looked up in one request ([`super::group`]).
    ///
    /// The acks of plain first deliveries are confirmed when the request's messages are
    /// all settled, and meanwhile every third of `ack_wait`, so that a run whose ack was
    /// lost is recorded before it comes back ([`super::confirm`]).
    ///
    /// At shutdown the pull request stays open at the server until it expires (at most
    /// `PULL_EXPIRES`), and the server may still deliver to it. Messages that arrive after
    /// the stop are held and handed back together when the request has ended: handed back
    /// earlier, the server could deliver them to the same open request again (each time
    /// spending a delivery); dropped with the subscription, they would wait out `ack_wait`.
    async fn drain(
        self: Arc<Self>,
        kind: LaneKind,
        mut batch: pull::Batch,
        permits: OwnedSemaphorePermit,
    ) {
        let mut permits = Some(permits);
        // What waits: deliveries that did not settle when started ([`Self::start`]),
        // look-ups, which give back deliveries to run, and unreadable messages.
        let mut running: FuturesUnordered<Running<'_>> = FuturesUnordered::new();
        let mut pulling = true;
        let mut stopping = false;
        let mut held = Vec::new();
        let stop = self.shared.stop.clone();
        let (mut acked, mut epoch) = (Vec::new(), self.epoch());
        let mut confirming = FuturesUnordered::new();
        let every = (self.function.settings.ack_wait / 3).max(CONFIRM_AT_LEAST_EVERY);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                biased;
                Some(done) = running.next(), if !running.is_empty() => {
                    self.done(done, &mut running, &mut acked);
                }
                () = stop.cancelled(), if !stopping => {
                    stopping = true;
                    // Permits of messages that did not start go back now.
                    permits = None;
                }
                next = batch.next(), if pulling => match next {
                    Some(Ok(message)) if stopping => held.push(message),
                    Some(Ok(message)) => {
                        let mut messages = vec![(message, permits.as_mut().and_then(|p| p.split(1)))];
                        loop {
                            match batch.next().now_or_never() {
                                Some(Some(Ok(message))) => {
                                    messages.push((message, permits.as_mut().and_then(|p| p.split(1))));
                                }
                                Some(Some(Err(error))) => {
                                    self.request_failed(kind, &error);
                                    pulling = false;
                                    break;
                                }
                                Some(None) => {
                                    pulling = false;
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
                    Some(Err(error)) => {
                        self.request_failed(kind, &error);
                        pulling = false;
                    }
                    None => pulling = false,
                },
                _ = tick.tick(), if !acked.is_empty() => {
                    confirming.push(self.confirm(std::mem::take(&mut acked), epoch));
                    epoch = self.epoch();
                }
                Some(()) = confirming.next(), if !confirming.is_empty() => {}
            }
            if !pulling {
                // The request has ended: another replica takes what arrived after the stop.
                for message in held.drain(..) {
                    let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
                }
                // Permits of messages that never came go back now, not when the rest finish.
                permits = None;
                if running.is_empty() {
                    break;
                }
            }
        }
        if !acked.is_empty() {
            confirming.push(self.confirm(acked, epoch));
        }
        while confirming.next().await.is_some() {}
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
