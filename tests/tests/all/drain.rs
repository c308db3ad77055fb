//! Graceful drain (#18, part): a node asked to drain answers `/readyz` and
//! new connections with 503 at once, keeps serving its clients for the
//! window, then closes them in batches with a Close that allows
//! reconnecting, and exits. (With official clients behind a load balancer,
//! their coming back on the other node is `tests/node/drain.test.mjs`.)

use hubhost::admin::client::AdminClient;
use hubhost::config::DrainSettings;
use hubhost_tests::admin::OPERATOR_KEY;
use hubhost_tests::{PATIENCE, RawClient, TestServer, config, http};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_refuses_new_clients_serves_its_own_then_moves_them_in_batches()
-> anyhow::Result<()> {
    const WINDOW: Duration = Duration::from_millis(400);
    const PAUSE: Duration = Duration::from_millis(100);
    let mut settings = config();
    settings.admin.operator_keys = vec![OPERATOR_KEY.into()];
    settings.drain = DrainSettings {
        window: WINDOW,
        batch_size: 2,
        batch_interval: PAUSE,
        ..DrainSettings::default()
    };
    let server = TestServer::start(settings).await?;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(RawClient::connect(&server, "/demo/chat").await?.0);
    }
    // Only an operator drains a node: no key, or a wrong one, changes nothing.
    for key in [None, Some("not-an-admin-key-0123456789")] {
        let mut request =
            reqwest::Client::new().post(format!("http://{}/admin/v1/drain", server.addr));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        assert_eq!(request.send().await?.status(), 401);
    }
    assert_eq!(
        http(server.addr, "GET", "/readyz").await?.0,
        200,
        "still ready"
    );
    let admin = AdminClient::new(&format!("http://{}", server.addr), OPERATOR_KEY)?;
    let asked = Instant::now();
    let draining = admin.drain().await?;
    assert_eq!((draining.connections, draining.window_ms), (5, 400));

    // At once: out of rotation, and no new connection.
    let (status, body) = http(server.addr, "GET", "/readyz").await?;
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!((status, &body["draining"]), (503, &json!(true)), "{body}");
    let (status, body) = server
        .negotiate("/demo/chat", "?negotiateVersion=1")
        .await?;
    assert_eq!(status, 503, "{body}");
    let refused = RawClient::open(server.addr, "/demo/chat").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("503")),
        "a WebSocket without negotiation: {:?}",
        refused.err()
    );
    // Its own clients are served through the window.
    for (i, client) in clients.iter_mut().enumerate() {
        let echo = client.invoke(&format!("e{i}"), "Echo", json!([i])).await?;
        assert_eq!(echo["result"], i, "{echo}");
    }

    // Then each gets a Close that allows reconnecting, two at a time.
    // Read on every client at once, so each Close is timed as it arrives.
    let closes = clients.iter_mut().map(|client| async move {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let message = tokio::time::timeout_at(deadline, client.next()).await??;
            if message["type"] == 7 {
                assert_eq!(message["allowReconnect"], true, "{message}");
                return anyhow::Ok(Instant::now());
            }
        }
    });
    let mut closed_at = futures_util::future::join_all(closes)
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    closed_at.sort();
    let first = closed_at[0];
    assert!(
        first - asked >= WINDOW,
        "closed {:?} into the window",
        first - asked
    );
    // Batches of 2, a pause of 100 ms between them: arrivals come in groups
    // of 2, 2 and 1, split by gaps of about a pause. (When a Close is sent
    // is the server's; when it arrives varies by a few milliseconds, so the
    // groups are told apart by gaps over half a pause.)
    let mut groups = vec![1];
    for pair in closed_at.windows(2) {
        match groups.last_mut() {
            Some(size) if pair[1] - pair[0] < PAUSE / 2 => *size += 1,
            _ => groups.push(1),
        }
    }
    assert_eq!(
        groups,
        [2, 2, 1],
        "closes arrived at {:?} after the first",
        closed_at.iter().map(|t| *t - first).collect::<Vec<_>>()
    );
    // And the node exits by itself.
    server.stop().await?;
    Ok(())
}
