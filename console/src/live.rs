//! Live updates: one NATS feed per topic (ordered consumers delivering new messages only),
//! shared by every page through a broadcast channel, and served to browsers as server-sent
//! events with the page's filters applied here. A page that falls behind gets `resync` and
//! reloads.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use herald_worker::activity::ActivityRecord;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::data::StoredEvent;
use crate::state::AppState;
use crate::util::pattern_matches;

/// Something that changed a run or a function's dead letters.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) function: String,
    /// The run key, for activity records.
    pub(crate) run: Option<String>,
    /// The event id, for activity records.
    pub(crate) event_id: Option<String>,
}

/// Follows `subject` in `stream` from now on, handing each message to `each`; restarts the
/// consumer (after a pause) whenever it fails, for as long as the console lives.
async fn follow(
    client: herald::Client,
    stream: String,
    subject: String,
    mut each: impl FnMut(async_nats::jetstream::Message),
) {
    loop {
        let consumer = async {
            client
                .jetstream()
                .get_stream(&stream)
                .await?
                .create_consumer(pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy: DeliverPolicy::New,
                    ..Default::default()
                })
                .await?
                .messages()
                .await
                .map_err(async_nats::Error::from)
        };
        match consumer.await {
            Ok(mut messages) => {
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(message) => each(message),
                        Err(error) => {
                            tracing::debug!(%stream, %error, "a live feed failed; restarting it");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(%stream, %error, "a live feed cannot start yet"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub(crate) async fn follow_events(
    client: herald::Client,
    sender: broadcast::Sender<Arc<StoredEvent>>,
) {
    let namespace = client.namespace().clone();
    follow(
        client,
        namespace.events_stream(),
        namespace.events_wildcard(),
        move |message| {
            let _ = sender.send(Arc::new(StoredEvent::from_message(&message)));
        },
    )
    .await;
}

pub(crate) async fn follow_activity(
    client: herald::Client,
    sender: broadcast::Sender<Arc<Change>>,
) {
    let namespace = client.namespace().clone();
    follow(
        client,
        namespace.activity_stream(),
        namespace.activity_wildcard(),
        move |message| {
            if let Ok(record) = serde_json::from_slice::<ActivityRecord>(&message.payload) {
                let _ = sender.send(Arc::new(Change {
                    function: record.function,
                    run: Some(record.run),
                    event_id: Some(record.event_id),
                }));
            }
        },
    )
    .await;
}

pub(crate) async fn follow_dead_letters(
    client: herald::Client,
    sender: broadcast::Sender<Arc<Change>>,
) {
    let namespace = client.namespace().clone();
    let prefix = namespace.dlq_subject("");
    follow(
        client,
        namespace.dlq_stream(),
        namespace.dlq_wildcard(),
        move |message| {
            let function = message
                .subject
                .as_str()
                .strip_prefix(&prefix)
                .unwrap_or_default()
                .to_owned();
            let _ = sender.send(Arc::new(Change {
                function,
                run: None,
                event_id: None,
            }));
        },
    )
    .await;
}

fn resync() -> Event {
    Event::default().event("resync").data("reload")
}

/// The filter of the events tail.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsFilter {
    #[serde(rename = "type")]
    pattern: Option<String>,
}

/// `GET /live/events?type=P`: each new event of a matching type as a table row.
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    Query(filter): Query<EventsFilter>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let pattern = crate::util::given(filter.pattern.as_ref())
        .unwrap_or(">")
        .to_owned();
    let stream = BroadcastStream::new(state.events.subscribe()).filter_map(move |item| {
        let event = match item {
            Ok(event) if pattern_matches(&pattern, &event.event_type) => Some(
                Event::default()
                    .event("event")
                    .id(event.sequence.to_string())
                    .data(crate::pages::events::row(&event).into_string()),
            ),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(_)) => Some(resync()),
        };
        std::future::ready(event.map(Ok))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The filter of a page's change notices.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct ChangeFilter {
    function: Option<String>,
    run: Option<String>,
    event: Option<String>,
}

impl ChangeFilter {
    fn matches(&self, change: &Change) -> bool {
        let wanted =
            |want: &Option<String>, have: Option<&str>| match crate::util::given(want.as_ref()) {
                None => true,
                Some(want) => have == Some(want),
            };
        wanted(&self.function, Some(&change.function))
            && wanted(&self.run, change.run.as_deref())
            && wanted(&self.event, change.event_id.as_deref())
    }
}

/// `GET /live/changes?function=&run=&event=`: `changed` whenever an activity record or a
/// dead letter concerns what the page shows; the page then fetches itself again.
pub(crate) async fn changes(
    State(state): State<Arc<AppState>>,
    Query(filter): Query<ChangeFilter>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(state.changes.subscribe()).filter_map(move |item| {
        let event = match item {
            Ok(change) if filter.matches(&change) => Some(
                Event::default()
                    .event("changed")
                    .data(change.function.clone()),
            ),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(_)) => Some(resync()),
        };
        std::future::ready(event.map(Ok))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
