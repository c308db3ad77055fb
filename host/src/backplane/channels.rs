//! Every backplane channel name, built in one place.
//!
//! Layout: every message a hub sends travels under its tenant's prefix,
//! `{cluster}:{tenant}:{hub}:` + `all`, `group:{name}`, `user:{id}` or
//! `node:{node-id}` (sends to connections of one node). Node-to-node control
//! travels outside any tenant: `{cluster}:node:{node-id}` (group membership
//! requests and replies), `{cluster}:control` (hub and tenant changes) and
//! `{cluster}:nodes` (heartbeats).
//! Those cannot collide with a tenant's channels, which have two names
//! before the kind. Tenant and hub names
//! are restricted to `[a-z0-9-]`, so the prefix up to the hub is unambiguous
//! and a group or user name, which may hold any text (`:`, `*`, newlines…),
//! only ever extends it: it can never produce another tenant's prefix.

use crate::ids::NodeId;
use crate::names::HubKey;

/// Channel names of one cluster.
#[derive(Debug, Clone)]
pub struct Channels {
    cluster: String,
}

impl Channels {
    pub fn new(cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
        }
    }

    fn hub(&self, hub: &HubKey) -> String {
        format!("{}:{}:{}", self.cluster, hub.tenant(), hub.hub())
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
    /// leave its tenant's prefix, even when addressed to one connection.
    pub fn hub_node(&self, hub: &HubKey, node: NodeId) -> String {
        format!("{}:node:{node}", self.hub(hub))
    }

    /// Announcements of hub and tenant changes, to every node.
    pub fn control(&self) -> String {
        format!("{}:control", self.cluster)
    }

    /// Heartbeats of every node.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.cluster)
    }

    /// One node.
    pub fn node(&self, node: NodeId) -> String {
        format!("{}:node:{node}", self.cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sit_under_the_tenant_prefix() -> anyhow::Result<()> {
        let channels = Channels::new("hubhost");
        let hub = HubKey::new("acme", "chat")?;
        assert_eq!(channels.all(&hub), "hubhost:acme:chat:all");
        assert_eq!(channels.group(&hub, "a:b*"), "hubhost:acme:chat:group:a:b*");
        assert_eq!(channels.user(&hub, "u 1"), "hubhost:acme:chat:user:u 1");
        let other = HubKey::new("acme-2", "chat")?;
        assert!(
            !channels
                .group(&hub, ":x")
                .starts_with(&channels.all(&other))
        );
        Ok(())
    }
}
