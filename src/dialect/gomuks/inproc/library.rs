//! `libgomuksffi` (gomuks `pkg/ffi`, docs/protocol/gomuks-rpc.md §12) opened at run time, and
//! the C callbacks it calls.
//!
//! The FFI's callbacks carry no `user_data` (§12.3), so what they deliver to is process-wide:
//! one sink for the one backend a process runs at a time, and a small table of slots for the
//! progress and stream callbacks of uploads and downloads running at once, each slot with its
//! own trampoline. Every callback only copies (or takes ownership of) what it is given and
//! hands it to an unbounded channel: it never waits for the app. Callbacks share the sink's
//! lock, held while one checks and queues what it was given (an event's JSON is validated
//! under it, which keeps delivery in the order the backend called; a multi-megabyte
//! `sync_complete` holds a download's chunk callbacks for that long).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;

use bytes::Bytes;
use once_cell::sync::Lazy;

use crate::event::command_name;
use crate::logging::tlog;
use crate::session::dialect::Incoming;
use crate::session::local::Sink;
use crate::status::{Error, Status};

/// `GomuksBorrowedBuffer`: lent for the duration of one call.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Borrowed {
    base: *const u8,
    length: usize,
}

impl Borrowed {
    pub(super) fn of(bytes: &[u8]) -> Borrowed {
        Borrowed {
            base: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    /// # Safety
    /// `base` must point to `length` readable bytes (or be NULL with any length, read as empty).
    unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.base.is_null() || self.length == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.base, self.length)
        }
    }
}

/// `GomuksOwnedBuffer`: ownership passes to us; freed with `GomuksFreeBuffer`.
#[repr(C)]
pub(super) struct Owned {
    base: *mut u8,
    length: usize,
}

/// `GomuksResponse`: `command` is a static `"response"` or `"error"`.
#[repr(C)]
pub(super) struct Response {
    buf: Owned,
    command: *const c_char,
}

/// `GomuksHandle`: a Go `cgo.Handle`, never 0 for a live instance.
pub(super) type Handle = usize;
type EventCallback = unsafe extern "C" fn(*const c_char, i64, Owned);
type ProgressCallback = unsafe extern "C" fn(f64);
type StreamCallback = unsafe extern "C" fn(Borrowed);

/// The entry points of one loaded library.
pub(super) struct Api {
    // The header declares `char *` for both; the FFI only reads them.
    init: unsafe extern "C" fn(*const c_char) -> Handle,
    start: unsafe extern "C" fn(Handle, EventCallback) -> c_int,
    destroy: unsafe extern "C" fn(Handle),
    submit: unsafe extern "C" fn(Handle, *const c_char, Borrowed) -> Response,
    upload_path: unsafe extern "C" fn(Handle, Borrowed, ProgressCallback) -> Response,
    upload_bytes: unsafe extern "C" fn(Handle, Borrowed, Borrowed, ProgressCallback) -> Response,
    /// Newer than the pinned gomuks (§12.2); `None` when the library lacks it.
    download_path: Option<unsafe extern "C" fn(Handle, Borrowed, StreamCallback) -> Response>,
    free_buffer: unsafe extern "C" fn(Owned),
}

/// A library opened so far.
struct Opened {
    /// Its entry points, or why it is not a gomuks FFI library (asked again, it says so again).
    api: Result<&'static Api, String>,
    /// Whether it carries a Go runtime (it exports cgo's `_cgo_panic`, as every library Go
    /// builds with `-buildmode=c-shared` does). Recorded also for one that turned out not to be
    /// a gomuks FFI: its runtime started all the same.
    go_runtime: bool,
}

/// Libraries opened so far, by canonical path. Never closed: a Go runtime cannot be unloaded.
static LIBRARIES: Lazy<Mutex<HashMap<PathBuf, Opened>>> = Lazy::new(Default::default);

