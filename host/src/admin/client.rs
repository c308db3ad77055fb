//! A client of the admin API, for the CLI (`hubhost deploy`, `hubhost hubs …`,
//! `hubhost vars …`).

use super::api::{
    Accepted, Activate, ActiveVersion, ApiMessages, CloseQuery, CloseWhat, Closed, Draining,
    ErrorBody, HubDeleted, HubFailures, HubInfo, HubList, LimitHits, SetVar, TenantActivity,
    Uploaded, VarChanged, VarList,
};
use crate::hubs::Source;
use crate::names::HubKey;
use anyhow::Context as _;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A node's admin API, reached with one key.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl AdminClient {
    /// `server` is the node's base URL (`http://host:port`).
    pub fn new(server: &str, key: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // A large Python or JavaScript component compiles for seconds.
            .timeout(Duration::from_secs(300))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            base: format!("{}/admin/v1", server.trim_end_matches('/')),
            key: key.to_owned(),
        })
    }

    fn hub_url(&self, key: &HubKey, rest: &str) -> String {
        format!(
            "{}/tenants/{}/hubs/{}{rest}",
            self.base,
            key.tenant(),
            key.hub()
        )
    }

    /// Send and read the JSON answer; a non-2xx status is an error with the
    /// server's message.
    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("cannot read the answer of {}", self.base))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .with_context(|| format!("unexpected answer from {} ({status})", self.base));
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| "(no error message)".to_owned());
        anyhow::bail!("{status}: {message}")
    }

    /// Upload `bytes` as a new version of `key`; active at once unless told not.
    pub async fn upload(
        &self,
        key: &HubKey,
        bytes: Vec<u8>,
        activate: bool,
    ) -> anyhow::Result<Uploaded> {
        let url = self.hub_url(key, &format!("/versions?activate={activate}"));
        self.send(
            self.http
                .post(url)
                .header("content-type", "application/wasm")
                .body(bytes),
        )
        .await
    }

    pub async fn hubs(&self, tenant: &str) -> anyhow::Result<HubList> {
        self.send(
            self.http
                .get(format!("{}/tenants/{tenant}/hubs", self.base)),
        )
        .await
    }

    pub async fn limit_hits(&self, tenant: &str) -> anyhow::Result<LimitHits> {
        self.send(
            self.http
                .get(format!("{}/tenants/{tenant}/limits", self.base)),
        )
        .await
    }

    /// Drain the node (it exits once its clients were moved).
    pub async fn drain(&self) -> anyhow::Result<Draining> {
        self.send(self.http.post(format!("{}/drain", self.base)))
            .await
    }

    /// Connections and invocations per hub of `tenant`.
    pub async fn activity(&self, tenant: &str) -> anyhow::Result<TenantActivity> {
        self.send(
            self.http
                .get(format!("{}/tenants/{tenant}/activity", self.base)),
        )
        .await
    }

    /// The last hub failures of `tenant` on the node, newest first.
    pub async fn errors(&self, tenant: &str) -> anyhow::Result<HubFailures> {
        self.send(
            self.http
                .get(format!("{}/tenants/{tenant}/errors", self.base)),
        )
        .await
    }

    pub async fn hub(&self, key: &HubKey) -> anyhow::Result<HubInfo> {
        self.send(self.http.get(self.hub_url(key, ""))).await
    }

    pub async fn activate(&self, key: &HubKey, version: u64) -> anyhow::Result<ActiveVersion> {
        let url = self.hub_url(key, "/activate");
        self.send(self.http.post(url).json(&Activate { version }))
            .await
    }

    pub async fn rollback(&self, key: &HubKey) -> anyhow::Result<ActiveVersion> {
        self.send(self.http.post(self.hub_url(key, "/rollback")))
            .await
    }

    pub async fn delete(&self, key: &HubKey) -> anyhow::Result<HubDeleted> {
        self.send(self.http.delete(self.hub_url(key, ""))).await
    }

    /// Send `messages` to clients of `key` through the server API.
    pub async fn send_messages(
        &self,
        key: &HubKey,
        messages: &ApiMessages,
    ) -> anyhow::Result<Accepted> {
        let url = format!(
            "{}/api/v1/tenants/{}/hubs/{}/messages",
            self.base.trim_end_matches("/admin/v1"),
            key.tenant(),
            key.hub()
        );
        self.send(self.http.post(url).json(messages)).await
    }

    /// Close one connection, or every connection of a user, of `key`
    /// through the server API.
    pub async fn close(
        &self,
        key: &HubKey,
        what: CloseWhat,
        name: &str,
        query: &CloseQuery,
    ) -> anyhow::Result<Closed> {
        let mut url = reqwest::Url::parse(self.base.trim_end_matches("/admin/v1"))
            .with_context(|| format!("bad server address {}", self.base))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("bad server address {}", self.base))?
            .pop_if_empty()
            .extend(["api", "v1", "tenants", key.tenant(), "hubs", key.hub()])
            .extend([what.segment(), name]);
        self.send(self.http.delete(url).query(query)).await
    }

    fn var_url(&self, tenant: &str, name: &str) -> String {
        format!("{}/tenants/{tenant}/vars/{name}", self.base)
    }

    pub async fn vars(&self, tenant: &str) -> anyhow::Result<VarList> {
        self.send(
            self.http
                .get(format!("{}/tenants/{tenant}/vars", self.base)),
        )
        .await
    }

    pub async fn set_var(
        &self,
        tenant: &str,
        name: &str,
        value: &str,
        secret: bool,
    ) -> anyhow::Result<VarChanged> {
        let body = SetVar {
            value: value.to_owned(),
            secret,
        };
        self.send(self.http.put(self.var_url(tenant, name)).json(&body))
            .await
    }

    pub async fn delete_var(&self, tenant: &str, name: &str) -> anyhow::Result<VarChanged> {
        self.send(self.http.delete(self.var_url(tenant, name)))
            .await
    }
}

/// One line per hub of a `GET …/hubs` answer.
pub fn describe_hubs(listing: &HubList) -> String {
    let mut out = String::new();
    for hub in &listing.hubs {
        let versions: Vec<String> = hub.versions.iter().map(|v| v.version.to_string()).collect();
        let active = match hub.active {
            Some(v) => format!("v{v}"),
            None => "-".to_owned(),
        };
        let served = match &hub.served {
            Some(Source::Store { version }) => format!("store v{version}"),
            Some(Source::File { path }) => format!("file {}", path.display()),
            Some(Source::Watch { path }) => format!("watch {}", path.display()),
            None => "not served".to_owned(),
        };
        let served = match &hub.served_world {
            Some(world) => format!("{served} (world {world})"),
            None => served,
        };
        out.push_str(&format!(
            "{}/{}\tactive {active}\tversions [{}]\tthis node: {served}\n",
            hub.tenant,
            hub.hub,
            versions.join(", "),
        ));
    }
    out
}
