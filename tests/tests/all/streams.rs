//! Streams both ways and client results at the protocol level, with the
//! chat hub and a raw JSON client: what goes on the wire, and every limit
//! (open streams, item size, a client that does not read, a client that
//! never answers). The official clients' side is `tests/node/streams.test.mjs`.

use hubhost::config::Config;
use hubhost_tests::{PATIENCE, RawClient, TestServer, config, wait_until};
use serde_json::{Value, json};

/// The chat hub, its tenant limited by `limits` (`hub_limits` keys).
fn limited(limits: Value) -> anyhow::Result<Config> {
    let mut config = config();
    config.tenants.insert(
        "demo".into(),
        hubhost::tenants::TenantConfig {
            hub_limits: serde_json::from_value(limits)?,
            ..Default::default()
        },
    );
    Ok(config)
}

fn stream(id: &str, target: &str, args: Value) -> Value {
    json!({"type": 4, "invocationId": id, "target": target, "arguments": args})
}

/// The items of stream `id` until its Completion; the Completion.
async fn items_of(client: &mut RawClient, id: &str) -> anyhow::Result<(Vec<Value>, Value)> {
    let mut items = Vec::new();
    loop {
        let message = client.next_where(|m| m["invocationId"] == id).await?;
        match message["type"].as_u64() {
            Some(2) => items.push(message["item"].clone()),
            Some(3) => return Ok((items, message)),
            _ => anyhow::bail!("unexpected {message}"),
        }
    }
}

#[tokio::test]
async fn a_stream_sends_its_items_then_an_empty_completion_and_a_cancel_ends_it()
-> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    client.send(stream("a", "Counter", json!([3]))).await?;
    let (items, end) = items_of(&mut client, "a").await?;
    assert_eq!(items, [json!(0), json!(1), json!(2)]);
    assert_eq!(end, json!({"type": 3, "invocationId": "a"}));

    // An endless stream: the same id again is refused, a cancel ends it.
    client
        .send(stream("b", "Counter", json!([1u64 << 40])))
        .await?;
    client
        .next_where(|m| m["type"] == 2 && m["invocationId"] == "b")
        .await?;
    client.send(stream("b", "Counter", json!([1]))).await?;
    let refused = client
        .next_where(|m| m["type"] == 3 && m["invocationId"] == "b")
        .await?;
    assert_eq!(refused["error"], "Invocation ID 'b' is already in use.");
    client.send(json!({"type": 5, "invocationId": "b"})).await?;
    let ended = client
        .next_where(|m| m["type"] == 3 && m["invocationId"] == "b")
        .await?;
    assert_eq!(ended, json!({"type": 3, "invocationId": "b"}));

    // Plain and streaming methods are called the right way only.
    client.send(stream("c", "Echo", json!([1]))).await?;
    let (_, wrong) = items_of(&mut client, "c").await?;
    assert_eq!(
        wrong["error"],
        "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation."
    );
    let plain = client.invoke("d", "Counter", json!([1])).await?;
    assert!(
        plain["error"]
            .as_str()
            .is_some_and(|e| e.contains("streaming 'Counter' method with a non-streaming")),
        "{plain}"
    );
    // Unknown ids are ignored; the connection carries on.
    client
        .send(json!({"type": 5, "invocationId": "zz"}))
        .await?;
    client
        .send(json!({"type": 2, "invocationId": "zz", "item": 1}))
        .await?;
    client
        .send(json!({"type": 3, "invocationId": "zz", "result": 1}))
        .await?;
    assert_eq!(client.invoke("e", "Echo", json!([7])).await?["result"], 7);
    server.stop().await
}

