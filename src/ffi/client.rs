//! `tether_client`: lifecycle, requests, and the two ways of consuming events.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::Client;
use crate::lock;
use crate::queue::{Batch, HandOver, Pop};
use crate::status::{Error, Status};

use super::boundary::{
    bytes_arg, code, fail, free_handle, handle_boundary, install_fork_guard, out_arg, status_of,
    str_arg, timeout_arg, Handle,
};
use super::config::tether_config;
use super::dispatch::{tether_destroy_cb, tether_event_cb, AppCtx, Dispatcher};
use super::event::tether_event;
use super::readiness::Readiness;
use super::tether_status;

const MODE_UNSET: u8 = 0;
const MODE_POLL: u8 = 1;
const MODE_CALLBACK: u8 = 2;

/// A connection to one backend, kept alive and resumed across drops. Create with
/// `tether_client_new`, free with `tether_client_free`.
pub struct tether_client {
    client: Client,
    poisoned: AtomicBool,
    mode: AtomicU8,
    readiness: Mutex<Option<Arc<Readiness>>>,
    dispatcher: Mutex<Option<Dispatcher>>,
}

impl Handle for tether_client {
    const NAME: &'static str = "client";

    // Only a panic inside a call on this handle: a panic of the session task leaves the
    // handle whole, and its last events (DISCONNECTED with ERR_PANIC, CLOSED) must still be
    // taken in poll mode; calls that would send fail with ERR_PANIC in the client.
    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }
}

impl tether_client {
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Fixes the delivery mode on first use; the other mode is `ErrWrongMode` from then on.
    fn claim(&self, want: u8) -> Result<(), Error> {
        match self
            .mode
            .compare_exchange(MODE_UNSET, want, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(m) if m == want => Ok(()),
            Err(_) => Err(Error::new(
                Status::ErrWrongMode,
                if want == MODE_POLL {
                    "this client delivers events to a callback; poll is not available"
                } else {
                    "this client is in poll mode; a callback cannot be set"
                },
            )),
        }
    }
}

ffi_fn! {
    /// Creates a client from `cfg` (copied; the config may be freed right after). Nothing happens
    /// on the network until `tether_client_connect`. `*out` receives a client owned by the caller
    /// (free with `tether_client_free`). `TETHER_ERR_CONFIG` with the reason in
    /// `tether_last_error()` if the configuration is invalid; `TETHER_ERR_NULL` for NULL. Any
    /// thread.
    fn tether_client_new(cfg: *const tether_config, out: *mut *mut tether_client) -> tether_status {
        status_of(client_new(cfg, out))
    } ?= code
}

fn client_new(cfg: *const tether_config, out: *mut *mut tether_client) -> Result<(), Error> {
    // SAFETY: the caller passes a live config or NULL.
    let cfg =
        unsafe { cfg.as_ref() }.ok_or_else(|| Error::new(Status::ErrNull, "config is NULL"))?;
    let out = out_arg(out, "out")?;
    let config = cfg.builder.clone().build()?;
    install_fork_guard();
    *out = Box::into_raw(Box::new(tether_client {
        client: Client::new(config),
        poisoned: AtomicBool::new(false),
        mode: AtomicU8::new(MODE_UNSET),
        readiness: Mutex::new(None),
        dispatcher: Mutex::new(None),
    }));
    Ok(())
}

ffi_fn! {
    /// Starts connecting in the background and returns at once; progress arrives as events
    /// (CONNECTING, CONNECTED, MESSAGE..., DISCONNECTED with the reason and whether a retry
    /// follows). `TETHER_ERR_STATE` if already connected once or closed. Any thread.
    client fn tether_client_connect(c: *mut tether_client) -> tether_status |h| {
        status_of(h.client.connect())
    } ?= code
}

