//! Every backplane channel name, built in one place.
//!
//! Layout: every message a hub sends travels under its hub's prefix,
//! `{CLUSTER:TENANT:HUB}:` + `all`, `group:NAME`, `user:ID` or `node:NODE`
//! (sends to connections of one node). Node-to-node control travels outside
//! any tenant: `{CLUSTER}:node:NODE` (group membership and presence requests
//! and replies), `{CLUSTER}:control` (hub and tenant changes) and
//! `{CLUSTER}:nodes` (heartbeats).
//!
//! Isolation: tenant and hub names are `[a-z0-9-]` and the cluster prefix
//! has no braces, so the braced prefix up to the hub is unambiguous and a
//! group or user name, which may hold any text (`:`, `*`, `{`, newlines…),
//! only ever extends it: it can never produce another tenant's prefix, nor
//! one of the cluster's own channels (their tag has no `:TENANT:HUB`).
//!
//! Sharding: the braces are a Redis Cluster hash tag. Every channel of one
//! hub hashes to one slot — one shard carries all of a hub's messages, so
//! they reach each node in the order they were published, as on one Redis —
//! while different hubs and tenants spread over the shards. Names a client
//! chooses never pick the slot: only the first braces count.

use crate::ids::NodeId;
use crate::names::HubKey;

/// Channel names of one cluster.
#[derive(Debug, Clone)]
pub struct Channels {
    cluster: String,
}

impl Channels {
    /// The channels of the cluster named `cluster` (no braces: see the
    /// configuration's check of `cluster_prefix`).
    pub fn new(cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
        }
    }

    fn hub(&self, hub: &HubKey) -> String {
        format!("{{{}:{}:{}}}", self.cluster, hub.tenant(), hub.hub())
    }

    /// Every connection of a hub, on every node.
    pub fn all(&self, hub: &HubKey) -> String {
        format!("{}:all", self.hub(hub))
    }

    /// The members of one group of a hub.
    pub fn group(&self, hub: &HubKey, group: &str) -> String {
        format!("{}:group:{group}", self.hub(hub))
    }

    /// The connections of one user of a hub.
    pub fn user(&self, hub: &HubKey, user: &str) -> String {
        format!("{}:user:{user}", self.hub(hub))
    }

    /// Sends of a hub to connections on one node: a hub's messages never
    /// leave its prefix, even when addressed to one connection.
    pub fn hub_node(&self, hub: &HubKey, node: NodeId) -> String {
        format!("{}:node:{node}", self.hub(hub))
    }

    /// Announcements of hub and tenant changes, to every node.
    pub fn control(&self) -> String {
        format!("{{{}}}:control", self.cluster)
    }

    /// Heartbeats of every node.
    pub fn nodes(&self) -> String {
        format!("{{{}}}:nodes", self.cluster)
    }

    /// One node.
    pub fn node(&self, node: NodeId) -> String {
        format!("{{{}}}:node:{node}", self.cluster)
    }
}

/// The Redis Cluster hash tag of `channel`, the text inside its first
/// braces (all of it when there are none): what its slot is computed from,
/// so channels with one tag share a slot (and one `SSUBSCRIBE`).
pub fn hash_tag(channel: &str) -> &str {
    channel
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(tag, _)| tag)
        .filter(|tag| !tag.is_empty())
        .unwrap_or(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sit_under_the_hub_prefix() -> anyhow::Result<()> {
        let channels = Channels::new("hubhost");
        let hub = HubKey::new("acme", "chat")?;
        assert_eq!(channels.all(&hub), "{hubhost:acme:chat}:all");
        assert_eq!(
            channels.group(&hub, "a:b*"),
            "{hubhost:acme:chat}:group:a:b*"
        );
        assert_eq!(channels.user(&hub, "u 1"), "{hubhost:acme:chat}:user:u 1");
        let other = HubKey::new("acme-2", "chat")?;
        for name in [":x", "}x", "{x}"] {
            let group = channels.group(&hub, name);
            assert!(!group.starts_with(&channels.all(&other)));
            assert_eq!(hash_tag(&group), "hubhost:acme:chat", "{name}");
        }
        assert_eq!(hash_tag(&channels.control()), "hubhost");
        assert_eq!(hash_tag("plain"), "plain");
        assert_eq!(hash_tag("{}x"), "{}x");
        Ok(())
    }
}
