//! Outbound HTTP from hubs: the `http` capability of world 0.2.
//!
//! Guarantees:
//! - a request goes only to an origin (scheme, host, port) on the tenant's
//!   allow-list (`hub_limits.http_allow`, set by the operator), and only to
//!   public addresses unless the operator allows private and loopback ones
//!   (`hub_limits.http_allow_private`): the host is resolved here, checked,
//!   and the connection made to the address checked (no second lookup a
//!   DNS answer could change);
//! - redirects are followed (at most [`MAX_REDIRECTS`]) only to where a
//!   request could go itself;
//! - a request is bounded in size, its response in bytes, and its time by
//!   what the hub call has left of its deadline;
//! - a refusal names the rule; the hub gets the text, the log the detail.
//!
//! A request holds the hub call's thread while it waits (calls are
//! synchronous: the call leaves its async worker first, see `workers`; the
//! tenant's call slots bound how many threads that is).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Redirects followed per request.
pub const MAX_REDIRECTS: usize = 5;

/// Why a request was refused or failed; the text reaches the hub.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("'{0}' is not an http(s) URL with a host")]
    BadUrl(String),
    #[error("{0} is not on the tenant's outbound allow-list (hub_limits.http_allow)")]
    NotAllowed(String),
    #[error(
        "{0} resolves to a private or loopback address, which the tenant may not reach (hub_limits.http_allow_private)"
    )]
    Private(String),
    #[error("this call reached its limit of {0} requests (hub_limits.max_http_requests_per_call)")]
    Requests(u32),
    #[error(
        "the request's body is {size} bytes, over the limit of {limit} (hub_limits.max_http_request_bytes)"
    )]
    RequestTooLarge { size: usize, limit: usize },
    #[error("the response is over the limit of {0} bytes (hub_limits.max_http_response_bytes)")]
    ResponseTooLarge(usize),
    #[error("the request did not finish within what the call had left of its deadline")]
    Timeout,
    #[error("more than {MAX_REDIRECTS} redirects")]
    Redirects,
    #[error("'{0}' is not a valid HTTP method or header")]
    BadRequest(String),
    #[error("the request failed: {0}")]
    Failed(String),
}

impl FetchError {
    pub fn limit(&self) -> Option<&'static str> {
        Some(match self {
            Self::NotAllowed(_) => "hub_limits.http_allow",
            Self::Private(_) => "hub_limits.http_allow_private",
            Self::Requests(_) => "hub_limits.max_http_requests_per_call",
            Self::RequestTooLarge { .. } => "hub_limits.max_http_request_bytes",
            Self::ResponseTooLarge(_) => "hub_limits.max_http_response_bytes",
            _ => return None,
        })
    }
}

/// Where a tenant's hubs may send requests, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Origins, `scheme://host[:port]`.
    pub allow: Vec<String>,
    pub allow_private: bool,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
}

