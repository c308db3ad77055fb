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
