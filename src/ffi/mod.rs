//! The C ABI. Nothing here knows a protocol; it adapts [`crate::Client`] to C conventions.
//!
//! One file per C type (`config`, `client`, `event`, `batch`), plus the boundary every export
//! runs inside (`boundary`), the callback dispatcher thread (`dispatch`) and the readiness
//! descriptor (`readiness`). The conventions are written in the header preamble
//! (`cbindgen.toml`) and each function's doc comment.

#![allow(non_camel_case_types)]
// Every export checks its pointers before use; the safety contract is the C documentation.
#![allow(clippy::missing_safety_doc)]

// `TETHER_<STATUS>` and `TETHER_EVENT_<KIND>`, generated from the Rust enums by
// `cargo xtask header`. First, as cbindgen emits constants in module order.
mod consts;

// Declaration order is the header's order.
mod batch;
mod boundary;
mod client;
mod config;
mod dispatch;
mod event;
mod readiness;
mod settings;

pub use batch::*;
pub use client::*;
pub use config::*;
pub use consts::*;
pub use dispatch::{tether_destroy_cb, tether_event_cb};
pub use event::*;
pub use settings::*;

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

    /// Every export runs inside the panic boundary: the number of `extern "C" fn` items in
    /// this module equals the number of boundary calls, and the header declares them all.
    #[test]
    fn every_export_is_inside_the_boundary() {
        let files = [
            include_str!("batch.rs"),
            include_str!("client.rs"),
            include_str!("config.rs"),
            include_str!("event.rs"),
            include_str!("settings.rs"),
        ];
        let mut exports = Vec::new();
        let mut boundaries = 0;
        for f in files {
            for (i, line) in f.lines().enumerate() {
                if let Some(rest) = line.split("extern \"C\" fn ").nth(1) {
                    if line.trim_start().starts_with("pub ") {
                        let name = rest.split('(').next().unwrap().to_owned();
                        // The first statement of the body is the boundary.
                        let body: String = f
                            .lines()
                            .skip(i)
                            .skip_while(|l| !l.ends_with('{'))
                            .skip(1)
                            .take(2)
                            .collect();
                        assert!(
                            body.contains("boundary("),
                            "{name} does not start with a boundary call"
                        );
                        exports.push(name);
                    }
                }
                boundaries += line.matches("boundary(").count()
                    - line.matches("fn boundary(").count()
                    - line.matches("fn client_boundary(").count();
            }
        }
        assert_eq!(exports.len(), boundaries, "exports vs boundary uses");
        let header = include_str!("../../include/tether.h");
        for name in &exports {
            assert!(
                header.contains(&format!(" {name}(")) || header.contains(&format!("*{name}(")),
                "{name} missing from include/tether.h"
            );
        }
        let declared = header
            .lines()
            .filter(|l| !l.starts_with([' ', '#', '/', '*', '}']) && !l.starts_with("typedef"))
            .filter(|l| l.contains("tether_") && l.contains('('))
            .count();
        assert_eq!(declared, exports.len(), "header functions vs exports");
    }
}
