//! Version 2 of the hot-swap tests' hub (see `../versioned.rs`).

const VERSION: &str = "v2";

include!("../../versioned.rs");
