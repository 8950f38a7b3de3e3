//! `tether_store`: the native gomuks store attached to a client (docs/store.md).

use std::os::raw::c_char;

use crate::status::{Error, Status};
use crate::store::Store;

use super::boundary::{code, fail, free_handle, out_arg, status_of, str_arg};
use super::client::{copy_c_string, tether_client};
use super::tether_status;

/// A store attached to one gomuks client: room list, timelines, state, receipts and local
/// echo, kept from the client's events. Create with `tether_store_new`, free with
/// `tether_store_free`. Every function may be called from any thread, at the same time,
/// except `tether_store_free`, which must not race any other call on the store. The actions
/// write their request id to `out_request_id`, which must not be NULL (`TETHER_ERR_NULL`,
/// nothing sent). The store may outlive its client (reads keep working, actions fail with
/// `TETHER_ERR_STATE`).
pub struct tether_store {
    store: Store,
}

/// The store behind a handle, or `ErrNull`.
fn store<'a>(s: *const tether_store) -> Result<&'a Store, Error> {
    // SAFETY: the caller passes a live store or NULL.
    unsafe { s.as_ref() }
        .map(|s| &s.store)
        .ok_or_else(|| Error::new(Status::ErrNull, "store is NULL"))
}

/// An optional NUL-terminated argument: NULL reads as empty.
fn opt_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        Ok("")
    } else {
        str_arg(p, what)
    }
}

/// Runs a store action and writes its request id; the out-pointer is checked first, so a
/// NULL one sends nothing (an id the app never saw would get a RESPONSE nobody expects).
fn put_id(out: *mut i64, action: impl FnOnce() -> Result<i64, Error>) -> tether_status {
    match out_arg(out, "out_request_id").and_then(|o| action().map(|id| *o = id)) {
        Ok(()) => Status::Ok.code(),
        Err(e) => fail(e),
    }
}

ffi_fn! {
    /// Attaches a new store to `client`, which must be a gomuks client (websocket or
    /// in-process) on which `tether_client_connect` was not called yet, so the store sees
    /// every event. From then on the client's event stream carries `TETHER_EVENT_STORE`
    /// events: each follows the MESSAGE (or CONNECTED, DISCONNECTED with a retry) it reflects and precedes the RESPONSE of a store
    /// action, and a read made after taking any event sees that event applied.
    /// `options_json` may be NULL or JSON: `{"evict_after_ms": N, "request_timeout_ms": N}`
    /// (how long a room that is not open keeps its timeline, default 30 minutes; the timeout of
    /// the store's actions, default the client's request timeout). `*out` is owned by the caller (free with
    /// `tether_store_free`). `TETHER_ERR_STATE` after connect or close, `TETHER_ERR_IN_USE` if
    /// a store was attached to the client before (one per client, also once freed), `TETHER_ERR_UNSUPPORTED` for rwws, `TETHER_ERR_CONFIG` for a websocket client
    /// with `last_server_ts` (the store starts empty; that first sync would hold only what
    /// changed since then) or with a resume state from `tether_config_set_resume_state` (a
    /// resume replays only what was missed; make the client that keeps a store without it),
    /// `TETHER_ERR_INVALID_ARGUMENT`
    /// for bad options, `TETHER_ERR_NULL` for a NULL client or `out`. Any thread.
    client fn tether_store_new(
        c: *mut tether_client,
        options_json: *const c_char,
        out: *mut *mut tether_store,
    ) -> tether_status |h| {
        let r = opt_str(options_json, "options_json").and_then(|opts| {
            let out = out_arg(out, "out")?;
            let store = Store::attach(h.client(), opts.as_bytes())?;
            *out = Box::into_raw(Box::new(tether_store { store }));
            Ok(())
        });
        status_of(r)
    } ?= code
}

ffi_fn! {
    /// Frees the store and detaches it: the client's stream carries no more STORE events.
    /// NULL is fine; never twice, and never while another thread is inside a call on it.
    fn tether_store_free(s: *mut tether_store) {
        // SAFETY: the caller passes a store from tether_store_new, once, or NULL.
        unsafe { free_handle(s, |_| ()) }
    } ?= |_| ()
}