/// Opens `path` (once per process) and resolves its entry points.
pub(super) fn load(path: &Path) -> Result<&'static Api, Error> {
    let bad = |m: String| Error::new(Status::ErrConfig, m);
    let canonical = path
        .canonicalize()
        .map_err(|e| bad(format!("gomuks FFI library {}: {e}", path.display())))?;
    let mut libs = crate::lock(&LIBRARIES);
    if let Some(opened) = libs.get(&canonical) {
        return opened.api.clone().map_err(bad);
    }
    // Go supports one Go runtime per process; a second library starts a second one (random
    // crashes in the garbage collector). Refused before it is loaded.
    if let Some((first, _)) = libs.iter().find(|(_, opened)| opened.go_runtime) {
        return Err(bad(format!(
            "{} cannot be loaded: this process already runs the Go runtime of {}, and Go \
             supports one per process; name that library",
            canonical.display(),
            first.display()
        )));
    }
    // SAFETY: loading runs the library's initialisers; a libgomuksffi's start the Go runtime,
    // which is what the app asked for by naming it.
    let lib = unsafe { libloading::Library::new(&canonical) }
        .map_err(|e| bad(format!("cannot load gomuks FFI library: {e}")))?;
    // Never closed (see LIBRARIES), also when it turns out not to be a gomuks FFI: the symbols
    // below stay valid for the process. Not boxed and leaked: nothing would point to the box,
    // and leak checkers (LeakSanitizer, valgrind) would report it lost at exit.
    let lib = std::mem::ManuallyDrop::new(lib);
    // SAFETY: only looked up, never called.
    let go_runtime = unsafe { lib.get::<unsafe extern "C" fn()>(b"_cgo_panic\0") }.is_ok();
    let api = entry_points(&lib).map_err(|(name, e)| {
        format!(
            "{} is not a gomuks FFI library (no {name}): {e}",
            canonical.display()
        )
    });
    libs.insert(
        canonical,
        Opened {
            api: api.clone(),
            go_runtime,
        },
    );
    api.map_err(bad)
}

/// The gomuks FFI's entry points in `lib`, or the first one it lacks.
fn entry_points(
    lib: &libloading::Library,
) -> Result<&'static Api, (&'static str, libloading::Error)> {
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the type is the one declared in gomuksffi.h for this name; `lib` is
            // never closed, so the symbol stays valid for the process.
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| ($name, e))?
        };
    }
    let api = Api {
        init: sym!("GomuksInit"),
        start: sym!("GomuksStart"),
        destroy: sym!("GomuksDestroy"),
        submit: sym!("GomuksSubmitCommand"),
        upload_path: sym!("GomuksUploadMediaPath"),
        upload_bytes: sym!("GomuksUploadMediaBytes"),
        // SAFETY: as above.
        download_path: unsafe { lib.get(b"GomuksDownloadMediaPath\0") }
            .ok()
            .map(|s| *s),
        free_buffer: sym!("GomuksFreeBuffer"),
    };
    Ok(Box::leak(Box::new(api)))
}

/// A buffer the FFI handed over, freed with its `GomuksFreeBuffer` when the last `Bytes`
/// slice of it goes (no copy on the way to the app).
struct FfiBuffer {
    base: *mut u8,
    length: usize,
    free: unsafe extern "C" fn(Owned),
}

// SAFETY: the buffer is plain heap memory owned by us alone; freeing it from another thread is
// what `free()` allows.
unsafe impl Send for FfiBuffer {}
unsafe impl Sync for FfiBuffer {}

impl AsRef<[u8]> for FfiBuffer {
    fn as_ref(&self) -> &[u8] {
        if self.base.is_null() {
            &[]
        } else {
            // SAFETY: the FFI gave us `length` bytes at `base`.
            unsafe { std::slice::from_raw_parts(self.base, self.length) }
        }
    }
}

impl Drop for FfiBuffer {
    fn drop(&mut self) {
        if !self.base.is_null() {
            // SAFETY: ours to free, once.
            unsafe {
                (self.free)(Owned {
                    base: self.base,
                    length: self.length,
                })
            }
        }
    }
}

impl Api {
    fn take(&self, buf: Owned) -> Bytes {
        if buf.base.is_null() {
            return Bytes::new();
        }
        Bytes::from_owner(FfiBuffer {
            base: buf.base,
            length: buf.length,
            free: self.free_buffer,
        })
    }

