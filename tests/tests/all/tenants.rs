//! Tenant isolation on one shared Redis: two tenants with the same hub, group
//! and user names — names full of `:`, `*`, `?`, `[`, `]`, spaces, newlines,
//! non-ASCII, and 1,000 characters long — never see each other's messages.

use futures_util::StreamExt;
use hubhost::auth::{AuthConfig, JwtConfig};
use hubhost::config::{Config, HubConfig};
use hubhost::tenants::TenantConfig;
use hubhost_tests::{REDIS_URL, RawClient, TestServer, cluster_config, guest, jwt, unique_prefix};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const SECRETS: [(&str, &str); 2] = [
    ("acme", "acme-secret-0123456789abcdef0123456789"),
    ("globex", "globex-secret-0123456789abcdef012345678"),
];

fn names() -> Vec<String> {
    let mut names: Vec<String> = [
        "room",
        ":",
        "a:b",
        "*",
        "room*",
        "?",
        "[",
        "]",
        "[a-z]*",
        "with space",
        " ",
        "line\nbreak",
        "tab\there",
        "ünïcødé €",
        "日本語",
        "😀",
        "group:*:user",
        "all",
        "node",
    ]
    .map(str::to_owned)
    .into();
    names.push("x".repeat(1000));
    names.push(format!("{}:*?[]", "é".repeat(499)));
    names
}

fn node_config(prefix: &str) -> Config {
    let mut config = cluster_config(REDIS_URL, prefix);
    for (tenant, secret) in SECRETS {
        config.hubs.push(HubConfig {
            tenant: tenant.into(),
            hub: "chat".into(),
            path: guest("chat"),
        });
        let auth = AuthConfig::Jwt(JwtConfig {
            hs256_secret: Some(secret.into()),
            ..JwtConfig::default()
        });
        config.tenants.insert(
            tenant.into(),
            TenantConfig {
                auth,
                ..TenantConfig::default()
            },
        );
    }
    config
}

fn secret(tenant: &str) -> &'static str {
    SECRETS
        .iter()
        .find(|(t, _)| *t == tenant)
        .map_or("", |(_, s)| s)
}

async fn client(addr: SocketAddr, tenant: &str, user: &str) -> anyhow::Result<RawClient> {
    let token = jwt(secret(tenant), user, 300)?;
    Ok(
        RawClient::connect_as(addr, &format!("/{tenant}/chat"), Some(&token))
            .await?
            .0,
    )
}

