//! The lifetime-manager spec: the same scenarios against every backplane.
//!
//! Three nodes (lifetime managers) share one backplane. Each has connections
//! of hub `demo/chat`, and bystanders of another hub and another tenant that
//! must never receive anything. After every send the sending node sends a
//! marker to everyone; since delivery keeps per-sender order, a connection
//! that has its marker has everything meant for it, so the exact set of
//! recipients can be checked without sleeping.

use hubhost::backplane::Backplane;
use hubhost::cluster::{Cluster as Node, PeerUrls};
use hubhost::lifetime::{GroupError, GroupLimits, HubLifetimeManager, LocalConnection, Target};
use hubhost::names::HubKey;
use hubhost::outbound::{self, Frame, Message, OutboundReceiver};
use serde_json::value::RawValue;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::PATIENCE;

struct Conn {
    name: &'static str,
    hub: HubKey,
    id: String,
    rx: OutboundReceiver,
}

struct Cluster {
    /// Each node's membership, for its node id.
    members: Vec<Arc<Node>>,
    nodes: Vec<Arc<HubLifetimeManager>>,
    conns: Vec<Conn>,
    chat: HubKey,
    markers: u32,
}

fn message(target: &str, arg: &str) -> anyhow::Result<Message> {
    Ok(Message::new(
        target.into(),
        RawValue::from_string(serde_json::to_string(&[arg])?)?,
    ))
}

impl Cluster {
    fn new(backplanes: Vec<Arc<dyn Backplane>>, prefix: &str) -> anyhow::Result<Self> {
        let members: Vec<Arc<Node>> = backplanes
            .into_iter()
            .map(|b| Node::start(prefix, Duration::from_secs(2), PeerUrls::default(), b))
            .collect();
        let nodes = members
            .iter()
            .map(|member| HubLifetimeManager::start(member.clone(), Duration::from_secs(5)))
            .collect();
        Ok(Self {
            members,
            nodes,
            conns: Vec::new(),
            chat: HubKey::new("demo", "chat")?,
            markers: 0,
        })
    }

    async fn connect(
        &mut self,
        name: &'static str,
        node: usize,
        hub: &HubKey,
        user: Option<&str>,
    ) -> String {
        let id = self.members[node].node().new_connection_id().to_string();
        let (tx, rx) = outbound::channel(1024, 64 << 20);
        let local = LocalConnection {
            id: id.as_str().into(),
            user_id: user.map(Into::into),
            outbound: tx,
            invocations: std::sync::Arc::new(hubhost::invocations::Invocations::new(
                hubhost::protocol::Protocol::Json,
            )),
        };
        let subscribed = self.nodes[node].add_connection(hub, local);
        assert!(
            subscribed.ready(PATIENCE).await,
            "subscriptions of {name} not confirmed"
        );
        self.conns.push(Conn {
            name,
            hub: hub.clone(),
            id: id.clone(),
            rx,
        });
        id
    }

    fn id(&self, name: &str) -> String {
        self.conns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.id.clone())
            .unwrap_or_default()
    }

    /// Join from node `via`, which need not own the connection.
    async fn join(&self, via: usize, name: &str, group: &str) -> Result<(), GroupError> {
        self.nodes[via]
            .add_to_group(&self.chat, &self.id(name), group, GroupLimits::default())
            .await
    }

    /// Send `target` from node `from`; return the names that received it.
    async fn send(
        &mut self,
        from: usize,
        target: Target,
    ) -> anyhow::Result<BTreeSet<&'static str>> {
        self.markers += 1;
        let marker = format!("marker-{}", self.markers);
        self.nodes[from].send(&self.chat, target, message("Test", &marker)?);
        self.nodes[from].send(&self.chat, Target::All, message("Marker", &marker)?);
        let mut got = BTreeSet::new();
        for conn in self.conns.iter_mut().filter(|c| c.hub == self.chat) {
            loop {
                let frame = tokio::time::timeout(PATIENCE, conn.rx.recv())
                    .await
                    .map_err(|_| anyhow::anyhow!("{} never got {marker}", conn.name))?
                    .ok_or_else(|| anyhow::anyhow!("{} closed", conn.name))?;
                let Frame::Message(m) = frame else {
                    anyhow::bail!("unexpected frame")
                };
                let arg: Vec<String> = serde_json::from_str(m.arguments().get())?;
                anyhow::ensure!(
                    arg[0] == marker,
                    "{} got a stale message {arg:?}",
                    conn.name
                );
                if m.target() == "Marker" {
                    break;
                }
                anyhow::ensure!(got.insert(conn.name), "{} got {marker} twice", conn.name);
            }
        }
        for conn in self.conns.iter_mut().filter(|c| c.hub != self.chat) {
            anyhow::ensure!(
                conn.rx.try_recv().is_none(),
                "{} of another hub got a message",
                conn.name
            );
        }
        Ok(got)
    }
}

