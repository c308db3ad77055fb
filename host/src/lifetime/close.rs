//! Closing connections wherever they live: one (or a user's) for the
//! server API, a hub's when it is deleted, all of them for a drain or a
//! shutdown. A close for another node's connections travels like a send to
//! the same target; each node closes what it holds.

use super::{CloseEnvelope, HubLifetimeManager, Target, Wire, read};
use crate::names::HubKey;
use crate::outbound::{CloseRequest, Outbound};

impl HubLifetimeManager {
    /// Close every local connection of `hub` with `request` (the hub is gone).
    pub fn close_hub(&self, hub: &HubKey, request: &CloseRequest) -> usize {
        let Some(connections) = self.hub(hub) else {
            return 0;
        };
        let connections = read(&connections);
        for connection in connections.connections() {
            connection.outbound.close(request.clone());
        }
        connections.len()
    }

    /// Close the connections `target` names, on this node now and on the
    /// others through one publish (as a send to the same target travels);
    /// returns how many were local.
    pub fn close(&self, hub: &HubKey, target: Target, request: CloseRequest) -> usize {
        let closed = self.close_local(hub, &target, &request);
        if self.backplane.has_peers()
            && let Some(channel) = self.channel_for(hub, &target)
        {
            self.publish_wire(
                hub.tenant(),
                &channel,
                &Wire::Close(CloseEnvelope {
                    origin: self.cluster.node_name().to_owned(),
                    tenant: hub.tenant().to_owned(),
                    hub: hub.hub().to_owned(),
                    to: target,
                    reason: request.error,
                    allow_reconnect: request.allow_reconnect,
                }),
            );
        }
        closed
    }

    pub(super) fn close_local(
        &self,
        hub: &HubKey,
        target: &Target,
        request: &CloseRequest,
    ) -> usize {
        let Some(connections) = self.hub(hub) else {
            return 0;
        };
        let connections = read(&connections);
        let found = connections.resolve(target);
        for connection in &found {
            connection.outbound.close(request.clone());
        }
        found.len()
    }

    /// Every local connection's sending half, all hubs (a drain closes
    /// them in batches).
    pub fn local_outbounds(&self) -> Vec<Outbound> {
        let hubs: Vec<_> = self.hubs().values().cloned().collect();
        hubs.iter()
            .flat_map(|connections| {
                read(connections)
                    .connections()
                    .map(|c| c.outbound.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Ask every local connection to close (shutdown).
    pub fn close_all(&self, request: &CloseRequest) {
        for connection in self.local_outbounds() {
            connection.close(request.clone());
        }
    }
}
