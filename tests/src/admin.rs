//! The admin API from a test: requests with a key, answers as (status, JSON).

use crate::{PATIENCE, wait_until};
use hubhost::hubs::Source;
use hubhost::names::HubKey;
use hubhost::state::AppState;
use reqwest::Method;
use serde_json::Value;
use std::net::SocketAddr;

/// An operator key the tests configure.
pub const OPERATOR_KEY: &str = "operator-key-0123456789";

/// The admin API of one node, used with one key.
pub struct Admin {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Admin {
    pub fn new(addr: SocketAddr, key: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{addr}/admin/v1"),
            key: key.map(str::to_owned),
        }
    }

    /// Any request; the body is sent as is.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status, json))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.request(Method::GET, path, Vec::new()).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.request(Method::POST, path, body.to_string().into_bytes())
            .await
    }

    pub async fn put_json(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.request(Method::PUT, path, body.to_string().into_bytes())
            .await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.request(Method::DELETE, path, Vec::new()).await
    }

    /// Upload a component to `tenant/hub` (`query` like `?activate=false`).
    pub async fn upload(
        &self,
        tenant: &str,
        hub: &str,
        bytes: Vec<u8>,
        query: &str,
    ) -> anyhow::Result<(u16, Value)> {
        self.request(
            Method::POST,
            &format!("/tenants/{tenant}/hubs/{hub}/versions{query}"),
            bytes,
        )
        .await
    }
}

/// Wait until `state`'s node serves stored version `version` of `tenant/hub`.
pub async fn wait_served(
    state: &AppState,
    tenant: &str,
    hub: &str,
    version: u64,
) -> anyhow::Result<()> {
    let key = HubKey::new(tenant, hub)?;
    wait_until(PATIENCE, || {
        state.deployer.served(&key) == Some(Source::Store { version })
    })
    .await
}