    /// Turns a response into the reply's data (JSON), or the backend's error (a JSON string);
    /// `client` names the client in a log record.
    fn answer(&self, r: Response, client: u64) -> Result<Bytes, Error> {
        let data = self.take(r.buf);
        // SAFETY: a static NUL-terminated string (or NULL from a broken library).
        let command = (!r.command.is_null()).then(|| unsafe { CStr::from_ptr(r.command) });
        match command.map(CStr::to_bytes) {
            Some(b"response") => Ok(if data.is_empty() {
                Bytes::from_static(b"null")
            } else {
                json_or_string(data, client)
            }),
            Some(b"error") => {
                let text = serde_json::from_slice::<String>(&data)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&data).into_owned());
                Err(Error::new(Status::ErrRemote, text))
            }
            other => Err(Error::new(
                Status::ErrProtocol,
                format!(
                    "the gomuks FFI answered with {:?} instead of response or error",
                    other.map(String::from_utf8_lossy)
                ),
            )),
        }
    }

    /// `GomuksInit`. Blocking (creates the directories under `root`).
    pub(super) fn init(&self, root: &CStr) -> Handle {
        // SAFETY: `root` is a valid C string the call only reads.
        unsafe { (self.init)(root.as_ptr()) }
    }

    /// `GomuksStart` with the process-wide event trampoline. Blocking.
    pub(super) fn start(&self, h: Handle) -> c_int {
        // SAFETY: `h` came from `init` and was not destroyed; the callback is ours.
        unsafe { (self.start)(h, event_trampoline) }
    }

    /// `GomuksDestroy`. Blocking.
    pub(super) fn destroy(&self, h: Handle) {
        // SAFETY: `h` is live; the caller never uses it again.
        unsafe { (self.destroy)(h) }
    }

    /// `GomuksSubmitCommand`. Blocking.
    pub(super) fn submit(
        &self,
        h: Handle,
        command: &CStr,
        data: &[u8],
        client: u64,
    ) -> Result<Bytes, Error> {
        // SAFETY: `h` is live and started; both buffers outlive the call.
        let r = unsafe { (self.submit)(h, command.as_ptr(), Borrowed::of(data)) };
        self.answer(r, client)
    }

    /// `GomuksUploadMediaBytes` (`bytes` given) or `GomuksUploadMediaPath`, reporting progress
    /// for request `id`. Blocking.
    pub(super) fn upload(
        &self,
        h: Handle,
        id: i64,
        params: &[u8],
        bytes: Option<&[u8]>,
        client: u64,
    ) -> Result<Bytes, Error> {
        let slot = PROGRESS.acquire(id);
        let cb = PROGRESS_TRAMPOLINES[slot.index];
        // SAFETY: `h` is live and started; the buffers outlive the call; the trampoline's slot
        // is ours until `slot` drops, after the call returned.
        let r = unsafe {
            match bytes {
                Some(b) => (self.upload_bytes)(h, Borrowed::of(params), Borrowed::of(b), cb),
                None => (self.upload_path)(h, Borrowed::of(params), cb),
            }
        };
        drop(slot);
        self.answer(r, client)
    }

    /// `GomuksDownloadMediaPath`, streaming chunks for request `id`. Blocking.
    /// Whether the library has `GomuksDownloadMediaPath`: the FFI of gomuks v0.2608 on,
    /// which also runs `download_media` and `get_url_preview` itself.
    pub(super) fn streams_downloads(&self) -> bool {
        self.download_path.is_some()
    }

    /// Calls `sent` just before the FFI is called (not when this library lacks the call).
    pub(super) fn download(
        &self,
        h: Handle,
        id: i64,
        params: &[u8],
        client: u64,
        sent: &dyn Fn(),
    ) -> Result<Bytes, Error> {
        let Some(download) = self.download_path else {
            return Err(Error::new(
                Status::ErrUnsupported,
                "this gomuks FFI library has no GomuksDownloadMediaPath (gomuks newer than \
                 v0.2607.0 has it); a backend with the download_media command (v0.2607.0 has \
                 none) serves it as a plain request, without streaming",
            ));
        };
        let slot = STREAM.acquire(id);
        let cb = STREAM_TRAMPOLINES[slot.index];
        sent();
        // SAFETY: as for `upload`.
        let r = unsafe { download(h, Borrowed::of(params), cb) };
        drop(slot);
        self.answer(r, client)
    }
}

