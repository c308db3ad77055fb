//! The handshake: the client names a protocol and version; the server answers
//! `{}` or `{"error":…}` and, on error, closes.

use super::{Protocol, RECORD_SEPARATOR};
use serde::Deserialize;

/// The highest hub protocol version we speak; clients may ask for any lower one.
pub const MAX_PROTOCOL_VERSION: u32 = 2;

/// Why a handshake was refused. The `Display` texts are ASP.NET Core's, which
/// clients show to users.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("The protocol '{0}' is not supported.")]
    UnsupportedProtocol(String),
    #[error("The server does not support version {version} of the '{protocol}' protocol.")]
    UnsupportedVersion { protocol: String, version: u64 },
    #[error(
        "Cannot use the '{0}' protocol on the current transport. The transport does not support 'Binary' transfer format."
    )]
    BinaryUnsupported(&'static str),
    #[error("Handshake was canceled.")]
    Canceled,
    #[error("An unexpected error occurred during connection handshake. {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct Request {
    protocol: Option<String>,
    version: Option<serde_json::Value>,
}

/// Checks the client's handshake request (one message, without separator) and
/// returns the protocol it chose and the version (2 asks for stateful
/// reconnect's messages).
pub fn parse_request(message: &[u8]) -> Result<(Protocol, u64), HandshakeError> {
    let request: Request = serde_json::from_slice(message)
        .map_err(|e| HandshakeError::Malformed(format!("Invalid handshake JSON: {e}.")))?;
    let protocol = request
        .protocol
        .ok_or_else(|| HandshakeError::Malformed("Missing required property 'protocol'.".into()))?;
    let version = request
        .version
        .ok_or_else(|| HandshakeError::Malformed("Missing required property 'version'.".into()))?
        .as_u64()
        .ok_or_else(|| {
            HandshakeError::Malformed("'version' must be a non-negative integer.".into())
        })?;
    let Some(supported) = Protocol::from_name(&protocol) else {
        return Err(HandshakeError::UnsupportedProtocol(protocol));
    };
    if version > u64::from(MAX_PROTOCOL_VERSION) {
        return Err(HandshakeError::UnsupportedVersion { protocol, version });
    }
    Ok((supported, version))
}

/// The success response, framed.
pub const SUCCESS_RESPONSE: &str = "{}\u{1e}";

/// The error response, framed.
pub fn error_response(error: &HandshakeError) -> String {
    let mut out = serde_json::json!({ "error": error.to_string() }).to_string();
    out.push(char::from(RECORD_SEPARATOR));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_json_up_to_version_2() {
        assert_eq!(
            parse_request(br#"{"protocol":"json","version":1}"#),
            Ok((Protocol::Json, 1))
        );
        assert_eq!(
            parse_request(br#"{"version":2,"protocol":"json","x":1}"#),
            Ok((Protocol::Json, 2))
        );
    }

    #[test]
    fn refuses_with_dotnet_texts() {
        assert_eq!(
            parse_request(br#"{"protocol":"messagepack","version":1}"#),
            Ok((Protocol::MessagePack, 1))
        );
        assert_eq!(
            parse_request(br#"{"protocol":"protobuf","version":1}"#).map_err(|e| e.to_string()),
            Err("The protocol 'protobuf' is not supported.".into())
        );
        assert_eq!(
            parse_request(br#"{"protocol":"json","version":3}"#).map_err(|e| e.to_string()),
            Err("The server does not support version 3 of the 'json' protocol.".into())
        );
        assert!(matches!(
            parse_request(br#"{"version":1}"#),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(b"nope"),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(br#"{"protocol":"json","version":-1}"#),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn frames_responses() {
        assert_eq!(SUCCESS_RESPONSE, "{}\u{1e}");
        assert_eq!(
            error_response(&HandshakeError::Canceled),
            "{\"error\":\"Handshake was canceled.\"}\u{1e}"
        );
    }
}