fn names(list: &[&'static str]) -> BTreeSet<&'static str> {
    list.iter().copied().collect()
}

/// Run the spec on three Redis backplanes at `url` (one server, Sentinel or
/// a cluster), under a prefix of its own, and check that nothing was
/// dropped and that it all went through Redis. Returns the backplanes.
pub async fn run_on_redis(url: &str) -> anyhow::Result<Vec<Arc<dyn Backplane>>> {
    use hubhost::backplane::redis::{RedisBackplane, RedisSettings};
    let mut nodes: Vec<Arc<dyn Backplane>> = Vec::new();
    for _ in 0..3 {
        nodes.push(Arc::new(RedisBackplane::start(RedisSettings::new(url))?));
    }
    crate::wait_until(crate::redis_server::NOTICE, || {
        nodes.iter().all(|n| n.is_ready())
    })
    .await?;
    run(nodes.clone(), &crate::unique_prefix("spec")).await?;
    for node in &nodes {
        let stats = node.stats();
        let dropped = (
            stats.dropped_overflow,
            stats.dropped_expired,
            stats.dropped_in_flight,
            stats.dropped_incoming,
        );
        anyhow::ensure!(dropped == (0, 0, 0, 0), "dropped: {stats:?}");
        anyhow::ensure!(
            stats.published > 0 && stats.received > 0,
            "the spec ran through Redis: {stats:?}"
        );
    }
    Ok(nodes)
}

/// Run every scenario on three nodes over `backplanes` (three attachments to
/// one backplane), with channel names under `prefix`.
pub async fn run(backplanes: Vec<Arc<dyn Backplane>>, prefix: &str) -> anyhow::Result<()> {
    anyhow::ensure!(backplanes.len() == 3, "the spec needs three nodes");
    let mut c = Cluster::new(backplanes, prefix)?;
    let chat = c.chat.clone();
    let other_hub = HubKey::new("demo", "other")?;
    let other_tenant = HubKey::new("acme", "chat")?;
    c.connect("a1", 0, &chat, Some("u1")).await;
    c.connect("a2", 0, &chat, None).await;
    c.connect("b1", 1, &chat, Some("u1")).await;
    c.connect("b2", 1, &chat, None).await;
    c.connect("c1", 2, &chat, Some("u2")).await;
    c.connect("c2", 2, &chat, None).await;
    c.connect("x-hub", 0, &other_hub, Some("u1")).await;
    c.connect("x-tenant", 1, &other_tenant, Some("u1")).await;
    let other_tenant_conn = c.id("x-tenant");
    c.nodes[1]
        .add_to_group(
            &other_tenant,
            &other_tenant_conn,
            "g",
            GroupLimits::default(),
        )
        .await?;
    // Group changes work from any node: the owner applies them.
    c.join(0, "a1", "g").await?;
    c.join(0, "b2", "g").await?;
    c.join(2, "a1", "h").await?;
    c.join(1, "c2", "h").await?;
    let ids = |c: &Cluster, list: &[&str]| list.iter().map(|n| c.id(n)).collect::<Vec<_>>();

    let all = names(&["a1", "a2", "b1", "b2", "c1", "c2"]);
    assert_eq!(c.send(0, Target::All).await?, all);
    assert_eq!(
        c.send(2, Target::AllExcept(ids(&c, &["a1", "b1"]))).await?,
        names(&["a2", "b2", "c1", "c2"])
    );
    assert_eq!(
        c.send(0, Target::Connection(c.id("b2"))).await?,
        names(&["b2"])
    );
    assert_eq!(
        c.send(1, Target::Connection(c.id("b2"))).await?,
        names(&["b2"])
    );
    assert_eq!(
        c.send(1, Target::Connections(ids(&c, &["a2", "c1", "c1"])))
            .await?,
        names(&["a2", "c1"])
    );
    assert_eq!(
        c.send(2, Target::Group("g".into())).await?,
        names(&["a1", "b2"])
    );
    let except_b2 = Target::GroupExcept {
        group: "g".into(),
        excluded: ids(&c, &["b2"]),
    };
    assert_eq!(c.send(0, except_b2).await?, names(&["a1"]));
    assert_eq!(
        c.send(1, Target::Groups(vec!["g".into(), "h".into()]))
            .await?,
        names(&["a1", "b2", "c2"])
    );
    assert_eq!(
        c.send(2, Target::User("u1".into())).await?,
        names(&["a1", "b1"])
    );
    assert_eq!(
        c.send(0, Target::Users(vec!["u1".into(), "u2".into()]))
            .await?,
        names(&["a1", "b1", "c1"])
    );
    assert_eq!(c.send(0, Target::Group("nobody".into())).await?, names(&[]));
    assert_eq!(
        c.send(0, Target::Connection("not-a-connection".into()))
            .await?,
        names(&[])
    );

    // Leaving a group (asked from another node), and leaving altogether, stop delivery.
    c.nodes[2]
        .remove_from_group(&chat, &c.id("a1"), "g")
        .await?;
    assert_eq!(c.send(2, Target::Group("g".into())).await?, names(&["b2"]));
    let b2 = c.id("b2");
    c.nodes[1].remove_connection(&chat, &b2);
    c.conns.retain(|conn| conn.name != "b2");
    assert_eq!(c.send(0, Target::Group("g".into())).await?, names(&[]));
    assert_eq!(
        c.send(2, Target::All).await?,
        names(&["a1", "a2", "b1", "c1", "c2"])
    );

    // Unknown connections fail with a clear error as soon as the owner
    // answers (or at once when the id names no node); scope is kept.
    let a1 = c.id("a1");
    let started = std::time::Instant::now();
    assert_eq!(
        c.nodes[0]
            .add_to_group(&chat, &b2, "g", GroupLimits::default())
            .await,
        Err(GroupError::UnknownConnection(b2.clone()))
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "an unknown connection fails fast"
    );
    assert_eq!(
        c.nodes[0]
            .add_to_group(&chat, "not-a-connection", "g", GroupLimits::default())
            .await,
        Err(GroupError::UnknownConnection("not-a-connection".into()))
    );
    assert_eq!(
        c.nodes[1]
            .add_to_group(&other_hub, &a1, "g", GroupLimits::default())
            .await,
        Err(GroupError::UnknownConnection(a1.clone())),
        "a connection of another hub is unknown here"
    );
    assert_eq!(
        c.nodes[0]
            .add_to_group(&chat, &a1, "", GroupLimits::default())
            .await,
        Err(GroupError::BadName)
    );

    // The limits hold wherever the join is asked from: the owner applies
    // them, and a repeated join of a group the connection is in is free.
    let (a2, c1) = (c.id("a2"), c.id("c1"));
    let limits = GroupLimits {
        per_connection: 1,
        per_hub: 2,
    };
    for via in [0, 1] {
        c.nodes[via]
            .add_to_group(&chat, &a2, "only", limits)
            .await?;
    }
    assert_eq!(
        c.nodes[1].add_to_group(&chat, &a2, "second", limits).await,
        Err(GroupError::ConnectionGroups {
            connection: a2.clone(),
            limit: 1
        }),
        "a connection's group limit, asked from another node"
    );
    // Node 0 has groups "h" (a1) and "only" (a2): a third is refused there,
    // while node 2 (one group) takes it.
    let a1_again = c.nodes[2]
        .add_to_group(
            &chat,
            &a1,
            "third",
            GroupLimits {
                per_connection: 9,
                ..limits
            },
        )
        .await;
    assert_eq!(a1_again, Err(GroupError::HubGroups(2)));
    c.nodes[2].add_to_group(&chat, &c1, "third", limits).await?;
    Ok(())
}
