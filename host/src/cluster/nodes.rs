//! Which nodes are alive, and where they take HTTP requests.
//!
//! Every node publishes a heartbeat on `{cluster}:nodes` at the heartbeat
//! interval, with the URL other nodes reach it at, and a last one when it
//! shuts down. A node unheard of for three intervals, or that said goodbye,
//! is dead: requests for its connections are not forwarded to it (they get
//! 404, and the client reconnects), and group changes for its connections
//! fail at once instead of waiting out the group timeout. A node that hears
//! a newcomer answers with its own heartbeat at once, so a new node knows
//! its peers within a round trip rather than an interval. A node silent for
//! 100 intervals is forgotten (restarted nodes come back with new ids).

use super::{Cluster, Wire};
use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// How many missed heartbeats make a node dead.
const MISSED_BEATS: u32 = 3;
/// After how many missed heartbeats a dead node is forgotten: nodes restart
/// with new ids, so the table would otherwise only grow.
const FORGET_AFTER_BEATS: u32 = 100;

/// Which URLs from heartbeats this node passes requests on to. Heartbeats
/// come through Redis, so whoever can write to Redis could otherwise point
/// this node's passed-on requests (with their connection tokens and
/// `Authorization` headers) anywhere.
#[derive(Debug, Clone, Default)]
pub struct PeerUrls {
    /// URL prefixes the operator trusts; none: http(s) to a private or
    /// loopback address.
    prefixes: Vec<String>,
}

impl PeerUrls {
    pub fn new(prefixes: Vec<String>) -> Self {
        Self { prefixes }
    }

    /// Whether requests may be passed on to `url`.
    pub fn allows(&self, url: &str) -> bool {
        if !self.prefixes.is_empty() {
            return self.prefixes.iter().any(|prefix| url.starts_with(prefix));
        }
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return false;
        };
        if !matches!(parsed.scheme(), "http" | "https") || !parsed.username().is_empty() {
            return false;
        }
        let host = parsed.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => ip.is_private() || ip.is_loopback(),
            // Loopback, or unique local (fc00::/7).
            Ok(std::net::IpAddr::V6(ip)) => {
                ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00
            }
            Err(_) => host == "localhost",
        }
    }
}

/// A node's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    /// Where the node takes forwarded requests, if it can.
    pub url: Option<String>,
    /// The node is shutting down.
    pub leaving: bool,
    /// The nodes whose connections this one holds (a drain handed them
    /// over): requests for those connections may go to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<String>,
}

#[derive(Debug)]
struct Seen {
    url: Option<String>,
    at: Instant,
    leaving: bool,
    adopted: Vec<NodeId>,
}

/// The nodes this node has heard of.
#[derive(Debug)]
pub(super) struct Nodes {
    interval: Duration,
    peers: PeerUrls,
    url: Mutex<Option<String>>,
    seen: Mutex<HashMap<NodeId, Seen>>,
}

impl Nodes {
    pub fn new(interval: Duration, peers: PeerUrls) -> Self {
        Self {
            interval,
            peers,
            url: Mutex::new(None),
            seen: Mutex::default(),
        }
    }

    fn seen(&self) -> MutexGuard<'_, HashMap<NodeId, Seen>> {
        // Single inserts and reads: a poisoned map is still consistent.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alive(&self, seen: &Seen) -> bool {
        !seen.leaving && seen.at.elapsed() < self.interval * MISSED_BEATS
    }
}

