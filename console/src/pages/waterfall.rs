//! A run's waterfall: one bar per attempt (from its activity records), per step (from its
//! step records) and per sleep or wait before a retry, placed in % of the run's span.

use herald_worker::StepRecord;
use herald_worker::activity::{ActivityKind, ActivityRecord};
use maud::{Markup, html};

use super::axis::Axis;
use crate::util::{duration_text, parse_ms};

/// One bar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bar {
    /// `attempt`, `step` or `sleep`.
    pub(crate) kind: &'static str,
    pub(crate) label: String,
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    /// A status class: `ok`, `bad`, `warn`, `running`.
    pub(crate) class: &'static str,
    pub(crate) detail: Option<String>,
}

fn class_of(outcome: &str) -> &'static str {
    match outcome {
        "ok" => "ok",
        "dead_lettered" | "cancelled" => "bad",
        "retry" | "handed_back" | "skipped" => "warn",
        _ => "running",
    }
}

/// The bars of a run, in time order of their start.
pub(crate) fn bars(
    records: &[ActivityRecord],
    steps: &[(String, StepRecord)],
    now_ms: u64,
) -> Vec<Bar> {
    let mut bars = Vec::new();
    let mut open: Option<&ActivityRecord> = None;
    let attempt_bar = |start: &ActivityRecord, end: Option<&ActivityRecord>| {
        let outcome = end.and_then(|e| e.outcome.as_deref()).unwrap_or("running");
        Bar {
            kind: "attempt",
            label: format!("attempt {} · {outcome}", start.attempt),
            start_ms: start.at_ms,
            end_ms: end.map_or(now_ms, |e| e.at_ms),
            class: class_of(outcome),
            detail: end.and_then(|e| e.error.clone()),
        }
    };
    for record in records {
        match record.kind {
            ActivityKind::Started => {
                if let Some(start) = open.take() {
                    // A start without its end (a record lost, a worker gone).
                    let mut bar = attempt_bar(start, None);
                    bar.end_ms = record.at_ms;
                    bar.label = format!("attempt {} · no end recorded", start.attempt);
                    bar.class = "warn";
                    bars.push(bar);
                }
                open = Some(record);
            }
            _ => {
                match open.take() {
                    Some(start) => bars.push(attempt_bar(start, Some(record))),
                    None if record.started_ms.is_some() => {
                        // A fast attempt: its start was not published, its end says when.
                        let outcome = record.outcome.as_deref().unwrap_or("unknown");
                        bars.push(Bar {
                            kind: "attempt",
                            label: format!("attempt {} · {outcome}", record.attempt),
                            start_ms: record.started_ms.unwrap_or(record.at_ms),
                            end_ms: record.at_ms,
                            class: class_of(outcome),
                            detail: record.error.clone(),
                        });
                    }
                    None => {
                        // Settled before the handler ran (dead-lettered, cancelled, skipped).
                        let outcome = record.outcome.as_deref().unwrap_or("unknown");
                        bars.push(Bar {
                            kind: "attempt",
                            label: format!("delivery {} · {outcome}", record.attempt),
                            start_ms: record.at_ms,
                            end_ms: record.at_ms,
                            class: class_of(outcome),
                            detail: record.error.clone(),
                        });
                    }
                }
                if let Some(wait) = record.retry_in_ms.filter(|ms| *ms > 0) {
                    let sleeping = record.outcome.as_deref() == Some("sleeping");
                    bars.push(Bar {
                        kind: "sleep",
                        label: match (&record.step, sleeping) {
                            (Some(step), true) => format!("sleep {step}"),
                            _ => "wait before the next attempt".to_owned(),
                        },
                        start_ms: record.at_ms,
                        end_ms: record.at_ms + wait,
                        class: "running",
                        detail: None,
                    });
                }
            }
        }
    }
    if let Some(start) = open {
        bars.push(attempt_bar(start, None));
    }
    for (key, record) in steps {
        if let StepRecord::Ok {
            output,
            attempts,
            duration_ms,
            finished_at,
        } = record
            && let Some(end) = parse_ms(finished_at)
        {
            bars.push(Bar {
                kind: "step",
                label: format!("step {key} · {attempts} attempt(s)"),
                start_ms: end.saturating_sub(*duration_ms),
                end_ms: end,
                class: "ok",
                detail: Some(output.to_string()),
            });
        }
    }
    bars.sort_by_key(|b| (b.start_ms, b.kind != "attempt"));
    bars
}

