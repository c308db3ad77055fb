//! What the host refuses to load, and why it says so.

use hubhost::names::HubKey;
use hubhost::runtime::{HubLimits, LoadError, Runtime};
use hubhost_tests::guest;

fn load(bytes: &[u8]) -> Result<(), LoadError> {
    let runtime = Runtime::new().map_err(|e| LoadError::Invalid(e.to_string()))?;
    let key = HubKey::new("t", "h").map_err(|e| LoadError::Invalid(e.to_string()))?;
    runtime.load(key, bytes, &HubLimits::default()).map(|_| ())
}

#[test]
fn a_component_asking_for_sockets_is_refused_with_the_import_named() -> anyhow::Result<()> {
    let bytes = std::fs::read(guest("greedy"))?;
    match load(&bytes) {
        Err(LoadError::ForbiddenImport(name)) => {
            assert!(name.starts_with("wasi:sockets/"), "{name}")
        }
        other => panic!("expected a forbidden import, got {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    assert!(matches!(
        load(b"not wasm at all"),
        Err(LoadError::Invalid(_))
    ));
    // A core module (the 8-byte header of an empty one) is not a component.
    assert!(matches!(
        load(b"\0asm\x01\0\0\0"),
        Err(LoadError::Invalid(_))
    ));
}

#[test]
fn a_component_of_another_world_is_refused() -> anyhow::Result<()> {
    // An empty component: valid, but it exports no hub.
    let empty = b"\0asm\x0d\0\x01\0";
    match load(empty) {
        Err(LoadError::WrongWorld(detail)) => {
            assert!(detail.contains("hubhost:hub/hub"), "{detail}")
        }
        other => panic!("expected the wrong world, got {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn every_shipped_hub_loads() -> anyhow::Result<()> {
    for name in ["chat", "greeter", "faulty"] {
        load(&std::fs::read(guest(name))?).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }
    Ok(())
}

/// A component from `baseline_compile_above_bytes` on is served at once with
/// the baseline compiler's code; the optimizing compiler's code takes over
/// in the background, and calls work before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_component_is_served_at_once_then_optimized() -> anyhow::Result<()> {
    let mut config = hubhost_tests::config();
    config.baseline_compile_above_bytes = 1_000_000;
    config.hubs.push(hubhost::config::HubConfig {
        tenant: "demo".into(),
        hub: "py".into(),
        path: guest("chat-python"),
    });
    let server = hubhost_tests::TestServer::start(config).await?;
    let slot = |hub: &str| -> anyhow::Result<_> {
        let key = HubKey::new("demo", hub)?;
        server
            .state
            .hubs
            .get(&key)
            .ok_or_else(|| anyhow::anyhow!("no {hub}"))
    };
    assert!(
        slot("chat")?.active().optimized(),
        "the Rust chat, under 1 MB: optimized at once"
    );
    assert!(
        !slot("py")?.active().optimized(),
        "18 MB: baseline code first (its optimizing compile takes seconds)"
    );
    let (mut client, _) = hubhost_tests::RawClient::connect(&server, "/demo/py").await?;
    let echo = |n: u64| serde_json::json!([n]);
    assert_eq!(client.invoke("1", "Echo", echo(1)).await?["result"], 1);
    let py = slot("py")?;
    hubhost_tests::wait_until(std::time::Duration::from_secs(120), || {
        py.active().optimized()
    })
    .await?;
    assert_eq!(client.invoke("2", "Echo", echo(2)).await?["result"], 2);
    server.stop().await
}

/// The baseline compiler's code runs under the same limits: a loop is
/// stopped at the call's deadline, a stack overflow is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_code_keeps_the_limits() -> anyhow::Result<()> {
    use hubhost::backplane::memory::MemoryBackplane;
    use hubhost::cluster::{Cluster, PeerUrls};
    use hubhost::lifetime::HubLifetimeManager;
    use hubhost::runtime::{CallError, CallerInfo};
    use std::sync::Arc;
    use std::time::Duration;

    let runtime = Runtime::new()?.with_baseline(1)?;
    let limits = HubLimits {
        call_timeout: Duration::from_millis(300),
        ..HubLimits::default()
    };
    let version = runtime
        .load(
            HubKey::new("t", "faulty")?,
            &std::fs::read(guest("faulty"))?,
            &limits,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Its optimizing compile takes far longer than the first instance.
    assert!(!version.optimized(), "baseline code first");
    let backplane = Arc::new(MemoryBackplane::standalone());
    let cluster = Cluster::start("t", Duration::from_secs(2), PeerUrls::default(), backplane);
    let lifetime = HubLifetimeManager::start(cluster, Duration::from_secs(5));
    let caller = CallerInfo {
        connection_id: "c".into(),
        user_id: None,
        claims: Vec::new(),
        items: Arc::default(),
    };
    // A trap's instance is not kept: each call instantiates, from the code
    // served then, which must still be the baseline's.
    let outcome = tokio::task::spawn_blocking(move || {
        let overflowed = (!version.optimized())
            .then(|| version.invoke(&lifetime, &caller, "StackOverflow", "[100000000]"));
        let looped =
            (!version.optimized()).then(|| version.invoke(&lifetime, &caller, "Loop", "[]"));
        (overflowed, looped)
    })
    .await?;
    assert!(
        matches!(outcome.0, Some(Err(CallError::StackOverflow))),
        "{:?}",
        outcome.0.map(|r| r.err())
    );
    assert!(
        matches!(outcome.1, Some(Err(CallError::Timeout(_)))),
        "{:?}",
        outcome.1.map(|r| r.err())
    );
    Ok(())
}
