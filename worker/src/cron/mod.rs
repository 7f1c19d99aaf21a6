//! Cron triggers (protocol section 8): the server fires a function on a schedule, with no
//! leader and no scheduler process in Herald.
//!
//! Each cron trigger of a function is one scheduled message on
//! `ns.redrive.<function>.cron.<cron-id>` (a repeating `Nats-Schedule`, nats-server 2.12+;
//! time zones 2.14+) whose target is `ns.redrive.<function>`, so only that function's consumer
//! sees the ticks. Every replica reconciles the message at start: it reads
//! it, and publishes only when it differs, with an expected last subject sequence, so
//! replicas that start together write it once and a restart changes nothing. A tick's run
//! key comes from the tick's own time (`Nats-Schedule-Next`), so a tick the server fires
//! twice after a leader change runs once.

mod admin;
mod handler;
pub(crate) mod reconcile;
mod trigger;

pub use admin::{ScheduleAdminError, StoredSchedule, delete, list};
pub use handler::Tick;
pub use reconcile::ScheduleError;
pub use trigger::{CronError, CronTrigger};

/// The `ce-type` of a tick (in the schedule message's headers, copied into every tick).
pub const TICK_TYPE: &str = "herald.cron";
/// The `ce-source` of a tick.
pub const TICK_SOURCE: &str = "urn:herald:cron";

/// `herald-cron: <cron-id>`: the message is a tick of this cron trigger (on the schedule
/// message, so on every tick the server fires from it).
pub const HEADER_CRON: &str = "herald-cron";
/// `herald-cron-next: <time>`: the tick's `Nats-Schedule-Next`, kept on copies of a tick
/// (continuations, dead letters, redrives), which drop `Nats-*` headers.
pub const HEADER_CRON_NEXT: &str = "herald-cron-next";
/// `Nats-Scheduler`: on a message the server fired, the schedule's subject.
pub const NATS_SCHEDULER: &str = "Nats-Scheduler";
/// `Nats-Schedule-Next`: on a message the server fired from a repeating schedule, the time
/// of the schedule's next fire (RFC 3339, in the schedule's time zone).
pub const NATS_SCHEDULE_NEXT: &str = "Nats-Schedule-Next";
/// `Nats-Schedule-Time-Zone`: the IANA zone a cron pattern is read in (nats-server 2.14+).
pub const NATS_SCHEDULE_TIME_ZONE: &str = "Nats-Schedule-Time-Zone";
/// `Nats-Expected-Last-Subject-Sequence`: a publish that only succeeds when the subject's
/// last message has this sequence (0: none).
pub const NATS_EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// The subject holding a function's cron schedule: `ns.redrive.<function>.cron.<cron-id>`.
pub fn schedule_subject(namespace: &herald::Namespace, function: &str, cron_id: &str) -> String {
    format!("{}.cron.{cron_id}", namespace.redrive_subject(function))
}

/// The prefix of every cron schedule subject of a function (`ns.redrive.<function>.cron.`).
pub fn schedule_prefix(namespace: &herald::Namespace, function: &str) -> String {
    format!("{}.cron.", namespace.redrive_subject(function))
}

/// The run id of a tick: `cron-<cron-id>-<unix seconds of the next fire>`, the same for a
/// tick fired twice, distinct for every tick. `next` is `Nats-Schedule-Next`.
pub fn tick_run_id(cron_id: &str, next: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(next) {
        Ok(time) => format!("cron-{cron_id}-{}", time.timestamp()),
        // Not a time the server writes; still unique per tick and deterministic.
        Err(_) => format!("cron-{cron_id}-{}", herald::protocol::runs::event_key(next)),
    }
}

/// What a delivered message says about the tick it is, if it is one: the cron id and the
/// next fire time (`Nats-Schedule-Next`, or `herald-cron-next` on copies).
pub(crate) fn tick_of(headers: &async_nats::HeaderMap) -> Option<(&str, &str)> {
    let cron_id = crate::envelope::find(headers, HEADER_CRON)?.as_str();
    let next = headers
        .get(NATS_SCHEDULE_NEXT)
        .or_else(|| headers.get(HEADER_CRON_NEXT))?
        .as_str();
    (next != "purge").then_some((cron_id, next))
}

/// The runs-bucket key of a trigger's overlap lock: `F.cron-<cron-id>.lock`.
pub(crate) fn lock_key(function: &str, cron_id: &str) -> String {
    format!("{function}.cron-{cron_id}.lock")
}

/// Copies of a tick (continuations, dead letters) lose its `Nats-*` headers: keep the
/// tick's time in `herald-cron-next`, so the copy is the same run.
pub(crate) fn keep_tick(original: &async_nats::HeaderMap, copy: &mut async_nats::HeaderMap) {
    if let Some((_, next)) = tick_of(original)
        && copy.get(HEADER_CRON_NEXT).is_none()
    {
        copy.insert(HEADER_CRON_NEXT, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_run_id_is_its_next_fire_in_unix_seconds() {
        assert_eq!(
            tick_run_id("ab12", "2026-11-26T10:19:58+01:00"),
            "cron-ab12-1795684798"
        );
        // The same instant written in another zone is the same tick.
        assert_eq!(
            tick_run_id("ab12", "2026-11-26T09:19:58Z"),
            tick_run_id("ab12", "2026-11-26T10:19:58+01:00")
        );
        assert!(tick_run_id("ab12", "garbage").starts_with("cron-ab12-"));
    }

    #[test]
    fn ticks_are_read_from_the_fired_headers_or_from_a_copy() {
        let mut fired = async_nats::HeaderMap::new();
        fired.insert(HEADER_CRON, "ab12");
        fired.insert(NATS_SCHEDULE_NEXT, "2026-11-26T10:19:58+01:00");
        assert_eq!(tick_of(&fired), Some(("ab12", "2026-11-26T10:19:58+01:00")));
        let mut copy = async_nats::HeaderMap::new();
        copy.insert(HEADER_CRON, "ab12");
        copy.insert(HEADER_CRON_NEXT, "2026-11-26T10:19:58+01:00");
        assert_eq!(tick_of(&copy), tick_of(&fired));
        let mut schedule = async_nats::HeaderMap::new();
        schedule.insert(HEADER_CRON, "ab12");
        assert_eq!(tick_of(&schedule), None);
    }
}
