//! The library's version, for detecting a header that does not match the loaded library.

use std::ffi::c_char;

ffi_fn! {
    /// The library version, e.g. "0.1.0" (static, never freed). Compare with
    /// `TETHER_VERSION_STRING` to detect a header/library mismatch.
    pure fn tether_version() -> *const c_char {
        VERSION.as_ptr().cast()
    } ?= |_| VERSION.as_ptr().cast()
}

ffi_fn! {
    /// The library version as `(MAJOR << 16) | (MINOR << 8) | PATCH`, the same encoding as
    /// `TETHER_VERSION_NUMBER`. Before 1.0 a different MAJOR.MINOR means an incompatible ABI.
    pure fn tether_version_number() -> u32 {
        version_number()
    } ?= |_| version_number()
}

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

fn version_number() -> u32 {
    let p = |s: &str| s.parse::<u32>().unwrap_or(0);
    (p(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
        | (p(env!("CARGO_PKG_VERSION_MINOR")) << 8)
        | p(env!("CARGO_PKG_VERSION_PATCH"))
}
