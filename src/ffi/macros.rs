//! `ffi_fn!`, the only way an export is written.
//!
//! Each arm emits `#[no_mangle] pub unsafe extern "C" fn` with the body already inside a
//! boundary, so an export that runs outside the boundary cannot be written with it. The
//! boundary is named by the keyword in front of `fn`; the fallback after `?=` is a
//! `Fn(Status) -> T` giving the return value when the body cannot run (panic, fork, and for
//! `client` a NULL or poisoned handle):
//!
//! - `fn`: [`boundary`](super::boundary::boundary): panics caught, nothing works after fork.
//! - `client fn`: [`handle_boundary`](super::boundary::handle_boundary) on the first
//!   argument, lent to the body as `|h|`: NULL is `ErrNull`, a poisoned client `ErrPanic`, and
//!   a panic poisons the client.
//! - `pure fn`: [`pure_boundary`](super::boundary::pure_boundary), for functions that touch no
//!   shared state and so keep working in a forked child.
//!
//! Only doc attributes are accepted: they become the C documentation.

macro_rules! ffi_fn {
    (
        $(#[doc = $doc:expr])*
        fn $name:ident($($arg:ident: $arg_ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
        ?= $fallback:expr
    ) => {
        $(#[doc = $doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $arg_ty),*) $(-> $ret)? {
            $crate::ffi::boundary::boundary($fallback, move || $body)
        }
    };
    (
        $(#[doc = $doc:expr])*
        client fn $name:ident(
            $c:ident: $c_ty:ty $(, $arg:ident: $arg_ty:ty)* $(,)?
        ) $(-> $ret:ty)? |$h:ident| $body:block
        ?= $fallback:expr
    ) => {
        $(#[doc = $doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($c: $c_ty $(, $arg: $arg_ty)*) $(-> $ret)? {
            $crate::ffi::boundary::handle_boundary(
                $c,
                $fallback,
                move |$h: &$crate::ffi::tether_client| $body,
            )
        }
    };
    (
        $(#[doc = $doc:expr])*
        pure fn $name:ident($($arg:ident: $arg_ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
        ?= $fallback:expr
    ) => {
        $(#[doc = $doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $arg_ty),*) $(-> $ret)? {
            $crate::ffi::boundary::pure_boundary($fallback, move || $body)
        }
    };
}