ffi_fn! {
    /// Sends a request: `command` (NUL-terminated UTF-8) with `data` as JSON (`len` bytes; NULL
    /// with `len` 0 means `{}`), both copied. Returns at once; the reply arrives as a RESPONSE
    /// event carrying the id written to `*out_request_id` (may be NULL). Requests made while
    /// disconnected are sent once connected. The config's request timeout applies, counted
    /// from this call; before `tether_client_connect` nothing runs the timers, so a request
    /// made then waits for it (one whose timeout passed meanwhile ends at once). gomuks only:
    /// `TETHER_ERR_STATE` for rwws clients (use `tether_client_send_packet`).
    /// `TETHER_ERR_INVALID_UTF8` if `data` is not JSON or `command` not UTF-8;
    /// `TETHER_ERR_INVALID_ARGUMENT` for an empty command, for `ping` (the library sends the
    /// pings, and their replies would move its acknowledgements), for `data` that is `null` (gomuks
    /// handlers dereference it: the backend would close the connection), and over the
    /// websocket for a request over the backend's 1 MiB limit for one message (it would close
    /// the connection, failing every request in flight);
    /// `TETHER_ERR_SEND_BUFFER_FULL` if it would pass `max_unsent_bytes` (nothing taken, no
    /// id written); `TETHER_ERR_STATE` after close, and over the websocket for a command
    /// that needs the account (`get_profile`, `send_message`, ...; README, "The bundled
    /// backend") while the backend's latest `client_state` says it is not logged in (its
    /// handler would panic and the backend close the connection; in-process such a request is
    /// answered `TETHER_ERR_STATE` as a RESPONSE). Any thread, including inside an event
    /// callback.
    client fn tether_client_request(
        c: *mut tether_client,
        command: *const c_char,
        data: *const u8,
        len: usize,
        out_request_id: *mut i64,
    ) -> tether_status |h| {
        status_of(request(h, command, data, len, None, out_request_id))
    } ?= code
}

ffi_fn! {
    /// `tether_client_request` with its own timeout in milliseconds (must be positive:
    /// `TETHER_ERR_INVALID_ARGUMENT` for 0); otherwise exactly as `tether_client_request`
    /// (`out_request_id` may be NULL; any thread, including inside an event callback).
    client fn tether_client_request_with_timeout(
        c: *mut tether_client,
        command: *const c_char,
        data: *const u8,
        len: usize,
        timeout_ms: u32,
        out_request_id: *mut i64,
    ) -> tether_status |h| {
        let t = Duration::from_millis(u64::from(timeout_ms));
        status_of(request(h, command, data, len, Some(t), out_request_id))
    } ?= code
}

fn request(
    h: &tether_client,
    command: *const c_char,
    data: *const u8,
    len: usize,
    timeout: Option<Duration>,
    out_request_id: *mut i64,
) -> Result<(), Error> {
    let command = str_arg(command, "command")?;
    let data = bytes_arg(data, len, "data")?;
    // After the pointers: a NULL command is ERR_NULL whatever the timeout.
    if timeout == Some(Duration::ZERO) {
        return Err(Error::new(
            Status::ErrInvalidArgument,
            "timeout must be positive",
        ));
    }
    let id = match timeout {
        Some(t) => h.client.request_with_timeout(command, data, t)?,
        None => h.client.request(command, data)?,
    };
    write_id(out_request_id, id);
    Ok(())
}

ffi_fn! {
    /// In-process clients: uploads media with progress. `params` (`params_len` bytes) is the
    /// JSON of gomuks's `upload_media` (`filename`, `encrypt`, `voice_message`, resize
    /// options, ...). With `bytes` non-NULL the `bytes_len` bytes are uploaded (copied before
    /// the call returns); with `bytes` NULL and `bytes_len` 0 the file named by `"path"` in the
    /// params is (NULL with a length is `TETHER_ERR_NULL`). Bytes and a `"path"`, or neither,
    /// is `TETHER_ERR_INVALID_ARGUMENT`.
    /// `timeout_ms` 0 means the configured request timeout. `*out_request_id` (optional)
    /// receives the id: PROGRESS events for it (`tether_event_progress`) come
    /// first, then one RESPONSE with the `m.room.message` content to send. Websocket clients:
    /// `TETHER_ERR_UNSUPPORTED` (use the backend's HTTP upload endpoint). The bytes count
    /// against `max_unsent_bytes` until the backend takes them (`TETHER_ERR_SEND_BUFFER_FULL`
    /// past it, nothing taken; one upload larger than it goes while nothing else waits). Any
    /// thread.
    client fn tether_client_upload_media(
        c: *mut tether_client,
        params: *const u8,
        params_len: usize,
        bytes: *const u8,
        bytes_len: usize,
        timeout_ms: u32,
        out_request_id: *mut i64,
    ) -> tether_status |h| {
        status_of((|| {
            let params = bytes_arg(params, params_len, "params")?;
            // NULL with a length is the usual (pointer, length) mistake, not a path upload.
            let bytes = if bytes.is_null() && bytes_len == 0 {
                None
            } else {
                Some(bytes_arg(bytes, bytes_len, "bytes")?)
            };
            let id = h.client.upload_media(params, bytes, optional_timeout(timeout_ms))?;
            write_id(out_request_id, id);
            Ok(())
        })())
    } ?= code
}

