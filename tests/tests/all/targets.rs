//! Positive controls of the hub send targets, through a real hub component
//! (the test hub `faulty`, method `Target`) on two nodes over the machine's
//! Redis: `client`, `clients`, `group-except`, `groups` and `users` each
//! reach exactly the connections they name, once each, on either node, and
//! no other — not the sender, not the other members of the hub, and not the
//! connections of another hub or tenant that have the same ids, groups and
//! user names.
//!
//! After each targeted send the sender sends a marker to every connection of
//! the hub, from the same node; delivery keeps each sender's order, so a
//! connection that has the marker has everything meant for it, and what it
//! got can be checked without waiting for time to pass.

use hubhost::auth::{AuthConfig, JwtConfig};
use hubhost::config::{Config, HubConfig};
use hubhost::tenants::TenantConfig;
use hubhost_tests::redis_server::NOTICE;
use hubhost_tests::{
    REDIS_URL, RawClient, TestServer, cluster_config, guest, jwt, unique_prefix, wait_until,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const SECRET: &str = "targets-secret-0123456789abcdef012345";

fn node_config(prefix: &str) -> Config {
    let mut config = cluster_config(REDIS_URL, prefix);
    // Tenant acme: the hub under test, and another hub of the same tenant.
    for (hub, file) in [("faulty", "faulty"), ("chat", "chat")] {
        config.hubs.push(HubConfig {
            tenant: "acme".into(),
            hub: hub.into(),
            path: guest(file),
        });
    }
    config.tenants.insert(
        "acme".into(),
        TenantConfig {
            auth: AuthConfig::Jwt(JwtConfig {
                hs256_secret: Some(SECRET.into()),
                ..JwtConfig::default()
            }),
            ..TenantConfig::default()
        },
    );
    config
}

/// A send: the target's kind, names and exclusions, and who must get it.
type Case = (
    &'static str,
    Vec<String>,
    Vec<String>,
    BTreeSet<&'static str>,
);

/// A connection with a name for the messages.
struct Conn {
    name: &'static str,
    id: String,
    client: RawClient,
}

async fn connect(
    node: &TestServer,
    path: &str,
    name: &'static str,
    user: Option<&str>,
) -> anyhow::Result<Conn> {
    let token = user.map(|u| jwt(SECRET, u, 300)).transpose()?;
    let (client, id) = RawClient::connect_as(node.addr, path, token.as_deref()).await?;
    Ok(Conn { name, id, client })
}

fn names(list: &[&'static str]) -> BTreeSet<&'static str> {
    list.iter().copied().collect()
}

/// The texts of the `Targeted` messages among `messages`.
fn targeted(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["type"] == 1 && m["target"] == "Targeted")
        .filter_map(|m| Some(m["arguments"][0].as_str()?.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_reaches_exactly_the_connections_it_names() -> anyhow::Result<()> {
    let prefix = unique_prefix("targets");
    let a = TestServer::start(node_config(&prefix)).await?;
    let b = TestServer::start(node_config(&prefix)).await?;
    for node in [&a, &b] {
        let backplane = node.state.cluster.backplane().clone();
        wait_until(NOTICE, move || backplane.is_ready()).await?;
    }
    // The hub's connections: two users with a connection on each node, two
    // users with one; the sender belongs to no group.
    let hub = "/acme/faulty";
    let mut conns = [
        connect(&a, hub, "ann@a", Some("ann")).await?,
        connect(&b, hub, "ann@b", Some("ann")).await?,
        connect(&a, hub, "bob@a", Some("bob")).await?,
        connect(&b, hub, "bob@b", Some("bob")).await?,
        connect(&a, hub, "cy@a", Some("cy")).await?,
        connect(&b, hub, "dee@b", Some("dee")).await?,
    ];
    let groups: [(&str, &[&str]); 3] = [
        ("g1", &["ann@a", "ann@b", "bob@b"]),
        ("g2", &["bob@b", "cy@a"]),
        ("g3", &["dee@b"]),
    ];
    for (group, members) in groups {
        for conn in conns.iter_mut().filter(|c| members.contains(&c.name)) {
            let joined = conn
                .client
                .invoke("join", "AddToGroup", json!([conn.id, group]))
                .await?;
            assert_eq!(joined.get("error"), None, "{joined}");
        }
    }
    let mut sender = connect(&a, hub, "sender@a", Some("sam")).await?;
    // Bystanders, on both nodes: the same user and group names on another
    // hub of the tenant, and the same hub and group names in another tenant.
    let mut bystanders = Vec::new();
    for node in [&a, &b] {
        let mut chat = connect(node, "/acme/chat", "acme/chat", Some("ann")).await?;
        chat.client
            .invoke("join", "JoinGroup", json!(["g1"]))
            .await?;
        let mut demo = connect(node, "/demo/faulty", "demo/faulty", None).await?;
        let joined = demo
            .client
            .invoke("join", "AddToGroup", json!([demo.id, "g1"]))
            .await?;
        assert_eq!(joined.get("error"), None, "{joined}");
        bystanders.push(chat);
        bystanders.push(demo);
    }
    let id = |name: &str| {
        conns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.id.clone())
            .unwrap_or_default()
    };
    let bystander_ids: Vec<String> = bystanders.iter().map(|c| c.id.clone()).collect();

    let mut ids_and_bystanders = vec![id("ann@b"), id("cy@a"), id("dee@b")];
    ids_and_bystanders.extend(bystander_ids);
    // (kind, names, excluded, who must get it)
    let cases: [Case; 6] = [
        ("client", vec![id("bob@b")], vec![], names(&["bob@b"])),
        ("client", vec![id("cy@a")], vec![], names(&["cy@a"])),
        (
            "clients",
            ids_and_bystanders,
            vec![],
            names(&["ann@b", "cy@a", "dee@b"]),
        ),
        (
            "group-except",
            vec!["g1".into()],
            vec![id("ann@b")],
            names(&["ann@a", "bob@b"]),
        ),
        (
            "groups",
            vec!["g1".into(), "g2".into()],
            vec![],
            // bob@b is in both: once.
            names(&["ann@a", "ann@b", "bob@b", "cy@a"]),
        ),
        (
            "users",
            vec!["ann".into(), "cy".into()],
            vec![],
            names(&["ann@a", "ann@b", "cy@a"]),
        ),
    ];
    for (n, (kind, named, excluded, expected)) in cases.into_iter().enumerate() {
        let text = format!("{kind}-{n}");
        let marker = format!("marker-{n}");
        let sent = sender
            .client
            .invoke(
                &format!("send-{n}"),
                "Target",
                json!([kind, named, excluded, text]),
            )
            .await?;
        assert_eq!(sent.get("error"), None, "{kind}: {sent}");
        let sent = sender
            .client
            .invoke(
                &format!("mark-{n}"),
                "Target",
                json!(["all", [], [], marker]),
            )
            .await?;
        assert_eq!(sent.get("error"), None, "{sent}");
        let mut reached = BTreeSet::new();
        for conn in conns.iter_mut().chain([&mut sender]) {
            conn.client
                .next_where(|m| m["target"] == "Targeted" && m["arguments"] == json!([marker]))
                .await?;
            let got = targeted(&conn.client.take_pending());
            let copies = got.iter().filter(|t| **t == text).count();
            assert!(
                copies <= 1,
                "{kind}: {} got it {copies} times: {got:?}",
                conn.name
            );
            assert!(
                got.iter().all(|t| *t == text),
                "{kind}: {} got {got:?}",
                conn.name
            );
            if copies == 1 {
                reached.insert(conn.name);
            }
        }
        assert_eq!(reached, expected, "{kind} {n}: who got {text:?}");
    }

    // The bystanders: a marker of their own hub, sent from node a after all
    // the sends above (so after anything that could have leaked to them, on
    // either node), and nothing before it.
    let mut chat_marker = connect(&a, "/acme/chat", "acme/chat marker", Some("ann")).await?;
    chat_marker
        .client
        .invoke("m", "SendMessage", json!(["marker", "chat"]))
        .await?;
    let mut demo_marker = connect(&a, "/demo/faulty", "demo/faulty marker", None).await?;
    demo_marker
        .client
        .invoke("m", "Target", json!(["all", [], [], "demo"]))
        .await?;
    for conn in &mut bystanders {
        let is_marker = |m: &Value| {
            m["arguments"] == json!(["marker", "chat"]) || m["arguments"] == json!(["demo"])
        };
        conn.client.next_where(is_marker).await?;
        let leaked = conn.client.take_pending();
        assert!(
            leaked.iter().all(|m| m["type"] == 6 || m["type"] == 3),
            "{} ({}) got {leaked:?}",
            conn.name,
            conn.id
        );
    }
    a.stop().await?;
    b.stop().await
}