/// The FFI's JSON as it is, or, should a backend ever hand over something else, that text as
/// a JSON string: the app is promised JSON in every MESSAGE and RESPONSE (the websocket's
/// parser checks the same), and nothing is dropped.
fn json_or_string(data: Bytes, client: u64) -> Bytes {
    if serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok() {
        return data;
    }
    tlog!(
        client,
        Warn,
        "gomuks",
        "the in-process backend sent {} bytes that are not JSON; delivered as a JSON string",
        data.len()
    );
    let text = String::from_utf8_lossy(&data);
    Bytes::from(serde_json::to_string(&text).unwrap_or_else(|_| "null".to_owned()))
}

/// Where the one running backend's events go; `None` while none runs.
static SINK: Mutex<Option<Registered>> = Mutex::new(None);

/// The running backend's sink.
struct Registered {
    sink: Sink,
    api: &'static Api,
    /// The client the backend runs for, for its log records.
    client: u64,
    /// The thread running `GomuksStart`, until the backend's own start events are in (it sends
    /// them on that thread before it starts any other: `client_state`, then `sync_status`).
    /// A callback from another thread meanwhile is a late one of the backend stopped before:
    /// gomuks's event goroutine may still send an event after `GomuksDestroy` returned, and
    /// the callbacks carry nothing that says which backend they come from (§12.3).
    starting_on: Option<ThreadId>,
}

/// What the running backend's `client_state` events said about its account, and what a
/// logout changed since.
struct Account {
    /// Whether account commands may reach the backend.
    logged_in: bool,
    /// How many `client_state` events were taken (so a failed logout can tell whether one
    /// came meanwhile).
    states: u64,
    /// The device the latest logged-in `client_state` named.
    current: Option<String>,
    /// The device a logout ended. gomuks's old client can still report itself logged in after
    /// a logout (a profile fetch that returns late); that report names this device and must
    /// not let account commands through again. A new login is a new device.
    ended: Option<String>,
    /// gomuks is logging out by itself: its sync failed for good because the homeserver no
    /// longer knows the session (see [`note_sync_status`]). That logout drops gomuks's client
    /// until it restarts one, and any call into the FFI meanwhile aborts the process, so no
    /// call may start until the restarted client's `client_state`.
    revoked: bool,
}

static ACCOUNT: Mutex<Account> = Mutex::new(Account::NONE);

impl Account {
    const NONE: Account = Account {
        logged_in: false,
        states: 0,
        current: None,
        ended: None,
        revoked: false,
    };
}

fn account() -> std::sync::MutexGuard<'static, Account> {
    crate::lock(&ACCOUNT)
}

