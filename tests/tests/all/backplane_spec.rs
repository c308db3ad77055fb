//! The lifetime-manager spec ([`hubhost_tests::spec`]) on every backplane.

use hubhost::backplane::Backplane;
use hubhost::backplane::memory::{MemoryBackplane, MemoryBus};
use hubhost::backplane::redis::{RedisBackplane, RedisSettings};
use hubhost_tests::{PATIENCE, unique_prefix, wait_until};
use std::sync::Arc;

#[tokio::test]
async fn memory_backplane_passes_the_spec() -> anyhow::Result<()> {
    let bus = MemoryBus::new();
    let nodes: Vec<Arc<dyn Backplane>> = (0..3)
        .map(|_| Arc::new(MemoryBackplane::new(bus.clone())) as Arc<dyn Backplane>)
        .collect();
    hubhost_tests::spec::run(nodes, "spec").await?;
    assert_eq!(bus.dropped(), 0);
    Ok(())
}

/// On the machine's Redis (127.0.0.1:6379), under a prefix of its own.
#[tokio::test]
async fn redis_backplane_passes_the_spec() -> anyhow::Result<()> {
    let mut nodes: Vec<Arc<dyn Backplane>> = Vec::new();
    for _ in 0..3 {
        nodes.push(Arc::new(RedisBackplane::start(RedisSettings::new(
            hubhost_tests::REDIS_URL,
        ))?));
    }
    wait_until(PATIENCE, || nodes.iter().all(|n| n.is_ready())).await?;
    hubhost_tests::spec::run(nodes.clone(), &unique_prefix("spec")).await?;
    for node in &nodes {
        let stats = node.stats();
        assert_eq!(
            (
                stats.dropped_overflow,
                stats.dropped_expired,
                stats.dropped_in_flight,
                stats.dropped_incoming
            ),
            (0, 0, 0, 0),
            "{stats:?}"
        );
        assert!(
            stats.published > 0 && stats.received > 0,
            "the spec ran through Redis: {stats:?}"
        );
    }
    Ok(())
}
