//! The admin API on one node (local store in a data directory): every error
//! path, every success path, and what clients see of a delete.

use hubhost::config::Config;
use hubhost::tenants::TenantConfig;
use hubhost_tests::admin::{Admin, OPERATOR_KEY, wait_served};
use hubhost_tests::{RawClient, TestServer, config, guest, temp_dir};
use serde_json::json;

const ACME_KEY: &str = "acme-admin-key-0123456789";
const GLOBEX_KEY: &str = "globex-admin-key-0123456789";
/// A core Wasm module's header: Wasm, but not a component.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// An empty component: valid, but exports no hub.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

fn admin_config(data_dir: &std::path::Path) -> Config {
    let mut config = config();
    config.data_dir = Some(data_dir.to_owned());
    config.admin.operator_keys = vec![OPERATOR_KEY.into()];
    for (name, key, limit) in [("acme", ACME_KEY, None), ("globex", GLOBEX_KEY, Some(1000))] {
        let tenant = TenantConfig {
            admin_keys: vec![key.into()],
            max_component_bytes: limit,
            ..TenantConfig::default()
        };
        config.tenants.insert(name.into(), tenant);
    }
    config
}

fn chat() -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(guest("chat"))?)
}

#[tokio::test]
async fn refuses_every_bad_request_with_a_json_error() -> anyhow::Result<()> {
    let dir = temp_dir("admin-errors")?;
    let server = TestServer::start(admin_config(&dir)).await?;
    let anonymous = Admin::new(server.addr, None);
    let wrong = Admin::new(server.addr, Some("not-a-key-of-anyone-at-all"));
    let acme = Admin::new(server.addr, Some(ACME_KEY));
    let globex = Admin::new(server.addr, Some(GLOBEX_KEY));
    let operator = Admin::new(server.addr, Some(OPERATOR_KEY));

    let cases = [
        (
            anonymous.upload("acme", "chat", chat()?, "").await?,
            401,
            "admin key is required",
        ),
        (
            wrong.upload("acme", "chat", chat()?, "").await?,
            401,
            "not valid",
        ),
        (
            globex.upload("acme", "chat", chat()?, "").await?,
            403,
            "cannot manage tenant 'acme'",
        ),
        (acme.get("/tenants").await?, 403, "operator key"),
        (
            acme.put_json("/tenants/new-one", json!({})).await?,
            403,
            "operator key",
        ),
        (
            acme.upload("acme", "chat", b"hello".to_vec(), "").await?,
            400,
            "Not a valid WebAssembly component",
        ),
        (
            acme.upload("acme", "chat", CORE_MODULE.to_vec(), "")
                .await?,
            400,
            "Not a valid WebAssembly component",
        ),
        (
            acme.upload("acme", "chat", EMPTY_COMPONENT.to_vec(), "")
                .await?,
            422,
            "hub-component world",
        ),
        (
            acme.upload("acme", "chat", std::fs::read(guest("greedy"))?, "")
                .await?,
            422,
            "wasi:sockets",
        ),
        (
            acme.upload("acme", "chat", Vec::new(), "").await?,
            400,
            "must be a WebAssembly component",
        ),
        (
            globex.upload("globex", "chat", chat()?, "").await?,
            413,
            "limit of 1000 bytes",
        ),
        (
            acme.upload("acme", "Bad_Name", chat()?, "").await?,
            400,
            "Invalid hub name",
        ),
        (
            acme.upload("acme", "chat", chat()?, "?activate=maybe")
                .await?,
            400,
            "activate must be",
        ),
        (acme.get("/tenants/acme/hubs/nothing").await?, 404, "No hub"),
        (
            acme.post_json("/tenants/acme/hubs/nothing/rollback", json!({}))
                .await?,
            404,
            "No such hub",
        ),
        (
            acme.post_json("/tenants/acme/hubs/nothing/activate", json!({"v": 1}))
                .await?,
            400,
            "Invalid JSON body",
        ),
        (
            acme.delete("/tenants/acme/hubs/nothing").await?,
            404,
            "No hub",
        ),
        (acme.get("/nowhere").await?, 404, "No such admin route"),
        (
            operator.put_json("/tenants/acme", json!({})).await?,
            409,
            "declared in the configuration file",
        ),
        (
            operator
                .put_json("/tenants/t2", json!({"admin_keys": ["short"]}))
                .await?,
            400,
            "at least 16",
        ),
        (
            operator
                .put_json("/tenants/t2", json!({"colour": "red"}))
                .await?,
            400,
            "unknown field",
        ),
        (
            operator
                .put_json(
                    "/tenants/t2",
                    json!({"auth": {"mode": "jwt", "rs256_public_key_file": "/etc/passwd"}}),
                )
                .await?,
            400,
            "rs256_public_key_file",
        ),
    ];
    for (i, ((status, body), expected, text)) in cases.into_iter().enumerate() {
        let error = body["error"].as_str().unwrap_or_default();
        assert_eq!(status, expected, "case {i}: {body}");
        assert!(error.contains(text), "case {i}: {error:?} lacks {text:?}");
    }
    // Nothing was stored by any of them.
    let (_, hubs) = operator.get("/tenants/acme/hubs").await?;
    assert_eq!(hubs["hubs"], json!([]));
    let (status, _) = acme
        .post_json("/tenants/acme/hubs/chat/activate", json!({"version": 1}))
        .await?;
    assert_eq!(status, 404);
    server.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn uploads_activates_rolls_back_and_deletes() -> anyhow::Result<()> {
    let dir = temp_dir("admin-flow")?;
    let server = TestServer::start(admin_config(&dir)).await?;
    let acme = Admin::new(server.addr, Some(ACME_KEY));

    let (status, v1) = acme.upload("acme", "chat", chat()?, "").await?;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(
        (v1["version"].as_u64(), v1["active"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(v1["size"].as_u64(), Some(chat()?.len() as u64));
    assert_eq!(v1["sha256"].as_str().map(str::len), Some(64));
    wait_served(&server.state, "acme", "chat", 1).await?;
    let (mut client, _) = RawClient::connect(&server, "/acme/chat").await?;
    assert_eq!(
        client.invoke("1", "Echo", json!(["hi"])).await?["result"],
        "hi"
    );

    // A second version, stored but not active; then activated; then rolled back.
    let (status, v2) = acme
        .upload(
            "acme",
            "chat",
            std::fs::read(guest("versioned_v2"))?,
            "?activate=false",
        )
        .await?;
    assert_eq!(
        (status, v2["version"].as_u64(), v2["active"].as_bool()),
        (201, Some(2), Some(false))
    );
    let (_, hub) = acme.get("/tenants/acme/hubs/chat").await?;
    assert_eq!(hub["active"], 1);
    assert_eq!(hub["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(hub["served"], json!({"from": "store", "version": 1}));

    let (status, body) = acme
        .post_json("/tenants/acme/hubs/chat/activate", json!({"version": 2}))
        .await?;
    assert_eq!((status, body["active"].as_u64()), (200, Some(2)), "{body}");
    wait_served(&server.state, "acme", "chat", 2).await?;
    assert_eq!(
        client.invoke("2", "Version", json!([])).await?["result"],
        "v2",
        "same connection, new code"
    );

    let (status, body) = acme
        .post_json("/tenants/acme/hubs/chat/rollback", json!({}))
        .await?;
    assert_eq!((status, body["active"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(client.invoke("3", "Echo", json!([3])).await?["result"], 3);
    let (status, body) = acme
        .post_json("/tenants/acme/hubs/chat/rollback", json!({}))
        .await?;
    assert_eq!(status, 409, "{body}");
    let (status, _) = acme
        .post_json("/tenants/acme/hubs/chat/activate", json!({"version": 99}))
        .await?;
    assert_eq!(status, 404);

    let (status, list) = acme.get("/tenants/acme/hubs").await?;
    assert_eq!(status, 200);
    assert_eq!(list["hubs"][0]["hub"], "chat");
    assert_eq!(list["hubs"][0]["history"], json!([1]));

    // Delete: the client gets a Close naming the reason, the hub is gone.
    let (status, _) = acme.delete("/tenants/acme/hubs/chat").await?;
    assert_eq!(status, 200);
    let close = client.next_where(|m| m["type"] == 7).await?;
    assert_eq!(
        close["error"],
        "Connection closed with an error. Hub 'acme/chat' was deleted."
    );
    assert_eq!(close.get("allowReconnect"), None);
    let (status, _) = server
        .negotiate("/acme/chat", "?negotiateVersion=1")
        .await?;
    assert_eq!(status, 404);
    // Version numbers are never reused.
    let (_, again) = acme.upload("acme", "chat", chat()?, "").await?;
    assert_eq!(again["version"], 3);
    server.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn operators_manage_tenants_whose_keys_then_work() -> anyhow::Result<()> {
    let dir = temp_dir("admin-tenants")?;
    let server = TestServer::start(admin_config(&dir)).await?;
    let operator = Admin::new(server.addr, Some(OPERATOR_KEY));
    let key = "initech-admin-key-0123456789";
    let (status, body) = operator
        .put_json(
            "/tenants/initech",
            json!({"admin_keys": [key], "max_connections": 5}),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let (_, tenants) = operator.get("/tenants").await?;
    let initech = tenants["tenants"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tenant"] == "initech"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            initech["origin"].as_str(),
            initech["max_connections"].as_u64()
        ),
        (Some("api"), Some(5))
    );
    let stored = std::fs::read_to_string(dir.join("state.json"))?;
    assert!(!stored.contains(key), "keys are stored as digests only");

    let initech = Admin::new(server.addr, Some(key));
    let (status, _) = initech.upload("initech", "chat", chat()?, "").await?;
    assert_eq!(status, 201);
    let (status, _) = initech.upload("acme", "chat", chat()?, "").await?;
    assert_eq!(status, 403);
    // The operator acts on every tenant.
    let (status, _) = operator.get("/tenants/initech/hubs/chat").await?;
    assert_eq!(status, 200);

    let (status, body) = operator.delete("/tenants/initech").await?;
    assert_eq!(
        (status, body["deleted_hubs"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let (status, _) = initech.get("/tenants/initech/hubs").await?;
    assert_eq!(status, 401, "a deleted tenant's key is no key");
    let (status, _) = operator.delete("/tenants/initech").await?;
    assert_eq!(status, 404);
    server.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
