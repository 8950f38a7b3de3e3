//! Sequences of C API calls (the include/tether.h contract): the fuzzer's bytes
//! are an op list run against one config slot and one client slot, with NULL pointers, bad
//! strings and out-of-range values mixed in. Only sequences the contract allows are generated
//! (no use after free, no double free); the documented misuse (NULLs, calls in the wrong state)
//! must return the documented error status. Everything is freed at the end so LeakSanitizer
//! sees any leak. `connect` goes to a closed loopback port, so sessions really start and fail.
#![no_main]

use std::ffi::{c_char, CString};
use std::ptr;

use libfuzzer_sys::fuzz_target;
use tether::internals::ffi::*;

const OK: i32 = 0;
const TIMEOUT: i32 = 1;
const CLOSED: i32 = 2;
const ERR_NULL: i32 = -1;

/// A NUL-terminated string from fuzzer bytes (interior NULs end it early).
fn cstr(b: &[u8]) -> CString {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    CString::new(&b[..end]).unwrap()
}

struct Ops<'a>(&'a [u8]);

impl Ops<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn bytes(&mut self) -> &[u8] {
        let n = usize::from(self.byte().unwrap_or(0) % 32).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ops = Ops(data);
    let mut cfg: *mut tether_config = ptr::null_mut();
    let mut client: *mut tether_client = ptr::null_mut();
    let mut steps = 0;
    unsafe {
        while let Some(op) = ops.byte() {
            steps += 1;
            if steps > 64 {
                break;
            }
            match op % 16 {
                0 => {
                    if cfg.is_null() {
                        assert_eq!(tether_config_new(&mut cfg), OK);
                    }
                }
                1 => {
                    let s = ops.bytes();
                    let url = if s.first() == Some(&b'!') {
                        // A real, closed port: connect attempts fail fast with ECONNREFUSED.
                        c"http://127.0.0.1:1".to_owned()
                    } else {
                        cstr(s)
                    };
                    let st = tether_config_set_url(cfg, url.as_ptr());
                    if cfg.is_null() {
                        assert_eq!(st, ERR_NULL);
                    }
                }
                2 => {
                    let st = tether_config_set_url(cfg, ptr::null());
                    assert_eq!(st, ERR_NULL);
                }
                3 => {
                    let t = cstr(ops.bytes());
                    let st = tether_config_set_token(cfg, t.as_ptr());
                    if cfg.is_null() {
                        assert_eq!(st, ERR_NULL);
                    }
                }
                4 => {
                    let p = u32::from(ops.byte().unwrap_or(0) % 4);
                    let st = tether_config_set_protocol(cfg, p);
                    if !cfg.is_null() {
                        assert_eq!(st == OK, p == 1 || p == 2);
                    }
                }
                5 => {
                    let n = usize::from(ops.byte().unwrap_or(0)) << (ops.byte().unwrap_or(0) % 40);
                    tether_config_set_max_message_bytes(cfg, n);
                    let q = usize::from(ops.byte().unwrap_or(0));
                    tether_config_set_queue_capacity(cfg, q);
                }
                6 => {
                    let k = cstr(ops.bytes());
                    let v = cstr(ops.bytes());
                    tether_config_add_header(cfg, k.as_ptr(), v.as_ptr());
                }
                7 => {
                    let r = cstr(ops.bytes());
                    let last = -i64::from(ops.byte().unwrap_or(0));
                    tether_config_set_resume_state(cfg, r.as_ptr(), last);
                }
                8 => {
                    if client.is_null() {
                        let st = tether_client_new(cfg, &mut client);
                        if cfg.is_null() {
                            assert_eq!(st, ERR_NULL);
                        }
                        assert_eq!(st == OK, !client.is_null());
                    }
                }
                9 => {
                    let st = tether_client_connect(client);
                    if client.is_null() {
                        assert_eq!(st, ERR_NULL);
                    }
                }
                10 => {
                    let cmd = cstr(ops.bytes());
                    let body = ops.bytes().to_vec();
                    let mut id = 0i64;
                    let cmd_ptr: *const c_char = if cmd.as_bytes().is_empty() {
                        ptr::null()
                    } else {
                        cmd.as_ptr()
                    };
                    let st =
                        tether_client_request(client, cmd_ptr, body.as_ptr(), body.len(), &mut id);
                    if client.is_null() || cmd_ptr.is_null() {
                        assert_eq!(st, ERR_NULL);
                    }
                    if st == OK {
                        assert!(id > 0);
                        tether_client_cancel(client, id);
                    }
                }
                11 => {
                    let id = i64::from(ops.byte().unwrap_or(0)) - 8;
                    tether_client_cancel(client, id);
                }
                12 => {
                    let mut ev: *mut tether_event = ptr::null_mut();
                    let st = tether_client_poll(client, 0, &mut ev);
                    if client.is_null() {
                        assert_eq!(st, ERR_NULL);
                    }
                    assert_eq!(st == OK, !ev.is_null());
                    assert!(st == OK || st == TIMEOUT || st == CLOSED || st < 0);
                    tether_event_free(ev);
                }
                13 => {
                    tether_client_close(client);
                }
                14 => {
                    tether_config_free(cfg);
                    cfg = ptr::null_mut();
                }
                _ => {
                    tether_client_free(client);
                    client = ptr::null_mut();
                }
            }
        }
        tether_client_free(client);
        tether_config_free(cfg);
    }
});
