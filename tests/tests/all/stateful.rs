//! Stateful reconnect (#18) at the protocol level, with a raw client: a
//! connection negotiated with `useStatefulReconnect` and handshake version 2
//! resumes on a new socket with its id, its groups and every message sent
//! meanwhile (Sequence, then the replay), skips what the client sends again,
//! closes with a reason when the client lets too much go unacknowledged,
//! and ends (the token gone) when no socket comes back in time; the steps of
//! a drain's handover answer only what they must.

use hubhost_tests::{RawClient, TestServer, config, http_with};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A stateful client of `server`'s chat: (client, connection id, token).
async fn stateful(server: &TestServer) -> anyhow::Result<(RawClient, String, String)> {
    RawClient::stateful(server.addr, "/demo/chat").await
}

fn message(text: &str) -> impl Fn(&Value) -> bool + '_ {
    move |m: &Value| m["target"] == "ReceiveMessage" && m["arguments"][1] == text
}

#[tokio::test]
async fn a_connection_resumes_with_its_id_groups_and_every_message() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut client, id, token) = stateful(&server).await?;
    let (mut other, _) = RawClient::connect(&server, "/demo/chat").await?;
    // Server messages 1 (the completion) and 2 (m1).
    client.invoke("join", "JoinGroup", json!(["room"])).await?;
    other
        .invoke("s1", "SendToGroup", json!(["room", "other", "m1"]))
        .await?;
    client.next_where(message("m1")).await?;

    // The socket drops; the group gets two more while it is away, and the
    // connection is still one of its members (the hub heard of no
    // disconnect).
    drop(client);
    for text in ["m2", "m3"] {
        other
            .invoke(text, "SendToGroup", json!(["room", "other", text]))
            .await?;
    }
    let members = other
        .invoke("members", "GroupMembers", json!(["room"]))
        .await?;
    assert!(members.to_string().contains(&id), "{members}");

    // Back with the token, no handshake: the client says its replay starts
    // at 1 and sends its first message (the join) again.
    let mut back = RawClient::open(server.addr, &format!("/demo/chat?id={token}")).await?;
    back.send(json!({"type": 9, "sequenceId": 1})).await?;
    back.send(
        json!({"type": 1, "invocationId": "again", "target": "JoinGroup", "arguments": ["room"]}),
    )
    .await?;
    let sequence = back.next().await?;
    assert_eq!(
        sequence,
        json!({"type": 9, "sequenceId": 1}),
        "nothing acknowledged yet"
    );
    let mut replayed = Vec::new();
    for _ in 0..4 {
        replayed.push(back.next().await?);
    }
    assert_eq!(replayed[0]["invocationId"], "join", "{replayed:?}");
    let texts: Vec<&Value> = replayed[1..].iter().map(|m| &m["arguments"][1]).collect();
    assert_eq!(
        texts,
        [&json!("m1"), &json!("m2"), &json!("m3")],
        "in order, once"
    );

    // The same connection: its id, and new calls work; the join sent again
    // was skipped (never answered).
    let me = back.invoke("me", "WhoAmI", json!([])).await?;
    assert_eq!(me["result"]["connectionId"], id.as_str());
    assert!(
        !back.pending().iter().any(|m| m["invocationId"] == "again"),
        "a message sent again was handled twice"
    );
    other
        .invoke("s4", "SendToGroup", json!(["room", "other", "m4"]))
        .await?;
    back.next_where(message("m4")).await?;

    // Acks arrive for what it sent (within a second of it).
    back.next_where(|m| m["type"] == 8).await?;
    server.stop().await
}

#[tokio::test]
async fn too_much_unacknowledged_closes_with_the_reason() -> anyhow::Result<()> {
    let mut config = config();
    config.hub_limits.stateful_reconnect_buffer_bytes = 600;
    let server = TestServer::start(config).await?;
    let (mut client, _, _) = stateful(&server).await?;
    let (mut other, _) = RawClient::connect(&server, "/demo/chat").await?;
    client.invoke("join", "JoinGroup", json!(["room"])).await?;
    let text = "x".repeat(100);
    for i in 0..10 {
        other
            .invoke(
                &format!("s{i}"),
                "SendToGroup",
                json!(["room", "other", text]),
            )
            .await?;
    }
    let (seen, code) = client.until_closed().await;
    let close = seen.iter().find(|m| m["type"] == 7);
    let error = close.and_then(|m| m["error"].as_str()).unwrap_or_default();
    assert!(
        error.contains("stateful_reconnect_buffer_bytes") && error.contains("600"),
        "{seen:?}"
    );
    assert_eq!(
        close.map(|m| m["allowReconnect"].clone()),
        Some(json!(true))
    );
    assert!(code.is_some());
    server.stop().await
}

