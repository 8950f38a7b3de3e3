//! Status descriptions and the last error message. Both work after fork: a child that can no
//! longer use a client can still say why.

use std::ffi::c_char;

use crate::status::Status;

use super::boundary::last_error_ptr;
use super::tether_status;

ffi_fn! {
    /// A static, NUL-terminated English description of a status; "unknown status" for values the
    /// library does not define. Never NULL, never freed. Any thread.
    pure fn tether_status_str(s: tether_status) -> *const c_char {
        match Status::from_code(s) {
            Some(st) => st.description_nul().as_ptr().cast(),
            None => c"unknown status".as_ptr(),
        }
    } ?= |st| st.description_nul().as_ptr().cast()
}

ffi_fn! {
    /// The message of the most recent failed call on the calling thread ("" if none), naming
    /// the argument or the reason (e.g. why a configuration is invalid). Borrowed: valid until
    /// the next failing tether call on this thread. Never NULL. Credentials never appear in it.
    pure fn tether_last_error() -> *const c_char {
        last_error_ptr()
    } ?= |_| last_error_ptr()
}
