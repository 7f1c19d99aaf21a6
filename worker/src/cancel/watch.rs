//! The cancelled runs of a function, kept in memory from a watch on their cancel records
//! (`F.*.c` in `ns-runs`), so deliveries and step boundaries check them without a read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::CancelRecord;

/// The cancelled runs of one function: run key → reason.
#[derive(Debug, Default)]
pub(crate) struct Cancelled {
    runs: parking_lot::RwLock<HashMap<String, String>>,
}

impl Cancelled {
    /// Why the run was cancelled, if it was.
    pub(crate) fn reason(&self, run_key: &str) -> Option<String> {
        self.runs.read().get(run_key).cloned()
    }

    /// Remembers a cancel found by a read before the watch brought it.
    pub(crate) fn insert(&self, run_key: &str, reason: String) {
        self.runs.write().insert(run_key.to_owned(), reason);
    }

    fn apply(&self, entry: &kv::Entry) {
        let Some(run_key) = entry.key.strip_suffix(".c") else {
            return;
        };
        if entry.operation == kv::Operation::Put {
            let reason = serde_json::from_slice::<CancelRecord>(&entry.value)
                .map(|r| r.reason)
                .unwrap_or_else(|_| "cancelled".to_owned());
            self.runs.write().insert(run_key.to_owned(), reason);
        } else {
            self.runs.write().remove(run_key);
        }
    }

    /// Loads the function's cancel records, then follows new ones until `stop`. Returns once
    /// the records stored now are loaded (or after 5 s), the following running on.
    pub(crate) async fn follow(
        self: Arc<Self>,
        kv: kv::Store,
        function: Arc<str>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (loaded, ready) = tokio::sync::oneshot::channel::<()>();
        // How many records there are now: with none, the history is empty and says nothing.
        let stored = match kv
            .stream
            .info_with_subjects(format!("{}{function}.*.c", kv.prefix))
            .await
        {
            Ok(mut subjects) => subjects.next().await.is_some(),
            Err(_) => true,
        };
        let task = tokio::spawn(async move {
            let mut loaded = Some(loaded);
            let pattern = format!("{function}.*.c");
            loop {
                match kv.watch_with_history(&pattern).await {
                    Ok(mut watch) => loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            next = watch.next() => match next {
                                Some(Ok(entry)) => {
                                    self.apply(&entry);
                                    if entry.delta == 0 && let Some(loaded) = loaded.take() {
                                        let _ = loaded.send(());
                                    }
                                }
                                Some(Err(error)) => {
                                    tracing::debug!(%function, %error, "cancel watch failed; watching again");
                                    break;
                                }
                                None => break,
                            }
                        }
                    },
                    Err(error) => {
                        tracing::debug!(%function, %error, "cannot watch cancel records; trying again");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        if stored {
            let _ = tokio::time::timeout(Duration::from_secs(5), ready).await;
        }
        task
    }
}