ffi_fn! {
    /// In-process clients: downloads media as a stream. `params` is the JSON of gomuks's
    /// `download_media` (`mxc`, `encrypted`, ...). `timeout_ms` 0 means the configured request
    /// timeout. `*out_request_id` (optional) receives the id: CHUNK events for it carry the
    /// file's bytes in order (for uncached, unencrypted media), then one RESPONSE carries the
    /// cached file's row and path. A backend library without streaming download (gomuks
    /// v0.2607.0 has none) answers with `TETHER_ERR_UNSUPPORTED` in the RESPONSE. Websocket
    /// clients: `TETHER_ERR_UNSUPPORTED` from this call. Any thread.
    client fn tether_client_download_media(
        c: *mut tether_client,
        params: *const u8,
        params_len: usize,
        timeout_ms: u32,
        out_request_id: *mut i64,
    ) -> tether_status |h| {
        status_of((|| {
            let params = bytes_arg(params, params_len, "params")?;
            let id = h.client.download_media(params, optional_timeout(timeout_ms))?;
            write_id(out_request_id, id);
            Ok(())
        })())
    } ?= code
}

/// A C timeout in milliseconds where 0 means "the configured one".
fn optional_timeout(ms: u32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
}

/// Writes a request id to an optional out-parameter.
fn write_id(out: *mut i64, id: i64) {
    // SAFETY: the caller passes a writable pointer or NULL.
    if let Some(o) = unsafe { out.as_mut() } {
        *o = id;
    }
}

ffi_fn! {
    /// Cancels request `request_id`: its RESPONSE arrives with `TETHER_ERR_CANCELLED` (unless the
    /// reply won the race), and the server is told if it has the request and the client is
    /// online (a request not written yet is dropped unsent; offline, nothing is sent; an
    /// in-process backend cannot be told, and its late answer is dropped).
    /// `TETHER_ERR_INVALID_ARGUMENT` for an id this client never issued (the ids of the
    /// library's own pings count as issued: cancelling one does nothing). After close:
    /// `TETHER_OK` while the client is closing (the request ends CANCELLED unless the close
    /// ended it first, with `TETHER_ERR_CLIENT_CLOSED`), `TETHER_ERR_STATE` once it has
    /// stopped, from the moment `tether_client_state` reads `TETHER_STATE_CLOSED` (its
    /// requests have all ended or are ending). Any thread.
    client fn tether_client_cancel(c: *mut tether_client, request_id: i64) -> tether_status |h| {
        status_of(h.client.cancel(request_id))
    } ?= code
}

ffi_fn! {
    /// rwws: sends one raw packet (`len` bytes, copied, one binary websocket message); queued while
    /// disconnected. The library already sends Ping (`00`) itself. `TETHER_ERR_STATE` for gomuks
    /// clients and after close; `TETHER_ERR_INVALID_ARGUMENT` for 0 bytes;
    /// `TETHER_ERR_SEND_BUFFER_FULL` if it would pass `max_unsent_bytes` (nothing taken). A
    /// packet the client ends without having written (a close while offline, a stop for good
    /// such as a 3001) comes back in a `TETHER_EVENT_UNSENT` event with its bytes, before
    /// CLOSED; once the state reads `TETHER_STATE_CLOSED`, `TETHER_ERR_STATE` and nothing is
    /// taken. Any thread.
    client fn tether_client_send_packet(
        c: *mut tether_client,
        bytes: *const u8,
        len: usize,
    ) -> tether_status |h| {
        status_of(bytes_arg(bytes, len, "bytes").and_then(|b| h.client.send_packet(b)))
    } ?= code
}

ffi_fn! {
    /// Takes the next event, waiting up to `timeout_ms` (0: do not wait; negative: wait until one
    /// arrives). Returns `TETHER_OK` with `*out` set to an event the caller frees with
    /// `tether_event_free`; `TETHER_TIMEOUT` if none arrived; `TETHER_CLOSED` once the CLOSED event
    /// has been taken (every later call too). Puts the client in poll mode
    /// (`TETHER_ERR_WRONG_MODE` if a callback is set). Any thread; concurrent pollers each get
    /// different events. The event owns what it carries and stays valid after
    /// `tether_client_free`.
    client fn tether_client_poll(
        c: *mut tether_client,
        timeout_ms: i32,
        out: *mut *mut tether_event,
    ) -> tether_status |h| {
        match poll(h, timeout_ms, out) {
            Ok(s) => s.code(),
            Err(e) => fail(e),
        }
    } ?= code
}

fn poll(h: &tether_client, timeout_ms: i32, out: *mut *mut tether_event) -> Result<Status, Error> {
    let out = out_arg(out, "out")?;
    h.claim(MODE_POLL)?;
    Ok(match h.client.poll(timeout_arg(timeout_ms)) {
        Pop::Event(ev) => {
            *out = Box::into_raw(Box::new(tether_event::wrap(ev)));
            Status::Ok
        }
        Pop::Timeout => Status::Timeout,
        Pop::Finished => Status::Closed,
    })
}

