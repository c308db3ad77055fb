//! Presence: who of a hub is connected, on every node.
//!
//! Each node knows its own connections, groups and users (the tables that
//! delivery uses), so a query is answered where the connections are: this
//! node answers from its tables and asks every other live node with one
//! [`PresenceRequest`] on that node's channel; each answers with a
//! [`PresenceReply`] (its count and up to `limit` ids). Nothing is stored
//! twice, so nothing can go stale: a node that dies takes its entries with
//! it, and once the cluster counts it gone (three missed heartbeats) it is
//! no longer asked. A node that is still counted alive but does not answer
//! within the group timeout is left out of that answer, with a warning.

use super::{HubLifetimeManager, PresenceReply, PresenceRequest, Wire};
use crate::ids::NodeId;
use crate::names::HubKey;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tokio::sync::mpsc;

/// What to count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PresenceQuery {
    /// Every connection of the hub.
    Hub,
    Group(String),
    User(String),
    /// One connection: whether it is there.
    Connection(String),
}

/// How many connections a query names, cluster-wide, and up to the limit of
/// their ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    pub count: u64,
    pub ids: Vec<String>,
}

impl Presence {
    fn add(&mut self, count: u64, ids: Vec<String>, limit: usize) {
        self.count += count;
        let room = limit.saturating_sub(self.ids.len());
        self.ids.extend(ids.into_iter().take(room));
    }
}

/// Where the nodes' answers to a presence query go.
pub(super) type Waiter = mpsc::Sender<PresenceReply>;

impl HubLifetimeManager {
    /// How many connections of `hub` `query` names on every node, and up to
    /// `limit` of their ids.
    pub async fn presence(&self, hub: &HubKey, query: PresenceQuery, limit: usize) -> Presence {
        let mut presence = Presence::default();
        let (count, ids) = self.local_presence(hub, &query, limit);
        presence.add(count, ids, limit);
        if !self.backplane.has_peers() {
            return presence;
        }
        let nodes: HashSet<NodeId> = self.cluster.alive_nodes().into_iter().collect();
        if nodes.is_empty() {
            return presence;
        }
        let (tx, mut rx) = mpsc::channel(nodes.len());
        let request = self.presence_requests.add(tx);
        let wire = Wire::Presence(PresenceRequest {
            origin: self.cluster.node_name().to_owned(),
            request,
            tenant: hub.tenant().to_owned(),
            hub: hub.hub().to_owned(),
            query,
            limit,
        });
        for node in &nodes {
            self.publish_wire(hub.tenant(), &self.channels.node(*node), &wire);
        }
        let mut missing = nodes;
        let deadline = tokio::time::Instant::now() + self.group_timeout;
        while !missing.is_empty() {
            let reply = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(reply)) => reply,
                Ok(None) | Err(_) => break,
            };
            let Some(node) = NodeId::parse(&reply.node) else {
                continue;
            };
            // Once per node, and only from the nodes asked.
            if missing.remove(&node) {
                presence.add(reply.count, reply.ids, limit);
            }
        }
        self.presence_requests.take(request);
        let silent: Vec<String> = missing
            .into_iter()
            .filter(|node| !self.cluster.is_dead(*node))
            .map(|node| node.to_string())
            .collect();
        if !silent.is_empty() {
            tracing::warn!(
                hub = %hub,
                nodes = ?silent,
                "presence answered without nodes that did not reply in time"
            );
        }
        presence
    }

    fn local_presence(
        &self,
        hub: &HubKey,
        query: &PresenceQuery,
        limit: usize,
    ) -> (u64, Vec<String>) {
        match self.hub(hub) {
            Some(connections) => super::read(&connections).presence(query, limit),
            None => (0, Vec::new()),
        }
    }

    /// Another node asks who of a hub is here.
    pub(super) fn on_presence_request(&self, request: PresenceRequest) {
        let Some(origin) = NodeId::parse(&request.origin) else {
            return tracing::warn!(
                origin = request.origin,
                "dropping a presence request from an invalid node id"
            );
        };
        let Ok(hub) = HubKey::new(&request.tenant, &request.hub) else {
            return;
        };
        // The asker bounds what it wants; never more than a reply can hold.
        let limit = request.limit.min(MAX_REPLY_IDS);
        let (count, ids) = self.local_presence(&hub, &request.query, limit);
        let reply = Wire::PresenceReply(PresenceReply {
            request: request.request,
            node: self.cluster.node_name().to_owned(),
            count,
            ids,
        });
        self.publish_wire(hub.tenant(), &self.channels.node(origin), &reply);
    }

    /// A node answered one of our presence queries.
    pub(super) fn on_presence_reply(&self, reply: PresenceReply) {
        if let Some(waiter) = self.presence_requests.get(reply.request) {
            // Room for one reply per node asked; extra ones are dropped.
            let _ = waiter.try_send(reply);
        }
    }
}

/// Most ids a node sends in one reply, whatever it is asked.
const MAX_REPLY_IDS: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_add_up_and_ids_stop_at_the_limit() {
        let mut presence = Presence::default();
        presence.add(3, vec!["a".into(), "b".into(), "c".into()], 4);
        presence.add(2, vec!["d".into(), "e".into()], 4);
        assert_eq!(presence.count, 5);
        assert_eq!(presence.ids, ["a", "b", "c", "d"]);
    }

    #[test]
    fn wire_messages_round_trip() -> anyhow::Result<()> {
        let wire = Wire::Presence(PresenceRequest {
            origin: "n".into(),
            request: 7,
            tenant: "t".into(),
            hub: "h".into(),
            query: PresenceQuery::Group("g:{x}\n".into()),
            limit: 10,
        });
        let Wire::Presence(back) = serde_json::from_slice(&serde_json::to_vec(&wire)?)? else {
            anyhow::bail!("wrong kind")
        };
        assert_eq!(back.query, PresenceQuery::Group("g:{x}\n".into()));
        Ok(())
    }
}
