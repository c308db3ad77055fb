//! The server API (#19, part): a backend's message reaches exactly the
//! clients its target names, once, on either node; group changes for a
//! connection on another node; batches; closing a connection or a user's
//! connections wherever they are; the request rate; auth and error paths.

use hubhost::admin::api::{CloseQuery, CloseWhat, Closed};
use hubhost::admin::client::AdminClient;
use hubhost::config::Config;
use hubhost::names::HubKey;
use hubhost::tenants::TenantConfig;
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

/// The Close message `client` gets next, skipping anything else.
async fn close_message(client: &mut RawClient) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let message = tokio::time::timeout_at(deadline, client.next()).await??;
        if message["type"] == 7 {
            return Ok(message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closes_a_connection_or_a_user_on_any_node() -> anyhow::Result<()> {
    const SECRET: &str = "close-test-secret-0123456789abcdef";
    let prefix = unique_prefix("serverclose");
    let with_jwt = |mut config: Config| {
        config
            .tenants
            .insert("demo".into(), hubhost_tests::jwt_tenant(SECRET));
        config
    };
    let a = TestServer::start(with_jwt(node(&prefix))).await?;
    let b = TestServer::start(with_jwt(node(&prefix))).await?;
    let ann = hubhost_tests::jwt(SECRET, "ann", 300)?;
    let bob = hubhost_tests::jwt(SECRET, "bob", 300)?;
    let (mut ann_a, _) = RawClient::connect_as(a.addr, "/demo/chat", Some(&ann)).await?;
    let (mut ann_b, _) = RawClient::connect_as(b.addr, "/demo/chat", Some(&ann)).await?;
    let (mut bob_b, bob_id) = RawClient::connect_as(b.addr, "/demo/chat", Some(&bob)).await?;
    let admin = AdminClient::new(&format!("http://{}", a.addr), OPERATOR_KEY)?;
    let hub = HubKey::new("demo", "chat")?;

    // Every connection of ann, on both nodes, asked through node A.
    let kicked = CloseQuery {
        reason: Some("Signed out elsewhere.".into()),
        allow_reconnect: false,
    };
    let closed = admin.close(&hub, CloseWhat::User, "ann", &kicked).await?;
    assert_eq!(closed, Closed { closed: 2 });
    for client in [&mut ann_a, &mut ann_b] {
        let close = close_message(client).await?;
        assert_eq!(close["error"], "Signed out elsewhere.", "{close}");
        assert_ne!(close["allowReconnect"], true, "{close}");
    }
    // Bob was not touched: a message still reaches him, then his own close.
    post(
        a.addr,
        json!({"target": {"user": "bob"}, "method": "Note", "arguments": ["still here"]}),
    )
    .await?;
    assert_eq!(notes_until(&mut bob_b, "still here").await?, ["still here"]);
    let again = CloseQuery {
        reason: None,
        allow_reconnect: true,
    };
    let closed = admin
        .close(&hub, CloseWhat::Connection, &bob_id, &again)
        .await?;
    assert_eq!(closed, Closed { closed: 1 });
    let close = close_message(&mut bob_b).await?;
    assert_eq!(close["allowReconnect"], true, "{close}");
    assert!(close.get("error").is_none_or(Value::is_null), "{close}");

    // Gone now, and unknown names: 404; a reason too long: 400.
    hubhost_tests::wait_until_async(PATIENCE, || async {
        get(a.addr, "/users/ann")
            .await
            .is_ok_and(|(_, v)| v["count"] == 0)
    })
    .await?;
    let gone = admin.close(&hub, CloseWhat::User, "ann", &kicked).await;
    assert!(
        gone.as_ref()
            .is_err_and(|e| e.to_string().starts_with("404")),
        "{gone:?}"
    );
    let nobody = admin
        .close(&hub, CloseWhat::Connection, "nobody/with a slash", &kicked)
        .await;
    assert!(
        nobody
            .as_ref()
            .is_err_and(|e| e.to_string().starts_with("404")),
        "{nobody:?}"
    );
    let long = CloseQuery {
        reason: Some("x".repeat(hubhost::server_api::MAX_REASON_BYTES + 1)),
        allow_reconnect: false,
    };
    let (mut carl, carl_id) = RawClient::connect_as(b.addr, "/demo/chat", Some(&ann)).await?;
    let refused = admin
        .close(&hub, CloseWhat::Connection, &carl_id, &long)
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().starts_with("400")),
        "{refused:?}"
    );
    post(
        a.addr,
        json!({"target": {"connection": carl_id}, "method": "Note", "arguments": ["open"]}),
    )
    .await?;
    assert_eq!(notes_until(&mut carl, "open").await?, ["open"]);
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_request_rate_is_answered_429() -> anyhow::Result<()> {
    let mut config = hubhost_tests::config();
    config.admin.operator_keys = vec![OPERATOR_KEY.into()];
    config.tenants.insert(
        "demo".into(),
        TenantConfig {
            hub_limits: serde_json::from_value(json!({"max_api_requests_per_second": 3}))?,
            ..TenantConfig::default()
        },
    );
    let server = TestServer::start(config).await?;
    // A burst of the rate passes (the bucket refills at 3 a second, so a
    // slow machine may pass a fourth: at least one of 6 must be refused).
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let response = reqwest::Client::new()
            .get(format!(
                "http://{}/api/v1/tenants/demo/hubs/chat/groups/room",
                server.addr
            ))
            .bearer_auth(OPERATOR_KEY)
            .send()
            .await?;
        statuses.push(response.status().as_u16());
        if response.status() == 429 && refused.is_none() {
            refused = Some(response);
        }
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    let Some(response) = refused else {
        anyhow::bail!("no request was refused: {statuses:?}");
    };
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = response.json().await?;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("hub_limits.max_api_requests_per_second")),
        "{body}"
    );
    let hits = AdminClient::new(&format!("http://{}", server.addr), OPERATOR_KEY)?
        .limit_hits("demo")
        .await?;
    assert!(
        hits.hits
            .get("hub_limits.max_api_requests_per_second")
            .is_some_and(|n| *n >= 1),
        "{hits:?}"
    );
    server.stop().await?;
    Ok(())
}

