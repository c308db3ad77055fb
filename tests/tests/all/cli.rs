//! The CLI against a running node: `hubhost deploy`, `hubhost hubs list`,
//! `hubhost hubs rollback`, and their errors.

use hubhost_tests::admin::{OPERATOR_KEY, wait_served};
use hubhost_tests::{RawClient, TestServer, binary, config, guest};
use serde_json::json;

/// Run the CLI with `args` against `server`; (success, stdout, stderr).
async fn cli(
    server: &TestServer,
    key: &str,
    args: &[&str],
) -> anyhow::Result<(bool, String, String)> {
    let output = tokio::process::Command::new(binary())
        .args(args)
        .env("HUBHOST_SERVER", server.url(""))
        .env("HUBHOST_ADMIN_KEY", key)
        .output()
        .await?;
    Ok((
        output.status.success(),
        String::from_utf8(output.stdout)?,
        String::from_utf8(output.stderr)?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_list_and_roll_back_from_the_command_line() -> anyhow::Result<()> {
    let mut config = config();
    config.admin.operator_keys = vec![OPERATOR_KEY.into()];
    let server = TestServer::start(config).await?;
    let v1 = guest("versioned_v1");
    let v2 = guest("versioned_v2");
    let path = |p: &std::path::Path| p.display().to_string();

    let (ok, out, err) = cli(&server, OPERATOR_KEY, &["deploy", "acme/live", &path(&v1)]).await?;
    assert!(ok, "{err}");
    assert!(out.starts_with("acme/live version 1 ("), "{out}");
    assert!(out.contains("deployed and active"), "{out}");
    wait_served(&server.state, "acme", "live", 1).await?;
    let (mut client, _) = RawClient::connect(&server, "/acme/live").await?;

    let (ok, out, err) = cli(&server, OPERATOR_KEY, &["deploy", "acme/live", &path(&v2)]).await?;
    assert!(ok && out.contains("version 2"), "{out}{err}");
    assert_eq!(
        client.invoke("1", "Version", json!([])).await?["result"],
        "v2"
    );

    let (ok, out, _) = cli(&server, OPERATOR_KEY, &["hubs", "list", "acme"]).await?;
    assert!(ok);
    assert!(
        out.contains("acme/live\tactive v2\tversions [1, 2]\tthis node: store v2"),
        "{out}"
    );

    let (ok, out, err) = cli(&server, OPERATOR_KEY, &["hubs", "rollback", "acme/live"]).await?;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "acme/live: rolled back; version 1 active");
    assert_eq!(
        client.invoke("2", "Version", json!([])).await?["result"],
        "v1",
        "same connection"
    );

    // Errors: the server's message and a failing exit status.
    let (ok, _, err) = cli(&server, OPERATOR_KEY, &["hubs", "rollback", "acme/live"]).await?;
    assert!(
        !ok && err.contains("409 Conflict: No earlier version to roll back to."),
        "{err}"
    );
    let (ok, _, err) = cli(
        &server,
        "not-the-key-at-all-0000",
        &["hubs", "list", "acme"],
    )
    .await?;
    assert!(
        !ok && err.contains("401 Unauthorized: The admin key is not valid."),
        "{err}"
    );
    let (ok, _, err) = cli(
        &server,
        OPERATOR_KEY,
        &["deploy", "acme/live", &path(&guest("greedy"))],
    )
    .await?;
    assert!(!ok && err.contains("wasi:sockets"), "{err}");
    let (ok, _, err) = cli(&server, OPERATOR_KEY, &["deploy", "acme-live", &path(&v1)]).await?;
    assert!(!ok && err.contains("TENANT/HUB"), "{err}");
    server.stop().await?;
    Ok(())
}
