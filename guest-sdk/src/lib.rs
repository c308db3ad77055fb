//! Write hubhost hubs in Rust.
//!
//! A hub is a type that implements [`Hub`] and one call of [`export_hub!`]:
//!
//! ```ignore
//! use hubhost_guest::{export_hub, Hub, Methods};
//!
//! struct Chat;
//!
//! impl Hub for Chat {
//!     fn methods(m: &mut Methods) {
//!         m.on("SendMessage", |ctx, (user, text): (String, String)| {
//!             ctx.clients().all().send("ReceiveMessage", (user, text))
//!         });
//!     }
//! }
//!
//! export_hub!(Chat);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2` and load the `.wasm`
//! with `hubhost serve --hub TENANT/HUB=PATH.wasm`.
//!
//! # Layout
//! - [`args`]: hub method arguments and message arguments as JSON arrays, typed through serde.
//! - [`context`]: [`Context`] — who is calling, [`Clients`] to send to, [`Groups`].
//! - [`state`]: [`State`] (the hub's key-value state), [`Items`] (kept with
//!   the connection), [`Presence`] (who is connected) and [`Config`] (the
//!   tenant's variables and secrets).
//! - [`streams`]: [`Stream`] (to a client), [`Upload`] (from one).
//! - [`methods`]: [`Methods`], the case-insensitive method table — plain
//!   methods, methods with uploads, stream methods — and [`HubError`].
//! - [`log`]: logging into the host's log.
//! - `bindings`: the one `wit_bindgen::generate!` of the `hub-component`
//!   world, version 0.2.0 (`wit/0.2.0`);
//!   hub code never names it, [`export_hub!`] does.

#![warn(missing_docs)]

// Lets the generated bindings name this crate by the path hub crates use.
extern crate self as hubhost_guest;

pub mod args;
pub mod context;
pub mod log;
pub mod methods;
pub mod state;
pub mod streams;

pub use args::{FromArgs, ToArgs};
pub use context::{ClientProxy, Clients, Context, Groups};
pub use methods::{HubError, Methods};
/// Re-exported so hub crates can use JSON values without naming serde_json.
pub use serde_json::{Value, json};
pub use state::{Config, Http, Items, Presence, State, Timers};
pub use streams::{Stream, StreamError, Upload};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/0.2.0",
        world: "hub-component",
        pub_export_macro: true,
        export_macro_name: "__export_hub_component",
        default_bindings_module: "hubhost_guest::bindings",
        runtime_path: "hubhost_guest::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// A hub: its methods, and what happens when clients come and go.
///
/// The host may run each call in a fresh instance, so a hub keeps no state in
/// its own memory between calls: connection state (groups, users, items)
/// lives in the host, and what the hub remembers in its [`State`].
pub trait Hub: 'static {
    /// Register the hub's methods. Called once per instance.
    fn methods(methods: &mut Methods);

    /// A client connected; an error refuses it.
    fn on_connected(ctx: &Context) -> Result<(), HubError> {
        let _ = ctx;
        Ok(())
    }

    /// A client went away; `error` says why when the close was not clean.
    fn on_disconnected(ctx: &Context, error: Option<&str>) {
        let _ = (ctx, error);
    }
}

/// Export `$hub` (a type implementing [`Hub`]) as this component's hub.
#[macro_export]
macro_rules! export_hub {
    ($hub:ty) => {
        #[doc(hidden)]
        struct __HubhostExport;

        impl $crate::bindings::exports::hubhost::hub::hub::Guest for __HubhostExport {
            fn on_connected(
                caller: $crate::bindings::hubhost::hub::types::Caller,
            ) -> ::core::result::Result<(), $crate::bindings::hubhost::hub::types::HubError> {
                $crate::__rt::on_connected::<$hub>(caller)
            }

            fn on_disconnected(
                caller: $crate::bindings::hubhost::hub::types::Caller,
                error: ::core::option::Option<::std::string::String>,
            ) {
                $crate::__rt::on_disconnected::<$hub>(caller, error)
            }

            fn invoke(
                caller: $crate::bindings::hubhost::hub::types::Caller,
                method: ::std::string::String,
                args_json: ::std::string::String,
            ) -> ::core::result::Result<
                ::std::string::String,
                $crate::bindings::hubhost::hub::types::HubError,
            > {
                $crate::__rt::invoke::<$hub>(caller, &method, &args_json, ::std::vec::Vec::new())
            }

            fn invoke_with_uploads(
                caller: $crate::bindings::hubhost::hub::types::Caller,
                method: ::std::string::String,
                args_json: ::std::string::String,
                uploads: ::std::vec::Vec<::std::string::String>,
            ) -> ::core::result::Result<
                ::std::string::String,
                $crate::bindings::hubhost::hub::types::HubError,
            > {
                $crate::__rt::invoke::<$hub>(caller, &method, &args_json, uploads)
            }

            fn open_stream(
                caller: $crate::bindings::hubhost::hub::types::Caller,
                method: ::std::string::String,
                args_json: ::std::string::String,
                uploads: ::std::vec::Vec<::std::string::String>,
                stream: ::std::string::String,
            ) -> ::core::result::Result<(), $crate::bindings::hubhost::hub::types::HubError> {
                $crate::__rt::open_stream::<$hub>(caller, &method, &args_json, uploads, stream)
            }
        }

        $crate::bindings::__export_hub_component!(__HubhostExport with_types_in $crate::bindings);
    };
}

/// What [`export_hub!`] expands to calls; not part of the API.
#[doc(hidden)]
pub mod __rt {
    use crate::bindings::hubhost::hub::types::{Caller, HubError as WitHubError};
    use crate::{Context, Hub, Methods};
    use std::sync::OnceLock;

    /// The method table, built once per instance.
    fn methods<H: Hub>() -> &'static Methods {
        // One hub per component, so one table per instance is enough.
        static TABLE: OnceLock<Methods> = OnceLock::new();
        TABLE.get_or_init(|| {
            let mut methods = Methods::default();
            H::methods(&mut methods);
            methods
        })
    }

    pub fn on_connected<H: Hub>(caller: Caller) -> Result<(), WitHubError> {
        H::on_connected(&Context::new(caller)).map_err(Into::into)
    }

    pub fn on_disconnected<H: Hub>(caller: Caller, error: Option<String>) {
        H::on_disconnected(&Context::new(caller), error.as_deref())
    }

    pub fn invoke<H: Hub>(
        caller: Caller,
        method: &str,
        args: &str,
        uploads: Vec<String>,
    ) -> Result<String, WitHubError> {
        methods::<H>()
            .call(&Context::new(caller), method, args, uploads)
            .map_err(Into::into)
    }

    pub fn open_stream<H: Hub>(
        caller: Caller,
        method: &str,
        args: &str,
        uploads: Vec<String>,
        stream: String,
    ) -> Result<(), WitHubError> {
        if !uploads.is_empty() {
            return Err(WitHubError::Failed(format!(
                "Client sent {} stream(s), Hub method expects 0.",
                uploads.len()
            )));
        }
        let stream = crate::Stream::new(stream);
        methods::<H>()
            .open_stream(&Context::new(caller), method, args, &stream)
            .map_err(Into::into)
    }
}