impl Cluster {
    /// Announce this node, reachable at `url`, every heartbeat interval
    /// until the manager is dropped.
    pub fn start_heartbeats(self: &Arc<Self>, url: Option<String>) {
        *self.nodes.url.lock().unwrap_or_else(|e| e.into_inner()) = url;
        let manager = Arc::downgrade(self);
        let interval = self.nodes.interval;
        let hearing = self
            .hearing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        tokio::spawn(async move {
            // The other nodes answer the first beat at once: hear them (a
            // node that just started learns its peers in milliseconds, not
            // a heartbeat interval later).
            if let Some(hearing) = hearing {
                let _ = hearing.ready(interval).await;
            }
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                manager.beat(false);
            }
        });
    }

    fn beat(&self, leaving: bool) {
        // Once gone, silent: a node that said goodbye and beat again while
        // it finishes would be taken for alive (and sent requests).
        use std::sync::atomic::Ordering::Relaxed;
        if self.left.load(Relaxed) {
            return;
        }
        self.left.store(leaving, Relaxed);
        let url = self
            .nodes
            .url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let adopted = self.adopting().keys().map(ToString::to_string).collect();
        let beat = Wire::Node(Heartbeat {
            node: self.node_name.clone(),
            url,
            leaving,
            adopted,
        });
        self.publish(&self.channels.nodes(), &beat);
    }

    /// Tell the other nodes this one is going.
    pub fn leave(&self) {
        self.beat(true);
    }

    /// Where to reach `node`, if it is alive and reachable.
    pub fn node_url(&self, node: NodeId) -> Option<String> {
        let seen = self.nodes.seen();
        let entry = seen.get(&node)?;
        if self.nodes.alive(entry) {
            entry.url.clone()
        } else {
            None
        }
    }

    /// The other nodes heard from lately and not leaving.
    pub fn alive_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .seen()
            .iter()
            .filter(|(_, entry)| self.nodes.alive(entry))
            .map(|(node, _)| *node)
            .collect()
    }

    fn adopting(&self) -> MutexGuard<'_, HashMap<NodeId, usize>> {
        // Counts only: a poisoned map is still consistent.
        self.adopting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This node now holds one more connection of `home` (handed over by
    /// its drain). The first one is announced at once.
    pub fn adopt(&self, home: NodeId) {
        let first = {
            let mut adopting = self.adopting();
            let count = adopting.entry(home).or_default();
            *count += 1;
            *count == 1
        };
        if first {
            self.beat(false);
        }
    }

    /// One connection of `home` left this node.
    pub fn release(&self, home: NodeId) {
        let mut adopting = self.adopting();
        if let Some(count) = adopting.get_mut(&home) {
            *count -= 1;
            if *count == 0 {
                adopting.remove(&home);
            }
        }
    }

    /// The live nodes that hold connections of `home` (see [`Self::adopt`]).
    pub fn adopters(&self, home: NodeId) -> Vec<NodeId> {
        self.nodes
            .seen()
            .iter()
            .filter(|(_, entry)| self.nodes.alive(entry) && entry.adopted.contains(&home))
            .map(|(node, _)| *node)
            .collect()
    }

    /// Whether a live node holds connections of `home`.
    pub fn adopted_elsewhere(&self, home: NodeId) -> bool {
        !self.adopters(home).is_empty()
    }

    /// Whether `node` is known to be gone: heard of, then silent or leaving.
    /// A node never heard of may just have started, so it is not dead.
    pub fn is_dead(&self, node: NodeId) -> bool {
        self.nodes
            .seen()
            .get(&node)
            .is_some_and(|entry| !self.nodes.alive(entry))
    }

    pub(super) fn on_heartbeat(&self, beat: Heartbeat) {
        let Some(node) = NodeId::parse(&beat.node) else {
            return tracing::warn!(
                node = beat.node,
                "dropping a heartbeat from an invalid node id"
            );
        };
        if node == self.node {
            return;
        }
        let (url, refused) = match beat.url {
            Some(url) if !self.nodes.peers.allows(&url) => (None, Some(url)),
            url => (url, None),
        };
        let fresh = Seen {
            url,
            at: Instant::now(),
            leaving: beat.leaving,
            adopted: beat
                .adopted
                .iter()
                .filter_map(|n| NodeId::parse(n))
                .collect(),
        };
        let newcomer = {
            let mut seen = self.nodes.seen();
            let was_alive = seen.get(&node).is_some_and(|e| self.nodes.alive(e));
            let leaving = fresh.leaving;
            seen.insert(node, fresh);
            let forget = self.nodes.interval * FORGET_AFTER_BEATS;
            seen.retain(|_, entry| entry.at.elapsed() < forget);
            !was_alive && !leaving
        };
        if beat.leaving {
            tracing::info!(%node, "node left");
        } else if newcomer {
            match refused {
                Some(url) => tracing::warn!(
                    %node,
                    url,
                    "node joined with a URL outside the trusted peer URLs (backplane.peer_urls): requests for its connections are not passed on to it"
                ),
                None => tracing::info!(%node, "node joined"),
            }
            self.beat(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::memory::MemoryBackplane;

    fn beat(node: NodeId, leaving: bool) -> Heartbeat {
        Heartbeat {
            node: node.to_string(),
            url: Some("http://10.0.0.2:5000".into()),
            leaving,
            adopted: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nodes_live_die_and_are_forgotten() {
        let interval = Duration::from_secs(2);
        let manager = Cluster::start(
            "test",
            interval,
            PeerUrls::default(),
            Arc::new(MemoryBackplane::standalone()),
        );
        let me = manager.node();
        let other = NodeId::random();
        assert_eq!(manager.node_url(other), None);
        assert!(
            !manager.is_dead(other),
            "never heard of: maybe just started"
        );

        manager.on_heartbeat(beat(other, false));
        assert_eq!(
            manager.node_url(other).as_deref(),
            Some("http://10.0.0.2:5000")
        );
        tokio::time::advance(interval * MISSED_BEATS).await;
        assert_eq!(manager.node_url(other), None);
        assert!(manager.is_dead(other), "silent for three intervals");

        manager.on_heartbeat(beat(other, false));
        assert!(manager.node_url(other).is_some(), "back");
        manager.on_heartbeat(beat(other, true));
        assert!(manager.is_dead(other), "said goodbye");

        manager.on_heartbeat(beat(me, false));
        assert_eq!(manager.node_url(me), None, "its own heartbeat is ignored");

        tokio::time::advance(interval * FORGET_AFTER_BEATS).await;
        manager.on_heartbeat(beat(NodeId::random(), false));
        assert!(!manager.is_dead(other), "forgotten");
    }

    #[test]
    fn only_trusted_peer_urls_are_kept() {
        let private = PeerUrls::default();
        for url in [
            "http://10.0.0.2:5000",
            "https://192.168.1.9",
            "http://172.16.0.1:80",
            "http://127.0.0.1:5000",
            "http://[::1]:5000",
            "http://[fd00::5]:5000",
            "http://localhost:5000",
        ] {
            assert!(private.allows(url), "{url}");
        }
        for url in [
            "http://203.0.113.5:5000",
            "http://example.com",
            "ftp://10.0.0.2",
            "http://user@10.0.0.2",
            "http://[2001:db8::1]",
            "nonsense",
        ] {
            assert!(!private.allows(url), "{url}");
        }
        let named = PeerUrls::new(vec!["http://hubhost-".into()]);
        assert!(named.allows("http://hubhost-0.hubhost:5000"));
        assert!(
            !named.allows("http://10.0.0.2:5000"),
            "the operator's rule replaces the default"
        );
    }

    #[tokio::test]
    async fn a_heartbeat_with_an_untrusted_url_is_alive_but_never_a_target() {
        let manager = Cluster::start(
            "test",
            Duration::from_secs(2),
            PeerUrls::default(),
            Arc::new(MemoryBackplane::standalone()),
        );
        let other = NodeId::random();
        manager.on_heartbeat(Heartbeat {
            node: other.to_string(),
            url: Some("http://203.0.113.5:5000".into()),
            leaving: false,
            adopted: Vec::new(),
        });
        assert_eq!(manager.node_url(other), None);
        assert!(!manager.is_dead(other), "alive, only not a target");
    }
}
