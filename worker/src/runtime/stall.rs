//! [`Stall`]: while a finished run's record cannot be stored (the runs bucket electing a
//! leader, a node down), no new handler starts. Every handler started meanwhile would finish
//! unrecorded and, if the store stays away past the worker's patience, run again: the
//! deliveries of a whole window, not a handful. Deliveries wait instead, with progress acks.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Counts record writes that failed their first try and are being retried.
#[derive(Debug, Default)]
pub(crate) struct Stall {
    retrying: AtomicUsize,
    cleared: Notify,
}

/// Held while a record write is being retried; dropping it may clear the stall.
pub(crate) struct Retrying<'a>(&'a Stall);

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        if self.0.retrying.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.cleared.notify_waiters();
        }
    }
}

impl Stall {
    /// A record write failed its first try: handlers wait until it is stored or given up.
    pub(crate) fn begin(&self) -> Retrying<'_> {
        self.retrying.fetch_add(1, Ordering::AcqRel);
        Retrying(self)
    }

    /// Whether handlers should wait.
    pub(crate) fn active(&self) -> bool {
        self.retrying.load(Ordering::Acquire) > 0
    }

    /// Completes when no record write is being retried.
    pub(crate) async fn cleared(&self) {
        loop {
            let cleared = self.cleared.notified();
            tokio::pin!(cleared);
            cleared.as_mut().enable();
            if !self.active() {
                return;
            }
            cleared.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_go_on_when_the_last_retrying_write_ends() {
        let stall = std::sync::Arc::new(Stall::default());
        assert!(!stall.active());
        stall.cleared().await;
        let first = stall.begin();
        let second = stall.begin();
        assert!(stall.active());
        let waiter = tokio::spawn({
            let stall = std::sync::Arc::clone(&stall);
            async move { stall.cleared().await }
        });
        drop(first);
        assert!(stall.active());
        // Still stalled: the waiter has not finished (checked without sleeping: it cannot
        // complete while a write retries).
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(!stall.active());
    }
}
