//! Reconciling a function's cron schedules at start, with no leader: every replica reads
//! each schedule message and writes it only when it differs, with an expected last subject
//! sequence, so one write wins and the others re-read an equal message.

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use futures::TryStreamExt;
use herald::protocol::header;

use super::handler::ScheduleBody;
use super::{
    CronTrigger, HEADER_CRON, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_SCHEDULE_TIME_ZONE,
    TICK_SOURCE, TICK_TYPE, schedule_prefix, schedule_subject,
};

/// Conflicting writes retried before giving up (each loser re-reads a message a winner
/// wrote, so two rounds are enough unless replicas disagree on the schedule).
const ROUNDS: usize = 5;

/// Why a cron schedule could not be put in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The server refused the schedule (a pattern or zone it does not read, no scheduled
    /// messages on the stream): retrying does not help.
    #[error(
        "nats-server refused the cron schedule {pattern:?} (zone {zone}) of function \
         {function}: {reason}. Cron triggers need nats-server 2.12+ (2.14+ with a time zone) \
         and the zone's data on the server's host"
    )]
    Refused {
        /// The function.
        function: String,
        /// The 6-field pattern.
        pattern: String,
        /// The zone, `UTC` when none.
        zone: String,
        /// The server's words.
        reason: String,
    },
    /// Replicas keep writing different schedules for the same trigger.
    #[error(
        "the cron schedule on {subject} kept changing under function {function}'s replicas; \
         do replicas run different versions of it?"
    )]
    Contended {
        /// The function.
        function: String,
        /// The schedule's subject.
        subject: String,
    },
    /// NATS did not answer (a node down, a leader election): worth retrying.
    #[error("cron schedule of function {function}: {source}")]
    Nats {
        /// The function.
        function: String,
        /// The error.
        source: async_nats::Error,
    },
}

impl ScheduleError {
    /// Whether retrying can help.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, ScheduleError::Nats { .. })
    }
}

/// What a replica found and did for one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reconciled {
    /// The schedule was already in place.
    Unchanged,
    /// This replica wrote it.
    Written,
}

/// The schedule message a trigger stands for: its headers (without the expected sequence)
/// and body.
pub(crate) fn schedule_message(
    namespace: &herald::Namespace,
    function: &str,
    trigger: &CronTrigger,
    ttl_never: bool,
) -> (HeaderMap, bytes::Bytes) {
    let id = trigger.id();
    let mut headers = HeaderMap::new();
    headers.insert(header::NATS_SCHEDULE, trigger.pattern());
    headers.insert(
        header::NATS_SCHEDULE_TARGET,
        namespace.redrive_subject(function).as_str(),
    );
    if let Some(zone) = trigger.time_zone() {
        headers.insert(NATS_SCHEDULE_TIME_ZONE, zone);
    }
    if ttl_never {
        headers.insert(header::NATS_TTL, header::TTL_NEVER);
    }
    headers.insert(header::SPEC_VERSION, header::SPEC_VERSION_VALUE);
    headers.insert(header::ID, format!("cron-{id}").as_str());
    headers.insert(header::TYPE, TICK_TYPE);
    headers.insert(header::SOURCE, TICK_SOURCE);
    headers.insert(HEADER_CRON, id.as_str());
    let body = serde_json::to_vec(&ScheduleBody::of(trigger)).unwrap_or_default();
    (headers, body.into())
}

/// Whether a stored schedule message is the one wanted.
fn same(stored: &HeaderMap, stored_body: &[u8], wanted: &HeaderMap, wanted_body: &[u8]) -> bool {
    let names = [
        header::NATS_SCHEDULE,
        header::NATS_SCHEDULE_TARGET,
        NATS_SCHEDULE_TIME_ZONE,
        header::NATS_TTL,
        header::ID,
        header::TYPE,
        HEADER_CRON,
    ];
    stored_body == wanted_body
        && names.iter().all(|name| {
            stored.get(*name).map(|v| v.as_str()) == wanted.get(*name).map(|v| v.as_str())
        })
}

