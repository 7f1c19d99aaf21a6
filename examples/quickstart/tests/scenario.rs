//! The quickstart scenario end to end against a real nats-server.
#![allow(clippy::unwrap_used, missing_docs)]

#[tokio::test]
async fn the_quickstart_answers_processes_retries_and_dead_letters() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let summary = quickstart::run(&nats.url(), "quickstart").await.unwrap();
    assert_eq!(
        summary,
        quickstart::Summary {
            answered: 3,
            processed: 2,
            retries: 1,
            dead_letters: 1
        }
    );
}
