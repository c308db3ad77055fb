//! `/metrics` (#19): a `hubhost` process with `--metrics-listen`, scraped
//! and parsed as Prometheus text; every value checked against traffic the
//! test made, and no label a client chooses. Compiled code shared between
//! two processes, loaded and refused, counted.

use hubhost::admin::client::AdminClient;
use hubhost::names::HubKey;
use hubhost_tests::admin::OPERATOR_KEY;
use hubhost_tests::process::Node;
use hubhost_tests::{PATIENCE, REDIS_URL, RawClient, guest, unique_prefix, wait_until_async};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;
use std::net::SocketAddr;

async fn scrape(addr: SocketAddr) -> anyhow::Result<Scrape> {
    let response = reqwest::get(format!("http://{addr}/metrics")).await?;
    anyhow::ensure!(
        response.status() == 200,
        "/metrics answered {}",
        response.status()
    );
    let text = response.text().await?;
    Ok(Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?)
}

/// Where `node` serves `/metrics`, from its log.
async fn metrics_address(node: &Node) -> anyhow::Result<SocketAddr> {
    Ok(node
        .log_until("metrics on http://")
        .await?
        .last()
        .and_then(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| anyhow::anyhow!("no metrics address in the log"))?
        .parse()?)
}

/// The value of the sample `name` whose labels include `labels`, if any.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches =
        |s: &&Sample| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
    scrape
        .samples
        .iter()
        .find(matches)
        .and_then(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            Value::Histogram(buckets) => buckets.last().map(|b| b.count),
            Value::Summary(_) => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_node_did() -> anyhow::Result<()> {
    let node = Node::start(
        &[
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--hub".into(),
            format!("demo/chat={}", guest("chat").display()),
            "--hub".into(),
            format!("demo/faulty={}", guest("faulty").display()),
            "--admin-key".into(),
            OPERATOR_KEY.into(),
            "--call-timeout-ms".into(),
            "300".into(),
            // Redis: the chat's history is state, one script per message.
            "--redis".into(),
            REDIS_URL.into(),
            "--cluster-prefix".into(),
            unique_prefix("metrics"),
        ],
        &[("RUST_LOG", "info")],
    )
    .await?;
    let metrics = metrics_address(&node).await?;
    let public = reqwest::get(format!("http://{}/metrics", node.addr)).await?;
    assert_eq!(public.status(), 404, "metrics are not on the public port");

    let (mut first, _) = RawClient::connect_as(node.addr, "/demo/chat", None).await?;
    let (second, _) = RawClient::connect_as(node.addr, "/demo/chat", None).await?;
    let (mut faulty, _) = RawClient::connect_as(node.addr, "/demo/faulty", None).await?;
    for i in 0..5 {
        let answer = first.invoke(&format!("e{i}"), "Echo", json!([i])).await?;
        assert_eq!(answer["result"], i, "{answer}");
    }
    first.invoke("u", "NoSuchMethod", json!([])).await?;
    // One broadcast to the two chat clients: two deliveries.
    first
        .invoke("j", "JoinGroup", json!(["nobody-else"]))
        .await?;
    first
        .invoke("b", "SendMessage", json!(["ann", "hi"]))
        .await?;
    let trapped = faulty.invoke("p", "Panic", json!([])).await?;
    assert!(trapped["error"].is_string(), "{trapped}");
    let timed_out = faulty.invoke("l", "Loop", json!([])).await?;
    assert!(timed_out["error"].is_string(), "{timed_out}");
    let admin = AdminClient::new(&format!("http://{}", node.addr), OPERATOR_KEY)?;
    let bytes = std::fs::read(guest("chat"))?;
    admin
        .upload(&HubKey::new("demo", "chat")?, bytes, true)
        .await?;

    let got = scrape(metrics).await?;
    let chat = [("tenant", "demo"), ("hub", "chat")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut labels = chat.to_vec();
        labels.extend_from_slice(extra);
        labels
    };
    let ws = with(&[("transport", "WebSockets")]);
    assert_eq!(value(&got, "hubhost_connections", &ws), Some(2.0));
    let ok = with(&[("outcome", "ok")]);
    // Echo ×5, JoinGroup, SendMessage.
    assert_eq!(value(&got, "hubhost_invocations_total", &ok), Some(7.0));
    let hub_error = with(&[("outcome", "hub_error")]);
    assert_eq!(
        value(&got, "hubhost_invocations_total", &hub_error),
        Some(1.0)
    );
    assert_eq!(
        value(&got, "hubhost_invocation_duration_seconds", &ok),
        Some(7.0),
        "the histogram's count"
    );
    assert_eq!(value(&got, "hubhost_deliveries_total", &chat), Some(2.0));
    let faulty_hub = [("tenant", "demo"), ("hub", "faulty")];
    let failed = [faulty_hub[0], faulty_hub[1], ("outcome", "failed")];
    assert_eq!(value(&got, "hubhost_invocations_total", &failed), Some(2.0));
    for kind in ["trap", "timeout"] {
        let labels = [faulty_hub[0], faulty_hub[1], ("kind", kind)];
        assert_eq!(
            value(&got, "hubhost_hub_errors_total", &labels),
            Some(1.0),
            "{kind}"
        );
    }
    let timeout = [("tenant", "demo"), ("limit", "hub_limits.call_timeout_ms")];
    assert_eq!(value(&got, "hubhost_limit_hits_total", &timeout), Some(1.0));
    // Served from a file at start, then version 1 from the store.
    assert_eq!(value(&got, "hubhost_hub_installs_total", &chat), Some(2.0));
    assert_eq!(value(&got, "hubhost_hub_active_version", &chat), Some(1.0));
    assert!(value(&got, "hubhost_backplane_published_total", &[]).is_some());
    assert!(
        value(
            &got,
            "hubhost_backplane_dropped_total",
            &[("reason", "overflow")]
        ) == Some(0.0)
    );
    let script = [("use", "script")];
    assert!(
        value(&got, "hubhost_redis_round_trip_seconds", &script).is_some_and(|n| n >= 1.0),
        "SendMessage ran the state script"
    );
    assert!(value(&got, "process_resident_memory_bytes", &[]).is_some_and(|b| b > 1e6));
    // Cardinality: no label a client names.
    for sample in &got.samples {
        for label in ["connection", "user", "group", "method"] {
            assert!(sample.labels.get(label).is_none(), "{sample:?}");
        }
    }

    // The admin API's view of the same (what the dashboard charts), for
    // admin keys only.
    for route in ["activity", "errors"] {
        let url = format!("http://{}/admin/v1/tenants/demo/{route}", node.addr);
        assert_eq!(
            reqwest::get(url).await?.status(),
            401,
            "{route} without a key"
        );
    }
    let activity = admin.activity("demo").await?;
    let hubs: Vec<(&str, u64, u64)> = activity
        .hubs
        .iter()
        .map(|h| (h.hub.as_str(), h.connections, h.invocations))
        .collect();
    assert_eq!(hubs, [("chat", 2, 8), ("faulty", 1, 2)]);
    let errors = admin.errors("demo").await?.errors;
    let calls: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.hub.as_str(), e.call.as_str()))
        .collect();
    assert_eq!(
        calls,
        [("faulty", "Loop"), ("faulty", "Panic")],
        "newest first"
    );
    assert!(errors[0].error.contains("time limit"), "{errors:?}");

    drop(second);
    wait_until_async(PATIENCE, || async {
        scrape(metrics)
            .await
            .is_ok_and(|s| value(&s, "hubhost_connections", &ws) == Some(1.0))
    })
    .await?;
    Ok(())
}

