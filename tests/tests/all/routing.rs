//! Requests for another node's connection, on two nodes sharing the
//! machine's Redis: long polling, Server-Sent Events and WebSockets all work
//! through the node that did not negotiate; tokens of unknown or dead nodes
//! get 404 at once; a request already passed on is never passed on again.

use hubhost::config::Config;
use hubhost_tests::transports::{
    EventStream, HANDSHAKE_OK, JSON_HANDSHAKE, LongPoll, json_messages, negotiate,
};
use hubhost_tests::{
    PATIENCE, REDIS_URL, RawClient, TestServer, cluster_config, unique_prefix, wait_until_async,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const HUB: &str = "/demo/chat";
const HEARTBEAT_MS: u64 = 200;
/// The header a node adds to a request it passes on.
const FORWARDED: &str = "x-hubhost-forwarded";

fn node_config(prefix: &str) -> Config {
    let mut config = cluster_config(REDIS_URL, prefix);
    config.backplane.heartbeat_interval = std::time::Duration::from_millis(HEARTBEAT_MS);
    config.connection.poll_timeout = std::time::Duration::from_millis(5_000);
    config
}

/// Wait until `from` passes requests on to `to`: a poll on `from` for a
/// connection negotiated on `to` starts it (200) rather than 404.
async fn knows(from: &TestServer, to: &TestServer) -> anyhow::Result<()> {
    let negotiated = negotiate(to.addr, HUB).await?;
    let lp = LongPoll::new(from.addr, HUB, &negotiated.token);
    wait_until_async(PATIENCE, || async {
        matches!(lp.poll().await, Ok(reply) if reply.status == 200)
    })
    .await?;
    // Started on its owner, through the other node.
    lp.delete().await?;
    Ok(())
}

/// Two nodes of one cluster that know each other.
async fn two_nodes(name: &str) -> anyhow::Result<(TestServer, TestServer)> {
    let prefix = unique_prefix(name);
    let a = TestServer::start(node_config(&prefix)).await?;
    let b = TestServer::start(node_config(&prefix)).await?;
    knows(&b, &a).await?;
    knows(&a, &b).await?;
    Ok((a, b))
}

fn invocation(id: &str, target: &str, args: Value) -> String {
    format!(
        "{}\u{1e}",
        json!({"type": 1, "invocationId": id, "target": target, "arguments": args})
    )
}

#[tokio::test]
async fn long_polling_works_through_the_other_node() -> anyhow::Result<()> {
    let (a, b) = two_nodes("route-lp").await?;
    let negotiated = negotiate(a.addr, HUB).await?;
    let via_b = LongPoll::new(b.addr, HUB, &negotiated.token);
    let first = via_b.poll().await?;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.body.is_empty());
    assert_eq!(
        first.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(first.header("cache-control"), Some("no-cache, no-store"));
    assert_eq!(
        first.header("expires"),
        Some("Thu, 01 Jan 1970 00:00:00 GMT")
    );
    assert_eq!(via_b.post(JSON_HANDSHAKE).await?.status, 200);
    assert_eq!(via_b.next_data().await?, HANDSHAKE_OK);
    assert_eq!(
        via_b
            .post(invocation("1", "Echo", json!(["via b"])))
            .await?
            .status,
        200
    );
    assert_eq!(
        json_messages(&via_b.next_data().await?)?,
        vec![json!({"type": 3, "invocationId": "1", "result": "via b"})]
    );
    // The connection lives on a: its id is a's, and it is served there.
    let who = via_b.post(invocation("2", "WhoAmI", json!([]))).await?;
    assert_eq!(who.status, 200);
    assert_eq!(
        json_messages(&via_b.next_data().await?)?,
        vec![json!({"type": 3, "invocationId": "2",
                    "result": {"connectionId": negotiated.connection_id, "userId": null}})]
    );
    // Requests may alternate between the nodes.
    let via_a = LongPoll::new(a.addr, HUB, &negotiated.token);
    via_a.post(invocation("3", "Echo", json!([3]))).await?;
    assert_eq!(
        json_messages(&via_b.next_data().await?)?,
        vec![json!({"type": 3, "invocationId": "3", "result": 3})]
    );
    // Leaving through b: 202, and a waiting poll (on a) gets 204.
    let waiting = via_a.parked_poll(&a.state).await?;
    let deleted = via_b.delete().await?;
    assert_eq!(deleted.status, 202, "{deleted:?}");
    assert_eq!(waiting.await??.status, 204);
    assert_eq!(via_b.poll().await?.status, 404);
    // Status codes of the owner come back as they are: 400 without an id
    // is b's own, a 405 on a WebSocket token is a's.
    let ws = negotiate(a.addr, HUB).await?;
    let mut client = RawClient::open(a.addr, &format!("{HUB}?id={}", ws.token)).await?;
    client.send_text(JSON_HANDSHAKE).await?;
    assert_eq!(client.next().await?, json!({}));
    let refused = LongPoll::new(b.addr, HUB, &ws.token)
        .post(JSON_HANDSHAKE)
        .await?;
    assert_eq!(refused.status, 405, "{refused:?}");
    let refused = LongPoll::new(b.addr, HUB, &ws.token).poll().await?;
    assert_eq!(refused.status, 400, "{refused:?}");
    b.stop().await?;
    a.stop().await
}

#[tokio::test]
async fn an_event_stream_works_through_the_other_node() -> anyhow::Result<()> {
    let (a, b) = two_nodes("route-sse").await?;
    let negotiated = negotiate(a.addr, HUB).await?;
    let mut events =
        EventStream::open(&b.url(&format!("{HUB}?id={}", negotiated.token)), &[]).await?;
    assert_eq!(events.status, 200);
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    assert_eq!(events.header("cache-control"), Some("no-cache,no-store"));
    assert_eq!(events.take(3).await?, b":\r\n");
    // POSTs through either node reach it.
    let via_b = LongPoll::new(b.addr, HUB, &negotiated.token);
    assert_eq!(via_b.post(JSON_HANDSHAKE).await?.status, 200);
    assert_eq!(events.next_event().await?, "data: {}\u{1e}\r\n\r\n");
    via_b
        .post(invocation("1", "Echo", json!(["streamed"])))
        .await?;
    assert_eq!(
        events.next_messages().await?,
        vec![json!({"type": 3, "invocationId": "1", "result": "streamed"})]
    );
    let via_a = LongPoll::new(a.addr, HUB, &negotiated.token);
    via_a.post(invocation("2", "Echo", json!([2]))).await?;
    assert_eq!(
        events.next_messages().await?,
        vec![json!({"type": 3, "invocationId": "2", "result": 2})]
    );
    // A second stream, through a: 409 from the owner.
    let second = EventStream::open(&a.url(&format!("{HUB}?id={}", negotiated.token)), &[]).await?;
    assert_eq!(second.status, 409);
    // Dropping the relayed stream ends the connection on a.
    drop(events);
    wait_until_async(PATIENCE, || async {
        matches!(via_a.post("{\"type\":6}\u{1e}").await, Ok(reply) if reply.status == 404)
    })
    .await?;
    b.stop().await?;
    a.stop().await
}

#[tokio::test]
async fn a_websocket_is_relayed_to_the_owner() -> anyhow::Result<()> {
    let (a, b) = two_nodes("route-ws").await?;
    let negotiated = negotiate(a.addr, HUB).await?;
    let path = format!("{HUB}?id={}", negotiated.token);
    let mut client = RawClient::open(b.addr, &path).await?;
    client.send_text(JSON_HANDSHAKE).await?;
    assert_eq!(client.next().await?, json!({}));
    assert_eq!(
        client.invoke("1", "Echo", json!(["relayed"])).await?,
        json!({"type": 3, "invocationId": "1", "result": "relayed"})
    );
    assert_eq!(
        client.invoke("2", "WhoAmI", json!([])).await?["result"]["connectionId"],
        negotiated.connection_id
    );
    // A second socket for the token, through either node: 409 from a.
    for node in [&a, &b] {
        match RawClient::open(node.addr, &path).await {
            Err(error) => assert!(error.to_string().contains("409"), "{error}"),
            Ok(_) => anyhow::bail!("a second socket for one token was accepted"),
        }
    }
    // Broadcasts from a client on b reach it too.
    let (mut other, _) = RawClient::connect(&b, HUB).await?;
    other
        .invoke("x", "SendMessage", json!(["bob", "hi"]))
        .await?;
    client
        .next_where(|m| m["target"] == "ReceiveMessage" && m["arguments"] == json!(["bob", "hi"]))
        .await?;
    // A Close from the client ends it with a clean close (1000), relayed.
    client.send(json!({"type": 7})).await?;
    let (_, code) = client.until_closed().await;
    assert_eq!(code, Some(1000), "the close frame through the relay");
    // (The relay lasts until the client answers the close or goes.)
    drop(client);
    // A client that just goes: its relayed connection on a ends too, and
    // the token is released (a POST for it is then 404, not 405).
    let negotiated = negotiate(a.addr, HUB).await?;
    let mut client = RawClient::open(b.addr, &format!("{HUB}?id={}", negotiated.token)).await?;
    client.send_text(JSON_HANDSHAKE).await?;
    assert_eq!(client.next().await?, json!({}));
    let via_a = LongPoll::new(a.addr, HUB, &negotiated.token);
    assert_eq!(via_a.post(JSON_HANDSHAKE).await?.status, 405);
    drop(client);
    wait_until_async(PATIENCE, || async {
        matches!(via_a.post(JSON_HANDSHAKE).await, Ok(reply) if reply.status == 404)
    })
    .await?;
    b.stop().await?;
    a.stop().await
}

/// `token` with its node part (the first 8 characters) replaced.
fn of_another_node(token: &str) -> String {
    let node = if token.starts_with("AAAAAAAA") {
        "BBBBBBBB"
    } else {
        "AAAAAAAA"
    };
    format!("{node}{}", &token[8..])
}

#[tokio::test]
async fn tokens_of_unknown_nodes_are_not_found() -> anyhow::Result<()> {
    let (a, b) = two_nodes("route-unknown").await?;
    let token = of_another_node(&negotiate(a.addr, HUB).await?.token);
    for node in [&a, &b] {
        let lp = LongPoll::new(node.addr, HUB, &token);
        for reply in [
            lp.poll().await?,
            lp.post(JSON_HANDSHAKE).await?,
            lp.delete().await?,
        ] {
            assert_eq!(reply.status, 404, "{reply:?}");
        }
        let events = EventStream::open(&node.url(&format!("{HUB}?id={token}")), &[]).await?;
        assert_eq!(events.status, 404);
        match RawClient::open(node.addr, &format!("{HUB}?id={token}")).await {
            Err(error) => assert!(error.to_string().contains("404"), "{error}"),
            Ok(_) => anyhow::bail!("a WebSocket for an unknown node's token was accepted"),
        }
    }
    b.stop().await?;
    a.stop().await
}

#[tokio::test]
async fn a_forwarded_request_is_never_passed_on_again() -> anyhow::Result<()> {
    let (a, b) = two_nodes("route-marked").await?;
    let negotiated = negotiate(a.addr, HUB).await?;
    // Marked as passed on already: b answers for itself, and does not know it.
    let marked = LongPoll::new(b.addr, HUB, &negotiated.token).header(FORWARDED, "someone");
    for reply in [
        marked.poll().await?,
        marked.post(JSON_HANDSHAKE).await?,
        marked.delete().await?,
    ] {
        assert_eq!(reply.status, 404, "{reply:?}");
    }
    let events = EventStream::open(
        &b.url(&format!("{HUB}?id={}", negotiated.token)),
        &[(FORWARDED, "someone")],
    )
    .await?;
    assert_eq!(events.status, 404);
    // Unmarked, the same request is passed on (the token was never touched).
    let plain = LongPoll::new(b.addr, HUB, &negotiated.token);
    assert_eq!(plain.poll().await?.status, 200);
    assert_eq!(plain.delete().await?.status, 202);
    // An unknown token, marked, is 404 too.
    let unknown = LongPoll::new(b.addr, HUB, "nope").header(FORWARDED, "someone");
    assert_eq!(unknown.poll().await?.status, 404);
    b.stop().await?;
    a.stop().await
}

#[tokio::test]
async fn tokens_of_a_stopped_node_are_not_found_promptly() -> anyhow::Result<()> {
    let (a, b) = two_nodes("route-dead").await?;
    let negotiated = negotiate(a.addr, HUB).await?;
    let started = negotiate(a.addr, HUB).await?;
    let lp = LongPoll::new(b.addr, HUB, &started.token);
    assert_eq!(lp.start(JSON_HANDSHAKE).await?, HANDSHAKE_OK);
    a.stop().await?;
    // Within a few heartbeats b answers 404 for a's tokens, and each answer
    // comes at once rather than after a hanging request.
    let deadline = Duration::from_millis(HEARTBEAT_MS * 5);
    let stopped_at = Instant::now();
    for token in [&negotiated.token, &started.token] {
        let lp = LongPoll::new(b.addr, HUB, token);
        wait_until_async(deadline + Duration::from_secs(1), || async {
            let asked = Instant::now();
            let reply = lp.poll().await;
            assert!(
                asked.elapsed() < Duration::from_secs(3),
                "a request for a dead node's connection hung for {:?}",
                asked.elapsed()
            );
            matches!(reply, Ok(reply) if reply.status == 404)
        })
        .await?;
        assert_eq!(lp.post(JSON_HANDSHAKE).await?.status, 404);
        assert_eq!(lp.delete().await?.status, 404);
        let events = EventStream::open(&b.url(&format!("{HUB}?id={token}")), &[]).await?;
        assert_eq!(events.status, 404);
    }
    assert!(stopped_at.elapsed() < deadline + Duration::from_secs(2));
    // a's connections and tokens are gone; b's own still work.
    let own = LongPoll::new(b.addr, HUB, &negotiate(b.addr, HUB).await?.token);
    assert_eq!(own.start(JSON_HANDSHAKE).await?, HANDSHAKE_OK);
    b.stop().await
}

// Stopping a node that relays transports of another node's connections.
// Its own connections get a Close and end at once; relayed ones should end
// too, so that the node stops within its shutdown grace (5 s, after which
// it gives up waiting) and the clients move on.

/// hubhost's shutdown grace (`SHUTDOWN_GRACE` in host/src/server.rs).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Stop `node`; an error if it takes the shutdown grace or longer.
async fn stops_promptly(node: TestServer) -> anyhow::Result<()> {
    let started = Instant::now();
    let stopped = tokio::time::timeout(PATIENCE, node.stop()).await;
    let took = started.elapsed();
    anyhow::ensure!(
        matches!(stopped, Ok(Ok(()))) && took < SHUTDOWN_GRACE,
        "stopping the relaying node took {took:?} (result: {:?})",
        stopped.map(|r| r.map_err(|e| e.to_string()))
    );
    Ok(())
}

// Graceful shutdown waits for in-flight responses, and a passed-on event
// stream lasts as long as its connection on a: b must end it when it stops
// (it once hung shutdown until PATIENCE ran out).
#[tokio::test]
async fn stopping_a_node_ends_the_event_streams_it_relays() -> anyhow::Result<()> {
    let (a, b) = two_nodes("route-stop-sse").await?;
    let negotiated = negotiate(a.addr, HUB).await?;
    let mut events =
        EventStream::open(&b.url(&format!("{HUB}?id={}", negotiated.token)), &[]).await?;
    assert_eq!(events.take(3).await?, b":\r\n");
    let post = LongPoll::new(a.addr, HUB, &negotiated.token);
    assert_eq!(post.post(JSON_HANDSHAKE).await?.status, 200);
    assert_eq!(events.next_event().await?, "data: {}\u{1e}\r\n\r\n");
    let stopped = stops_promptly(b).await;
    let ended = events.ends_within(PATIENCE).await;
    anyhow::ensure!(
        stopped.is_ok() && ended,
        "{stopped:?}; relayed event stream ended: {ended}"
    );
    a.stop().await
}

// A poll b passes on must not hold b's shutdown until the poll timeout on a
// (90 s by default; 30 s here): b answers it as if it had timed out, 200
// empty, and the client polls again through another node.
#[tokio::test]
async fn stopping_a_node_answers_the_polls_it_relays() -> anyhow::Result<()> {
    let prefix = unique_prefix("route-stop-lp");
    let mut config = node_config(&prefix);
    config.connection.poll_timeout = std::time::Duration::from_millis(30_000);
    let a = TestServer::start(config.clone()).await?;
    let b = TestServer::start(config).await?;
    knows(&b, &a).await?;
    let negotiated = negotiate(a.addr, HUB).await?;
    let lp = LongPoll::new(b.addr, HUB, &negotiated.token);
    assert_eq!(lp.start(JSON_HANDSHAKE).await?, HANDSHAKE_OK);
    // A poll through b that is parked on a: b holds the request it passed
    // on, unanswered, when it begins to stop.
    let waiting = lp.parked_poll(&a.state).await?;
    // Other requests through b still reach a meanwhile (a Ping: it answers
    // nothing), and leave the poll waiting.
    assert_eq!(lp.post("{\"type\":6}\u{1e}").await?.status, 200);
    assert!(
        !waiting.is_finished(),
        "the poll was answered: {:?}",
        waiting.await
    );
    let stopped = stops_promptly(b).await;
    // Answered: any status, or the connection cut; not our client giving
    // up on it after PATIENCE.
    let poll = waiting.await?;
    let answered = matches!(&poll, Ok(reply) if reply.status == 200 && reply.body.is_empty());
    anyhow::ensure!(
        stopped.is_ok() && answered,
        "{stopped:?}; relayed poll: {:?}",
        poll.map(|reply| (reply.status, reply.body))
    );
    a.stop().await
}

// Shutdown closes b's own connections with a Close; the WebSockets b relays
// for a must end too (1001), promptly, rather than outlive b's shutdown.
#[tokio::test]
async fn stopping_a_node_closes_the_websockets_it_relays() -> anyhow::Result<()> {
    let (a, b) = two_nodes("route-stop-ws").await?;
    let negotiated = negotiate(a.addr, HUB).await?;
    let mut client = RawClient::open(b.addr, &format!("{HUB}?id={}", negotiated.token)).await?;
    client.send_text(JSON_HANDSHAKE).await?;
    assert_eq!(client.next().await?, json!({}));
    assert_eq!(client.invoke("1", "Echo", json!([1])).await?["result"], 1);
    let stopped = stops_promptly(b).await;
    // Read until the socket ends: only Pings, then a close frame with 1001
    // (Going Away), which the client's SignalR takes for a lost connection
    // and reconnects; `None` means it ended without one, or is still open.
    let (seen, code) = client.until_closed().await;
    anyhow::ensure!(
        stopped.is_ok() && code == Some(1001) && seen.iter().all(|m| m["type"] == 6),
        "{stopped:?}; relayed WebSocket: close code {code:?} after {seen:?}"
    );
    a.stop().await
}

/// A request that cannot be passed on leaves a log line naming the node it
/// was for, never the request's URL: the connection token and an
/// `access_token` in it stay out of the log.
#[tokio::test]
async fn a_request_that_cannot_be_passed_on_logs_no_tokens() -> anyhow::Result<()> {
    use hubhost_tests::process::Node;
    let prefix = unique_prefix("leaks");
    let args = |extra: &[String]| {
        let mut args = vec![
            "--hub".to_owned(),
            format!("demo/chat={}", hubhost_tests::guest("chat").display()),
            "--redis".to_owned(),
            REDIS_URL.to_owned(),
            "--cluster-prefix".to_owned(),
            prefix.clone(),
        ];
        args.extend_from_slice(extra);
        args
    };
    // The owner advertises a URL nobody listens at.
    let closed = hubhost_tests::redis_server::free_port()?;
    let owner = Node::start(
        &args(&[
            "--advertise-url".to_owned(),
            format!("http://127.0.0.1:{closed}"),
        ]),
        &[("RUST_LOG", "info")],
    )
    .await?;
    let other = Node::start(&args(&[]), &[("RUST_LOG", "info")]).await?;
    let negotiated = negotiate(owner.addr, HUB).await?;
    let secret = "eyJhbGciOiJIUzI1NiJ9.secret-claims.signature";
    let url = format!(
        "http://{}{HUB}?id={}&access_token={secret}",
        other.addr, negotiated.token
    );
    let http = reqwest::Client::new();
    // Until the other node knows the owner, it answers 404 without trying.
    wait_until_async(PATIENCE, || async {
        let _ = http.get(&url).send().await;
        other
            .lines()
            .iter()
            .any(|line| line.contains("cannot pass a request on"))
    })
    .await?;
    let leaks: Vec<String> = other
        .lines()
        .into_iter()
        .filter(|line| line.contains(&negotiated.token) || line.contains(secret))
        .collect();
    assert!(leaks.is_empty(), "tokens in the log: {leaks:#?}");
    Ok(())
}