/// Puts the client in poll mode; `ErrWrongMode` in callback mode.
pub(crate) fn poll_mode(h: &tether_client) -> Result<(), Error> {
    h.claim(MODE_POLL)
}

/// Waits up to `timeout_ms` for one event (negative: until one arrives), then takes it and
/// whatever else is queued, up to `max` events, for as long as `fits` accepts the next one
/// (see [`EventQueue::pop_batch_held`](crate::queue::EventQueue::pop_batch_held)), with the
/// hand-over that counts them for the resume point once the app is done with them. Helper
/// of `tether_client_poll_batch`.
pub(crate) fn take_batch(
    h: &tether_client,
    timeout_ms: i32,
    max: usize,
    out: &mut Vec<crate::event::Event>,
    fits: impl FnMut(&crate::event::Event) -> bool,
) -> Result<(Batch, Option<HandOver>), Error> {
    poll_mode(h)?;
    Ok(h.client
        .queue()
        .pop_batch_held(timeout_arg(timeout_ms), max, out, fits))
}

ffi_fn! {
    /// A descriptor that is readable while events are queued (Linux: an eventfd; elsewhere a
    /// pipe), for select/poll/epoll/kqueue/asyncio/libuv. Wait on it, then call
    /// `tether_client_poll` with timeout 0 until `TETHER_TIMEOUT`, or `TETHER_CLOSED`: CLOSED was
    /// taken, the descriptor is not readable again, and the loop should stop waiting on it.
    /// Only wait for readability and
    /// never read or close it: the library resets it when the queue drains and closes it in
    /// `tether_client_free` (remove it from your poll set before). The same descriptor is returned
    /// on every call. Puts the client in poll mode. Returns -1 (reason in `tether_last_error()`)
    /// for NULL, in callback mode, for a client an internal panic poisoned, or if no
    /// descriptor could be created.
    client fn tether_client_event_fd(c: *const tether_client) -> c_int |h| {
        match event_fd(h) {
            Ok(fd) => fd,
            Err(e) => {
                fail(e);
                -1
            }
        }
    } ?= |_| -1
}

fn event_fd(h: &tether_client) -> Result<c_int, Error> {
    h.claim(MODE_POLL)?;
    let mut slot = lock(&h.readiness);
    if let Some(r) = &*slot {
        return Ok(r.fd());
    }
    let r = Arc::new(Readiness::new().map_err(|e| {
        Error::new(
            Status::ErrState,
            format!("cannot create the event descriptor: {e}"),
        )
    })?);
    let hook = r.clone();
    h.client
        .queue()
        .set_readiness_hook(Box::new(move |ready| hook.set(ready)));
    let fd = r.fd();
    *slot = Some(r);
    Ok(fd)
}

ffi_fn! {
    /// Delivers every event to `cb(ctx, ev)` on a dedicated dispatcher thread, one at a time and
    /// in order; `ev` is borrowed for the call (do not free it; copy what you keep). Events queued
    /// before this call are delivered too. `destroy(ctx)` (may be NULL) runs exactly once on that
    /// thread after the last callback: after the CLOSED event, or when the client is freed.
    /// Inside `cb` you may call `tether_client_request`, `_cancel`, `_close` and `_free` on this
    /// client; do not block for long, since events wait behind the callback. On failure nothing is
    /// started and `destroy(ctx)` runs at once, on the calling thread, before this returns: as
    /// for every function taking a `destroy`, it runs exactly once whatever the call returns,
    /// except `TETHER_ERR_FORKED` (nothing is called; `ctx` stays the app's).
    /// `TETHER_ERR_NULL` if `c` or `cb` is NULL; `TETHER_ERR_WRONG_MODE` after poll mode was
    /// used; `TETHER_ERR_STATE` if a callback is already set, or the client is being freed (a
    /// call from the running callback while another thread frees it); `TETHER_ERR_PANIC` for a
    /// client an internal panic poisoned.
    fn tether_client_set_event_callback(
        c: *mut tether_client,
        cb: tether_event_cb,
        ctx: *mut c_void,
        destroy: tether_destroy_cb,
    ) -> tether_status {
        // Owned before the client is looked at, so that a NULL or poisoned client gives the
        // context back too (the closure holding it is dropped unrun).
        let ctx = AppCtx::new(ctx, destroy);
        // A refused registration hands the context back, and destroy(ctx) runs only once the
        // call is done with the client: destroy may free it (or try again).
        let mut refused = None;
        let status = handle_boundary(c, code, |h| {
            status_of(set_callback(h, cb, ctx).map_err(|(e, ctx)| {
                refused = Some(ctx);
                e
            }))
        });
        drop(refused);
        status
    } ?= code
}

