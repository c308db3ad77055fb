//! Client authentication, per tenant: anonymous, or a JWT signed with the
//! tenant's HS256 secret or RS256 key.
//!
//! The token comes from `Authorization: Bearer …` or the `access_token`
//! query parameter (browsers cannot set headers on a WebSocket, so the
//! official client puts it there). Its `sub` becomes the connection's user id,
//! which user-addressed sends use; every top-level claim reaches the hub in the
//! caller record. A missing, malformed, expired or wrongly signed token is a
//! 401 at negotiate and at the transport; the client only learns "401", the
//! log says why.

use crate::names::MAX_NAME_BYTES;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

/// How a tenant's clients authenticate (`[tenants.NAME.auth]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum AuthConfig {
    /// Anyone may connect; connections have no user id.
    #[default]
    Anonymous,
    /// A valid JWT is required.
    Jwt(JwtConfig),
}

/// The key and checks of JWT authentication: exactly one of the keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct JwtConfig {
    /// Shared secret for HS256 tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<String>,
    /// PEM public key (SPKI or PKCS#1) for RS256 tokens…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rs256_public_key: Option<String>,
    /// …or the file holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rs256_public_key_file: Option<PathBuf>,
    /// Required `iss`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Who a connection is, as far as authentication could tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub user_id: Option<Arc<str>>,
    /// Every top-level claim: strings as they are, anything else as JSON.
    pub claims: Vec<(String, String)>,
}

/// Why a request was not authenticated; for logs only.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no access token (Authorization: Bearer or access_token)")]
    Missing,
    #[error("invalid access token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the token's sub claim is not a string of 1 to {MAX_NAME_BYTES} bytes")]
    BadSubject,
}

/// A tenant's configured authentication, ready to check tokens.
#[derive(Clone)]
pub enum Authenticator {
    Anonymous,
    Jwt {
        key: Arc<DecodingKey>,
        validation: Arc<Validation>,
    },
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Jwt { validation, .. } => write!(f, "Jwt({:?})", validation.algorithms),
        }
    }
}

impl Authenticator {
    /// Check `config` and load its key.
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        let AuthConfig::Jwt(jwt) = config else {
            return Ok(Self::Anonymous);
        };
        let (key, algorithm) = match (
            &jwt.hs256_secret,
            &jwt.rs256_public_key,
            &jwt.rs256_public_key_file,
        ) {
            (Some(secret), None, None) => {
                if secret.len() < 32 {
                    anyhow::bail!("auth.hs256_secret must be at least 32 bytes");
                }
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                )
            }
            (None, Some(pem), None) => {
                (DecodingKey::from_rsa_pem(pem.as_bytes())?, Algorithm::RS256)
            }
            (None, None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read auth.rs256_public_key_file {}: {e}",
                        path.display()
                    )
                })?;
                (DecodingKey::from_rsa_pem(&pem)?, Algorithm::RS256)
            }
            _ => anyhow::bail!(
                "auth mode \"jwt\" needs exactly one of hs256_secret, rs256_public_key, rs256_public_key_file"
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        match &jwt.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &jwt.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Self::Jwt {
            key: Arc::new(key),
            validation: Arc::new(validation),
        })
    }

    /// Authenticate a request from its `Authorization` header and query.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<Identity, AuthError> {
        let Self::Jwt { key, validation } = self else {
            return Ok(Identity::default());
        };
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .or_else(|| query.get("access_token").map(String::as_str))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token, key, validation,
        )?;
        let user_id = match data.claims.get("sub") {
            None => None,
            Some(serde_json::Value::String(sub))
                if !sub.is_empty() && sub.len() <= MAX_NAME_BYTES =>
            {
                Some(Arc::from(sub.as_str()))
            }
            Some(_) => return Err(AuthError::BadSubject),
        };
        let claims = data
            .claims
            .into_iter()
            .map(|(name, value)| match value {
                serde_json::Value::String(text) => (name, text),
                other => (name, other.to_string()),
            })
            .collect();
        Ok(Identity { user_id, claims })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn token(claims: serde_json::Value, secret: &str) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )?)
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn reads_the_config_forms() -> anyhow::Result<()> {
        let config: AuthConfig =
            toml::from_str(&format!("mode = \"jwt\"\nhs256_secret = \"{SECRET}\"\n"))?;
        assert!(matches!(
            Authenticator::new(&config)?,
            Authenticator::Jwt { .. }
        ));
        let anonymous: AuthConfig = toml::from_str("mode = \"anonymous\"")?;
        assert_eq!(anonymous, AuthConfig::Anonymous);
        let short: AuthConfig = toml::from_str("mode = \"jwt\"\nhs256_secret = \"short\"\n")?;
        assert!(Authenticator::new(&short).is_err());
        let none: AuthConfig = toml::from_str("mode = \"jwt\"\n")?;
        assert!(Authenticator::new(&none).is_err());
        assert!(toml::from_str::<AuthConfig>("mode = \"magic\"").is_err());
        Ok(())
    }

    #[test]
    fn checks_signature_expiry_and_subject() -> anyhow::Result<()> {
        let auth = Authenticator::new(&AuthConfig::Jwt(JwtConfig {
            hs256_secret: Some(SECRET.into()),
            ..JwtConfig::default()
        }))?;
        let empty = HashMap::new();
        let good = token(
            serde_json::json!({"sub": "ann", "exp": now() + 60, "role": ["a"]}),
            SECRET,
        )?;
        let identity = auth.authenticate(Some(&format!("Bearer {good}")), &empty)?;
        assert_eq!(identity.user_id.as_deref(), Some("ann"));
        assert!(identity.claims.contains(&("role".into(), "[\"a\"]".into())));
        let query = HashMap::from([("access_token".to_owned(), good)]);
        assert!(auth.authenticate(None, &query).is_ok(), "query form");
        let expired = token(serde_json::json!({"sub": "ann", "exp": now() - 60}), SECRET)?;
        assert!(
            auth.authenticate(Some(&format!("Bearer {expired}")), &empty)
                .is_err()
        );
        let forged = token(
            serde_json::json!({"sub": "ann", "exp": now() + 60}),
            "another-secret-another-secret-xx",
        )?;
        assert!(
            auth.authenticate(Some(&format!("Bearer {forged}")), &empty)
                .is_err()
        );
        assert!(matches!(
            auth.authenticate(None, &empty),
            Err(AuthError::Missing)
        ));
        let numeric = token(serde_json::json!({"sub": 7, "exp": now() + 60}), SECRET)?;
        assert!(matches!(
            auth.authenticate(Some(&format!("Bearer {numeric}")), &empty),
            Err(AuthError::BadSubject)
        ));
        Ok(())
    }
}
