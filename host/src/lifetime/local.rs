//! This node's connections, groups and users, per hub.

use super::{GroupError, GroupLimits, PresenceQuery, Target};
use crate::ids::NodeId;
use crate::invocations::Invocations;
use crate::outbound::{Frame, Outbound};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One local connection as the lifetime manager sees it.
#[derive(Debug, Clone)]
pub struct LocalConnection {
    pub id: Arc<str>,
    pub user_id: Option<Arc<str>>,
    pub outbound: Outbound,
    /// Its open streams and the results awaited from it.
    pub invocations: Arc<Invocations>,
}

#[derive(Debug)]
struct Entry {
    connection: LocalConnection,
    groups: HashSet<String>,
}

/// The connections of one hub on this node.
#[derive(Debug, Default)]
pub struct HubConnections {
    connections: HashMap<Arc<str>, Entry>,
    groups: HashMap<String, HashSet<Arc<str>>>,
    users: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Connections here whose ids name another node (handed over by a
    /// drain), by that node.
    adopted: HashMap<NodeId, usize>,
}

/// What a membership change did to this node's interest in a channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Interest {
    /// The first local member arrived: subscribe.
    Gained,
    /// The last local member left: unsubscribe.
    Lost,
    Unchanged,
}

impl HubConnections {
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// Add a connection; returns whether its user gained a first local connection.
    pub fn insert(&mut self, connection: LocalConnection) -> Interest {
        let mut interest = Interest::Unchanged;
        if let Some(user) = &connection.user_id {
            let members = self.users.entry(user.clone()).or_default();
            if members.is_empty() {
                interest = Interest::Gained;
            }
            members.insert(connection.id.clone());
        }
        self.connections.insert(
            connection.id.clone(),
            Entry {
                connection,
                groups: HashSet::new(),
            },
        );
        interest
    }

    /// Remove a connection. Returns it, the groups this node no longer has
    /// members of, and whether its user lost the last local connection.
    pub fn remove(&mut self, id: &str) -> Option<(LocalConnection, Vec<String>, Interest)> {
        let entry = self.connections.remove(id)?;
        let mut emptied = Vec::new();
        for group in entry.groups {
            if self.leave(id, &group) == Interest::Lost {
                emptied.push(group);
            }
        }
        let mut interest = Interest::Unchanged;
        if let Some(user) = &entry.connection.user_id
            && let Some(members) = self.users.get_mut(user)
        {
            members.remove(id);
            if members.is_empty() {
                self.users.remove(user);
                interest = Interest::Lost;
            }
        }
        Some((entry.connection, emptied, interest))
    }

    /// One more connection here has an id of `home`: the first means this
    /// node takes `home`'s messages by id for this hub.
    pub fn adopt(&mut self, home: NodeId) -> Interest {
        let count = self.adopted.entry(home).or_default();
        *count += 1;
        if *count == 1 {
            Interest::Gained
        } else {
            Interest::Unchanged
        }
    }

    /// One connection of `home` left: the last one ends the interest.
    pub fn release(&mut self, home: NodeId) -> Interest {
        let Some(count) = self.adopted.get_mut(&home) else {
            return Interest::Unchanged;
        };
        *count -= 1;
        if *count > 0 {
            return Interest::Unchanged;
        }
        self.adopted.remove(&home);
        Interest::Lost
    }