ffi_fn! {
    /// Reads one snapshot as JSON. `what` is one of `room_list`, `room`, `timeline`, `event`,
    /// `state`, `members`, `receipts`, `typing`, `account_data`, `spaces`, `session`;
    /// `args_json` (NULL means none) its arguments, as docs/store.md lists them (for example
    /// `{"room_id": "!a:b", "limit": 50}` for `timeline`). The JSON is copied NUL-terminated
    /// into `buf` (capacity `cap`); `*out_len` (may be NULL) receives its length without the
    /// NUL, also with `TETHER_ERR_BUFFER_TOO_SMALL`, so `buf = NULL, cap = 0` asks for the
    /// size (a NULL `buf` with a nonzero `cap` is `TETHER_ERR_NULL`, nothing written). The
    /// store may change between two calls: a second call may need more room, so
    /// loop while it says `TETHER_ERR_BUFFER_TOO_SMALL`. `room` of a room the store does not
    /// hold reads `null`, and so do an unknown event (`event`) and an unknown state key
    /// (`state` with a key); a room the store does not know is `TETHER_ERR_INVALID_ARGUMENT`
    /// in every other read, as are an unknown `what` and bad arguments. Any thread.
    fn tether_store_read(
        s: *const tether_store,
        what: *const c_char,
        args_json: *const c_char,
        buf: *mut c_char,
        cap: usize,
        out_len: *mut usize,
    ) -> tether_status {
        let r = (|| {
            let store = store(s)?;
            let what = str_arg(what, "what")?;
            let args = opt_str(args_json, "args_json")?;
            let json = store.read(what, args.as_bytes())?;
            let json = String::from_utf8(json).expect("serde_json writes UTF-8");
            // SAFETY: the caller passes `cap` writable bytes at `buf` (or NULL) and a
            // writable length pointer or NULL.
            unsafe { copy_c_string("snapshot", &json, buf, cap, out_len) }
        })();
        status_of(r)
    } ?= code
}

ffi_fn! {
    /// Loads older history of the room (`paginate`): the RESPONSE with `*out_request_id`
    /// follows the STORE event that reports the rows as `prepended` (also the first page,
    /// into an empty timeline; rows newer than the newest cached one, read after a live row
    /// the sync has not brought yet, as `appended`). `limit` 0 picks 50 (100 once 100 rows
    /// are cached). One pagination per room at a time: `TETHER_ERR_IN_USE` while one runs.
    /// `TETHER_ERR_INVALID_ARGUMENT` for a room the store does not know, `TETHER_ERR_STATE`
    /// once the client is closed or, over the websocket, while the backend says it is not
    /// logged in, `TETHER_ERR_NULL` for NULL. Any thread.
    fn tether_store_paginate(
        s: *const tether_store,
        room_id: *const c_char,
        limit: u32,
        out_request_id: *mut i64,
    ) -> tether_status {
        put_id(out_request_id, || {
            store(s)?.paginate(str_arg(room_id, "room_id")?, limit)
        })
    } ?= code
}

ffi_fn! {
    /// Loads the room's whole state (`get_room_state`), with the member list when `members`
    /// is true. The RESPONSE follows the STORE event. Errors as `tether_store_paginate`.
    fn tether_store_load_state(
        s: *const tether_store,
        room_id: *const c_char,
        members: bool,
        out_request_id: *mut i64,
    ) -> tether_status {
        put_id(out_request_id, || {
            store(s)?.load_state(str_arg(room_id, "room_id")?, members)
        })
    } ?= code
}

ffi_fn! {
    /// Sends a message with local echo: `params_json` is `send_message`'s parameters
    /// (`room_id`, `text`, ...). The echo joins the room's pending tail (a STORE event) before
    /// the RESPONSE; `send_complete` later updates it, and the synced event replaces it in the
    /// timeline. Timeline items of own sends carry `send_status` (`sending`, `sent`, `failed`;
    /// gomuks keeps `send_error: "not sent"` even on a sent event, any other text is the
    /// failure). Errors as `tether_store_paginate`, and
    /// `TETHER_ERR_INVALID_ARGUMENT` for params without a `room_id`.
    fn tether_store_send_message(
        s: *const tether_store,
        params_json: *const c_char,
        out_request_id: *mut i64,
    ) -> tether_status {
        put_id(out_request_id, || {
            store(s)?.send_message(str_arg(params_json, "params_json")?.as_bytes())
        })
    } ?= code
}

ffi_fn! {
    /// Sends a failed message again (`resend_event`): `rowid` is the echo's `rowid`, a
    /// timeline read's `pending` item with `send_status` `failed`. The echo reads as
    /// `sending` at once (a STORE event with cause `resend`, queued before this returns, for a
    /// watched or open room);
    /// `send_complete` then updates it as after `tether_store_send_message`. If the backend
    /// refuses, the echo is failed again in the STORE event before the RESPONSE.
    /// `TETHER_ERR_INVALID_ARGUMENT` unless `rowid` is a failed send in the room's pending
    /// tail; other errors as `tether_store_paginate`.
    fn tether_store_resend(
        s: *const tether_store,
        room_id: *const c_char,
        rowid: i64,
        out_request_id: *mut i64,
    ) -> tether_status {
        put_id(out_request_id, || store(s)?.resend(str_arg(room_id, "room_id")?, rowid))
    } ?= code
}

