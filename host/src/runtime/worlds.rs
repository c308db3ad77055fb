//! The two worlds a hub component may be built for, side by side:
//! `hubhost:hub@0.1.0` (frozen) and `hubhost:hub@0.2.0`. One `bindgen!` each;
//! 0.2.0 reuses 0.1.0's types, which it repeats unchanged, so a caller, a
//! target and a hub error are one Rust type whatever the component's world.
//! Everything else here lets the rest of the runtime ignore which world a
//! component has: [`Pre`] and [`Instance`] dispatch on it.

use super::CallState;
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};

pub(super) mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "hub-component",
    });
}

pub(super) mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "hub-component",
        with: {
            "hubhost:hub/types": super::v1::hubhost::hub::types,
        },
    });
}

pub use v1::hubhost::hub::types::{Caller, HubError};

/// A version of the hub world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    V0_1,
    V0_2,
}

impl World {
    /// The world's version, as the admin API shows it.
    pub fn version(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
            Self::V0_2 => "0.2.0",
        }
    }

    /// The world `component` exports its hub for, if one of ours.
    pub fn of(component: &Component) -> Option<Self> {
        let engine = component.engine();
        let ty = component.component_type();
        let mut exports = ty.exports(engine).map(|(name, _)| name);
        exports.find_map(|name| match name {
            "hubhost:hub/hub@0.1.0" => Some(Self::V0_1),
            "hubhost:hub/hub@0.2.0" => Some(Self::V0_2),
            _ => None,
        })
    }
}

/// Define the imports of both worlds in `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    v1::HubComponent::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    v2::HubComponent::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
}

/// A component of either world, linked and checked.
pub(super) enum Pre {
    V1(v1::HubComponentPre<CallState>),
    V2(v2::HubComponentPre<CallState>),
}

/// An instance of either world.
pub(super) enum Instance {
    V1(v1::HubComponent),
    V2(v2::HubComponent),
}

impl Pre {
    pub fn new(pre: InstancePre<CallState>, world: World) -> wasmtime::Result<Self> {
        Ok(match world {
            World::V0_1 => Self::V1(v1::HubComponentPre::new(pre)?),
            World::V0_2 => Self::V2(v2::HubComponentPre::new(pre)?),
        })
    }

    pub fn world(&self) -> World {
        match self {
            Self::V1(_) => World::V0_1,
            Self::V2(_) => World::V0_2,
        }
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            Self::V1(pre) => pre.engine(),
            Self::V2(pre) => pre.engine(),
        }
    }

    pub fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Self::V1(pre) => Instance::V1(pre.instantiate(store)?),
            Self::V2(pre) => Instance::V2(pre.instantiate(store)?),
        })
    }
}

impl Instance {
    pub fn invoke(
        &self,
        store: &mut Store<CallState>,
        caller: &Caller,
        method: &str,
        args: &str,
    ) -> wasmtime::Result<Result<String, HubError>> {
        match self {
            Self::V1(hub) => hub
                .hubhost_hub_hub()
                .call_invoke(store, caller, method, args),
            Self::V2(hub) => hub
                .hubhost_hub_hub()
                .call_invoke(store, caller, method, args),
        }
    }

    /// `method` with upload streams; a 0.1.0 hub has none to take.
    pub fn invoke_with_uploads(
        &self,
        store: &mut Store<CallState>,
        caller: &Caller,
        method: &str,
        args: &str,
        uploads: &[String],
    ) -> wasmtime::Result<Result<String, HubError>> {
        match self {
            Self::V1(_) => Ok(Err(HubError::Failed(format!(
                "Client sent {} stream(s), Hub method expects 0.",
                uploads.len()
            )))),
            Self::V2(hub) => hub
                .hubhost_hub_hub()
                .call_invoke_with_uploads(store, caller, method, args, uploads),
        }
    }

    /// Open server stream `stream` of `method`; a 0.1.0 hub has no
    /// streaming methods.
    pub fn open_stream(
        &self,
        store: &mut Store<CallState>,
        caller: &Caller,
        call: (&str, &str, &[String]),
        stream: &str,
    ) -> wasmtime::Result<Result<(), HubError>> {
        let (method, args, uploads) = call;
        match self {
            Self::V1(_) => Ok(Err(HubError::Failed(format!(
                "The client attempted to invoke the non-streaming '{method}' method with a streaming invocation."
            )))),
            Self::V2(hub) => hub
                .hubhost_hub_hub()
                .call_open_stream(store, caller, method, args, uploads, stream),
        }
    }

    pub fn on_connected(
        &self,
        store: &mut Store<CallState>,
        caller: &Caller,
    ) -> wasmtime::Result<Result<(), HubError>> {
        match self {
            Self::V1(hub) => hub.hubhost_hub_hub().call_on_connected(store, caller),
            Self::V2(hub) => hub.hubhost_hub_hub().call_on_connected(store, caller),
        }
    }

    pub fn on_disconnected(
        &self,
        store: &mut Store<CallState>,
        caller: &Caller,
        error: Option<&str>,
    ) -> wasmtime::Result<()> {
        match self {
            Self::V1(hub) => hub
                .hubhost_hub_hub()
                .call_on_disconnected(store, caller, error),
            Self::V2(hub) => hub
                .hubhost_hub_hub()
                .call_on_disconnected(store, caller, error),
        }
    }
}
