//! Where a consumer's pull requests are answered: one subscription for all of them, read by
//! the consumer's one lane task ([`super::pull`]), as async-nats's pull stream and nats.go's
//! `Consume` read theirs. nats-server serves its waiting requests in turn; with a
//! subscription per request, consecutive messages would reach different tasks.
//!
//! The inbox counts what its requests still want. A request ends when it has had every
//! message it asked for (the server says nothing more), or with a status that gives what
//! it still wanted (`408 Request Timeout` at its expiry, `Nats-Pending-Messages`); those
//! places in the window go back. A status without that count (`409 Leadership Change`,
//! `409 Consumer Deleted`, a refused request, `503` no responders) ends what is open: every
//! place goes back and the caller re-checks the consumer. If answers are lost (a
//! reconnection), every request has ended once the last one's expiry and a grace period
//! have passed.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::{StatusCode, Subject, Subscriber};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::group::Held;

/// How long after its expiry a request's last answer is waited for.
const ANSWER_GRACE: Duration = Duration::from_secs(5);

/// One consumer's pull requests: their subscription and what they still want.
pub(crate) struct Inbox {
    subject: Subject,
    subscriber: Subscriber,
    /// Messages asked for and neither delivered nor given up by the server.
    pending: usize,
    /// Their places in the window; one goes with each message delivered.
    places: Option<OwnedSemaphorePermit>,
    /// When the last request sent has surely ended.
    all_ended: Pin<Box<Sleep>>,
}

/// What came to the inbox.
pub(crate) enum Answer {
    /// A message, with its place in the window (none if it came beyond what was asked).
    /// Kept as the client's message: a `jetstream::Message` would carry a clone of the
    /// JetStream context (its client's channels, a prefix string), which costs more to make
    /// and drop per message than reading the rest of the delivery's metadata; Herald settles
    /// through its own client ([`super::delivery::Delivery::ack`]).
    Message(async_nats::Message, Held),
    /// A request ended, or every request did: places went back.
    Released,
    /// A status ended every open request without saying how many messages they still
    /// wanted: the consumer may have changed (its leader, or itself).
    Failed(String),
}

impl Inbox {
    /// Subscribes to a fresh inbox subject.
    pub(crate) async fn open(
        nats: &async_nats::Client,
    ) -> Result<Inbox, async_nats::SubscribeError> {
        let subject = Subject::from(nats.new_inbox());
        let subscriber = nats.subscribe(subject.clone()).await?;
        Ok(Inbox {
            subject,
            subscriber,
            pending: 0,
            places: None,
            all_ended: Box::pin(tokio::time::sleep(Duration::ZERO)),
        })
    }

    /// The subject that pull requests name as their reply subject.
    pub(crate) fn subject(&self) -> Subject {
        self.subject.clone()
    }

    /// Messages asked for that have neither come nor been given up.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// A request for `places.num_permits()` messages, expiring after `expires`, was sent.
    pub(crate) fn sent(&mut self, places: OwnedSemaphorePermit, expires: Duration) {
        self.pending += places.num_permits();
        match self.places.as_mut() {
            Some(held) => held.merge(places),
            None => self.places = Some(places),
        }
        self.all_ended
            .as_mut()
            .reset(Instant::now() + expires + ANSWER_GRACE);
    }

    /// Gives the places of what has not come yet back to the window (at shutdown: what
    /// comes is handed back, not run). Pending messages are still counted.
    pub(crate) fn give_back_places(&mut self) {
        self.places = None;
    }

    /// The next answer; `None` once the client is closed.
    pub(crate) fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Option<Answer>> {
        loop {
            let message = match self.subscriber.poll_next_unpin(cx) {
                Poll::Ready(Some(message)) => message,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    if self.pending > 0 && self.all_ended.as_mut().poll(cx).is_ready() {
                        tracing::debug!(
                            pending = self.pending,
                            "pull requests ended without an answer; their places go back"
                        );
                        self.release_all();
                        return Poll::Ready(Some(Answer::Released));
                    }
                    return Poll::Pending;
                }
            };
            match message.status {
                None | Some(StatusCode::OK) => {
                    self.pending = self.pending.saturating_sub(1);
                    let place = self.places.as_mut().and_then(|places| places.split(1));
                    return Poll::Ready(Some(Answer::Message(message, place)));
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                Some(status) => match still_wanted(&message) {
                    Some(wanted) => {
                        self.release(wanted);
                        return Poll::Ready(Some(Answer::Released));
                    }
                    None => {
                        self.release_all();
                        let description = message.description.as_deref().unwrap_or("");
                        return Poll::Ready(Some(Answer::Failed(format!(
                            "the server ended the pull requests: {status} {description}"
                        ))));
                    }
                },
            }
        }
    }

    /// The next answer (see [`Inbox::poll_answer`]).
    pub(crate) async fn answer(&mut self) -> Option<Answer> {
        std::future::poll_fn(|cx| self.poll_answer(cx)).await
    }

    /// A request ended wanting `wanted` more messages.
    fn release(&mut self, wanted: usize) {
        self.pending = self.pending.saturating_sub(wanted);
        if let Some(places) = self.places.as_mut() {
            drop(places.split(wanted.min(places.num_permits())));
        }
    }

    /// Every request ended.
    fn release_all(&mut self) {
        self.pending = 0;
        self.places = None;
    }
}

/// How many messages an ended request still wanted (`Nats-Pending-Messages`), if the status
/// says.
fn still_wanted(message: &async_nats::Message) -> Option<usize> {
    message
        .headers
        .as_ref()?
        .get("Nats-Pending-Messages")?
        .as_str()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, headers: &[(&str, &str)]) -> async_nats::Message {
        let mut map = async_nats::HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        async_nats::Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers: Some(map),
            status: StatusCode::from_u16(code).ok(),
            description: Some("Request Timeout".to_owned()),
            length: 0,
        }
    }

    #[test]
    fn an_expired_request_says_how_many_messages_it_still_wanted() {
        let timeout = status(
            408,
            &[("Nats-Pending-Messages", "37"), ("Nats-Pending-Bytes", "0")],
        );
        assert_eq!(still_wanted(&timeout), Some(37));
    }

    #[test]
    fn a_status_without_the_count_says_nothing() {
        assert_eq!(still_wanted(&status(409, &[])), None);
        let garbled = status(408, &[("Nats-Pending-Messages", "many")]);
        assert_eq!(still_wanted(&garbled), None);
    }
}