    /// The groups of connection `id`.
    pub fn groups_of(&self, id: &str) -> Vec<String> {
        self.connections
            .get(id)
            .map(|e| e.groups.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Put a local connection into a group, within `limits`. `None` if
    /// there is no such connection.
    pub fn join(
        &mut self,
        id: &str,
        group: &str,
        limits: GroupLimits,
    ) -> Option<Result<Interest, GroupError>> {
        let entry = self.connections.get_mut(id)?;
        if entry.groups.contains(group) {
            return Some(Ok(Interest::Unchanged));
        }
        if entry.groups.len() >= limits.per_connection {
            return Some(Err(GroupError::ConnectionGroups {
                connection: id.to_owned(),
                limit: limits.per_connection,
            }));
        }
        if !self.groups.contains_key(group) && self.groups.len() >= limits.per_hub {
            return Some(Err(GroupError::HubGroups(limits.per_hub)));
        }
        entry.groups.insert(group.to_owned());
        let members = self.groups.entry(group.to_owned()).or_default();
        let gained = members.is_empty();
        members.insert(entry.connection.id.clone());
        Some(Ok(if gained {
            Interest::Gained
        } else {
            Interest::Unchanged
        }))
    }

    /// Take a local connection out of a group. `None` if there is no such connection.
    pub fn remove_from_group(&mut self, id: &str, group: &str) -> Option<Interest> {
        let entry = self.connections.get_mut(id)?;
        entry.groups.remove(group);
        Some(self.leave(id, group))
    }

    fn leave(&mut self, id: &str, group: &str) -> Interest {
        let Some(members) = self.groups.get_mut(group) else {
            return Interest::Unchanged;
        };
        if !members.remove(id) || !members.is_empty() {
            return Interest::Unchanged;
        }
        self.groups.remove(group);
        Interest::Lost
    }

    /// Local connection `id`.
    pub fn get(&self, id: &str) -> Option<&LocalConnection> {
        self.connections.get(id).map(|e| &e.connection)
    }

    /// The local connections `target` names, each once.
    pub fn resolve(&self, target: &Target) -> Vec<&LocalConnection> {
        let by_id = |id: &str| self.connections.get(id).map(|e| &e.connection);
        let members = |group: &str| self.groups.get(group).into_iter().flatten();
        let of_user = |user: &str| self.users.get(user).into_iter().flatten();
        let unique = |ids: &mut dyn Iterator<Item = &Arc<str>>| {
            let mut seen = HashSet::new();
            let mut found = Vec::new();
            for id in ids {
                if seen.insert(id.clone()) {
                    found.extend(by_id(id));
                }
            }
            found
        };
        match target {
            Target::All => self.connections.values().map(|e| &e.connection).collect(),
            Target::AllExcept(excluded) => {
                // A set: the cost is connections + excluded ids, not their product.
                let excluded: HashSet<&str> = excluded.iter().map(String::as_str).collect();
                self.connections
                    .values()
                    .filter(|e| !excluded.contains(&*e.connection.id))
                    .map(|e| &e.connection)
                    .collect()
            }
            Target::Connection(id) => by_id(id).into_iter().collect(),
            Target::Connections(ids) => {
                let mut seen = HashSet::new();
                ids.iter()
                    .filter(|id| seen.insert(id.as_str()))
                    .filter_map(|id| by_id(id))
                    .collect()
            }
            Target::Group(group) => members(group).filter_map(|id| by_id(id)).collect(),
            Target::GroupExcept { group, excluded } => {
                let excluded: HashSet<&str> = excluded.iter().map(String::as_str).collect();
                members(group)
                    .filter(|id| !excluded.contains(&***id))
                    .filter_map(|id| by_id(id))
                    .collect()
            }
            Target::Groups(groups) => unique(&mut groups.iter().flat_map(|g| members(g))),
            Target::User(user) => of_user(user).filter_map(|id| by_id(id)).collect(),
            Target::Users(users) => unique(&mut users.iter().flat_map(|u| of_user(u))),
        }
    }

    /// Queue `frame_for()` on every connection `target` names; returns how many.
    pub fn deliver(&self, target: &Target, frame_for: impl Fn() -> Frame) -> usize {
        self.resolve(target)
            .into_iter()
            .filter(|c| c.outbound.push(frame_for()))
            .count()
    }

    /// Every local connection.
    /// How many connections `query` names here, and up to `limit` of their ids.
    pub fn presence(&self, query: &PresenceQuery, limit: usize) -> (u64, Vec<String>) {
        let ids: Box<dyn ExactSizeIterator<Item = &Arc<str>>> = match query {
            PresenceQuery::Hub => Box::new(self.connections.keys()),
            PresenceQuery::Group(group) => match self.groups.get(group) {
                Some(members) => Box::new(members.iter()),
                None => return (0, Vec::new()),
            },
            PresenceQuery::User(user) => match self.users.get(user.as_str()) {
                Some(members) => Box::new(members.iter()),
                None => return (0, Vec::new()),
            },
            PresenceQuery::Connection(id) => match self.connections.get_key_value(id.as_str()) {
                Some((id, _)) => Box::new(std::iter::once(id)),
                None => return (0, Vec::new()),
            },
        };
        let count = ids.len() as u64;
        (count, ids.take(limit).map(|id| id.to_string()).collect())
    }

    pub fn connections(&self) -> impl Iterator<Item = &LocalConnection> {
        self.connections.values().map(|e| &e.connection)
    }
}
