//! Client authentication: HS256 and RS256 tokens at negotiate and at the
//! WebSocket, claims in the hub's caller record, and user-addressed sends
//! reaching every connection of a user on every node.

use hubhost::auth::{AuthConfig, JwtConfig};
use hubhost::config::{Config, HubConfig};
use hubhost::tenants::TenantConfig;
use hubhost_tests::{
    REDIS_URL, RawClient, TestServer, cluster_config, config, guest, jwt, negotiate_as, temp_dir,
    unique_prefix,
};
use serde_json::json;
use std::path::Path;

const ACME_SECRET: &str = "acme-secret-0123456789abcdef0123456789";

fn serve(config: &mut Config, tenant: &str, auth: AuthConfig) {
    for (hub, file) in [("chat", "chat"), ("caller", "versioned_v1")] {
        config.hubs.push(HubConfig {
            tenant: tenant.into(),
            hub: hub.into(),
            path: guest(file),
        });
    }
    config.tenants.insert(
        tenant.into(),
        TenantConfig {
            auth,
            ..TenantConfig::default()
        },
    );
}

fn hs256(secret: &str) -> AuthConfig {
    AuthConfig::Jwt(JwtConfig {
        hs256_secret: Some(secret.into()),
        ..JwtConfig::default()
    })
}

/// An RSA key pair made by openssl: (private PEM, public key file).
fn rsa_pair(dir: &Path) -> anyhow::Result<(Vec<u8>, std::path::PathBuf)> {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ],
        vec!["pkey", "-pubout", "-in"],
    ] {
        let mut command = std::process::Command::new("openssl");
        command.args(&args).arg(&private);
        if args[0] == "pkey" {
            command.arg("-out").arg(&public);
        }
        let status = command.status()?;
        anyhow::ensure!(status.success(), "openssl {args:?} failed");
    }
    Ok((std::fs::read(private)?, public))
}

async fn negotiate(server: &TestServer, path: &str, token: Option<&str>) -> anyhow::Result<u16> {
    Ok(negotiate_as(server.addr, path, token).await?.0)
}

