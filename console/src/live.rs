//! Live updates: one NATS feed per topic (ordered consumers delivering new messages only),
//! shared by every page through a broadcast channel, and served to browsers as server-sent
//! events with the page's filters applied here. A page that falls behind gets `resync` and
//! reloads; one that reconnects resumes where it left off ([`crate::resume`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use herald_worker::activity::ActivityRecord;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::data::StoredEvent;
use crate::resume::{self, ChangePosition};
use crate::state::AppState;
use crate::util::pattern_matches;

/// Which stream a change notice comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `NS_ACTIVITY`.
    Activity,
    /// `NS_DLQ`.
    DeadLetters,
}

/// Something that changed a run or a function's dead letters.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) source: Source,
    /// Its sequence in its stream.
    pub(crate) sequence: u64,
    pub(crate) function: String,
    /// The run key, for activity records.
    pub(crate) run: Option<String>,
    /// The event id, for activity records.
    pub(crate) event_id: Option<String>,
}

/// How far the console's feeds have read `NS_ACTIVITY` and `NS_DLQ`. A page takes this
/// position before it reads what it shows and asks its change notices from there
/// (`after=`), so that a change stored between its render and its feed's connection is
/// not missed.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    activity: AtomicU64,
    dead_letters: AtomicU64,
}

impl Seen {
    /// The position read so far.
    pub(crate) fn position(&self) -> ChangePosition {
        ChangePosition {
            activity: self.activity.load(Ordering::SeqCst),
            dead_letters: self.dead_letters.load(Ordering::SeqCst),
        }
    }
}

