//! Listing and deleting the cron schedules stored in a namespace (`herald schedules`).

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::TryStreamExt;

use super::handler::ScheduleBody;
use super::{CronTrigger, HEADER_CRON};

/// A cron schedule stored in the events stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredSchedule {
    /// The function it fires.
    pub function: String,
    /// The trigger's id.
    pub cron_id: String,
    /// The subject holding it.
    pub subject: String,
    /// The pattern as the function gave it.
    pub schedule: String,
    /// The 6-field pattern the server reads.
    pub pattern: String,
    /// The IANA zone, `None` for UTC.
    pub time_zone: Option<String>,
    /// The next tick after now, RFC 3339 in the zone (computed here the way the server does).
    pub next: Option<String>,
    /// The schedule message's stream sequence.
    pub sequence: u64,
}

/// Why schedules could not be listed or deleted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleAdminError {
    /// NATS failed.
    #[error("reading the cron schedules: {0}")]
    Nats(#[from] async_nats::Error),
    /// No such schedule.
    #[error("function {function} has no cron schedule {cron_id}; `herald schedules` lists them")]
    NotFound {
        /// The function.
        function: String,
        /// The id asked for.
        cron_id: String,
    },
}

/// Every cron schedule in the client's namespace, by function then id.
pub async fn list(client: &herald::Client) -> Result<Vec<StoredSchedule>, ScheduleAdminError> {
    let namespace = client.namespace();
    let stream = client
        .jetstream()
        .get_stream(namespace.events_stream())
        .await
        .map_err(async_nats::Error::from)?;
    let filter = format!("{}.redrive.*.cron.*", namespace.as_str());
    let mut subjects = stream
        .info_with_subjects(&filter)
        .await
        .map_err(async_nats::Error::from)?;
    let mut names = Vec::new();
    while let Some((subject, _)) = subjects.try_next().await.map_err(async_nats::Error::from)? {
        names.push(subject);
    }
    let mut schedules = Vec::new();
    for subject in names {
        let message = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
            Err(error) => return Err(async_nats::Error::from(error).into()),
        };
        let tokens: Vec<&str> = subject.split('.').collect();
        let (Some(function), Some(cron_id)) = (tokens.get(2), tokens.get(4)) else {
            continue;
        };
        let Ok(body) = serde_json::from_slice::<ScheduleBody>(&message.payload) else {
            continue;
        };
        let next = CronTrigger::new(&body.pattern, body.time_zone.as_deref())
            .ok()
            .and_then(|trigger| trigger.next_after(chrono::Utc::now()))
            .map(|time| time.to_rfc3339());
        schedules.push(StoredSchedule {
            function: (*function).to_owned(),
            cron_id: message
                .headers
                .get(HEADER_CRON)
                .map_or_else(|| (*cron_id).to_owned(), |v| v.as_str().to_owned()),
            subject: subject.clone(),
            schedule: body.schedule,
            pattern: body.pattern,
            time_zone: body.time_zone,
            next,
            sequence: message.sequence,
        });
    }
    schedules.sort_by(|a, b| (&a.function, &a.cron_id).cmp(&(&b.function, &b.cron_id)));
    Ok(schedules)
}

/// Deletes one cron schedule of `function`: no tick fires from it afterwards. A replica
/// still running a version of the function with this trigger writes it again at its next
/// start.
pub async fn delete(
    client: &herald::Client,
    function: &str,
    cron_id: &str,
) -> Result<(), ScheduleAdminError> {
    let namespace = client.namespace();
    let subject = super::schedule_subject(namespace, function, cron_id);
    let stream = client
        .jetstream()
        .get_stream(namespace.events_stream())
        .await
        .map_err(async_nats::Error::from)?;
    let purged = stream
        .purge()
        .filter(&subject)
        .await
        .map_err(async_nats::Error::from)?;
    if purged.purged == 0 {
        return Err(ScheduleAdminError::NotFound {
            function: function.to_owned(),
            cron_id: cron_id.to_owned(),
        });
    }
    Ok(())
}