/// Starts the dispatcher; refused, gives `ctx` back with the reason.
fn set_callback(
    h: &tether_client,
    cb: tether_event_cb,
    ctx: AppCtx,
) -> Result<(), (Error, AppCtx)> {
    let Some(cb) = cb else {
        return Err((Error::new(Status::ErrNull, "callback is NULL"), ctx));
    };
    let mut slot = lock(&h.dispatcher);
    if slot.is_some() {
        let e = Error::new(Status::ErrState, "an event callback is already set");
        return Err((e, ctx));
    }
    // Free abandons the queue before it takes the dispatcher out of its slot to wait for it:
    // a callback registered from the running callback meanwhile would start a thread nothing
    // waits for, whose destroy(ctx) would run after free returned.
    if h.client.queue().is_abandoned() {
        let e = Error::new(Status::ErrState, "the client is being freed");
        return Err((e, ctx));
    }
    if let Err(e) = h.claim(MODE_CALLBACK) {
        return Err((e, ctx));
    }
    match Dispatcher::start(h.client.queue().clone(), cb, ctx) {
        Ok(d) => {
            *slot = Some(d);
            Ok(())
        }
        Err((e, ctx)) => {
            h.mode.store(MODE_UNSET, Ordering::Release);
            let e = Error::new(
                Status::ErrState,
                format!("cannot start the dispatcher thread: {e}"),
            );
            Err((e, ctx))
        }
    }
}

ffi_fn! {
    /// Closes gracefully for good and returns at once: if connected, the close frame is sent
    /// (gomuks: 1001, so the backend frees the events it kept for this client; not while paused
    /// or waiting to reconnect, when there is no connection: the backend keeps the events until
    /// its own expiry), pending requests complete with
    /// `TETHER_ERR_CLIENT_CLOSED` (unless their reply comes before the server's close reply,
    /// waited for up to 2 s), and CLOSED is the last event. To resume later from
    /// `tether_client_resume_state`, use `tether_client_close_keep_resume` instead.
    /// `TETHER_ERR_STATE` if the app already closed it (a client the server ended for good
    /// returns `TETHER_OK`: its CLOSED is queued, or about to be, and nothing more happens);
    /// `TETHER_ERR_NULL` for NULL. Any thread, including inside an event callback.
    client fn tether_client_close(c: *mut tether_client) -> tether_status |h| {
        status_of(h.client.close())
    } ?= code
}

ffi_fn! {
    /// Pauses in place (the app goes to the background, the OS suspends its sockets): the
    /// connection closes keeping the backend's resume entry (gomuks close code 1000) with a
    /// DISCONNECTED event (status `TETHER_OK`, no retry), and no reconnect happens until
    /// `tether_client_unpause`. Requests already sent get the replies that come before the
    /// server's close reply (waited for up to 2 s), the others end with
    /// `TETHER_ERR_DISCONNECTED`; requests made meanwhile wait for the connection (their
    /// timeouts still run). The same client and events go on afterwards; the events missed meanwhile
    /// arrive after unpausing, exactly once. Paused while connecting, the attempt ends with
    /// that same DISCONNECTED; paused while waiting to reconnect, there is no connection to
    /// close and no event: the state reads `TETHER_STATE_PAUSED` and no attempt follows.
    /// `TETHER_ERR_UNSUPPORTED` for an in-process client (there is no connection);
    /// `TETHER_ERR_STATE` if closed (by the app, or stopped for good: from the moment
    /// `tether_client_state` reads `TETHER_STATE_CLOSED`); `TETHER_ERR_NULL` for NULL. Any
    /// thread.
    client fn tether_client_pause(c: *mut tether_client) -> tether_status |h| {
        status_of(h.client.pause())
    } ?= code
}

ffi_fn! {
    /// Ends a pause: connects at once and resumes where the paused connection stopped. Does
    /// nothing when not paused. `TETHER_ERR_UNSUPPORTED` for an in-process client;
    /// `TETHER_ERR_STATE` if closed (as for `tether_client_pause`); `TETHER_ERR_NULL` for NULL.
    /// Any thread.
    client fn tether_client_unpause(c: *mut tether_client) -> tether_status |h| {
        status_of(h.client.unpause())
    } ?= code
}

