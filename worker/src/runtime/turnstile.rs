//! [`Turnstile`]: a function's paced decisions taken in the order the events arrived.
//!
//! Deliveries of one worker are handled concurrently, so two events of a key could reach a
//! throttle's decision in either order and the later one take the earlier start. Each
//! delivery takes a ticket, in stream order, when its group is read; a paced decision
//! waits until every ticket before its own has been used or dropped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// The tickets of a function's deliveries in flight, by stream sequence.
#[derive(Debug, Default)]
pub(crate) struct Turnstile {
    waiting: parking_lot::Mutex<BTreeSet<u64>>,
    passed: Notify,
}

/// A delivery's place in its function's [`Turnstile`]; it leaves it when used or dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    turnstile: Arc<Turnstile>,
    sequence: u64,
    left: AtomicBool,
}

impl Turnstile {
    /// A ticket for the delivery of `sequence`.
    pub(crate) fn ticket(self: &Arc<Self>, sequence: u64) -> Ticket {
        self.waiting.lock().insert(sequence);
        Ticket {
            turnstile: Arc::clone(self),
            sequence,
            left: AtomicBool::new(false),
        }
    }
}

impl Ticket {
    /// Waits until no delivery of an earlier event holds a ticket.
    pub(crate) async fn turn(&self) {
        loop {
            let passed = self.turnstile.passed.notified();
            tokio::pin!(passed);
            passed.as_mut().enable();
            if self.turnstile.waiting.lock().first() == Some(&self.sequence) {
                return;
            }
            passed.await;
        }
    }

    /// Leaves the turnstile: the next delivery may decide.
    pub(crate) fn leave(&self) {
        if !self.left.swap(true, Ordering::SeqCst) {
            self.turnstile.waiting.lock().remove(&self.sequence);
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
        let tickets: Vec<Ticket> = [5, 7, 9].iter().map(|s| turnstile.ticket(*s)).collect();
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
        let first = turnstile.ticket(1);
        let second = turnstile.ticket(2);
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(1), second.turn())
            .await
            .unwrap();
    }
}