/// The waterfall's markup. Long stretches when nothing runs (a durable sleep, a long wait
/// before a retry) are drawn as short breaks labelled with their real duration
/// ([`super::axis`]).
pub(crate) fn render(bars: &[Bar]) -> Markup {
    let start = bars.iter().map(|b| b.start_ms).min().unwrap_or(0);
    let end = bars.iter().map(|b| b.end_ms).max().unwrap_or(start);
    let spans: Vec<(u64, u64, bool)> = bars
        .iter()
        .map(|b| (b.start_ms, b.end_ms, b.kind != "sleep"))
        .collect();
    let axis = Axis::new(&spans);
    html! {
        @if bars.is_empty() {
            p.muted { "Nothing to draw: no activity records or step records for this run." }
        } @else {
            div.waterfall #waterfall {
                p.muted { "From " (crate::util::format_ms(start)) ", " (duration_text(end - start)) " in all."
                    @if axis.breaks().next().is_some() { " Long idle stretches are drawn short (//)." } }
                @if axis.breaks().next().is_some() {
                    div.row.axis {
                        div.label { "time" }
                        div.track {
                            @for gap in axis.breaks() {
                                @let real = duration_text(gap.end_ms - gap.start_ms);
                                div.gap data-ms=(gap.end_ms - gap.start_ms)
                                    style=(format!("left:{:.2}%;width:{:.2}%", gap.left, gap.width))
                                    title={ (real) " drawn short" } { "// " (real) }
                            }
                        }
                    }
                }
                @for bar in bars {
                    @let left = axis.position(bar.start_ms);
                    @let width = (axis.position(bar.end_ms) - left).max(0.4);
                    @let real = duration_text(bar.end_ms - bar.start_ms);
                    @let broken = axis.crosses_break(bar.start_ms, bar.end_ms);
                    div.row data-kind=(bar.kind) {
                        div.label title=(bar.label) { (bar.label) @if broken { " · " (real) } }
                        div.track {
                            div class={ "bar " (bar.kind) " " (bar.class) @if broken { " broken" } }
                                style=(format!("left:{left:.2}%;width:{width:.2}%"))
                                data-ms=(bar.end_ms - bar.start_ms)
                                title={ (bar.label) ", " (real)
                                    @if let Some(detail) = &bar.detail { ": " (detail) } } {
                                @if broken { span.real { (real) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        kind: ActivityKind,
        attempt: u32,
        at_ms: u64,
        outcome: Option<&str>,
    ) -> ActivityRecord {
        ActivityRecord {
            kind,
            function: "f".into(),
            run: "f.e".into(),
            event_id: "e".into(),
            event_type: "t".into(),
            attempt,
            stream_seq: 1,
            at_ms,
            started_ms: None,
            outcome: outcome.map(str::to_owned),
            error: None,
            retry_in_ms: (outcome == Some("retry")).then_some(100),
            step: None,
            trace_id: None,
        }
    }

    #[test]
    fn one_bar_per_attempt_step_and_wait() {
        let records = [
            record(ActivityKind::Started, 1, 1_000, None),
            record(ActivityKind::Finished, 1, 1_050, Some("retry")),
            record(ActivityKind::Started, 2, 1_150, None),
            record(ActivityKind::Finished, 2, 1_200, Some("ok")),
        ];
        let steps = [(
            "charge".to_owned(),
            StepRecord::Ok {
                output: serde_json::json!(1),
                attempts: 1,
                duration_ms: 10,
                finished_at: crate::util::format_ms(1_020),
            },
        )];
        let bars = bars(&records, &steps, 5_000);
        let kinds: Vec<&str> = bars.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, ["attempt", "step", "sleep", "attempt"]);
        assert_eq!(bars[3].class, "ok");
    }
}
