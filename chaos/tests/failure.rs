//! Herald's failure test (issue 11, item 7): a 3-node cluster, 3 worker replicas as child
//! processes, 3,000 valid and 20 invalid events published through 45 s of chaos (a replica
//! SIGKILLed every 6 s and replaced, one SIGTERMed, the consumer's leader node SIGKILLed
//! for 10 s). Nothing may be lost: an effect and a run record for every valid event, one
//! dead letter for every invalid one, no replica exiting on its own.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use herald_chaos::{Config, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_replicas_and_the_leader_node_die() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("herald_chaos=info")),
        )
        .try_init();
    let mut config = Config::new(env!("CARGO_BIN_EXE_chaos-worker"));
    config.events = 3000;
    config.invalid = 20;
    config.duration = Duration::from_secs(45);
    config.kill_interval = Duration::from_secs(6);
    config.replicas = 3;
    config.drain_timeout = Duration::from_secs(45);
    if let Some(seed) = std::env::var("HERALD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.seed = seed;
    }
    let report = Box::pin(run(config)).await.unwrap();
    println!("{report}");
    // The headline numbers first, so a failure says what was lost at a glance; the report
    // above has the timeline, the replicas' last log lines and where their logs are.
    assert_eq!(
        report.missing_effects.len(),
        0,
        "lost effects: {} of {} valid events were never handled",
        report.missing_effects.len(),
        report.events
    );
    assert_eq!(
        report.run_records_missing.len() + report.run_records_other.len(),
        0,
        "lost run records: {} missing and {} not ok, of {} valid events",
        report.run_records_missing.len(),
        report.run_records_other.len(),
        report.events
    );
    assert_eq!(
        report.invalid_dead_lettered_once,
        report.invalid,
        "invalid events dead-lettered exactly once with schema_violation: {} of {} \
         ({} missing, {} more than once, {} with another reason)",
        report.invalid_dead_lettered_once,
        report.invalid,
        report.invalid_missing.len(),
        report.invalid_duplicated.len(),
        report.invalid_wrong_reason.len()
    );
    assert_eq!(
        report.self_exits.len(),
        0,
        "{} replica(s) exited on their own",
        report.self_exits.len()
    );
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} failure(s):\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
}