ffi_fn! {
    /// The cue for the OS glue to call on a network change or when the app comes back to the
    /// foreground (Android ConnectivityManager, Apple NWPathMonitor). Waiting to reconnect:
    /// connects now. Connected: probes the link with a ping and reconnects at once if nothing
    /// arrives within the pong timeout (`tether_config_set_pong_timeout_ms`). Never opens a
    /// second connection; does nothing while connecting or paused. `TETHER_ERR_UNSUPPORTED`
    /// for an in-process client; `TETHER_ERR_STATE` if closed (as for `tether_client_pause`);
    /// `TETHER_ERR_NULL` for NULL. Any thread.
    client fn tether_client_reconnect_now(c: *mut tether_client) -> tether_status |h| {
        status_of(h.client.reconnect_now())
    } ?= code
}

ffi_fn! {
    /// Like `tether_client_close`, but the backend keeps what it buffers for this client (gomuks:
    /// close code 1000 instead of 1001), so a later client given this one's
    /// `tether_client_resume_state` through `tether_config_set_resume_state` receives the events
    /// it missed. For apps that suspend (mobile backgrounding, restarts) rather than log out.
    /// Read the resume state after CLOSED: events delivered while the close runs move it.
    /// rwws has no resume: the same as `tether_client_close`. `TETHER_ERR_STATE` if the app
    /// already closed it (as for `tether_client_close`, a client the server ended for good
    /// returns `TETHER_OK`); `TETHER_ERR_NULL` for NULL. Any thread, including inside an event
    /// callback.
    client fn tether_client_close_keep_resume(c: *mut tether_client) -> tether_status |h| {
        status_of(h.client.close_keep_resume())
    } ?= code
}

ffi_fn! {
    /// The resume point, to persist and pass to a later client with
    /// `tether_config_set_resume_state`: the backend's `run_id` is copied NUL-terminated into
    /// `run_id` (capacity `run_id_cap` bytes) and the id of the newest buffered event the app has
    /// taken (0 or negative) into `*out_last_received_event` (may be NULL): a polled event
    /// counts once polled, a batch's events once the batch is polled into again or freed
    /// (while one thread still holds a batch, the point stops short of its events, whatever
    /// other threads take meanwhile), a callback's event once the callback returns. Events
    /// the client has read but the app has not taken are not counted, so a later client
    /// resuming from here receives them, unless a ping acknowledged them meanwhile (pings
    /// acknowledge what the client read) and the backend let them go: that resume then fails
    /// (`TETHER_RESUME_RESET`), never leaving a silent gap. Nor do the events of a connection
    /// that started the backend's state afresh (or of a room list after a login) count until
    /// the `init_complete` after it: resuming inside that state would skip the rest of it,
    /// which no resume replays. `*out_run_id_len` (may be NULL) receives the
    /// run_id's length without the NUL, also when `TETHER_ERR_BUFFER_TOO_SMALL` is returned, so
    /// `run_id = NULL, run_id_cap = 0` asks for the size (a NULL `run_id` with a nonzero cap is
    /// `TETHER_ERR_NULL`, nothing written). Before the first connection the run_id and event id
    /// are those the config was given (`tether_config_set_resume_state`), else "" and 0. Any
    /// thread.
    client fn tether_client_resume_state(
        c: *const tether_client,
        run_id: *mut c_char,
        run_id_cap: usize,
        out_run_id_len: *mut usize,
        out_last_received_event: *mut i64,
    ) -> tether_status |h| {
        let st = h.client.resume_state();
        // SAFETY: the caller passes `run_id_cap` writable bytes at `run_id` (or NULL) and a
        // writable length pointer or NULL.
        let copied =
            unsafe { copy_c_string("run_id", &st.run_id, run_id, run_id_cap, out_run_id_len) };
        if let Err(e) = copied {
            return fail(e);
        }
        // SAFETY: the caller passes a writable pointer or NULL.
        if let Some(l) = unsafe { out_last_received_event.as_mut() } {
            *l = st.last_received_event;
        }
        Status::Ok.code()
    } ?= code
}

ffi_fn! {
    /// The credential the client's next connection sends, for an app that persists it instead of
    /// a password: gomuks, the `gomuks_auth` token (the configured one until a login with the
    /// Basic credentials or a renewal replaces it; each replacement is announced by a
    /// `TETHER_EVENT_TOKEN_RENEWED` event, which carries no secret: read the new token here
    /// then. Renewals happen while connected, halfway through the token's remaining life and
    /// at least daily, before reconnect attempts when due, and after a 401); rwws, the configured
    /// access key. Copied NUL-terminated into `buf` (capacity `cap` bytes); `*out_len` (may be
    /// NULL) receives its length without the NUL, also with `TETHER_ERR_BUFFER_TOO_SMALL`, so
    /// `buf = NULL, cap = 0` asks for the size. "" before a client configured with a username and
    /// password (and no token) has logged in, and with auth disabled and no token configured. The token is a secret:
    /// keep it out of logs. `TETHER_ERR_NULL` for a NULL client, or a NULL `buf` with a
    /// nonzero `cap` (nothing written). Any thread.
    client fn tether_client_auth_token(
        c: *const tether_client,
        buf: *mut c_char,
        cap: usize,
        out_len: *mut usize,
    ) -> tether_status |h| {
        let token = h.client.auth_token().unwrap_or_default();
        // SAFETY: the caller passes `cap` writable bytes at `buf` (or NULL) and a writable
        // length pointer or NULL.
        status_of(unsafe { copy_c_string("token", &token, buf, cap, out_len) })
    } ?= code
}

