//! What a chaos run measured, its failures, and a plain text table of it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use comfy_table::{Table, presets::ASCII_FULL_CONDENSED};

use crate::replicas::{SelfExit, TermOutcome};
use crate::verify::ConsumerState;

/// How many ids a failure message lists before "and N more".
const LISTED: usize = 5;

/// The leader outage.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    /// The node that led the function's consumer and was SIGKILLed (its server name).
    pub node: Option<String>,
    /// What the node led when it was killed: the consumer and the streams.
    pub led: Vec<String>,
    /// From SIGKILL until the restarted node answered again.
    pub duration: Option<Duration>,
    /// Why there was no outage, or why the node did not come back.
    pub problem: Option<String>,
}

/// Everything a chaos run measured. [`failures`](Report::failures) says what broke Herald's
/// promises; [`Display`](fmt::Display) prints a table.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Report {
    /// Valid events asked for.
    pub events: usize,
    /// Invalid events asked for.
    pub invalid: usize,
    /// Replicas running at any time.
    pub replicas: usize,
    /// The seed of the random choices.
    pub seed: u64,
    /// The planned chaos phase.
    pub duration: Duration,
    /// Time between two SIGKILLs.
    pub kill_interval: Duration,
    /// The chaos phase as it ran (until the outage ended, if later).
    pub chaos_time: Duration,
    /// The replicas of each stream Herald provisioned with default settings (all must be 3
    /// on the 3-node cluster).
    pub stream_replicas: Vec<(String, usize)>,
    /// Valid events stored in the events stream.
    pub published_valid: usize,
    /// Invalid events stored in the events stream.
    pub published_invalid: usize,
    /// Publish tries that failed and were repeated with the same id.
    pub publish_retries: u64,
    /// Events never stored.
    pub publish_failures: Vec<String>,
    /// Replicas SIGKILLed.
    pub kills: usize,
    /// Replicas started in all (the first ones, replacements).
    pub replicas_started: usize,
    /// The replica SIGTERMed during the chaos.
    pub sigterm: Vec<TermOutcome>,
    /// The replicas SIGTERMed at the end.
    pub final_stop: Vec<TermOutcome>,
    /// Replicas that exited without a signal from the harness.
    pub self_exits: Vec<SelfExit>,
    /// The leader outage.
    pub outage: Outage,
    /// From the end of the chaos until every event was handled; `None` if that did not
    /// happen within the drain timeout.
    pub drain_time: Option<Duration>,
    /// How long the harness waited for the drain.
    pub drain_timeout: Duration,
    /// Valid events with at least one effect.
    pub effects_distinct: usize,
    /// Effect messages in all.
    pub effects_total: usize,
    /// Effects beyond the first of their event (an event handled twice counts 1).
    pub duplicate_effects: usize,
    /// Valid events with more than one effect.
    pub events_with_duplicates: usize,
    /// Valid events without an effect.
    pub missing_effects: Vec<String>,
    /// Effects of events the harness did not publish as valid, or unreadable.
    pub unknown_effects: usize,
    /// Valid events with a run record of status `ok`.
    pub run_records_ok: usize,
    /// Valid events neither recorded nor acknowledged as a plain run: without a run record,
    /// and redelivered, or not below the consumer's ack floor.
    pub run_records_missing: Vec<String>,
    /// Valid events handled once by a plain first delivery and acknowledged without a run
    /// record (protocol section 7), below the consumer's ack floor.
    pub plain_runs_acked: usize,
    /// Valid events whose run record has another status: id and status.
    pub run_records_other: Vec<(String, String)>,
    /// Dead letters in `NS_DLQ`.
    pub dead_letters: usize,
    /// Invalid events dead-lettered exactly once with reason `schema_violation`.
    pub invalid_dead_lettered_once: usize,
    /// Invalid events without a dead letter.
    pub invalid_missing: Vec<String>,
    /// Invalid events dead-lettered more than once: id and count.
    pub invalid_duplicated: Vec<(String, usize)>,
    /// Invalid events dead-lettered with another reason: id and reasons.
    pub invalid_wrong_reason: Vec<(String, String)>,
    /// Valid events dead-lettered: id and reason.
    pub valid_dead_lettered: Vec<(String, String)>,
    /// Dead letters of no published event.
    pub unknown_dead_letters: usize,
    /// The function consumer at the end.
    pub consumer: ConsumerState,
    /// Where the replicas' logs are, when they were kept.
    pub log_dir: Option<PathBuf>,
    /// What the harness did, when.
    pub timeline: Vec<(Duration, String)>,
}