/// Compiled code one node shares with another is counted on the node that
/// loads it, and so is code that does not check out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_compiled_code_is_counted() -> anyhow::Result<()> {
    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let prefix = unique_prefix("metrics-code");
    let args = |metrics: bool| {
        let mut args: Vec<String> = [
            "--redis",
            REDIS_URL,
            "--cluster-prefix",
            &prefix,
            "--secrets-key",
            KEY,
            "--admin-key",
            OPERATOR_KEY,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if metrics {
            args.extend(["--metrics-listen".into(), "127.0.0.1:0".into()]);
        }
        args
    };
    let uploader = Node::start(&args(false), &[]).await?;
    let loader = Node::start(&args(true), &[("RUST_LOG", "info")]).await?;
    let metrics = metrics_address(&loader).await?;
    let count = |outcome: &'static str| async move {
        let labels = [("tenant", "acme"), ("outcome", outcome)];
        scrape(metrics)
            .await
            .ok()
            .and_then(|s| value(&s, "hubhost_shared_code_total", &labels))
    };
    let admin = AdminClient::new(&format!("http://{}", uploader.addr), OPERATOR_KEY)?;
    let key = HubKey::new("acme", "live")?;
    admin
        .upload(&key, std::fs::read(guest("versioned_v1"))?, true)
        .await?;
    wait_until_async(PATIENCE, || async { count("loaded").await == Some(1.0) }).await?;

    // The code relabelled as the next version's: refused.
    let code_key = format!("{prefix}:store:code:acme");
    let mut redis = redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await?;
    let genuine: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(&code_key)
        .query_async(&mut redis)
        .await?;
    let next = admin
        .upload(&key, std::fs::read(guest("versioned_v2"))?, false)
        .await?;
    let forged: Vec<(String, Vec<u8>)> = genuine
        .into_iter()
        .map(|(field, value)| match field.as_str() {
            "sha256" => (field, next.info.sha256.clone().into_bytes()),
            _ => (field, value),
        })
        .collect();
    redis::cmd("HSET")
        .arg(&code_key)
        .arg(forged)
        .query_async::<()>(&mut redis)
        .await?;
    admin.activate(&key, next.info.version).await?;
    wait_until_async(PATIENCE, || async { count("refused").await == Some(1.0) }).await?;
    assert_eq!(count("loaded").await, Some(1.0));
    admin.delete(&key).await?;
    redis::cmd("DEL")
        .arg(&code_key)
        .query_async::<()>(&mut redis)
        .await?;
    Ok(())
}
