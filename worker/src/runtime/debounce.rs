//! Debounce (protocol section 9): a trigger event is folded into its key's window, a
//! scheduled message replaced by compare-and-set, and acked; the server fires the window's
//! last event to `ns.redrive.F` when the period passes with no newer event, or at the
//! timeout. No timer runs in the worker.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use herald::protocol::{self, header};

use super::FunctionLoop;
use super::continuation::schedule_time;
use super::decide::Outcome;
use super::delivery::{Delivery, log};
use crate::cron::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use crate::flow::debounce::{self, Debounce, HEADER_FIRST, HEADER_KEY, HEADER_SEQ};

/// Compare-and-set conflicts tried again (each means another event of the key, or the
/// window firing, came in between).
const ROUNDS: usize = 20;

impl FunctionLoop {
    /// Folds a trigger event into its debounce window; `Some` settles the delivery.
    pub(super) async fn debounced(&self, delivery: &Delivery) -> Option<Outcome> {
        let settings = self.function.settings.debounce.as_ref()?;
        // Only events from the log: a fired window, a redrive or a replay arrives on
        // `ns.redrive.F` and runs.
        if !delivery.subject().starts_with(&self.shared.events_prefix) {
            return None;
        }
        // An event that does not decode is dead-lettered by the handler's path.
        let key = (settings.key)(&delivery.data).ok()?;
        let token = debounce::key_token(&key);
        let fold = self.fold(delivery, settings, &token);
        match self.keep_alive(delivery, fold).await {
            Ok(at) => {
                log!(delivery, debug, key, fires_at = %at, "folded into the debounce window");
                Some(Outcome::Debounced)
            }
            Err(error) => Some(Outcome::StoreUnavailable(format!(
                "the debounce window cannot be updated: {error}"
            ))),
        }
    }

    /// Replaces the key's schedule with one holding this event; returns when it fires.
    async fn fold(
        &self,
        delivery: &Delivery,
        settings: &Debounce,
        token: &str,
    ) -> Result<String, async_nats::Error> {
        let namespace = self.shared.client.namespace();
        let subject = debounce::schedule_subject(namespace, &self.function.id, token);
        let js = self.shared.client.jetstream();
        let stream = js.get_stream_no_info(&self.shared.events_stream).await?;
        for _ in 0..ROUNDS {
            let now = crate::steps::now_ms();
            let (expected, first) = match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(window) => {
                    let number = |name: &str| {
                        window
                            .headers
                            .get(name)
                            .and_then(|v| v.as_str().parse::<u64>().ok())
                    };
                    // A newer event holds the window (this one is a late redelivery), or
                    // this very event does (its ack was lost): nothing to replace.
                    if number(HEADER_SEQ).is_some_and(|seq| seq >= delivery.stream_sequence) {
                        return Ok("unchanged".to_owned());
                    }
                    (window.sequence, number(HEADER_FIRST).unwrap_or(now))
                }
                Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => (0, now),
                Err(error) => return Err(error.into()),
            };
            let at = schedule_time(debounce::fire_at(
                now,
                first,
                settings.period,
                self.function.settings.debounce_timeout,
            ));
            let mut headers = match delivery.headers() {
                Some(original) => protocol::copy_headers_except_transport(original, &[]),
                None => async_nats::HeaderMap::new(),
            };
            headers.insert(header::NATS_SCHEDULE, protocol::schedule_at(&at));
            headers.insert(
                header::NATS_SCHEDULE_TARGET,
                namespace.redrive_subject(&self.function.id).as_str(),
            );
            if self.shared.schedules_ttl {
                headers.insert(header::NATS_TTL, header::TTL_NEVER);
            }
            headers.insert(HEADER_FIRST, first.to_string().as_str());
            headers.insert(HEADER_SEQ, delivery.stream_sequence.to_string().as_str());
            headers.insert(HEADER_KEY, token);
            headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string().as_str(),
            );
            let sent = js
                .send_publish(
                    subject.clone(),
                    PublishMessage::build()
                        .payload(delivery.payload().clone())
                        .headers(headers),
                )
                .await?
                .await;
            match sent {
                Ok(_) => return Ok(at),
                // Another event of the key, or the window fired: read again.
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(format!("the debounce window of {subject} kept changing ({ROUNDS} tries)").into())
    }
}