/// Installs (or with `None`, removes) the sink of the process's running backend. Installed
/// on the thread that is about to call `GomuksStart`, which then calls [`started`].
pub(super) fn set_sink(sink: Option<(Sink, &'static Api, u64)>) {
    *account() = Account::NONE;
    *crate::lock(&SINK) = sink.map(|(sink, api, client)| Registered {
        sink,
        api,
        client,
        starting_on: Some(std::thread::current().id()),
    });
}

/// `GomuksStart` returned: every thread's callbacks are the running backend's from now on.
pub(super) fn started() {
    if let Some(r) = crate::lock(&SINK).as_mut() {
        r.starting_on = None;
    }
}

/// Whether the running backend is logged in, as its latest `client_state` event said (the
/// first one arrives before `GomuksStart` returns), and no logout is under way or done since.
pub(super) fn logged_in() -> bool {
    account().logged_in
}

/// Whether gomuks is logging out by itself (see `Account::revoked`): no call may start.
pub(super) fn revoked() -> bool {
    account().revoked
}

/// Where a logout started from: given back to [`logout_ended`].
pub(super) struct LogoutMark {
    was: bool,
    states: u64,
}

/// A logout is about to reach the backend: account commands are refused from now on.
pub(super) fn logout_starts() -> LogoutMark {
    let mut a = account();
    let mark = LogoutMark {
        was: a.logged_in,
        states: a.states,
    };
    a.logged_in = false;
    mark
}

/// The logout returned: done, its device is gone for good; failed, the account is back,
/// unless a `client_state` came meanwhile and said otherwise.
pub(super) fn logout_ended(mark: LogoutMark, done: bool) {
    let mut a = account();
    if done {
        a.ended = a.current.take();
        a.logged_in = false;
    } else if a.states == mark.states {
        a.logged_in = mark.was;
    }
}

/// Follows `client_state` for [`logged_in`].
fn note_client_state(data: &[u8]) {
    #[derive(serde::Deserialize)]
    struct ClientState {
        #[serde(default)]
        is_logged_in: bool,
        #[serde(default)]
        device_id: Option<String>,
    }
    let Ok(s) = serde_json::from_slice::<ClientState>(data) else {
        return;
    };
    let mut a = account();
    if s.is_logged_in {
        if s.device_id.is_some() && s.device_id == a.ended {
            return; // the old client's late report (see Account::ended)
        }
        a.current = s.device_id;
    }
    a.logged_in = s.is_logged_in;
    a.states += 1;
    a.revoked = false;
}

/// Follows `sync_status` for [`revoked`]. gomuks starts a logout of its own as it sends this
/// event, when its sync fails for good (`permanently-failed`) with the homeserver refusing the
/// session's token (`M_UNKNOWN_TOKEN`, or an OAuth `invalid_grant`): the device was signed
/// out from elsewhere. That logout drops the client only after a request to the homeserver,
/// so this callback nearly always comes first; the event passes through gomuks's event
/// channel, though, and behind a backlog of events (the room list of a start) a call can still
/// meet the dropped client. If the logout fails (that request failed otherwise), gomuks
/// neither drops the client nor restarts one, and no `client_state` ends the refusal: the
/// session is gone for good, and closing the client is what is left.
fn note_sync_status(data: &[u8]) {
    #[derive(serde::Deserialize)]
    struct SyncStatus<'a> {
        #[serde(default, borrow)]
        r#type: std::borrow::Cow<'a, str>,
        #[serde(default, borrow)]
        error: std::borrow::Cow<'a, str>,
    }
    let Ok(s) = serde_json::from_slice::<SyncStatus>(data) else {
        return;
    };
    let refused = s.error.contains("M_UNKNOWN_TOKEN") || s.error.contains("invalid_grant");
    if s.r#type == "permanently-failed" && refused {
        let mut a = account();
        a.revoked = true;
        a.logged_in = false;
        a.ended = a.current.take();
    }
}

fn with_sink(f: impl FnOnce(&Sink, &'static Api)) {
    let guard = crate::lock(&SINK);
    if let Some(r) = guard.as_ref() {
        f(&r.sink, r.api);
    }
}

/// The FFI's event callback: takes ownership of the data (no copy), looks the command up
/// among the known names, and hands both to the session. Never waits for the app, never
/// unwinds.
unsafe extern "C" fn event_trampoline(command: *const c_char, request_id: i64, data: Owned) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut guard = crate::lock(&SINK);
        let Some(r) = guard.as_mut() else {
            // No backend is registered (an event after close): nobody wants it.
            if !data.base.is_null() {
                // SAFETY: the FFI's malloc'd buffer (§12.1), ours to free.
                unsafe { libc::free(data.base.cast()) };
            }
            return;
        };
        // Owned before anything else can fail, so it is freed whatever happens next.
        let data = r.api.take(data);
        let name = if command.is_null() {
            std::borrow::Cow::Borrowed("")
        } else {
            // SAFETY: a static NUL-terminated string from the FFI.
            String::from_utf8_lossy(unsafe { CStr::from_ptr(command) }.to_bytes())
        };
        if let Some(starting) = r.starting_on {
            if starting != std::thread::current().id() {
                tlog!(
                    r.client,
                    Debug,
                    "gomuks",
                    "a {name} event of the previous in-process backend arrived while the next \
                     one started; dropped"
                );
                return;
            }
            if name == "sync_status" {
                r.starting_on = None;
            }
        }
        let data = json_or_string(data, r.client);
        match &*name {
            "client_state" => note_client_state(&data),
            "sync_status" => note_sync_status(&data),
            _ => {}
        }
        r.sink.send(Incoming::Event {
            command: command_name(&name),
            id: request_id,
            data,
            // No resume point: the backend is in this process.
            era: 0,
        });
    }));
}

/// Slots for the callbacks that carry no context at all (progress, stream): each running
/// upload or download holds one slot, whose trampoline knows the slot's request id.
struct Slots {
    table: Mutex<Table>,
    freed: Condvar,
}