#[tokio::test]
async fn without_a_reconnect_in_time_the_connection_ends() -> anyhow::Result<()> {
    let mut config = config();
    config.connection.disconnect_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await?;
    let (client, _, token) = stateful(&server).await?;
    drop(client);
    let path = format!("/demo/chat?id={token}");
    hubhost_tests::wait_until_async(hubhost_tests::PATIENCE, || async {
        // The token is released once the connection ended: 404.
        matches!(
            hubhost_tests::http(server.addr, "GET", &path).await,
            Ok((404, _))
        )
    })
    .await?;
    // A client version 1 handshake on a connection negotiated stateful
    // gets a plain connection: a second socket for its token is refused.
    let (status, body) = server
        .negotiate(
            "/demo/chat",
            "?negotiateVersion=1&useStatefulReconnect=true",
        )
        .await?;
    assert_eq!(status, 200);
    let token: Value = serde_json::from_str(&body)?;
    let token = token["connectionToken"].as_str().unwrap_or_default();
    let mut plain = RawClient::open(server.addr, &format!("/demo/chat?id={token}")).await?;
    plain
        .send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .await?;
    assert_eq!(plain.next().await?, json!({}));
    assert_eq!(
        plain.invoke("e", "Echo", json!(["v1"])).await?["result"],
        "v1"
    );
    server.stop().await
}

/// The steps of a drain's handover (`POST /TENANT/HUB/handover`) answer
/// only another node (the request is marked as passed on), only while this
/// node drains, and only for the connection's token: anything else is the
/// 404 of an unknown connection. A resume passed on to a draining node is
/// answered 421, which asks the other node to take the connection over.
#[tokio::test]
async fn the_handover_steps_answer_only_a_draining_nodes_peers() -> anyhow::Result<()> {
    let mut config = config();
    config.drain.window = Duration::from_secs(30);
    config.connection.disconnect_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await?;
    let (mut client, id, token) = stateful(&server).await?;
    client.invoke("join", "JoinGroup", json!(["room"])).await?;
    let passed_on = [("x-hubhost-forwarded", "peer")];
    let step = |query: &str| format!("/demo/chat/handover?id={token}&{query}");

    let (status, _) = http_with(server.addr, "POST", &step("step=describe"), &passed_on).await?;
    assert_eq!(status, 404, "not draining");
    hubhost::drain::start(&server.state);
    let (status, _) = http_with(server.addr, "POST", &step("step=describe"), &[]).await?;
    assert_eq!(status, 404, "not from another node");
    let wrong = "/demo/chat/handover?id=nosuchtoken&step=describe";
    assert_eq!(
        http_with(server.addr, "POST", wrong, &passed_on).await?.0,
        404
    );
    let (status, _) = http_with(server.addr, "POST", &step("step=drop"), &passed_on).await?;
    assert_eq!(status, 400, "no such step");
    let (status, body) = http_with(server.addr, "POST", &step("step=take"), &passed_on).await?;
    assert_eq!((status, body.as_str()), (400, "barrier required"));

    let (status, body) = http_with(server.addr, "POST", &step("step=describe"), &passed_on).await?;
    assert_eq!(status, 200, "{body}");
    let described: Value = serde_json::from_str(&body)?;
    assert_eq!(described["connectionId"], id.as_str());
    assert_eq!(described["protocol"], "json");
    assert_eq!(described["groups"], json!(["room"]));

    let mut resume = format!("ws://{}/demo/chat?id={token}", server.addr).into_client_request()?;
    resume
        .headers_mut()
        .insert("x-hubhost-forwarded", "peer".parse()?);
    match tokio_tungstenite::connect_async(resume).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 421);
            assert!(response.headers().contains_key("x-hubhost-handover"));
        }
        other => anyhow::bail!("a passed-on resume was not answered 421: {other:?}"),
    }
    // The connection is still here, and still the client's.
    let me = client.invoke("me", "WhoAmI", json!([])).await?;
    assert_eq!(me["result"]["connectionId"], id.as_str());
    drop(client);
    server.stop().await
}