/// A stateful connection a drain handed to another node keeps its id for
/// the server API on any node: group changes, sends to it and presence
/// reach it on its new node once the node its id names is gone (which
/// answered nothing for it after the handover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_handed_over_by_a_drain_keeps_its_id_for_backends() -> anyhow::Result<()> {
    let prefix = unique_prefix("handover");
    let fast = || {
        let mut config = node(&prefix);
        config.backplane.heartbeat_interval = std::time::Duration::from_millis(200);
        config
    };
    let (a, b, c) = (
        TestServer::start(fast()).await?,
        TestServer::start(fast()).await?,
        TestServer::start(fast()).await?,
    );
    hubhost_tests::wait_until(PATIENCE, || {
        [&a, &b, &c]
            .iter()
            .all(|n| n.state.cluster.alive_nodes().len() == 2)
    })
    .await?;
    let (mut client, id, token) = RawClient::stateful(a.addr, "/demo/chat").await?;
    client.invoke("join", "JoinGroup", json!(["room"])).await?;

    // A drains (no window): the socket drops; the client comes back
    // through B, which takes the connection over from A.
    hubhost::drain::start(&a.state);
    while client.next().await.is_ok() {}
    // Its next message is its second (the join was its first).
    let mut client = RawClient::open(b.addr, &format!("/demo/chat?id={token}")).await?;
    client.send(json!({"type": 9, "sequenceId": 2})).await?;
    let me = client.invoke("me", "WhoAmI", json!([])).await?;
    assert_eq!(me["result"]["connectionId"], id.as_str(), "same connection");
    assert_eq!(
        b.state
            .lifetime
            .groups_of(&HubKey::new("demo", "chat")?, &id),
        ["room"]
    );

    // A is gone (its drain ended with the handover); B says it holds
    // connections of A.
    let a_node = a.state.cluster.node();
    a.stop().await?;
    hubhost_tests::wait_until(PATIENCE, || {
        c.state.cluster.is_dead(a_node) && c.state.cluster.adopted_elsewhere(a_node)
    })
    .await?;

    // Through C: a group change, a send to the group, a send by id, presence.
    let path = format!("/groups/lobby/connections/{id}");
    let (status, body) = call(c.addr, reqwest::Method::PUT, &path, Value::Null).await?;
    assert_eq!(status, 204, "{body}");
    let note = |target: Value| json!({"target": target, "method": "Note", "arguments": ["hi"]});
    let batch = json!([
        note(json!({"group": "lobby"})),
        note(json!({"connection": id}))
    ]);
    assert_eq!(post(c.addr, batch).await?.0, 202);
    assert_eq!(notes_until(&mut client, "hi").await?, ["hi"], "by group");
    assert_eq!(notes_until(&mut client, "hi").await?, ["hi"], "by id");
    assert_eq!(
        get(c.addr, &format!("/connections/{id}")).await?,
        (200, json!({"count": 1, "connections": [id]}))
    );
    let groups = b
        .state
        .lifetime
        .groups_of(&HubKey::new("demo", "chat")?, &id);
    let mut groups: Vec<_> = groups.iter().map(String::as_str).collect();
    groups.sort();
    assert_eq!(groups, ["lobby", "room"]);
    drop(client);
    b.stop().await?;
    c.stop().await
}