/// A connection token is the negotiating user's: another user, however
/// authenticated, gets 403 from every transport, and the owner gets in.
#[tokio::test]
async fn a_connection_token_works_only_for_the_user_who_negotiated_it() -> anyhow::Result<()> {
    use hubhost_tests::transports::LongPoll;
    let mut config = config();
    serve(&mut config, "acme", hs256(ACME_SECRET));
    let server = TestServer::start(config).await?;
    let ann = jwt(ACME_SECRET, "ann", 300)?;
    let bob = jwt(ACME_SECRET, "bob", 300)?;
    let token_of = |body: String| -> anyhow::Result<String> {
        let body: serde_json::Value = serde_json::from_str(&body)?;
        Ok(body["connectionToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };
    // A WebSocket.
    let token = token_of(negotiate_as(server.addr, "/acme/chat", Some(&ann)).await?.1)?;
    let as_bob = RawClient::open(
        server.addr,
        &format!("/acme/chat?id={token}&access_token={bob}"),
    )
    .await;
    let error = as_bob.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("403"), "{error}");
    RawClient::open(
        server.addr,
        &format!("/acme/chat?id={token}&access_token={ann}"),
    )
    .await?;
    // Long polling: the first poll, and the requests after it.
    let token = token_of(negotiate_as(server.addr, "/acme/chat", Some(&ann)).await?.1)?;
    let with = |user: &str| format!("{token}&access_token={user}");
    assert_eq!(
        LongPoll::new(server.addr, "/acme/chat", &with(&bob))
            .poll()
            .await?
            .status,
        403
    );
    let owner = LongPoll::new(server.addr, "/acme/chat", &with(&ann));
    assert_eq!(owner.poll().await?.status, 200, "the first poll starts it");
    let intruder = LongPoll::new(server.addr, "/acme/chat", &with(&bob));
    assert_eq!(intruder.poll().await?.status, 403);
    assert_eq!(intruder.post(b"{}\x1e".to_vec()).await?.status, 403);
    assert_eq!(intruder.delete().await?.status, 403);
    assert_eq!(owner.delete().await?.status, 202, "still the owner's");
    server.stop().await
}

#[tokio::test]
async fn tokens_are_checked_at_negotiate_and_at_the_websocket() -> anyhow::Result<()> {
    let dir = temp_dir("auth")?;
    let (private, public) = rsa_pair(&dir)?;
    let mut config = config();
    serve(&mut config, "acme", hs256(ACME_SECRET));
    let rs256 = AuthConfig::Jwt(JwtConfig {
        rs256_public_key_file: Some(public),
        issuer: Some("https://id.globex.example".into()),
        ..JwtConfig::default()
    });
    serve(&mut config, "globex", rs256);
    let server = TestServer::start(config).await?;

    let valid = jwt(ACME_SECRET, "ann", 300)?;
    let expired = jwt(ACME_SECRET, "ann", -120)?;
    let wrong_key = jwt("another-secret-0123456789abcdef0123456", "ann", 300)?;
    assert_eq!(negotiate(&server, "/acme/chat", Some(&valid)).await?, 200);
    assert_eq!(negotiate(&server, "/acme/chat", None).await?, 401);
    assert_eq!(negotiate(&server, "/acme/chat", Some(&expired)).await?, 401);
    assert_eq!(
        negotiate(&server, "/acme/chat", Some(&wrong_key)).await?,
        401
    );
    assert_eq!(
        negotiate(&server, "/acme/chat", Some("not.a.jwt")).await?,
        401
    );
    assert_eq!(
        negotiate(&server, "/globex/chat", Some(&valid)).await?,
        401,
        "another tenant's token"
    );
    assert_eq!(
        negotiate(&server, "/demo/chat", None).await?,
        200,
        "anonymous tenants stay open"
    );

    // The access_token query works too (browsers' WebSockets).
    let (mut ann, id) = RawClient::connect_as(server.addr, "/acme/caller", Some(&valid)).await?;
    let caller = ann.invoke("1", "Caller", json!([])).await?;
    assert_eq!(caller["result"]["userId"], "ann");
    assert_eq!(caller["result"]["connectionId"], id.as_str());
    assert_eq!(caller["result"]["claims"]["tenant-claim"], "yes");
    assert_eq!(caller["result"]["claims"]["sub"], "ann");

    // Negotiated with a token, then a WebSocket without one: refused.
    let (_, body) = negotiate_as(server.addr, "/acme/chat", Some(&valid)).await?;
    let token: serde_json::Value = serde_json::from_str(&body)?;
    let open = RawClient::open(
        server.addr,
        &format!(
            "/acme/chat?id={}",
            token["connectionToken"].as_str().unwrap_or("")
        ),
    )
    .await;
    let error = open.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("401"), "{error}");
    // skipNegotiation (no token of the connection, only the access token):
    // an expired one is refused like at negotiate, with 401, and a valid one
    // is let in (the control).
    let skip = RawClient::open(server.addr, &format!("/acme/chat?access_token={expired}")).await;
    let error = skip.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        error.contains("401"),
        "skipNegotiation with an expired token: {error}"
    );
    let mut skip =
        RawClient::open(server.addr, &format!("/acme/chat?access_token={valid}")).await?;
    skip.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .await?;
    assert_eq!(skip.next().await?, json!({}));

    // RS256, with an issuer.
    let claims = |iss: &str| json!({"sub": "gil", "iss": iss, "exp": jsonwebtoken::get_current_timestamp() + 300});
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&private)?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    let good = jsonwebtoken::encode(&header, &claims("https://id.globex.example"), &key)?;
    let bad_issuer = jsonwebtoken::encode(&header, &claims("https://evil.example"), &key)?;
    assert_eq!(negotiate(&server, "/globex/chat", Some(&good)).await?, 200);
    assert_eq!(
        negotiate(&server, "/globex/chat", Some(&bad_issuer)).await?,
        401
    );
    let hs_for_rs = jwt(ACME_SECRET, "gil", 300)?;
    assert_eq!(
        negotiate(&server, "/globex/chat", Some(&hs_for_rs)).await?,
        401,
        "algorithm is the key's"
    );
    let (mut gil, _) = RawClient::connect_as(server.addr, "/globex/caller", Some(&good)).await?;
    assert_eq!(
        gil.invoke("1", "Caller", json!([])).await?["result"]["userId"],
        "gil"
    );
    server.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_sends_reach_every_connection_of_the_user_on_every_node() -> anyhow::Result<()> {
    let prefix = unique_prefix("users");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut config = cluster_config(REDIS_URL, &prefix);
        serve(&mut config, "acme", hs256(ACME_SECRET));
        nodes.push(TestServer::start(config).await?);
    }
    let ann_token = jwt(ACME_SECRET, "ann", 300)?;
    let mut anns = Vec::new();
    for addr in [nodes[0].addr, nodes[0].addr, nodes[1].addr] {
        anns.push(
            RawClient::connect_as(addr, "/acme/chat", Some(&ann_token))
                .await?
                .0,
        );
    }
    let bob_token = jwt(ACME_SECRET, "bob", 300)?;
    let (mut bob, _) = RawClient::connect_as(nodes[1].addr, "/acme/chat", Some(&bob_token)).await?;
    let (mut bob2, _) =
        RawClient::connect_as(nodes[0].addr, "/acme/chat", Some(&bob_token)).await?;
    let sent = bob
        .invoke("1", "SendToUser", json!(["ann", "bob", "hi ann"]))
        .await?;
    assert_eq!(sent.get("error"), None, "{sent}");
    for ann in &mut anns {
        let message = ann.next_where(|m| m["target"] == "ReceiveMessage").await?;
        assert_eq!(message["arguments"], json!(["bob", "hi ann"]));
    }
    // Then one to bob: bob2 sees it and nothing addressed to ann before it.
    anns[0]
        .invoke("2", "SendToUser", json!(["bob", "ann", "hi bob"]))
        .await?;
    let first = bob2.next_where(|m| m["target"] == "ReceiveMessage").await?;
    assert_eq!(first["arguments"], json!(["ann", "hi bob"]));
    for node in nodes {
        node.stop().await?;
    }
    Ok(())
}
