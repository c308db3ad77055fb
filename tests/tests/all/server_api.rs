//! The server API (#19, part): a backend's message reaches exactly the
//! clients its target names, once, on either node; group changes for a
//! connection on another node; batches; auth and error paths.

use hubhost::config::Config;
use hubhost_tests::admin::OPERATOR_KEY;
use hubhost_tests::{PATIENCE, REDIS_URL, RawClient, TestServer, cluster_config, unique_prefix};
use serde_json::{Value, json};
use std::net::SocketAddr;

fn node(prefix: &str) -> Config {
    let mut config = cluster_config(REDIS_URL, prefix);
    config.admin.operator_keys = vec![OPERATOR_KEY.into()];
    config
}

async fn call(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::Client::new()
        .request(
            method,
            format!("http://{addr}/api/v1/tenants/demo/hubs/chat{path}"),
        )
        .bearer_auth(OPERATOR_KEY)
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Value)> {
    call(addr, reqwest::Method::GET, path, Value::Null).await
}

async fn post(addr: SocketAddr, body: Value) -> anyhow::Result<(u16, Value)> {
    call(addr, reqwest::Method::POST, "/messages", body).await
}

/// The texts of `Note` messages `client` got, up to and including `last`.
async fn notes_until(client: &mut RawClient, last: &str) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let message = tokio::time::timeout_at(deadline, client.next()).await??;
        if message["target"] == "Note" {
            let text = message["arguments"][0]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let done = text == last;
            notes.push(text);
            if done {
                return Ok(notes);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_reaches_exactly_the_clients_it_names() -> anyhow::Result<()> {
    let prefix = unique_prefix("serverapi");
    let a = TestServer::start(node(&prefix)).await?;
    let b = TestServer::start(node(&prefix)).await?;
    let (mut on_a, a_id) = RawClient::connect(&a, "/demo/chat").await?;
    let (mut b1, b1_id) = RawClient::connect(&b, "/demo/chat").await?;
    let (mut b2, b2_id) = RawClient::connect(&b, "/demo/chat").await?;
    let note = |target: Value, text: &str| json!({"target": target, "method": "Note", "arguments": [text]});

    // A group change through node A for a connection on node B.
    let (status, body) = call(
        a.addr,
        reqwest::Method::PUT,
        &format!("/groups/room/connections/{b2_id}"),
        Value::Null,
    )
    .await?;
    assert_eq!(status, 204, "{body}");

    let batch = json!([
        note(json!({"all": true}), "all"),
        note(json!({"connection": b1_id}), "b1 only"),
        note(json!({"group": "room"}), "room"),
        note(json!({"allExcept": [a_id]}), "not a"),
        note(json!({"connections": [a_id, b2_id]}), "a and b2"),
        note(json!({"all": true}), "end"),
    ]);
    let (status, body) = post(a.addr, batch).await?;
    assert_eq!((status, body), (202, json!({"accepted": 6})));
    assert_eq!(
        notes_until(&mut on_a, "end").await?,
        ["all", "a and b2", "end"]
    );
    assert_eq!(
        notes_until(&mut b1, "end").await?,
        ["all", "b1 only", "not a", "end"]
    );
    assert_eq!(
        notes_until(&mut b2, "end").await?,
        ["all", "room", "not a", "a and b2", "end"]
    );

    // Who is there, on every node.
    assert_eq!(
        get(a.addr, "/groups/room").await?,
        (200, json!({"count": 1, "connections": [b2_id]}))
    );
    assert_eq!(
        get(a.addr, &format!("/connections/{b1_id}")).await?,
        (200, json!({"count": 1, "connections": [b1_id]}))
    );
    assert_eq!(
        get(a.addr, "/connections/gone").await?,
        (200, json!({"count": 0, "connections": []}))
    );
    assert_eq!(
        get(a.addr, "/users/nobody").await?,
        (200, json!({"count": 0, "connections": []}))
    );

    // Out of the group: a group message no longer reaches b2.
    let (status, _) = call(
        b.addr,
        reqwest::Method::DELETE,
        &format!("/groups/room/connections/{b2_id}"),
        Value::Null,
    )
    .await?;
    assert_eq!(status, 204);
    post(b.addr, note(json!({"group": "room"}), "room again")).await?;
    post(b.addr, note(json!({"connection": b2_id}), "last")).await?;
    assert_eq!(notes_until(&mut b2, "last").await?, ["last"]);

    // Errors, all or none.
    let refused = [
        (json!({"target": {"all": false}, "method": "Note"}), 400),
        (json!({"target": {"all": true}, "method": ""}), 400),
        (json!({"target": {"everyone": true}, "method": "Note"}), 400),
        (
            json!([note(json!({"all": true}), "ok"), {"target": {"group": ""}, "method": "Note"}]),
            400,
        ),
        (json!([]), 400),
        (
            json!({"target": {"all": true}, "method": "Note", "arguments": ["x".repeat(3 << 19)]}),
            413,
        ),
    ];
    for (body, status) in refused {
        let (got, answer) = post(a.addr, body.clone()).await?;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let (status, answer) = call(
        a.addr,
        reqwest::Method::PUT,
        "/groups/room/connections/nobody",
        Value::Null,
    )
    .await?;
    assert_eq!(status, 404, "{answer}");
    let unauthorized = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/tenants/demo/hubs/chat/messages",
            a.addr
        ))
        .bearer_auth("wrong-key-0123456789")
        .json(&note(json!({"all": true}), "x"))
        .send()
        .await?;
    assert_eq!(unauthorized.status().as_u16(), 401);
    // Nothing of the refused batch was sent.
    post(a.addr, note(json!({"all": true}), "after")).await?;
    assert_eq!(notes_until(&mut on_a, "after").await?, ["after"]);

    // The CLI, for scripts: `hubhost send`.
    let output = tokio::process::Command::new(hubhost_tests::binary())
        .args([
            "send",
            "demo/chat",
            "--connection",
            &b1_id,
            "Note",
            r#"["from the cli"]"#,
        ])
        .env("HUBHOST_SERVER", format!("http://{}", a.addr))
        .env("HUBHOST_ADMIN_KEY", OPERATOR_KEY)
        .output()
        .await?;
    assert!(output.status.success(), "{output:?}");
    let notes = notes_until(&mut b1, "from the cli").await?;
    assert_eq!(notes.last().map(String::as_str), Some("from the cli"));
    a.stop().await?;
    b.stop().await?;
    Ok(())
}