/// A request as the hub gives it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// `url`'s origin, as the allow-list writes it (default ports left out).
fn origin(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// Whether `ip` is one a tenant reaches only with `allow_private`.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64 // 100.64/10
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || ip.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

impl Rules {
    /// Whether `origin` is on the allow-list, whose entries are compared as
    /// origins too (`HTTPS://API.Example.com:443/` allows
    /// `https://api.example.com`); an entry that is no URL allows nothing.
    fn allows(&self, origin: &str) -> bool {
        self.allow.iter().any(|entry| {
            reqwest::Url::parse(entry)
                .ok()
                .and_then(|url| self::origin(&url))
                .is_some_and(|allowed| allowed == origin)
        })
    }

    /// `url` checked against the allow-list, and the address to connect to.
    async fn check(&self, url: &str) -> Result<(reqwest::Url, SocketAddr), FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::BadUrl(url.to_owned()))?;
        let Some(origin) = origin(&parsed).filter(|_| matches!(parsed.scheme(), "http" | "https"))
        else {
            return Err(FetchError::BadUrl(url.to_owned()));
        };
        if !self.allows(&origin) {
            return Err(FetchError::NotAllowed(origin));
        }
        let host = parsed.host_str().unwrap_or_default().to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let lookup = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((lookup.as_str(), port))
            .await
            .map_err(|e| FetchError::Failed(format!("cannot resolve {host}: {e}")))?
            .collect();
        let Some(first) = addrs.first().copied() else {
            return Err(FetchError::Failed(format!("{host} has no address")));
        };
        if !self.allow_private && addrs.iter().any(|a| is_private(a.ip())) {
            return Err(FetchError::Private(origin));
        }
        Ok((parsed, first))
    }

    /// Send `request`, following redirects the rules allow, by `deadline`.
    pub async fn fetch(&self, request: Request, deadline: Instant) -> Result<Response, FetchError> {
        if request.body.len() > self.max_request_bytes {
            return Err(FetchError::RequestTooLarge {
                size: request.body.len(),
                limit: self.max_request_bytes,
            });
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| FetchError::BadRequest(request.method.clone()))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &request.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| FetchError::BadRequest(name.clone()))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| FetchError::BadRequest(value.clone()))?;
            headers.append(name, value);
        }
        let run = async {
            let mut url = request.url.clone();
            let mut method = method;
            let mut body = request.body;
            for _ in 0..=MAX_REDIRECTS {
                let (parsed, addr) = self.check(&url).await?;
                let host = parsed.host_str().unwrap_or_default().to_owned();
                // Connect to the address just checked, whatever DNS says next.
                let client = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .resolve(&host, addr)
                    .build()
                    .map_err(|e| FetchError::Failed(e.to_string()))?;
                let response = client
                    .request(method.clone(), parsed.clone())
                    .headers(headers.clone())
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| FetchError::Failed(e.without_url().to_string()))?;
                if response.status().is_redirection()
                    && let Some(location) = response.headers().get(reqwest::header::LOCATION)
                {
                    let next = location
                        .to_str()
                        .ok()
                        .and_then(|l| parsed.join(l).ok())
                        .ok_or_else(|| {
                            FetchError::Failed("a redirect without a valid Location".into())
                        })?;
                    url = next.to_string();
                    // 303, and 301/302 after a POST, continue as a GET.
                    if response.status() == reqwest::StatusCode::SEE_OTHER
                        || (method == reqwest::Method::POST
                            && matches!(response.status().as_u16(), 301 | 302))
                    {
                        method = reqwest::Method::GET;
                        body = Vec::new();
                    }
                    continue;
                }
                return self.read(response).await;
            }
            Err(FetchError::Redirects)
        };
        tokio::time::timeout_at(deadline.into(), run)
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn read(&self, mut response: reqwest::Response) -> Result<Response, FetchError> {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Failed(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(FetchError::ResponseTooLarge(self.max_response_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// The time a request may take: what the call has left, at most `cap`.
pub fn deadline(call_deadline: Instant, cap: Duration) -> Instant {
    call_deadline.min(Instant::now() + cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognized() -> anyhow::Result<()> {
        let private = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ];
        for ip in private {
            assert!(is_private(ip.parse()?), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse()?), "{ip}");
        }
        Ok(())
    }

    #[test]
    fn allow_list_entries_are_compared_as_origins() {
        let rules = Rules {
            allow: vec!["HTTPS://API.Example.com:443/".into(), "not a url".into()],
            allow_private: false,
            max_request_bytes: 1,
            max_response_bytes: 1,
        };
        assert!(rules.allows("https://api.example.com"));
        assert!(!rules.allows("http://api.example.com"));
        assert!(!rules.allows("https://api.example.com:8443"));
        assert!(!rules.allows("not a url"));
    }

    #[test]
    fn origins_are_scheme_host_and_port() -> anyhow::Result<()> {
        let url = reqwest::Url::parse("https://api.example.com/v1?q=1")?;
        assert_eq!(origin(&url).as_deref(), Some("https://api.example.com"));
        let url = reqwest::Url::parse("http://127.0.0.1:8080/x")?;
        assert_eq!(origin(&url).as_deref(), Some("http://127.0.0.1:8080"));
        let url = reqwest::Url::parse("https://api.example.com:443/")?;
        assert_eq!(origin(&url).as_deref(), Some("https://api.example.com"));
        Ok(())
    }
}
