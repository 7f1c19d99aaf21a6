//! [`Turnstile`]: a function's paced decisions taken, per key, in the order the events
//! arrived.
//!
//! Deliveries of one worker are handled concurrently, so two events of a key could reach a
//! throttle's decision in either order and the later one take the earlier start. Each
//! delivery takes a ticket, in stream order, when its group is read, in the lane of each of
//! its keys (one per throttle or rate limit); a paced decision waits until every ticket
//! before its own in its lanes has been used or dropped. Keys do not wait for each other.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// The tickets of a function's deliveries in flight, by lane (a limit and its key) and
/// stream sequence.
#[derive(Debug, Default)]
pub(crate) struct Turnstile {
    lanes: parking_lot::Mutex<HashMap<String, BTreeSet<u64>>>,
    passed: Notify,
}

/// A delivery's place in its function's [`Turnstile`]; it leaves it when used or dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    turnstile: Arc<Turnstile>,
    lanes: Vec<String>,
    sequence: u64,
    left: AtomicBool,
}

impl Turnstile {
    /// A ticket for the delivery of `sequence` in each of `lanes`.
    pub(crate) fn ticket(self: &Arc<Self>, sequence: u64, lanes: Vec<String>) -> Ticket {
        let mut all = self.lanes.lock();
        for lane in &lanes {
            all.entry(lane.clone()).or_default().insert(sequence);
        }
        drop(all);
        Ticket {
            turnstile: Arc::clone(self),
            lanes,
            sequence,
            left: AtomicBool::new(false),
        }
    }
}

impl Ticket {
    /// Waits until no delivery of an earlier event of the same key holds a ticket.
    pub(crate) async fn turn(&self) {
        loop {
            let passed = self.turnstile.passed.notified();
            tokio::pin!(passed);
            passed.as_mut().enable();
            if self.first_in_every_lane() {
                return;
            }
            passed.await;
        }
    }

    fn first_in_every_lane(&self) -> bool {
        let all = self.turnstile.lanes.lock();
        self.lanes.iter().all(|lane| {
            all.get(lane)
                .is_none_or(|waiting| waiting.first() == Some(&self.sequence))
        })
    }

    /// Leaves the turnstile: the next delivery of its keys may decide.
    pub(crate) fn leave(&self) {
        if !self.left.swap(true, Ordering::SeqCst) {
            let mut all = self.turnstile.lanes.lock();
            for lane in &self.lanes {
                if let Some(waiting) = all.get_mut(lane) {
                    waiting.remove(&self.sequence);
                    if waiting.is_empty() {
                        all.remove(lane);
                    }
                }
            }
            drop(all);
            self.turnstile.passed.notify_waiters();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_pass_in_sequence_order_whatever_order_they_wait_in() {
        let turnstile = Arc::new(Turnstile::default());
        let tickets: Vec<Ticket> = [5, 7, 9]
            .iter()
            .map(|s| turnstile.ticket(*s, vec!["a".to_owned()]))
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for ticket in tickets.into_iter().rev() {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                ticket.turn().await;
                tx.send(ticket.sequence).unwrap();
                ticket.leave();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let order: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(order, [5, 7, 9]);
    }

    #[tokio::test]
    async fn a_dropped_ticket_lets_the_next_pass() {
        let turnstile = Arc::new(Turnstile::default());
        let first = turnstile.ticket(1, vec!["a".to_owned()]);
        let second = turnstile.ticket(2, vec!["a".to_owned()]);
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(1), second.turn())
            .await
            .unwrap();
    }

    #[test]
    fn a_key_does_not_wait_for_another_keys_earlier_event() {
        use futures::FutureExt as _;
        let turnstile = Arc::new(Turnstile::default());
        let first_of_a = turnstile.ticket(1, vec!["a".to_owned()]);
        let b = turnstile.ticket(2, vec!["b".to_owned()]);
        let a_and_b = turnstile.ticket(3, vec!["a".to_owned(), "b".to_owned()]);
        assert!(b.turn().now_or_never().is_some(), "b waited for a");
        b.leave();
        // Lane "b" is free, lane "a" still has the earlier ticket 1.
        assert!(
            a_and_b.turn().now_or_never().is_none(),
            "passed an earlier ticket of its key"
        );
        first_of_a.leave();
        assert!(a_and_b.turn().now_or_never().is_some());
    }
}
