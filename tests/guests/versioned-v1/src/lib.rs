//! Version 1 of the hot-swap tests' hub (see `../versioned.rs`).

const VERSION: &str = "v1";

include!("../../versioned.rs");