struct Table {
    /// The request id holding each slot, 0 when free.
    ids: [i64; SLOTS],
    /// Where the search for a free slot starts: slots are taken in turn, so a freed slot is
    /// not the next one taken. gomuks reports upload progress from its HTTP transport's
    /// goroutine, which may still run when the upload call has returned (an early error
    /// answer); its late report then finds the slot free, not another upload's.
    next: usize,
}

/// Uploads (and, separately, downloads) that can report at once; more wait for a slot. The
/// session starts no more than this many of each (its lanes), so none waits here for long.
const SLOTS: usize = crate::session::local::LANE_CALLS;

struct SlotGuard {
    table: &'static Slots,
    index: usize,
}

impl Slots {
    const fn new() -> Slots {
        Slots {
            table: Mutex::new(Table {
                ids: [0; SLOTS],
                next: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// A free slot for request `id`; waits (on the blocking thread running the request)
    /// while all are taken.
    fn acquire(&'static self, id: i64) -> SlotGuard {
        let mut t = crate::lock(&self.table);
        loop {
            let start = t.next;
            let free = (0..SLOTS)
                .map(|k| (start + k) % SLOTS)
                .find(|&i| t.ids[i] == 0);
            if let Some(index) = free {
                t.ids[index] = id;
                t.next = (index + 1) % SLOTS;
                return SlotGuard { table: self, index };
            }
            t = self.freed.wait(t).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn id(&self, index: usize) -> i64 {
        crate::lock(&self.table).ids[index]
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        crate::lock(&self.table.table).ids[self.index] = 0;
        self.table.freed.notify_one();
    }
}

static PROGRESS: Slots = Slots::new();
static STREAM: Slots = Slots::new();

fn progress_in(slot: usize, progress: f64) {
    let _ = std::panic::catch_unwind(|| {
        let id = PROGRESS.id(slot);
        if id != 0 && progress.is_finite() {
            with_sink(|sink, _| {
                sink.send(Incoming::Progress {
                    id,
                    progress: progress.clamp(0.0, 100.0),
                })
            });
        }
    });
}

fn stream_in(slot: usize, data: Borrowed) {
    let _ = std::panic::catch_unwind(|| {
        let id = STREAM.id(slot);
        // SAFETY: the FFI lends `length` bytes for this call; copied before returning.
        let bytes = unsafe { data.as_slice() };
        // The zero-length chunk only marks the end; the RESPONSE says that.
        if id != 0 && !bytes.is_empty() {
            let data = Bytes::copy_from_slice(bytes);
            with_sink(|sink, _| sink.send(Incoming::Chunk { id, data }));
        }
    });
}

macro_rules! trampolines {
    ($table:ident, $ty:ty, $arg:ty, $target:ident, [$($i:literal => $name:ident),* $(,)?]) => {
        $(unsafe extern "C" fn $name(a: $arg) { $target($i, a) })*
        static $table: [$ty; SLOTS] = [$($name),*];
    };
}

trampolines!(PROGRESS_TRAMPOLINES, ProgressCallback, f64, progress_in, [
    0 => progress_0, 1 => progress_1, 2 => progress_2, 3 => progress_3,
    4 => progress_4, 5 => progress_5, 6 => progress_6, 7 => progress_7,
]);
trampolines!(STREAM_TRAMPOLINES, StreamCallback, Borrowed, stream_in, [
    0 => stream_0, 1 => stream_1, 2 => stream_2, 3 => stream_3,
    4 => stream_4, 5 => stream_5, 6 => stream_6, 7 => stream_7,
]);

#[cfg(test)]
mod tests {
    use super::*;

    /// A freed slot is not the next one taken, so a late progress report of an upload that
    /// has returned finds its slot free rather than credited to the next upload; a slot
    /// comes back once the others had their turn.
    #[test]
    fn slots_are_taken_in_turn() {
        static T: Slots = Slots::new();
        let first = T.acquire(1);
        let index = first.index;
        drop(first);
        let second = T.acquire(2);
        assert_ne!(second.index, index);
        assert_eq!(T.id(index), 0, "the late report finds no request");
        let others: Vec<SlotGuard> = (3..).take(SLOTS - 1).map(|id| T.acquire(id)).collect();
        assert_eq!(
            T.id(index),
            3 + SLOTS as i64 - 2,
            "the last one taken wrapped round"
        );
        drop((second, others));
    }
}
