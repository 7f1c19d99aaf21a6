//! Confirming the acks of a consumer's plain first deliveries (protocol section 7): their
//! runs are not recorded; instead, at most 100 ms after the first unconfirmed one (a third
//! of `ack_wait` if shorter; sooner once 1,024 wait), the last of their acks is sent again as a request, and the
//! server's answer confirms it and, as acks from one connection reach the consumer in order,
//! the ones before it. When no answer
//! comes, or the consumer's leader changed, a pull failed (the consumer may have been deleted
//! and made again under its name, and a new consumer answers acks it never delivered) or the
//! connection was re-established meanwhile (an ack sent to the old leader may be lost), each
//! of those runs is recorded after all.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::Subject;
use bytes::Bytes;
use futures::StreamExt;

use super::FunctionLoop;
use crate::run_store::Lifetime;
use crate::steps::{RunRecord, RunState, RunStatus};

/// The longest a confirmation is awaited (at most a third of `ack_wait`).
const CONFIRM_WITHIN: Duration = Duration::from_secs(2);

/// A plain first delivery acked without a record: its ack subject and its run.
pub(crate) type AckedPlain = (Subject, Arc<RunState>);

/// What may lose an ack already sent: the consumer's leader changing (counted from the
/// server's leader-elected advisories) and the connection being re-established.
#[derive(Debug, Default)]
pub(crate) struct Leadership {
    elections: AtomicU64,
    followed: AtomicBool,
}

/// A moment of [`Leadership`], compared after the confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch {
    elections: u64,
    connects: u64,
    /// Losses of the consumer's binding: a consumer deleted and made again (by this worker
    /// or another) under the same name answers an ack it never delivered.
    losses: u64,
}

impl FunctionLoop {
    /// The current epoch; `None` while the leader elections are not followed (every plain
    /// run is then recorded after its ack).
    pub(crate) fn epoch(&self) -> Option<Epoch> {
        let leadership = &self.leadership;
        leadership.followed.load(Ordering::Acquire).then(|| Epoch {
            elections: leadership.elections.load(Ordering::Acquire),
            connects: self
                .shared
                .client
                .nats()
                .statistics()
                .connects
                .load(Ordering::Acquire),
            losses: self.events.binding.losses(),
        })
    }

    /// Follows the leader elections of the function's consumer until `stop`
    /// (`$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.<stream>.<function>`).
    pub(crate) async fn follow_leaders(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{}.{}",
            self.shared.events_stream, self.function.id
        );
        let nats = self.shared.client.nats().clone();
        let function = Arc::clone(self);
        match nats.subscribe(subject).await {
            Ok(mut elections) => {
                self.leadership.followed.store(true, Ordering::Release);
                let stop = self.shared.stop.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            next = elections.next() => match next {
                                Some(_) => {
                                    function.leadership.elections.fetch_add(1, Ordering::AcqRel);
                                }
                                None => {
                                    function.leadership.followed.store(false, Ordering::Release);
                                    return;
                                }
                            },
                        }
                    }
                })
            }
            Err(error) => {
                tracing::warn!(function = %self.function.id, %error, "cannot follow the consumer's leader elections: every finished run is recorded");
                tokio::spawn(async {})
            }
        }
    }

    /// Confirms the acks of plain runs, or records those runs (see the module).
    pub(crate) async fn confirm(&self, acked: Vec<AckedPlain>, before: Option<Epoch>) {
        let Some((last, _)) = acked.last() else {
            return;
        };
        let within = (self.function.settings.ack_wait / 3).min(CONFIRM_WITHIN);
        let request = async_nats::Request::new()
            .payload(Bytes::from_static(b"+ACK"))
            .timeout(Some(within));
        let answered = self
            .shared
            .client
            .nats()
            .send_request(last.clone(), request)
            .await;
        let why = match (answered, before) {
            (Err(error), _) => format!("the ack was not confirmed: {error}"),
            (Ok(_), None) => "the consumer's leader elections are not followed".to_owned(),
            (Ok(_), Some(before)) if self.epoch() != Some(before) => {
                "the consumer's leader, its binding or the connection changed meanwhile".to_owned()
            }
            (Ok(_), Some(_)) => return,
        };
        tracing::info!(function = %self.function.id, runs = acked.len(), reason = %why,
            "recording acked runs whose acks may be lost, then acking them again");
        let Some(store) = self.shared.runs.as_ref() else {
            return;
        };
        let record = RunRecord::now(RunStatus::Ok, None);
        let nats = self.shared.client.nats();
        let each = acked.iter().map(|(reply, run)| {
            let record = &record;
            async move {
                let written = store
                    .put_until(&run.run_key, record, Lifetime::Retention, run.deadline())
                    .await;
                match written {
                    Ok(()) => {
                        let _ = nats.publish(reply.clone(), Bytes::from_static(b"+ACK")).await;
                    }
                    Err(error) => {
                        tracing::error!(function = %self.function.id, run = %run.run_key, %error,
                            "an acked run whose ack may be lost cannot be recorded: if the ack was lost, it runs again");
                        self.record_failed("run");
                    }
                }
            }
        });
        futures::future::join_all(each).await;
    }
}