/// The ReceiveMessage arguments among `messages`.
fn received(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .filter(|m| m["type"] == 1 && m["target"] == "ReceiveMessage")
        .map(|m| {
            let text = |i: usize| m["arguments"][i].as_str().unwrap_or_default().to_owned();
            (text(0), text(1))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_each_other_on_one_redis() -> anyhow::Result<()> {
    let prefix = unique_prefix("tenants");
    // Everything published under the cluster's prefix, as Redis delivers it.
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let mut pubsub = redis::Client::open(REDIS_URL)?.get_async_pubsub().await?;
    // `{PREFIX` starts the hubs' channels (`{PREFIX:TENANT:HUB}:…`) and the
    // cluster's own (`{PREFIX}:…`).
    pubsub.psubscribe(format!("{{{prefix}*")).await?;
    let monitor = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let payload: Value =
                    serde_json::from_slice(message.get_payload_bytes()).unwrap_or_default();
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((message.get_channel_name().to_owned(), payload));
            }
        }
    });
    let nodes = [
        TestServer::start(node_config(&prefix)).await?,
        TestServer::start(node_config(&prefix)).await?,
    ];
    let names = names();
    let tenants = ["acme", "globex"];
    // Per tenant: a group member and a user named after each name, on
    // opposite nodes for the two tenants; a sender on each node.
    let mut members = Vec::new();
    let mut users = Vec::new();
    let mut senders = Vec::new();
    for (t, tenant) in tenants.iter().enumerate() {
        for (i, name) in names.iter().enumerate() {
            let mut member = client(nodes[t].addr, tenant, &format!("member-{i}")).await?;
            let joined = member.invoke("j", "JoinGroup", json!([name])).await?;
            assert_eq!(joined.get("error"), None, "{joined}");
            members.push((*tenant, i, member));
            users.push((*tenant, i, client(nodes[1 - t].addr, tenant, name).await?));
        }
        for node in &nodes {
            senders.push((*tenant, client(node.addr, tenant, "sender").await?));
        }
    }
    // Every targeted send, from both tenants, alternating nodes.
    for (n, (tenant, sender)) in senders.iter_mut().enumerate() {
        for (i, name) in names.iter().enumerate().filter(|(i, _)| i % 2 == n % 2) {
            let id = format!("g{i}");
            let sent = sender
                .invoke(
                    &id,
                    "SendToGroup",
                    json!([name, tenant, format!("group {i}")]),
                )
                .await?;
            assert_eq!(sent.get("error"), None, "{sent}");
            let id = format!("u{i}");
            let sent = sender
                .invoke(
                    &id,
                    "SendToUser",
                    json!([name, tenant, format!("user {i}")]),
                )
                .await?;
            assert_eq!(sent.get("error"), None, "{sent}");
        }
    }
    // Then an end marker from every sender: each node's publishes reach the
    // other node in order, so once a client has its tenant's markers from
    // both nodes, anything leaked to it would already have arrived.
    for (n, (tenant, sender)) in senders.iter_mut().enumerate() {
        sender
            .invoke(
                "end",
                "SendMessage",
                json!([tenant, format!("end {}", n % 2)]),
            )
            .await?;
    }
    let mut checked = 0;
    for (tenant, i, client) in members.iter_mut().chain(users.iter_mut()) {
        for end in ["end 0", "end 1"] {
            client
                .next_where(|m| {
                    m["target"] == "ReceiveMessage" && m["arguments"] == json!([tenant, end])
                })
                .await?;
        }
        let pending: Vec<Value> = client.pending().iter().cloned().collect();
        let got = received(&pending);
        let foreign: Vec<_> = got.iter().filter(|(from, _)| from != tenant).collect();
        assert!(
            foreign.is_empty(),
            "{tenant} client {i} got another tenant's messages: {foreign:?}"
        );
        assert!(
            got.iter().all(|(_, text)| !text.starts_with("end")),
            "each end marker exactly once"
        );
        checked += 1;
    }
    // And each got exactly its own message, once.
    for (tenant, i, client) in &mut members {
        let got = received(&client.pending().iter().cloned().collect::<Vec<_>>());
        assert_eq!(
            got,
            vec![(tenant.to_string(), format!("group {i}"))],
            "{tenant} member {i}"
        );
    }
    for (tenant, i, client) in &mut users {
        let got = received(&client.pending().iter().cloned().collect::<Vec<_>>());
        assert_eq!(
            got,
            vec![(tenant.to_string(), format!("user {i}"))],
            "{tenant} user {i}"
        );
    }
    assert_eq!(checked, 2 * 2 * names.len());

    // On Redis, every send of a tenant travelled under that tenant's prefix.
    // The end markers were published last by each node, so once the monitor
    // has all four it has everything before them.
    let ends = || {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .filter(|(_, p)| p.to_string().contains("\"end "))
            .count()
    };
    hubhost_tests::wait_until(hubhost_tests::PATIENCE, || ends() >= 4).await?;
    monitor.abort();
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let sends: Vec<_> = seen
        .iter()
        .filter(|(_, p)| p.get("send").is_some())
        .collect();
    assert!(
        sends.len() >= 2 * names.len(),
        "cross-node sends seen: {}",
        sends.len()
    );
    for (channel, payload) in sends {
        let tenant = payload["send"]["tenant"].as_str().unwrap_or_default();
        assert!(
            channel.starts_with(&format!("{{{prefix}:{tenant}:chat}}:")),
            "{tenant}'s message on {channel:?}"
        );
    }
    for node in nodes {
        node.stop().await?;
    }
    Ok(())
}