#[tokio::test]
async fn uploads_are_read_in_order_and_a_faulted_one_fails_the_call() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    client
        .send(json!({"type": 1, "invocationId": "1", "target": "UploadSum", "arguments": [], "streamIds": ["u"]}))
        .await?;
    for n in [1.0, 2.0, 3.5] {
        client
            .send(json!({"type": 2, "invocationId": "u", "item": n}))
            .await?;
    }
    client.send(json!({"type": 3, "invocationId": "u"})).await?;
    let sum = client.next_where(|m| m["invocationId"] == "1").await?;
    assert_eq!(sum["result"], 6.5);

    client
        .send(json!({"type": 1, "invocationId": "2", "target": "UploadSum", "arguments": [], "streamIds": ["v"]}))
        .await?;
    client
        .send(json!({"type": 2, "invocationId": "v", "item": 1}))
        .await?;
    client
        .send(json!({"type": 3, "invocationId": "v", "error": "sensor unplugged"}))
        .await?;
    let failed = client.next_where(|m| m["invocationId"] == "2").await?;
    assert_eq!(failed["error"], "sensor unplugged");

    // Two uploads open at once on one connection, their items interleaved.
    for call in ["3", "4"] {
        client
            .send(json!({"type": 1, "invocationId": call, "target": "UploadSum", "arguments": [], "streamIds": [format!("up{call}")]}))
            .await?;
    }
    for n in 1..=10 {
        for (stream, factor) in [("up3", 1), ("up4", 100)] {
            client
                .send(json!({"type": 2, "invocationId": stream, "item": n * factor}))
                .await?;
        }
    }
    for stream in ["up4", "up3"] {
        client
            .send(json!({"type": 3, "invocationId": stream}))
            .await?;
    }
    assert_eq!(
        client.next_where(|m| m["invocationId"] == "3").await?["result"],
        55.0
    );
    assert_eq!(
        client.next_where(|m| m["invocationId"] == "4").await?["result"],
        5500.0
    );

    // A method without uploads, given one, says how many it expects.
    client
        .send(json!({"type": 1, "invocationId": "5", "target": "Echo", "arguments": [1], "streamIds": ["w"]}))
        .await?;
    let wrong = client.next_where(|m| m["invocationId"] == "5").await?;
    assert_eq!(
        wrong["error"],
        "Client sent 1 stream(s), Hub method expects 0."
    );
    server.stop().await
}

#[tokio::test]
async fn open_streams_and_uploads_are_limited_per_connection() -> anyhow::Result<()> {
    let server =
        TestServer::start(limited(json!({"max_open_invocations_per_connection": 2}))?).await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    for id in ["a", "b"] {
        client
            .send(stream(id, "Counter", json!([1u64 << 40])))
            .await?;
        client
            .next_where(|m| m["type"] == 2 && m["invocationId"] == id)
            .await?;
    }
    client.send(stream("c", "Counter", json!([1]))).await?;
    let refused = client
        .next_where(|m| m["type"] == 3 && m["invocationId"] == "c")
        .await?;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("hub_limits.max_open_invocations_per_connection")),
        "{refused}"
    );
    client
        .send(json!({"type": 1, "invocationId": "d", "target": "UploadSum", "arguments": [], "streamIds": ["1", "2", "3"]}))
        .await?;
    let too_many = client.next_where(|m| m["invocationId"] == "d").await?;
    assert!(
        too_many["error"]
            .as_str()
            .is_some_and(|e| e.contains("hub_limits.max_open_invocations_per_connection")),
        "{too_many}"
    );
    // Cancelled, the streams free their places.
    for id in ["a", "b"] {
        client.send(json!({"type": 5, "invocationId": id})).await?;
    }
    client.send(stream("e", "Counter", json!([2]))).await?;
    let (items, _) = items_of(&mut client, "e").await?;
    assert_eq!(items.len(), 2);
    server.stop().await
}

#[tokio::test]
async fn a_stream_item_over_the_send_limit_ends_the_stream_with_the_limit() -> anyhow::Result<()> {
    let server = TestServer::start(limited(json!({"max_send_bytes": 1}))?).await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    client.send(stream("a", "Counter", json!([20]))).await?;
    let (items, end) = items_of(&mut client, "a").await?;
    assert_eq!(items.len(), 10, "0 to 9 fit in one byte");
    assert!(
        end["error"]
            .as_str()
            .is_some_and(|e| e.contains("hub_limits.max_send_bytes")),
        "{end}"
    );
    server.stop().await
}

