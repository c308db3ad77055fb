//! Tenant variables and secrets through the deployer: set and deleted in
//! the store (secrets sealed first), announced, and every node's copy
//! ([`Vars`](crate::vars::Vars)) re-read from the store, as hubs are.

use super::{DeployError, Deployer};
use crate::cluster::Control;
use crate::vars::{StoredVar, VarError, check_name, open_all};
use std::collections::HashMap;

/// What a tenant's variables may take.
#[derive(Debug, Clone, Copy)]
pub struct VarLimits {
    pub max_per_tenant: usize,
    pub max_bytes: usize,
}

impl Default for VarLimits {
    fn default() -> Self {
        Self {
            max_per_tenant: 100,
            max_bytes: 64 << 10,
        }
    }
}

/// A variable as the admin API lists it: a secret without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVar {
    pub name: String,
    pub secret: bool,
    pub value: Option<String>,
}

impl Deployer {
    /// Set `name` of `tenant` to `value`, sealed if `secret`.
    pub async fn set_var(
        &self,
        tenant: &str,
        name: &str,
        value: &str,
        secret: bool,
    ) -> Result<(), DeployError> {
        check_name(name)?;
        if value.len() > self.var_limits.max_bytes {
            self.counters.hit(tenant, "admin.max_var_bytes");
            return Err(DeployError::VarTooLarge {
                size: value.len(),
                limit: self.var_limits.max_bytes,
            });
        }
        // One tenant's changes at a time on this node, so the count holds.
        let _guard = self.lock_named(format!("vars/{tenant}")).await;
        let all = self.store.vars().await?;
        let mine = all.get(tenant);
        let exists = mine.is_some_and(|vars| vars.contains_key(name));
        let count = mine.map_or(0, HashMap::len);
        if !exists && count >= self.var_limits.max_per_tenant {
            self.counters.hit(tenant, "admin.max_vars_per_tenant");
            return Err(DeployError::TooManyVars {
                limit: self.var_limits.max_per_tenant,
            });
        }
        let value = if secret {
            let key = self.secrets.as_ref().ok_or(VarError::NoKey)?;
            key.seal(tenant, name, value)
                .map_err(|e| DeployError::Internal(format!("sealing a secret: {e}")))?
        } else {
            value.to_owned()
        };
        let var = StoredVar { secret, value };
        self.store.put_var(tenant, name, &var).await?;
        self.vars_changed().await
    }

    /// Remove `name` of `tenant`; whether it existed.
    pub async fn delete_var(&self, tenant: &str, name: &str) -> Result<bool, DeployError> {
        check_name(name)?;
        let existed = self.store.delete_var(tenant, name).await?;
        self.vars_changed().await?;
        Ok(existed)
    }

    /// `tenant`'s variables by name, secrets without their values.
    pub async fn list_vars(&self, tenant: &str) -> Result<Vec<ListedVar>, DeployError> {
        let mut all = self.store.vars().await?;
        let mut listed: Vec<ListedVar> = all
            .remove(tenant)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, var)| ListedVar {
                name,
                secret: var.secret,
                value: (!var.secret).then_some(var.value),
            })
            .collect();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    /// This node re-reads, and every other node is told to.
    async fn vars_changed(&self) -> Result<(), DeployError> {
        self.sync_vars().await?;
        self.cluster.announce(Control::VarsChanged);
        Ok(())
    }

    /// Make this node's copy of every tenant's variables the store's.
    pub(super) async fn sync_vars(&self) -> Result<(), DeployError> {
        let stored = self.store.vars().await?;
        let mut gone: Vec<String> = self.vars.tenants();
        gone.retain(|tenant| !stored.contains_key(tenant));
        for (tenant, vars) in stored {
            let values = open_all(&tenant, vars, self.secrets.as_deref());
            self.vars.replace(&tenant, values);
        }
        for tenant in gone {
            self.vars.replace(&tenant, HashMap::new());
        }
        Ok(())
    }
}
