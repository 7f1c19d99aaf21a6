//! The cron failure test (issue 13): `*/1 * * * * *` in Europe/Paris for 60 s on a 3-node
//! cluster, 3 worker replicas with one SIGKILLed and replaced every 5 s, the events stream's
//! leader stepping down every 10 s. Every second has exactly one run, recorded; due times
//! carry the zone's offset.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use herald_chaos::cron::{CronConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_per_tick_while_replicas_die_and_the_leader_steps_down() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("herald_chaos=info")),
        )
        .try_init();
    let config = CronConfig {
        worker_binary: env!("CARGO_BIN_EXE_cron-worker").into(),
        duration: Duration::from_secs(60),
        replicas: 3,
        kill_interval: Duration::from_secs(5),
        step_down_interval: Duration::from_secs(10),
        seed: 7,
    };
    let report = run(config).await.unwrap();
    println!("{report:#?}");
    assert!(report.ticks >= 50, "{} ticks checked", report.ticks);
    assert!(report.step_downs >= 4, "{} step-downs", report.step_downs);
    assert!(report.kills >= 10, "{} kills", report.kills);
    assert_eq!(
        report.missing,
        Vec::<i64>::new(),
        "ticks without a run record"
    );
    assert_eq!(report.wrong_offsets, Vec::<String>::new());
    // A skipped tick names a previous tick whose run was on a killed replica (overlap skip);
    // it is recorded, and the previous run itself finished.
    assert!(
        report.ok + report.skipped.len() == report.ticks,
        "every tick recorded once: {} ok + {} skipped of {}",
        report.ok,
        report.skipped.len(),
        report.ticks
    );
    assert!(
        report.skipped.len() <= 5 * report.kills,
        "skips only follow kills: {:?}",
        report.skipped
    );
    assert!(report.failures().is_empty(), "{:?}", report.failures());
}
