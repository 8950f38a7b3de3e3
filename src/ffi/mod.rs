//! The C ABI. Nothing here knows a protocol; it adapts [`crate::Client`] to C conventions.
//!
//! One file per C type (`config`, `client`, `event`, `batch`, `settings`) and for the status
//! and version functions (`status`, `version`), plus the boundary every export runs inside
//! (`boundary`, entered only through the `ffi_fn!` macro in `macros`), the constants generated
//! from the Rust enums (`consts`), the callback dispatcher thread (`dispatch`) and the
//! readiness descriptor (`readiness`). The conventions are written in the header preamble
//! (`cbindgen.toml`) and each function's doc comment.

#![allow(non_camel_case_types)]
// Every export checks its pointers before use; the safety contract is the C documentation.
#![allow(clippy::missing_safety_doc)]

#[macro_use]
mod macros;

// `TETHER_<STATUS>` and `TETHER_EVENT_<KIND>`, generated from the Rust enums by
// `cargo xtask header`. First, as cbindgen emits constants in module order.
mod consts;

// Declaration order is the header's order; rustfmt sorts `mod` lines only within a group, so
// the groups below keep status and version between the event and settings functions.
mod batch;
mod boundary;
mod client;
mod config;
mod dispatch;
mod event;

mod status;
mod version;

mod observe;

mod readiness;
mod settings;
mod store;

pub use batch::*;
pub use client::*;
pub use config::*;
pub use consts::*;
pub use dispatch::{tether_destroy_cb, tether_event_cb};
pub use event::*;
pub use observe::*;
pub use settings::*;
pub use status::*;
pub use store::*;
pub use version::*;

/// Result of a fallible call: `TETHER_OK` (0), a positive informational value, or a negative
/// `TETHER_ERR_*`.
pub type tether_status = i32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::status::Status;

    #[test]
    fn generated_constants_match_the_enums() {
        assert_eq!(TETHER_OK, Status::Ok.code());
        assert_eq!(TETHER_ERR_INVALID_UTF8, Status::ErrInvalidUtf8.code());
        assert_eq!(TETHER_ERR_KEY_REVOKED, Status::ErrKeyRevoked.code());
        assert_eq!(TETHER_EVENT_CONNECTING, EventKind::Connecting as u32);
        assert_eq!(TETHER_EVENT_CLOSED, EventKind::Closed as u32);
        assert_eq!(TETHER_EVENT_SEND_READY, EventKind::SendReady as u32);
        assert_eq!(TETHER_EVENT_UNSENT, EventKind::Unsent as u32);
        let header = include_str!("../../include/tether.h");
        for s in Status::ALL {
            let n = header
                .lines()
                .filter(|l| l.starts_with("#define TETHER_"))
                .filter(|l| {
                    l.ends_with(&format!(" {}", s.code()))
                        || l.ends_with(&format!(" ({})", s.code()))
                })
                .count();
            assert!(n >= 1, "no #define for status {s:?} ({})", s.code());
        }
    }
}
