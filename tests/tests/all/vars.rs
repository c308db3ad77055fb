//! Tenant variables and secrets (#16, item 3): set through the admin API,
//! read by the tenant's hubs on every node, and a secret's value nowhere
//! else — not in the admin API's answers, not in the log, not in Redis or
//! the data directory in plain text.

use hubhost::config::{Config, HubConfig};
use hubhost_tests::admin::{Admin, OPERATOR_KEY};
use hubhost_tests::process::Node;
use hubhost_tests::{
    PATIENCE, REDIS_URL, RawClient, TestServer, cluster_config, config, guest, temp_dir,
    unique_prefix, wait_until_async,
};
use redis::AsyncCommands as _;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// Base64 of 32 bytes: the nodes' secrets key in these tests.
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const SECRET: &str = "sk-live-do-not-leak-4242";

/// `Config(name)` through the chat hub of `tenant` on the node at `addr`.
async fn read(addr: SocketAddr, tenant: &str, name: &str) -> anyhow::Result<Value> {
    let (mut client, _) = RawClient::connect_as(addr, &format!("/{tenant}/chat"), None).await?;
    let reply = client.invoke("config", "Config", json!([name])).await?;
    anyhow::ensure!(reply.get("error").is_none(), "{reply}");
    Ok(reply["result"].clone())
}

async fn eventually(addr: SocketAddr, tenant: &str, name: &str, want: Value) -> anyhow::Result<()> {
    wait_until_async(PATIENCE, || {
        let want = want.clone();
        async move { read(addr, tenant, name).await.ok() == Some(want) }
    })
    .await
}

async fn put(admin: &Admin, name: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let path = format!("/tenants/demo/vars/{name}");
    admin
        .request(reqwest::Method::PUT, &path, body.to_string().into_bytes())
        .await
}

