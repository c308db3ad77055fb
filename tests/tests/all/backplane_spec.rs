//! The lifetime-manager spec ([`hubhost_tests::spec`]) on every backplane.

use hubhost::backplane::Backplane;
use hubhost::backplane::memory::{MemoryBackplane, MemoryBus};
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
    hubhost_tests::spec::run_on_redis(hubhost_tests::REDIS_URL).await?;
    Ok(())
}