/// Follows `subject` in `stream` from now on, handing each message to `each`; restarts the
/// consumer (after a pause) whenever it fails, for as long as the console lives, from the
/// message after the last one it handed on, so a restart loses nothing.
async fn follow(
    client: herald::Client,
    stream: String,
    subject: String,
    seen: impl Fn(u64),
    mut each: impl FnMut(async_nats::jetstream::Message),
) {
    let mut next: Option<u64> = None;
    loop {
        if next.is_none() {
            // Read from now on: everything stored so far counts as seen.
            seen(resume::last_sequence(&client, &stream).await);
        }
        let deliver_policy = match next {
            Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            None => DeliverPolicy::New,
        };
        let consumer = async {
            client
                .jetstream()
                .get_stream(&stream)
                .await?
                .create_consumer(pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy,
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
                        Ok(message) => {
                            let sequence = message.info().ok().map(|i| i.stream_sequence);
                            each(message);
                            if let Some(sequence) = sequence {
                                next = Some(sequence + 1);
                                // After the broadcast: a page that saw this sequence has
                                // either had its notice or asks for what follows it.
                                seen(sequence);
                            }
                        }
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
        |_| {},
        move |message| {
            let _ = sender.send(Arc::new(StoredEvent::from_message(&message)));
        },
    )
    .await;
}

/// The change an activity record makes, if it is one.
fn activity_change(message: &async_nats::jetstream::Message) -> Option<Change> {
    let record = serde_json::from_slice::<ActivityRecord>(&message.payload).ok()?;
    Some(Change {
        source: Source::Activity,
        sequence: sequence_of(message),
        function: record.function,
        run: Some(record.run),
        event_id: Some(record.event_id),
    })
}

/// The change a dead letter makes (`prefix` is `ns.dlq.`).
fn dead_letter_change(prefix: &str, message: &async_nats::jetstream::Message) -> Change {
    Change {
        source: Source::DeadLetters,
        sequence: sequence_of(message),
        function: message
            .subject
            .as_str()
            .strip_prefix(prefix)
            .unwrap_or_default()
            .to_owned(),
        run: None,
        event_id: None,
    }
}

fn sequence_of(message: &async_nats::jetstream::Message) -> u64 {
    message.info().map_or(0, |i| i.stream_sequence)
}

pub(crate) async fn follow_activity(
    client: herald::Client,
    sender: broadcast::Sender<Arc<Change>>,
    seen: Arc<Seen>,
) {
    let namespace = client.namespace().clone();
    follow(
        client,
        namespace.activity_stream(),
        namespace.activity_wildcard(),
        move |sequence| {
            seen.activity.fetch_max(sequence, Ordering::SeqCst);
        },
        move |message| {
            if let Some(change) = activity_change(&message) {
                let _ = sender.send(Arc::new(change));
            }
        },
    )
    .await;
}

pub(crate) async fn follow_dead_letters(
    client: herald::Client,
    sender: broadcast::Sender<Arc<Change>>,
    seen: Arc<Seen>,
) {
    let namespace = client.namespace().clone();
    let prefix = namespace.dlq_subject("");
    follow(
        client,
        namespace.dlq_stream(),
        namespace.dlq_wildcard(),
        move |sequence| {
            seen.dead_letters.fetch_max(sequence, Ordering::SeqCst);
        },
        move |message| {
            let _ = sender.send(Arc::new(dead_letter_change(&prefix, &message)));
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

fn event_row(event: &StoredEvent) -> Event {
    Event::default()
        .event("event")
        .id(event.sequence.to_string())
        .data(crate::pages::events::row(event).into_string())
}

/// `GET /live/events?type=P`: each new event of a matching type as a table row, its `id:`
/// the event's stream sequence. With `Last-Event-ID: S`, first every matching event stored
/// after `S` (then the live ones after those, none twice).
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    Query(filter): Query<EventsFilter>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let pattern = crate::util::given(filter.pattern.as_ref())
        .unwrap_or(">")
        .to_owned();
    // Subscribe before reading the stream, so that nothing stored meanwhile falls between.
    let live = BroadcastStream::new(state.events.subscribe());
    let mut backlog = Vec::new();
    let mut read_to = 0;
    if let Some(after) = resume::last_event_id(&headers).and_then(|id| id.parse::<u64>().ok()) {
        let namespace = state.client.namespace();
        // A valid pattern filters on the server, so unrelated events do not count against
        // the catch-up limit.
        let subject = if herald::EventType::new(pattern.replace(['*', '>'], "x")).is_ok() {
            format!("{}{pattern}", herald::protocol::events_prefix(namespace))
        } else {
            namespace.events_wildcard()
        };
        match resume::catch_up(&state.client, &namespace.events_stream(), subject, after).await {
            Ok(caught) if caught.truncated => backlog.push(resync()),
            Ok(caught) => {
                read_to = caught.read_to;
                backlog.extend(
                    caught
                        .messages
                        .iter()
                        .map(StoredEvent::from_message)
                        .filter(|event| pattern_matches(&pattern, &event.event_type))
                        .map(|event| event_row(&event)),
                );
            }
            Err(error) => {
                tracing::debug!(error = %error.message, "the events feed cannot catch up; the page reloads");
                backlog.push(resync());
            }
        }
    }
    let live = live.filter_map(move |item| {
        let event = match item {
            Ok(event)
                if event.sequence > read_to && pattern_matches(&pattern, &event.event_type) =>
            {
                Some(event_row(&event))
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(_)) => Some(resync()),
        };
        std::future::ready(event.map(Ok))
    });
    let stream = futures::stream::iter(backlog.into_iter().map(Ok)).chain(live);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The filter of a page's change notices.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct ChangeFilter {
    function: Option<String>,
    run: Option<String>,
    event: Option<String>,
    /// The position the page was rendered at ([`Seen`]), when the browser sends no
    /// `Last-Event-ID`.
    after: Option<String>,
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

/// `GET /live/changes?function=&run=&event=&after=`: `changed` whenever an activity record
/// or a dead letter concerns what the page shows; the page then fetches itself again. Each
/// notice's `id:` is `<activity>.<dlq>` (the stream sequences it has reached); with
/// `Last-Event-ID`, or else `after` (the page's render position, [`Seen`]), first the
/// notices for what was stored after that point.
pub(crate) async fn changes(
    State(state): State<Arc<AppState>>,
    Query(filter): Query<ChangeFilter>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let live = BroadcastStream::new(state.changes.subscribe());
    let namespace = state.client.namespace();
    let (activity_stream, dlq_stream) = (namespace.activity_stream(), namespace.dlq_stream());
    let reconnected = resume::last_event_id(&headers).and_then(ChangePosition::parse);
    let rendered = filter.after.as_deref().and_then(ChangePosition::parse);
    let resumed = reconnected.or(rendered);
    let mut backlog = Vec::new();
    let mut position = ChangePosition::default();
    let now = async {
        ChangePosition {
            activity: resume::last_sequence(&state.client, &activity_stream).await,
            dead_letters: resume::last_sequence(&state.client, &dlq_stream).await,
        }
    };
    match resumed {
        None => position = now.await,
        Some(after) => {
            let prefix = namespace.dlq_subject("");
            let activity = resume::catch_up(
                &state.client,
                &activity_stream,
                namespace.activity_wildcard(),
                after.activity,
            )
            .await;
            let letters = resume::catch_up(
                &state.client,
                &dlq_stream,
                namespace.dlq_wildcard(),
                after.dead_letters,
            )
            .await;
            match (activity, letters) {
                (Ok(activity), Ok(letters)) if !activity.truncated && !letters.truncated => {
                    position = after;
                    let changes = activity.messages.iter().filter_map(activity_change).chain(
                        letters
                            .messages
                            .iter()
                            .map(|m| dead_letter_change(&prefix, m)),
                    );
                    for change in changes {
                        if let Some(event) = notice(&filter, &mut position, &change) {
                            backlog.push(event);
                        }
                    }
                    position.activity = position.activity.max(activity.read_to);
                    position.dead_letters = position.dead_letters.max(letters.read_to);
                }
                // A page just rendered from a position too far behind (a feed still
                // starting) is not reloaded: it follows from now, as before it knew one.
                _ if reconnected.is_none() => position = now.await,
                _ => backlog.push(resync()),
            }
        }
    }
    let live = live.filter_map(move |item| {
        let event = match item {
            Ok(change) => notice(&filter, &mut position, &change),
            Err(BroadcastStreamRecvError::Lagged(_)) => Some(resync()),
        };
        std::future::ready(event.map(Ok))
    });
    let stream = futures::stream::iter(backlog.into_iter().map(Ok)).chain(live);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The notice for `change`, when the page wants it and has not had it yet; moves
/// `position` past it.
fn notice(filter: &ChangeFilter, position: &mut ChangePosition, change: &Change) -> Option<Event> {
    let reached = match change.source {
        Source::Activity => &mut position.activity,
        Source::DeadLetters => &mut position.dead_letters,
    };
    if change.sequence <= *reached {
        return None;
    }
    *reached = change.sequence;
    filter.matches(change).then(|| {
        Event::default()
            .event("changed")
            .id(position.id())
            .data(change.function.clone())
    })
}
