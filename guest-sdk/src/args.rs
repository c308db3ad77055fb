//! Arguments cross the host boundary as one JSON array. [`FromArgs`] reads a
//! hub method's arguments into a tuple of serde types; [`ToArgs`] writes the
//! arguments of a message to clients from one. Tuples of up to 8 elements are
//! supported, `()` for none.

use crate::HubError;
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};

/// Hub method arguments, read from a JSON array.
pub trait FromArgs: Sized {
    /// Read `json`, the call's argument array; a wrong count or type is a
    /// [`HubError::BadArguments`] naming what did not fit.
    fn from_args(json: &str) -> Result<Self, HubError>;
}

/// Message arguments, written as a JSON array.
pub trait ToArgs {
    /// Write the arguments as a JSON array.
    fn to_args(&self) -> Result<String, HubError>;
}

fn bad_arguments(error: serde_json::Error) -> HubError {
    HubError::BadArguments(error.to_string())
}

impl FromArgs for () {
    fn from_args(json: &str) -> Result<Self, HubError> {
        let args: Vec<IgnoredAny> = serde_json::from_str(json).map_err(bad_arguments)?;
        if args.is_empty() {
            Ok(())
        } else {
            Err(HubError::BadArguments(format!(
                "expected no arguments, got {}",
                args.len()
            )))
        }
    }
}

impl ToArgs for () {
    fn to_args(&self) -> Result<String, HubError> {
        Ok("[]".to_owned())
    }
}

// serde reads and writes a tuple as a JSON array of exactly its length, which
// is the shape SignalR gives arguments.
macro_rules! tuple_args {
    ($($name:ident),+) => {
        impl<$($name: DeserializeOwned),+> FromArgs for ($($name,)+) {
            fn from_args(json: &str) -> Result<Self, HubError> {
                serde_json::from_str(json).map_err(bad_arguments)
            }
        }

        impl<$($name: Serialize),+> ToArgs for ($($name,)+) {
            fn to_args(&self) -> Result<String, HubError> {
                serde_json::to_string(self).map_err(|e| HubError::Failed(e.to_string()))
            }
        }
    };
}

tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);
tuple_args!(A, B, C, D, E);
tuple_args!(A, B, C, D, E, F);
tuple_args!(A, B, C, D, E, F, G);
tuple_args!(A, B, C, D, E, F, G, H);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tuples_of_exact_length() -> Result<(), HubError> {
        let (a, b): (String, i64) = FromArgs::from_args(r#"["x", 5]"#)?;
        assert_eq!((a.as_str(), b), ("x", 5));
        <()>::from_args("[]")?;
        Ok(())
    }

    #[test]
    fn rejects_wrong_counts_and_types() {
        assert!(matches!(
            <(String,)>::from_args("[]"),
            Err(HubError::BadArguments(_))
        ));
        assert!(matches!(
            <(String,)>::from_args(r#"["a","b"]"#),
            Err(HubError::BadArguments(_))
        ));
        assert!(matches!(
            <(String,)>::from_args("[1]"),
            Err(HubError::BadArguments(_))
        ));
        assert!(matches!(
            <()>::from_args("[1]"),
            Err(HubError::BadArguments(_))
        ));
        assert!(matches!(
            <()>::from_args("{}"),
            Err(HubError::BadArguments(_))
        ));
    }

    #[test]
    fn writes_arrays() -> Result<(), HubError> {
        assert_eq!(("a", 1).to_args()?, r#"["a",1]"#);
        assert_eq!((serde_json::Value::Null,).to_args()?, "[null]");
        assert_eq!(().to_args()?, "[]");
        Ok(())
    }
}