/// A client that reads nothing: the stream waits for room in its queue
/// (nothing is lost, the client is not closed), and at the call's deadline
/// ends with an error saying why; everything sent before arrives, in order.
#[tokio::test]
async fn a_stream_slows_to_a_client_that_does_not_read() -> anyhow::Result<()> {
    let mut config = limited(json!({"call_timeout_ms": 1500}))?;
    config.connection.max_queued_bytes = 16 << 10;
    let server = TestServer::start(config).await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    client
        .send(stream("a", "Counter", json!([1u64 << 40])))
        .await?;
    // Not reading: the socket's buffers fill, then the queue; the stream
    // waits until the call's deadline, which the tenant's counters show.
    wait_until(PATIENCE, || {
        server
            .state
            .limit_counters
            .of("demo")
            .contains_key("hub_limits.call_timeout_ms")
    })
    .await?;
    let (items, end) = items_of(&mut client, "a").await?;
    assert!(items.len() > 100, "{} items", items.len());
    let expected: Vec<Value> = (0..items.len()).map(|i| json!(i)).collect();
    assert_eq!(items, expected, "every item, in order");
    // The hub learns why, or its deadline stops it first: either way the
    // client reads the time limit.
    assert!(
        end["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not read the stream's items")
                || e.contains("time limit of 1500 ms")),
        "{end}"
    );
    assert_eq!(client.invoke("b", "Echo", json!([1])).await?["result"], 1);
    server.stop().await
}

#[tokio::test]
async fn client_results_come_back_and_fail_with_the_reason() -> anyhow::Result<()> {
    let server = TestServer::start(limited(json!({"call_timeout_ms": 1000}))?).await?;
    let (mut asker, _) = RawClient::connect(&server, "/demo/chat").await?;
    let (mut named, named_id) = RawClient::connect(&server, "/demo/chat").await?;
    asker
        .send(json!({"type": 1, "invocationId": "1", "target": "AskName", "arguments": [named_id]}))
        .await?;
    let question = named.next_where(|m| m["type"] == 1).await?;
    assert_eq!(question["target"], "GetName");
    assert_eq!(question["arguments"], json!([]));
    let id = question["invocationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(id.starts_with('s'), "{question}");
    named
        .send(json!({"type": 3, "invocationId": id, "result": {"first": "Ann"}}))
        .await?;
    let answer = asker.next_where(|m| m["invocationId"] == "1").await?;
    assert_eq!(answer["result"], json!({"first": "Ann"}));

    // An error from the client is the call's error.
    asker
        .send(json!({"type": 1, "invocationId": "2", "target": "AskName", "arguments": [named_id]}))
        .await?;
    let question = named.next_where(|m| m["type"] == 1).await?;
    named
        .send(json!({"type": 3, "invocationId": question["invocationId"], "error": "no"}))
        .await?;
    assert_eq!(
        asker.next_where(|m| m["invocationId"] == "2").await?["error"],
        "no"
    );

    // No answer: the call's deadline.
    let failed = asker.invoke("3", "AskName", json!([named_id])).await?;
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer within") || e.contains("time limit")),
        "{failed}"
    );
    // A late answer is dropped; both connections carry on.
    let late = named.next_where(|m| m["type"] == 1).await?;
    named
        .send(json!({"type": 3, "invocationId": late["invocationId"], "result": 1}))
        .await?;
    assert_eq!(named.invoke("4", "Echo", json!([2])).await?["result"], 2);
    assert_eq!(asker.invoke("5", "Echo", json!([3])).await?["result"], 3);
    server.stop().await
}

/// What the Rust SDK never sends, sent through the raw imports by the
/// faulty hub: an item or arguments that are not JSON, arguments that are
/// not an array, handles that name no stream. Each is refused with its
/// reason (or `closed`), and the call and the connection carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_and_result_imports_refuse_what_the_sdk_never_sends() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/faulty").await?;
    let reply = client.invoke("abuse", "RawStreamAbuse", json!([])).await?;
    let answers: Vec<String> = serde_json::from_value(reply["result"].clone())
        .map_err(|e| anyhow::anyhow!("{e}: {reply}"))?;
    let expected = [
        "refused: item-json must be one JSON value",
        "closed",
        "closed",
        "closed",
        "error: args-json must be a JSON array:",
        "error: args-json must be a JSON array",
        "error: Connection disconnected.",
    ];
    assert_eq!(answers.len(), expected.len(), "{answers:?}");
    for (answer, start) in answers.iter().zip(expected) {
        assert!(answer.starts_with(start), "{answer} (expected {start}…)");
    }
    assert_eq!(
        client.invoke("after", "Echo", json!([1])).await?["result"],
        1
    );
    server.stop().await
}
