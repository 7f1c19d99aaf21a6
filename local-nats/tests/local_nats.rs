//! Starting, restarting and clustering real nats-servers.
#![allow(clippy::unwrap_used, missing_docs)]

use futures::TryStreamExt;
use herald_local_nats::LocalNats;

#[tokio::test]
async fn a_started_server_accepts_clients_with_jetstream() {
    let nats = LocalNats::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let info = js.query_account().await.unwrap();
    assert_eq!(info.streams, 0);
    assert!(nats.url().starts_with("nats://127.0.0.1:"));
}

#[tokio::test]
async fn restart_keeps_port_and_store() {
    let mut nats = LocalNats::start().unwrap();
    let url = nats.url();
    let pid_before = nats.pids()[0].unwrap();
    {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KEEP".into(),
            subjects: vec!["keep.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        js.publish("keep.one", "kept".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    nats.restart().unwrap();
    assert_eq!(nats.url(), url, "restart keeps the port");
    assert_ne!(nats.pids()[0].unwrap(), pid_before, "a new process runs");
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let mut stream = js.get_stream("KEEP").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn dropping_stops_the_server_and_removes_the_store() {
    let nats = LocalNats::start().unwrap();
    let store = nats.store_dir(0).unwrap();
    let addr = nats.url().trim_start_matches("nats://").to_owned();
    assert!(store.exists());
    drop(nats);
    assert!(!store.exists(), "the store is removed on drop");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens any more"
    );
}

#[test]
fn a_server_requiring_a_password_comes_up_ready() {
    // The builder's own probe logs in with the configured user; a server configured with
    // credentials must still come up ready.
    let nats = LocalNats::builder()
        .user_password("herald", "s3cret")
        .start()
        .unwrap();
    assert!(nats.pids()[0].is_some());
}

#[tokio::test]
async fn a_cluster_is_whole_when_started_and_when_a_node_comes_back() {
    // Credentials too: the start-up probe that places a stream logs in like a client.
    let mut cluster = LocalNats::builder()
        .user_password("herald", "s3cret")
        .nodes(3)
        .start()
        .unwrap();
    let connect = |url: String| async move {
        async_nats::ConnectOptions::with_user_and_password("herald".into(), "s3cret".into())
            .connect(url)
            .await
            .unwrap()
    };
    let js = async_nats::jetstream::new(connect(cluster.node_url(1).unwrap()).await);
    let r3 = |name: &str| async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        num_replicas: 3,
        ..Default::default()
    };
    // No retry: a started cluster places three replicas at the first try.
    let mut first = js.create_stream(r3("FIRST")).await.unwrap();
    assert_eq!(first.info().await.unwrap().config.num_replicas, 3);
    // A node stopped and started again: `start_node` returns once it is a peer again.
    cluster.stop_node(2).unwrap();
    cluster.start_node(2).unwrap();
    let mut second = js.create_stream(r3("SECOND")).await.unwrap();
    let cluster_info = second.info().await.unwrap().cluster.clone().unwrap();
    assert_eq!(cluster_info.replicas.len(), 2, "{cluster_info:?}");
}

#[test]
fn a_bad_nats_server_bin_says_what_to_do() {
    // Run in a child process so that the environment change cannot leak into other tests.
    if std::env::var_os("HERALD_LOCAL_NATS_CHILD").is_some() {
        let error = LocalNats::start().unwrap_err().to_string();
        assert!(error.contains("/nonexistent/nats-server"), "{error}");
        assert!(error.contains("NATS_SERVER_BIN"), "{error}");
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_bad_nats_server_bin_says_what_to_do",
            "--nocapture",
        ])
        .env("HERALD_LOCAL_NATS_CHILD", "1")
        .env("NATS_SERVER_BIN", "/nonexistent/nats-server")
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_three_node_cluster_serves_an_r3_stream_with_one_node_down() {
    let mut cluster = LocalNats::cluster(3).unwrap();
    assert_eq!(cluster.pids().len(), 3);
    let client = async_nats::connect(cluster.node_url(0).unwrap())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    // Started means whole: an R3 stream is placed at the first try, and the stream that
    // proved it is gone again.
    let names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    assert!(names.is_empty(), "streams left after start: {names:?}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "R3".into(),
        subjects: vec!["r3.>".into()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("r3.a", "one".into())
        .await
        .unwrap()
        .await
        .unwrap();
    cluster.stop_node(2).unwrap();
    assert!(cluster.pids()[2].is_none());
    // If node 2 led the stream, the others elect a new leader first: retry until then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let outcome = match js.publish("r3.a", "two".into()).await {
            Ok(ack) => ack.await.map(drop),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => break,
            Err(error) if std::time::Instant::now() < deadline => {
                // Polling for a new leader; the interval only spaces the attempts.
                eprintln!("waiting for a stream leader: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(error) => panic!("no leader within 30 s: {error}"),
        }
    }
    cluster.start_node(2).unwrap();
    assert!(cluster.pids()[2].is_some());
    let mut stream = js.get_stream("R3").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
}