fn with_other_tenant(mut config: Config) -> Config {
    config.hubs.push(HubConfig {
        tenant: "other".into(),
        hub: "chat".into(),
        path: guest("chat"),
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_tenants_hubs_on_every_node_and_nowhere_else() -> anyhow::Result<()> {
    let prefix = unique_prefix("vars");
    // A process node (its log is read below) and an in-process one.
    let args = [
        "--hub".to_owned(),
        format!("demo/chat={}", guest("chat").display()),
        "--hub".to_owned(),
        format!("other/chat={}", guest("chat").display()),
        "--redis".to_owned(),
        REDIS_URL.to_owned(),
        "--cluster-prefix".to_owned(),
        prefix.clone(),
        "--admin-key".to_owned(),
        OPERATOR_KEY.to_owned(),
    ];
    let a = Node::start(
        &args,
        &[("RUST_LOG", "debug"), ("HUBHOST_SECRETS_KEY", KEY)],
    )
    .await?;
    let mut b_config = with_other_tenant(cluster_config(REDIS_URL, &prefix));
    b_config.admin.secrets_key = Some(KEY.into());
    let b = TestServer::start(b_config).await?;
    let admin = Admin::new(a.addr, Some(OPERATOR_KEY));

    let (status, body) = admin
        .request(
            reqwest::Method::PUT,
            "/tenants/demo/vars/MODEL",
            json!({"value": "small"}).to_string().into_bytes(),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin
        .request(
            reqwest::Method::PUT,
            "/tenants/demo/vars/API_KEY",
            json!({"value": SECRET, "secret": true})
                .to_string()
                .into_bytes(),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains(SECRET));

    // Read by the tenant's hub on both nodes; not by another tenant's.
    assert_eq!(read(a.addr, "demo", "API_KEY").await?, json!(SECRET));
    assert_eq!(read(a.addr, "demo", "MODEL").await?, json!("small"));
    eventually(b.addr, "demo", "API_KEY", json!(SECRET)).await?;
    assert_eq!(read(b.addr, "other", "API_KEY").await?, Value::Null);
    assert_eq!(read(a.addr, "demo", "NOPE").await?, Value::Null);

    // Listed without its value.
    let (status, listed) = admin.get("/tenants/demo/vars").await?;
    assert_eq!(status, 200);
    assert_eq!(
        listed["vars"],
        json!([{"name": "API_KEY", "secret": true}, {"name": "MODEL", "secret": false, "value": "small"}])
    );

    // Not in Redis in plain text: every key of the cluster, every value.
    let mut redis = redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis.keys(format!("{prefix}*")).await?;
    assert!(!keys.is_empty());
    for key in &keys {
        let kind: String = redis::cmd("TYPE").arg(key).query_async(&mut redis).await?;
        let text = match kind.as_str() {
            "string" => redis
                .get::<_, Vec<u8>>(key)
                .await
                .map(|v| String::from_utf8_lossy(&v).into_owned())?,
            "hash" => format!(
                "{:?}",
                redis.hgetall::<_, Vec<(String, Vec<u8>)>>(key).await?
            ),
            "list" => format!("{:?}", redis.lrange::<_, Vec<String>>(key, 0, -1).await?),
            "set" => format!("{:?}", redis.smembers::<_, Vec<String>>(key).await?),
            "zset" => format!("{:?}", redis.zrange::<_, Vec<String>>(key, 0, -1).await?),
            _ => String::new(),
        };
        assert!(
            !text.contains(SECRET),
            "{key} holds the secret in plain text"
        );
    }

    // Deleted: gone on every node.
    let (status, _) = admin.delete("/tenants/demo/vars/API_KEY").await?;
    assert_eq!(status, 200);
    eventually(b.addr, "demo", "API_KEY", Value::Null).await?;
    assert_eq!(admin.delete("/tenants/demo/vars/API_KEY").await?.0, 404);

    // Not in the log, at debug level, of the node that set and served it.
    let leaked: Vec<String> = a
        .lines()
        .into_iter()
        .filter(|l| l.contains(SECRET))
        .collect();
    assert!(leaked.is_empty(), "the log holds the secret: {leaked:?}");
    assert!(
        a.lines()
            .iter()
            .any(|l| l.contains("variable set") && l.contains("API_KEY"))
    );
    let _ = redis.del::<_, ()>(keys).await;
    b.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_are_bounded_and_secrets_need_a_key() -> anyhow::Result<()> {
    let dir = temp_dir("vars-local")?;
    let mut local = config();
    local.admin.operator_keys = vec![OPERATOR_KEY.into()];
    local.admin.max_vars_per_tenant = 2;
    local.admin.max_var_bytes = 100;
    local.data_dir = Some(dir.clone());
    let without_key = TestServer::start(local.clone()).await?;
    let admin = Admin::new(without_key.addr, Some(OPERATOR_KEY));
    let (status, body) = put(&admin, "TOKEN", json!({"value": SECRET, "secret": true})).await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("no secrets key"),
        "{body}"
    );
    without_key.stop().await?;

    local.admin.secrets_key = Some(KEY.into());
    let server = TestServer::start(local.clone()).await?;
    let admin = Admin::new(server.addr, Some(OPERATOR_KEY));
    for (name, body, status, text) in [
        ("1bad", json!({"value": "x"}), 400, "Variable names are"),
        (
            "BIG",
            json!({"value": "x".repeat(101)}),
            413,
            "admin.max_var_bytes",
        ),
        (
            "A",
            json!({"value": "x", "extra": 1}),
            400,
            "Invalid JSON body",
        ),
    ] {
        let (got, answer) = put(&admin, name, body).await?;
        assert_eq!(got, status, "{name}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(text),
            "{name}: {answer}"
        );
    }
    assert_eq!(
        put(&admin, "TOKEN", json!({"value": SECRET, "secret": true}))
            .await?
            .0,
        200
    );
    assert_eq!(
        put(&admin, "MODEL", json!({"value": "small"})).await?.0,
        200
    );
    // Replacing one is not one more.
    assert_eq!(
        put(&admin, "MODEL", json!({"value": "large"})).await?.0,
        200
    );
    let (status, body) = put(&admin, "THIRD", json!({"value": "x"})).await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("admin.max_vars_per_tenant"),
        "{body}"
    );
    // An unknown key is refused.
    let (status, _) = Admin::new(server.addr, Some("not-a-key-0123456789"))
        .get("/tenants/demo/vars")
        .await?;
    assert_eq!(status, 401);
    server.stop().await?;

    // The data directory holds the secret sealed; a restart reads it back.
    let state = std::fs::read_to_string(dir.join("state.json"))?;
    assert!(
        state.contains("TOKEN") && !state.contains(SECRET),
        "{state}"
    );
    let again = TestServer::start(local).await?;
    assert_eq!(read(again.addr, "demo", "TOKEN").await?, json!(SECRET));
    assert_eq!(read(again.addr, "demo", "MODEL").await?, json!("large"));
    again.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
