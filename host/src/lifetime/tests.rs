//! The lifetime manager's own tests (the spec suite runs against every
//! backplane in `tests/`).

use super::*;
use crate::backplane::memory::MemoryBackplane;
use crate::cluster::PeerUrls;
use crate::outbound;
use serde_json::value::RawValue;
use std::sync::mpsc;

fn connection(id: &str) -> (LocalConnection, outbound::OutboundReceiver) {
    let (outbound, rx) = outbound::channel(16, 1 << 20);
    let connection = LocalConnection {
        id: id.into(),
        user_id: None,
        outbound,
        invocations: Arc::new(crate::invocations::Invocations::new(
            crate::protocol::Protocol::Json,
        )),
    };
    (connection, rx)
}

/// A delivery that takes long (a big hub, a costly target) must not hold
/// a lock that another tenant's connections or sends need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_delivery_holds_up_no_other_hub() -> anyhow::Result<()> {
    let backplane = Arc::new(MemoryBackplane::standalone());
    let cluster = Cluster::start("t", Duration::from_secs(2), PeerUrls::default(), backplane);
    let manager = HubLifetimeManager::start(cluster, Duration::from_secs(5));
    let busy = HubKey::new("slow", "chat")?;
    let other = HubKey::new("other", "chat")?;
    let (slow_connection, _slow_rx) = connection("c1");
    let _ = manager.add_connection(&busy, slow_connection);

    let (inside_tx, inside_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let slow = {
        let manager = manager.clone();
        std::thread::spawn(move || {
            manager.deliver_with(&busy, &Target::All, || {
                let _ = inside_tx.send(());
                let _ = release_rx.lock().map(|rx| rx.recv());
                Frame::Own(Default::default())
            })
        })
    };
    inside_rx.recv()?;

    let (done_tx, done_rx) = mpsc::channel();
    let (other_connection, other_rx) = connection("c2");
    let other_side = {
        let manager = manager.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let _ = manager.add_connection(&other, other_connection);
            let arguments = RawValue::from_string("[1]".into())?;
            manager.send(&other, Target::All, Message::new("M".into(), arguments));
            manager.remove_connection(&other, "c2");
            let _ = done_tx.send(());
            Ok(())
        })
    };
    let finished = done_rx.recv_timeout(Duration::from_secs(10));
    let _ = release_tx.send(());
    let _ = slow.join();
    let _ = other_side.join();
    assert!(
        finished.is_ok(),
        "another hub's connect, send and leave waited for a slow delivery"
    );
    assert!(matches!(other_rx.try_recv(), Some(Frame::Message(_))));
    Ok(())
}