/// Copies `s` NUL-terminated into the caller's `buf` of `cap` bytes, writing its length to
/// `*out_len` first (also when the buffer is too small, so callers can size it). A NULL `buf`
/// with a capacity is `ErrNull` and writes nothing; NULL with 0 asks for the size.
///
/// # Safety
/// `buf` is NULL or points to `cap` writable bytes; `out_len` is NULL or writable.
pub(crate) unsafe fn copy_c_string(
    what: &str,
    s: &str,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Result<(), Error> {
    if buf.is_null() && cap > 0 {
        return Err(Error::new(
            Status::ErrNull,
            format!("{what} buffer is NULL"),
        ));
    }
    let bytes = s.as_bytes();
    // SAFETY: the caller guarantees `out_len` is NULL or writable.
    if let Some(l) = unsafe { out_len.as_mut() } {
        *l = bytes.len();
    }
    // Also the size query: a NULL `buf` has capacity 0 here.
    if cap < bytes.len() + 1 {
        return Err(Error::new(
            Status::ErrBufferTooSmall,
            format!("{what} needs {} bytes", bytes.len() + 1),
        ));
    }
    // SAFETY: `buf` has `cap` > len writable bytes (the caller's promise, checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len());
        *buf.add(bytes.len()) = 0;
    }
    Ok(())
}

