//! `herald schemas …` run as a binary against a real nats-server.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;

use common::{herald, text};

fn write(dir: &Path, relative: &str, body: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

#[test]
fn push_check_list_show_validate_and_asyncapi() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    assert!(herald(&url, &["provision"]).status.success());

    let repo_schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let repo_schemas = repo_schemas.to_str().unwrap();
    let push = herald(&url, &["schemas", "push", repo_schemas]);
    assert!(push.status.success(), "{}", text(&push));
    assert!(text(&push).contains("source.connected"), "{}", text(&push));
    assert!(
        text(&push).contains("registered as version 1"),
        "{}",
        text(&push)
    );
    let again = herald(&url, &["schemas", "push", repo_schemas]);
    assert!(again.status.success());
    assert!(
        text(&again).contains("already registered as version 1"),
        "{}",
        text(&again)
    );

    // A breaking change: a new required property.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "user.signup/2.json",
        r#"{"type":"object","properties":{"user_id":{"type":"string","format":"uuid"},"email":{"type":"string","format":"email"},"tier":{"type":"string"}},"required":["user_id","email","tier"]}"#,
    );
    let check = herald(&url, &["schemas", "check", dir.path().to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("$.tier"), "{}", text(&check));
    let refused = herald(&url, &["schemas", "push", dir.path().to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("refused"), "{}", text(&refused));

    let list = herald(&url, &["schemas", "list", "--json"]);
    assert!(list.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let types: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["source.connected", "user.signup"]);
    assert_eq!(
        listed[1]["versions"],
        serde_json::json!([1]),
        "the refused version was not written"
    );

    let show = herald(&url, &["schemas", "show", "user.signup"]);
    assert!(show.status.success());
    assert!(
        text(&show).contains("urn:herald:schema:user.signup:1"),
        "{}",
        text(&show)
    );

    write(
        dir.path(),
        "bad.json",
        r#"{"user_id":"not-a-uuid","plan":3}"#,
    );
    let validate = herald(
        &url,
        &[
            "schemas",
            "validate",
            "user.signup",
            dir.path().join("bad.json").to_str().unwrap(),
        ],
    );
    assert_eq!(validate.status.code(), Some(1));
    let out = text(&validate);
    assert!(
        out.contains("$.user_id") && out.contains("$.plan") && out.contains("\"email\""),
        "{out}"
    );

    let out_file = dir.path().join("asyncapi.json");
    let asyncapi = herald(
        &url,
        &["schemas", "asyncapi", "--out", out_file.to_str().unwrap()],
    );
    assert!(asyncapi.status.success(), "{}", text(&asyncapi));
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_file).unwrap()).unwrap();
    assert_eq!(document["asyncapi"], "3.0.0");
    assert_eq!(
        document["channels"]["user.signup"]["address"],
        "herald.events.user.signup"
    );
    assert_eq!(
        document["components"]["messages"]["user.signup"]["payload"]["schema"]["$id"],
        "urn:herald:schema:user.signup:1"
    );
}

#[test]
fn a_wrong_server_is_a_one_line_error_and_a_failure() {
    let output = herald("nats://127.0.0.1:1", &["schemas", "list"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect to NATS at nats://127.0.0.1:1"),
        "{stderr}"
    );
}