/// Puts one trigger's schedule in place (compare, then write with an expected sequence).
pub(crate) async fn reconcile(
    client: &herald::Client,
    stream: &Stream,
    function: &str,
    trigger: &CronTrigger,
    ttl_never: bool,
) -> Result<Reconciled, ScheduleError> {
    let namespace = client.namespace();
    let subject = schedule_subject(namespace, function, &trigger.id());
    let (wanted, body) = schedule_message(namespace, function, trigger, ttl_never);
    let nats = |source: async_nats::Error| ScheduleError::Nats {
        function: function.to_owned(),
        source,
    };
    for _ in 0..ROUNDS {
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Some(message),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(error) => return Err(nats(error.into())),
        };
        let expected = match &last {
            Some(message) if same(&message.headers, &message.payload, &wanted, &body) => {
                return Ok(Reconciled::Unchanged);
            }
            Some(message) => message.sequence,
            None => 0,
        };
        let mut headers = wanted.clone();
        headers.insert(
            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        let sent = client
            .jetstream()
            .send_publish(
                subject.clone(),
                PublishMessage::build()
                    .payload(body.clone())
                    .headers(headers),
            )
            .await
            .map_err(|error| nats(error.into()))?
            .await;
        match sent {
            Ok(_) => return Ok(Reconciled::Written),
            // Another replica wrote first: read what it wrote.
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => continue,
            Err(error) if refused(&error) => {
                return Err(ScheduleError::Refused {
                    function: function.to_owned(),
                    pattern: trigger.pattern().to_owned(),
                    zone: trigger.time_zone().unwrap_or("UTC").to_owned(),
                    reason: std::error::Error::source(&error)
                        .map_or_else(|| error.to_string(), ToString::to_string),
                });
            }
            Err(error) => return Err(nats(error.into())),
        }
    }
    Err(ScheduleError::Contended {
        function: function.to_owned(),
        subject,
    })
}

/// Whether the server refused the schedule itself (its `message schedules …` errors,
/// 10186–10223), as opposed to failing to store it now.
fn refused(error: &async_nats::jetstream::context::PublishError) -> bool {
    error.kind() == PublishErrorKind::Other
        && std::error::Error::source(error)
            .is_some_and(|source| source.to_string().contains("message schedules"))
}

/// The cron schedule subjects of `function` stored in the stream that none of `triggers`
/// stands for (left by an earlier version of the function).
pub(crate) async fn stale(
    client: &herald::Client,
    stream: &Stream,
    function: &str,
    triggers: &[CronTrigger],
) -> Result<Vec<String>, async_nats::Error> {
    let namespace = client.namespace();
    let prefix = schedule_prefix(namespace, function);
    let wanted: Vec<String> = triggers
        .iter()
        .map(|t| schedule_subject(namespace, function, &t.id()))
        .collect();
    let mut subjects = stream.info_with_subjects(format!("{prefix}*")).await?;
    let mut stale = Vec::new();
    while let Some((subject, _)) = subjects.try_next().await? {
        if !wanted.contains(&subject) {
            stale.push(subject);
        }
    }
    stale.sort();
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_message_names_its_pattern_zone_target_and_tick_identity() {
        let namespace = herald::Namespace::new("app").unwrap();
        let trigger = CronTrigger::new("0 12 * * 5", Some("Europe/Paris")).unwrap();
        let (headers, body) = schedule_message(&namespace, "report", &trigger, true);
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get("Nats-Schedule").as_deref(), Some("0 0 12 * * 5"));
        assert_eq!(
            get("Nats-Schedule-Target").as_deref(),
            Some("app.redrive.report")
        );
        assert_eq!(
            get("Nats-Schedule-Time-Zone").as_deref(),
            Some("Europe/Paris")
        );
        assert_eq!(get("Nats-TTL").as_deref(), Some("never"));
        assert_eq!(get("ce-type").as_deref(), Some("herald.cron"));
        assert_eq!(get("herald-cron"), Some(trigger.id()));
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["schedule"], "0 12 * * 5");
        assert_eq!(body["time_zone"], "Europe/Paris");
        assert!(same(&headers, b"x", &headers, b"x"));
        let (other, _) = schedule_message(&namespace, "report", &trigger, false);
        assert!(!same(&other, b"x", &headers, b"x"), "Nats-TTL differs");
    }
}