ffi_fn! {
    /// Frees the client. NULL is fine; never twice, and never while another thread is inside a
    /// call on this client. If the client is open it is closed in the background (no waiting on
    /// the network) as by `tether_client_close_keep_resume`, so its resume state stays usable;
    /// queued events are discarded. In callback mode this waits for a running
    /// callback to return, so no callback runs after free returns, except when called from the
    /// callback itself: then the dispatcher stops after the callback returns. Either way
    /// `destroy(ctx)` runs exactly once. A proxy resolver call of this client in progress is
    /// waited for (unless this is called from inside it), and none starts afterwards; if this
    /// client held the resolver last, its `destroy(ctx)` runs here (see
    /// `tether_config_set_proxy_resolver`). After fork() in the child this does nothing (the
    /// memory is left alone).
    fn tether_client_free(c: *mut tether_client) {
        // SAFETY: the caller passes a client from tether_client_new, once, or NULL.
        unsafe {
            free_handle(c, |h| {
                // Wake the dispatcher and detach the event fd from the queue. A poller blocked
                // in tether_client_poll is the caller's bug (free must not race any call): it
                // is woken, but nothing waits for it to leave.
                h.client.queue().abandon();
                let dispatcher = lock(&h.dispatcher).take();
                if let Some(d) = dispatcher {
                    d.stop();
                }
            })
        }
    } ?= |_| ()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::*;

    /// A panic inside a client call returns TETHER_ERR_PANIC and poisons that client: every
    /// later call on it fails the same way, while free still works.
    #[test]
    fn panic_poisons_the_client() {
        // SAFETY: pointers come from the API itself and are freed once.
        unsafe {
            let mut cfg = std::ptr::null_mut();
            assert_eq!(tether_config_new(&mut cfg), TETHER_OK);
            assert_eq!(
                tether_config_set_url(cfg, c"ws://127.0.0.1:9/".as_ptr()),
                TETHER_OK
            );
            let mut c = std::ptr::null_mut();
            assert_eq!(tether_client_new(cfg, &mut c), TETHER_OK);
            tether_config_free(cfg);
            let r = super::super::boundary::handle_boundary(c, code, |_| -> tether_status {
                panic!("injected")
            });
            assert_eq!(r, TETHER_ERR_PANIC);
            assert_eq!(tether_client_close(c), TETHER_ERR_PANIC);
            assert_eq!(tether_client_event_fd(c), -1);
            tether_client_free(c);
        }
    }

    /// Takes events until one of `kind`, failing after 20 s; returns its status and request
    /// id, and the kinds skipped on the way.
    ///
    /// # Safety
    /// `c` is a live client in poll mode.
    unsafe fn poll_until(c: *mut tether_client, kind: u32) -> (tether_status, i64, Vec<u32>) {
        let mut skipped = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            assert!(std::time::Instant::now() < deadline, "no event {kind}");
            let mut ev = std::ptr::null_mut();
            match tether_client_poll(c, 100, &mut ev) {
                TETHER_TIMEOUT => continue,
                TETHER_OK => {}
                other => panic!("poll: {other}"),
            }
            let (k, status, id) = (
                tether_event_kind(ev),
                tether_event_status(ev),
                tether_event_request_id(ev),
            );
            tether_event_free(ev);
            if k == kind {
                return (status, id, skipped);
            }
            skipped.push(k);
        }
    }

    /// A panic of the session task, over a real connection to the testkit backend, poisons
    /// the client, not its handle: the request in flight gets its RESPONSE (ERR_PANIC), poll
    /// mode still takes the DISCONNECTED (ERR_PANIC) and CLOSED the session queued and then
    /// returns TETHER_CLOSED, as the shutdown protocol promises; the id, state (CLOSED),
    /// event fd and resume state still answer, and a new request fails with ERR_PANIC.
    #[test]
    fn a_session_panic_still_ends_the_event_stream_in_poll_mode() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let backend = rt
            .block_on(tether_testkit::gomuks::Backend::start(Default::default()))
            .unwrap();
        let url = std::ffi::CString::new(backend.http_url()).unwrap();
        let token = std::ffi::CString::new(backend.token()).unwrap();
        // SAFETY: pointers come from the API itself and are freed once.
        unsafe {
            let mut cfg = std::ptr::null_mut();
            assert_eq!(tether_config_new(&mut cfg), TETHER_OK);
            assert_eq!(tether_config_set_url(cfg, url.as_ptr()), TETHER_OK);
            assert_eq!(tether_config_set_token(cfg, token.as_ptr()), TETHER_OK);
            let mut c = std::ptr::null_mut();
            assert_eq!(tether_client_new(cfg, &mut c), TETHER_OK);
            tether_config_free(cfg);
            assert_eq!(tether_client_connect(c), TETHER_OK);
            poll_until(c, TETHER_EVENT_CONNECTED);
            // gomuks-rpc.md §6: the first message is the run_id, which the resume state keeps.
            poll_until(c, TETHER_EVENT_MESSAGE);
            let sleep = br#"{"ms":60000}"#;
            let mut asleep = 0i64;
            assert_eq!(
                tether_client_request(
                    c,
                    c"sleep".as_ptr(),
                    sleep.as_ptr(),
                    sleep.len(),
                    &mut asleep
                ),
                TETHER_OK
            );
            // Plain integers: all zero is a valid value.
            let mut stats: tether_stats = std::mem::zeroed();
            stats.size = std::mem::size_of::<tether_stats>() as u32;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while stats.requests_sent == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the sleep was never sent"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
                assert_eq!(tether_client_stats(c, &mut stats), TETHER_OK);
            }

            (*c).client().inject_session_panic();
            let (status, id, _) = poll_until(c, TETHER_EVENT_RESPONSE);
            assert_eq!((status, id), (TETHER_ERR_PANIC, asleep));
            let (status, _, skipped) = poll_until(c, TETHER_EVENT_DISCONNECTED);
            assert_eq!(status, TETHER_ERR_PANIC);
            assert!(!skipped.contains(&TETHER_EVENT_RESPONSE), "{skipped:?}");
            assert!(poll_until(c, TETHER_EVENT_CLOSED).2.is_empty());
            let mut ev = std::ptr::null_mut();
            assert_eq!(tether_client_poll(c, 0, &mut ev), TETHER_CLOSED);

            assert_ne!(tether_client_id(c), 0);
            let mut state = 0;
            assert_eq!(tether_client_state(c, &mut state), TETHER_OK);
            assert_eq!(state, TETHER_STATE_CLOSED);
            assert_eq!(tether_client_stats(c, &mut stats), TETHER_OK);
            assert_eq!(stats.requests_in_flight, 0);
            assert!(tether_client_event_fd(c) >= 0);
            let mut run_id = [0 as std::ffi::c_char; 64];
            let (mut len, mut last) = (0usize, 0i64);
            assert_eq!(
                tether_client_resume_state(c, run_id.as_mut_ptr(), 64, &mut len, &mut last),
                TETHER_OK
            );
            assert!(len > 0, "the backend's run_id was kept");
            let mut id = 0i64;
            assert_eq!(
                tether_client_request(c, c"ping".as_ptr(), b"{}".as_ptr(), 2, &mut id),
                TETHER_ERR_PANIC
            );
            tether_client_free(c);
        }
    }
}