fn listed<T: fmt::Display>(items: impl IntoIterator<Item = T>, total: usize) -> String {
    let shown: Vec<String> = items
        .into_iter()
        .take(LISTED)
        .map(|i| i.to_string())
        .collect();
    let more = total.saturating_sub(shown.len());
    if more > 0 {
        format!("{}, and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

impl Report {
    /// What broke Herald's promises, one precise sentence each; empty when the run passed.
    /// Duplicate effects are reported, not failed: delivery is at least once.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if !self.publish_failures.is_empty() {
            failures.push(format!(
                "publishing: {} event(s) never stored: {}",
                self.publish_failures.len(),
                listed(&self.publish_failures, self.publish_failures.len())
            ));
        }
        let not_r3: Vec<String> = self
            .stream_replicas
            .iter()
            .filter(|(_, replicas)| *replicas != 3)
            .map(|(name, replicas)| format!("{name} R{replicas}"))
            .collect();
        if !not_r3.is_empty() {
            failures.push(format!(
                "default provisioning on a 3-node cluster is not R3: {}",
                not_r3.join(", ")
            ));
        }
        if !self.missing_effects.is_empty() {
            failures.push(format!(
                "lost effects: {} of {} valid events have no effect in CHAOS_EFFECTS: {}",
                self.missing_effects.len(),
                self.events,
                listed(&self.missing_effects, self.missing_effects.len())
            ));
        }
        if self.unknown_effects > 0 {
            failures.push(format!(
                "{} effect(s) of events that were not published as valid (or unreadable)",
                self.unknown_effects
            ));
        }
        if !self.run_records_missing.is_empty() {
            failures.push(format!(
                "lost run records: {} of {} valid events have no run record in the runs bucket: {}",
                self.run_records_missing.len(),
                self.events,
                listed(&self.run_records_missing, self.run_records_missing.len())
            ));
        }
        if !self.run_records_other.is_empty() {
            let items = self
                .run_records_other
                .iter()
                .map(|(id, status)| format!("{id}={status}"));
            failures.push(format!(
                "{} valid event(s) have a run record whose status is not ok: {}",
                self.run_records_other.len(),
                listed(items, self.run_records_other.len())
            ));
        }
        if !self.valid_dead_lettered.is_empty() {
            let items = self
                .valid_dead_lettered
                .iter()
                .map(|(id, reason)| format!("{id} ({reason})"));
            failures.push(format!(
                "{} valid event(s) were dead-lettered: {}",
                self.valid_dead_lettered.len(),
                listed(items, self.valid_dead_lettered.len())
            ));
        }
        if !self.invalid_missing.is_empty() {
            failures.push(format!(
                "{} of {} invalid events have no dead letter: {}",
                self.invalid_missing.len(),
                self.published_invalid,
                listed(&self.invalid_missing, self.invalid_missing.len())
            ));
        }
        if !self.invalid_duplicated.is_empty() {
            let items = self
                .invalid_duplicated
                .iter()
                .map(|(id, n)| format!("{id} x{n}"));
            failures.push(format!(
                "{} invalid event(s) were dead-lettered more than once: {}",
                self.invalid_duplicated.len(),
                listed(items, self.invalid_duplicated.len())
            ));
        }
        if !self.invalid_wrong_reason.is_empty() {
            let items = self
                .invalid_wrong_reason
                .iter()
                .map(|(id, reason)| format!("{id} ({reason})"));
            failures.push(format!(
                "{} invalid event(s) were dead-lettered with a reason other than schema_violation: {}",
                self.invalid_wrong_reason.len(),
                listed(items, self.invalid_wrong_reason.len())
            ));
        }
        for exit in &self.self_exits {
            failures.push(format!(
                "replica {} (pid {}) exited on its own after {} with {}; last log lines ({}):\n{}",
                exit.replica,
                exit.pid,
                secs(exit.after),
                exit.status,
                exit.log.display(),
                exit.log_tail
            ));
        }
        for (when, outcomes) in [
            ("during the chaos", &self.sigterm),
            ("at the end", &self.final_stop),
        ] {
            for term in outcomes.iter().filter(|t| !t.is_clean()) {
                failures.push(format!(
                    "replica {} (pid {}) SIGTERMed {when} did not exit 0: {}; last log lines:\n{}",
                    term.replica,
                    term.pid,
                    term.status,
                    term.log_tail.as_deref().unwrap_or("")
                ));
            }
        }
        if self.sigterm.is_empty() {
            failures.push("no replica was SIGTERMed during the chaos".to_owned());
        }
        if let Some(problem) = &self.outage.problem {
            failures.push(format!("leader outage: {problem}"));
        }
        if self.drain_time.is_none() {
            failures.push(format!(
                "not drained within {} after the chaos: consumer pending {}, ack pending {}",
                secs(self.drain_timeout),
                self.consumer.pending,
                self.consumer.ack_pending
            ));
        }
        failures
    }

    /// The report as a plain text table, the timeline and the failures.
    pub fn table(&self) -> String {
        let mut table = Table::new();
        table.load_style(ASCII_FULL_CONDENSED);
        table.set_header(vec!["measure", "value"]);
        let mut row = |name: &str, value: String| {
            table.add_row(vec![name.to_owned(), value]);
        };
        row(
            "setup",
            format!(
                "3-node cluster, {} replicas, seed {}",
                self.replicas, self.seed
            ),
        );
        row(
            "stream replicas (default settings)",
            self.stream_replicas
                .iter()
                .map(|(name, replicas)| format!("{name} R{replicas}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        row(
            "events published",
            format!(
                "{} valid of {}, {} invalid of {}, {} retried tries",
                self.published_valid,
                self.events,
                self.published_invalid,
                self.invalid,
                self.publish_retries
            ),
        );
        row(
            "chaos",
            format!(
                "{} (planned {}), a SIGKILL every {}",
                secs(self.chaos_time),
                secs(self.duration),
                secs(self.kill_interval)
            ),
        );
        row(
            "replicas SIGKILLed",
            format!("{} ({} started in all)", self.kills, self.replicas_started),
        );
        let sigterm = self
            .sigterm
            .iter()
            .map(|t| format!("replica {}: {} in {}", t.replica, t.status, secs(t.took)))
            .collect::<Vec<_>>()
            .join("; ");
        row(
            "replica SIGTERMed",
            if sigterm.is_empty() {
                "none".to_owned()
            } else {
                sigterm
            },
        );
        row(
            "leader outage",
            match (
                &self.outage.node,
                self.outage.duration,
                &self.outage.problem,
            ) {
                (Some(node), Some(duration), _) => format!(
                    "{node} SIGKILLed (leader of {}), back after {}",
                    self.outage.led.join(", "),
                    secs(duration)
                ),
                (_, _, Some(problem)) => format!("FAILED: {problem}"),
                _ => "none".to_owned(),
            },
        );
        row(
            "drain after the chaos",
            match self.drain_time {
                Some(time) => secs(time),
                None => format!("NOT DRAINED within {}", secs(self.drain_timeout)),
            },
        );
        row(
            "valid events handled",
            format!(
                "{} of {} ({} lost)",
                self.effects_distinct,
                self.events,
                self.missing_effects.len()
            ),
        );
        row(
            "duplicate effects",
            format!(
                "{} ({} events handled more than once; {} effects in all)",
                self.duplicate_effects, self.events_with_duplicates, self.effects_total
            ),
        );
        row(
            "run records ok",
            format!(
                "{} of {} (and {} plain runs acked without one; {} missing, {} other status)",
                self.run_records_ok,
                self.events,
                self.plain_runs_acked,
                self.run_records_missing.len(),
                self.run_records_other.len()
            ),
        );
        row(
            "invalid dead-lettered once",
            format!(
                "{} of {} ({} missing, {} more than once, {} wrong reason)",
                self.invalid_dead_lettered_once,
                self.published_invalid,
                self.invalid_missing.len(),
                self.invalid_duplicated.len(),
                self.invalid_wrong_reason.len()
            ),
        );
        row(
            "dead letters in all",
            format!(
                "{} ({} of valid events, {} unknown)",
                self.dead_letters,
                self.valid_dead_lettered.len(),
                self.unknown_dead_letters
            ),
        );
        row(
            "replicas that exited on their own",
            self.self_exits.len().to_string(),
        );
        let final_clean = self.final_stop.iter().filter(|t| t.is_clean()).count();
        row(
            "final SIGTERM, exit 0",
            format!("{final_clean} of {}", self.final_stop.len()),
        );
        row(
            "consumer at the end",
            format!(
                "pending {}, ack pending {}, redelivered {}",
                self.consumer.pending, self.consumer.ack_pending, self.consumer.redelivered
            ),
        );
        if let Some(dir) = &self.log_dir {
            row("replica logs", dir.display().to_string());
        }
        let failures = self.failures();
        row(
            "result",
            if failures.is_empty() {
                "PASS".to_owned()
            } else {
                format!("FAIL ({} failure(s))", failures.len())
            },
        );
        let mut out = table.to_string();
        out.push_str("\n\ntimeline:\n");
        for (at, what) in &self.timeline {
            out.push_str(&format!("  {:>7.1} s  {what}\n", at.as_secs_f64()));
        }
        if !failures.is_empty() {
            out.push_str("\nfailures:\n");
            for failure in &failures {
                out.push_str(&format!("- {failure}\n"));
            }
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}