ffi_fn! {
    /// Drops a failed send from the room's pending tail (the backend keeps its copy), and
    /// queues the STORE event that reports it (cause `discard`) before returning: for a watched
    /// or open room, and not once the client's CLOSED was queued (the change then shows in
    /// reads only).
    /// `TETHER_ERR_INVALID_ARGUMENT` unless `rowid` is a failed send in the room's pending
    /// tail (an unknown room included), `TETHER_ERR_NULL` for a NULL store or room id. Works
    /// on a store whose client is closed. Any thread.
    fn tether_store_discard(
        s: *const tether_store,
        room_id: *const c_char,
        rowid: i64,
    ) -> tether_status {
        status_of(store(s).and_then(|st| st.discard(str_arg(room_id, "room_id")?, rowid)))
    } ?= code
}

ffi_fn! {
    /// Marks the room read up to the newest event the store holds (`mark_read`);
    /// `receipt_type` NULL means `m.read`. The unread counts change with the backend's next
    /// sync. `TETHER_ERR_INVALID_ARGUMENT` when the store holds no event of the room; other
    /// errors as `tether_store_paginate`.
    fn tether_store_mark_read(
        s: *const tether_store,
        room_id: *const c_char,
        receipt_type: *const c_char,
        out_request_id: *mut i64,
    ) -> tether_status {
        put_id(out_request_id, || {
            store(s)?.mark_read(str_arg(room_id, "room_id")?, opt_str(receipt_type, "receipt_type")?)
        })
    } ?= code
}

ffi_fn! {
    /// Fetches the member events of the users in `user_ids_json` (a JSON array of user ids)
    /// in one request (`get_specific_room_state`), skipping those the store holds.
    /// `*out_request_id` is 0 when none is missing: nothing is sent and no RESPONSE follows.
    /// Errors as `tether_store_paginate`.
    fn tether_store_request_members(
        s: *const tether_store,
        room_id: *const c_char,
        user_ids_json: *const c_char,
        out_request_id: *mut i64,
    ) -> tether_status {
        put_id(out_request_id, || {
            // Every pointer is checked before any argument is parsed: a NULL is ERR_NULL.
            let (store, room_id) = (store(s)?, str_arg(room_id, "room_id")?);
            let users: Vec<String> = serde_json::from_str(str_arg(user_ids_json, "user_ids_json")?)
                .map_err(|e| Error::new(Status::ErrInvalidArgument, format!("user_ids_json: {e}")))?;
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            store.request_members(room_id, &users)
        })
    } ?= code
}

ffi_fn! {
    /// The app shows (`open` true) or no longer shows the room. An open room keeps its
    /// timeline; a closed one loses it after the eviction delay (`evict_after_ms`). An open
    /// room is watched whatever the watch list (`tether_store_watch`) says; closing it
    /// leaves the list as it was. `TETHER_ERR_INVALID_ARGUMENT`
    /// for an unknown room, `TETHER_ERR_NULL` for NULL. Any thread.
    fn tether_store_set_open(
        s: *const tether_store,
        room_id: *const c_char,
        open: bool,
    ) -> tether_status {
        status_of(store(s).and_then(|st| {
            let id = str_arg(room_id, "room_id")?;
            if open { st.open_room(id) } else { st.close_room(id) }
        }))
    } ?= code
}

ffi_fn! {
    /// Limits the detail of STORE events to watched rooms; the others report only `meta`,
    /// `removed`, `notifications` and `dismiss_notifications`, which is all a room list and
    /// the OS notifications need. `room_id` NULL with `on` true watches
    /// every room (the default); NULL with false watches only the open rooms; a room id
    /// adds it to or removes it from the watch list (`TETHER_ERR_INVALID_ARGUMENT` for a room
    /// the store does not know). Open rooms are always watched. A room joined later is
    /// watched after NULL with true, not after NULL with false; a room left is forgotten
    /// with its watch setting. `TETHER_ERR_NULL` for a NULL store.
    fn tether_store_watch(
        s: *const tether_store,
        room_id: *const c_char,
        on: bool,
    ) -> tether_status {
        status_of(store(s).and_then(|st| {
            let id = if room_id.is_null() { None } else { Some(str_arg(room_id, "room_id")?) };
            st.watch(id, on)
        }))
    } ?= code
}

ffi_fn! {
    /// Evicts now the timelines of rooms that are not open and have been idle for the
    /// eviction delay (this also happens by itself about once a minute while events
    /// arrive), and queues the STORE event that reports it (cause `gc`). `*out_evicted` (may
    /// be NULL) receives how many rooms lost their timeline. `TETHER_ERR_NULL` for a NULL
    /// store.
    fn tether_store_collect_garbage(
        s: *const tether_store,
        out_evicted: *mut usize,
    ) -> tether_status {
        match store(s) {
            Ok(st) => {
                let n = st.collect_garbage();
                // SAFETY: the caller passes a writable pointer or NULL.
                if let Some(o) = unsafe { out_evicted.as_mut() } {
                    *o = n;
                }
                Status::Ok.code()
            }
            Err(e) => fail(e),
        }
    } ?= code
}
