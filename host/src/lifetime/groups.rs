//! Group membership, wherever the connection lives.
//!
//! A change for a local connection is applied at once. A change for a
//! connection of another node goes to that node's channel of the hub as a
//! [`GroupRequest`]; the owner applies it and answers with a [`GroupReply`] on
//! the asking node's channel. The caller waits up to the group timeout. A
//! connection the owner does not have fails as soon as the owner answers; an
//! id that names no node or a node known to be gone (see [`crate::cluster`]),
//! or any id while this node has no peers, fails at once.
//!
//! A connection a drain handed to another node keeps its id, which names
//! the node it started on: the node holding it listens on that node's
//! channel of the hub (see `add_connection_in`) and answers; the others
//! there keep quiet, and so does the first node, which remembers what it
//! handed over. A node that is gone still has its connections' changes
//! sent while a live node says it holds some of them.

use super::local::Interest;
use super::{GroupError, GroupLimits, GroupReply, GroupRequest, HubLifetimeManager, Wire};
use crate::backplane::Subscribed;
use crate::ids::NodeId;
use crate::names::{HubKey, MAX_NAME_BYTES};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Where the owner's answer to a group request goes.
pub(super) type Waiter = oneshot::Sender<Result<(), GroupError>>;

fn check_group(group: &str) -> Result<(), GroupError> {
    if group.is_empty() || group.len() > MAX_NAME_BYTES {
        Err(GroupError::BadName)
    } else {
        Ok(())
    }
}

impl HubLifetimeManager {
    /// Put connection `id` of `hub` into `group`, within `limits`.
    pub async fn add_to_group(
        &self,
        hub: &HubKey,
        id: &str,
        group: &str,
        limits: GroupLimits,
    ) -> Result<(), GroupError> {
        self.change_group(hub, id, group, Some(limits)).await
    }

    /// Take connection `id` of `hub` out of `group`.
    pub async fn remove_from_group(
        &self,
        hub: &HubKey,
        id: &str,
        group: &str,
    ) -> Result<(), GroupError> {
        self.change_group(hub, id, group, None).await
    }

    /// Join within `limits` when they are given, else leave.
    async fn change_group(
        &self,
        hub: &HubKey,
        id: &str,
        group: &str,
        join: Option<GroupLimits>,
    ) -> Result<(), GroupError> {
        check_group(group)?;
        if let Some(changed) = self.change_local(hub, id, group, join) {
            let subscribed = changed?;
            // As in ASP.NET Core's Redis lifetime manager, a join returns once
            // group messages from other nodes can reach the connection.
            self.settle(subscribed).await;
            return Ok(());
        }
        let unknown = || GroupError::UnknownConnection(id.to_owned());
        let Some(home) = NodeId::owner_of(id).filter(|_| self.backplane.has_peers()) else {
            return Err(unknown());
        };
        // The node the id names has it, or handed it over (a drain) to a
        // node that listens on the same channel; a node known to be gone,
        // with no live node holding any of its connections, has none.
        let elsewhere = if home == self.node {
            self.was_handed_over(id)
        } else {
            !self.cluster.is_dead(home) || self.cluster.adopted_elsewhere(home)
        };
        if !elsewhere {
            return Err(unknown());
        }
        let (tx, rx) = oneshot::channel();
        let request = self.group_requests.add(tx);
        let wire = Wire::Group(GroupRequest {
            origin: self.cluster.node_name().to_owned(),
            request,
            tenant: hub.tenant().to_owned(),
            hub: hub.hub().to_owned(),
            connection: id.to_owned(),
            group: group.to_owned(),
            add: join.is_some(),
            limits: join.unwrap_or_default(),
        });
        self.publish_wire(hub.tenant(), &self.channels.hub_node(hub, home), &wire);
        match tokio::time::timeout(self.group_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => {
                self.group_requests.take(request);
                Err(GroupError::Timeout(id.to_owned()))
            }
        }
    }

    /// Apply a change to a local connection; `None` if there is none.
    fn change_local(
        &self,
        hub: &HubKey,
        id: &str,
        group: &str,
        join: Option<GroupLimits>,
    ) -> Option<Result<Subscribed, GroupError>> {
        let connections = self.hub(hub)?;
        let mut connections = super::write(&connections);
        let interest = match join {
            Some(limits) => match connections.join(id, group, limits)? {
                Ok(interest) => interest,
                Err(error) => return Some(Err(error)),
            },
            None => connections.remove_from_group(id, group)?,
        };
        Some(Ok(match interest {
            Interest::Gained => self.backplane.subscribe(&self.channels.group(hub, group)),
            Interest::Lost => {
                self.backplane.unsubscribe(&self.channels.group(hub, group));
                Subscribed::done()
            }
            Interest::Unchanged => Subscribed::done(),
        }))
    }

    /// Another node asks us to change one of our connections' groups.
    pub(super) fn on_group_request(self: &Arc<Self>, request: GroupRequest) {
        let Some(origin) = self.requesting_peer(&request.origin, "group request") else {
            return;
        };
        let join = request.add.then_some(request.limits);
        let applied = match HubKey::new(&request.tenant, &request.hub) {
            Err(_) => Err(GroupError::UnknownConnection(request.connection.clone())),
            Ok(hub) => match check_group(&request.group) {
                Err(error) => Err(error),
                Ok(()) => {
                    match self.change_local(&hub, &request.connection, &request.group, join) {
                        Some(changed) => changed,
                        None if self.answers_for_missing(&request.connection) => {
                            Err(GroupError::UnknownConnection(request.connection.clone()))
                        }
                        None => return,
                    }
                }
            },
        };
        let (applied, refused) = match applied {
            Ok(subscribed) => (Some(subscribed), None),
            Err(error) => (None, Some(error)),
        };
        let reply = Wire::GroupReply(GroupReply {
            request: request.request,
            error: refused.as_ref().map(ToString::to_string),
            refused,
        });
        let channel = self.channels.node(origin);
        let tenant = request.tenant;
        let manager = self.clone();
        // Answer once the subscription is in effect, without holding up the
        // delivery of other messages.
        tokio::spawn(async move {
            if let Some(subscribed) = applied {
                manager.settle(subscribed).await;
            }
            manager.publish_wire(&tenant, &channel, &reply);
        });
    }

    /// The owner answered one of our group requests.
    pub(super) fn on_group_reply(&self, reply: GroupReply) {
        if let Some(waiter) = self.group_requests.take(reply.request) {
            let result = match (reply.refused, reply.error) {
                (Some(refused), _) => Err(refused),
                // From a node that names no reason: it had no such connection.
                (None, Some(text)) => Err(GroupError::Refused(text)),
                (None, None) => Ok(()),
            };
            let _ = waiter.send(result);
        }
    }
}
