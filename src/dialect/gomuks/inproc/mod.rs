//! The gomuks dialect's second transport: the backend bundled into this process through its
//! C FFI (`libgomuksffi`, docs/protocol/gomuks-rpc.md §12), loaded at run time.
//!
//! Requests travel as the same JSON envelopes as over the websocket (the client encodes them
//! once, whatever the transport); here they are unpacked into the FFI's (command, data) pair.
//! Media uploads and streaming downloads, which the websocket does not have, are marked by a
//! binary frame that never leaves the process (see [`media_message`]).
//!
//! What the FFI makes hard is kept away from the app (§12.3): its calls block, so they run on
//! the blocking pool; they cannot be cancelled, so a timed-out request is answered at once and
//! the late reply dropped; calling anything before `GomuksStart` aborts the process, so nothing
//! is called before the start returned; its callbacks carry no context, so one backend runs
//! per process at a time (a second client is refused with `ErrInUse`), and its data root is
//! locked against other processes too.

mod library;

use std::ffi::CString;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use crate::config::{Config, Transport};
use crate::logging::tlog;
use crate::session::local::{Local, Sink};
use crate::status::{Error, Status};
use library::{Api, Handle};

/// A media request's kind, as marked in its in-process frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Media<'a> {
    /// `upload_media` with progress: from these bytes, or (`None`) from the `path` in the
    /// params.
    Upload(Option<&'a [u8]>),
    /// `download_media`, streamed in chunks.
    Download,
}

const FRAME_UPLOAD_BYTES: u8 = 1;
const FRAME_UPLOAD_PATH: u8 = 2;
const FRAME_DOWNLOAD: u8 = 3;

/// The in-process frame of a media request: a kind byte, the envelope's length (u32, little
/// endian), the envelope (as any request's), then the bytes to upload. Never written to a
/// socket: the client refuses media requests for websocket clients.
pub(crate) fn media_message(id: i64, media: Media<'_>, params: &[u8]) -> Message {
    let (kind, command, body) = match media {
        Media::Upload(Some(b)) => (FRAME_UPLOAD_BYTES, "upload_media", b),
        Media::Upload(None) => (FRAME_UPLOAD_PATH, "upload_media", &[][..]),
        Media::Download => (FRAME_DOWNLOAD, "download_media", &[][..]),
    };
    let envelope = super::codec::request_message(id, command, params).into_data();
    let mut frame = Vec::with_capacity(5 + envelope.len() + body.len());
    frame.push(kind);
    frame.extend_from_slice(&(envelope.len() as u32).to_le_bytes());
    frame.extend_from_slice(&envelope);
    frame.extend_from_slice(body);
    Message::binary(frame)
}

/// A request unpacked for the FFI.
#[derive(Debug, PartialEq, Eq)]
enum Call<'a> {
    /// `GomuksSubmitCommand`.
    Command { command: String, data: &'a [u8] },
    /// `GomuksUploadMediaBytes` / `GomuksUploadMediaPath`.
    Upload {
        params: &'a [u8],
        bytes: Option<&'a [u8]>,
    },
    /// `GomuksDownloadMediaPath`.
    Download { params: &'a [u8] },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    command: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

fn broken() -> Error {
    Error::new(Status::ErrProtocol, "malformed in-process request")
}

/// The command and the raw `data` of a request envelope.
fn parse(json: &[u8]) -> Result<(String, &[u8]), Error> {
    let env: Envelope<'_> = serde_json::from_slice(json).map_err(|_| broken())?;
    let data = env.data.map_or(&b"{}"[..], |d| d.get().as_bytes());
    Ok((env.command, data))
}

fn unpack(message: &Message) -> Result<Call<'_>, Error> {
    match message {
        Message::Text(t) => {
            let (command, data) = parse(t.as_bytes())?;
            Ok(Call::Command { command, data })
        }
        Message::Binary(b) => {
            let (&kind, rest) = b.split_first().ok_or_else(broken)?;
            let len = rest
                .get(..4)
                .and_then(|l| <[u8; 4]>::try_from(l).ok())
                .map(|l| u32::from_le_bytes(l) as usize)
                .ok_or_else(broken)?;
            let envelope = rest.get(4..4 + len).ok_or_else(broken)?;
            let body = &rest[4 + len..];
            let (_, params) = parse(envelope)?;
            match kind {
                FRAME_UPLOAD_BYTES => Ok(Call::Upload {
                    params,
                    bytes: Some(body),
                }),
                FRAME_UPLOAD_PATH => Ok(Call::Upload {
                    params,
                    bytes: None,
                }),
                FRAME_DOWNLOAD => Ok(Call::Download { params }),
                _ => Err(broken()),
            }
        }
        _ => Err(broken()),
    }
}

/// The FFI's own commands that run with the account (over the websocket gomuks does not know
/// them): refused while logged out with those of [`super::needs_account`].
const NEEDS_ACCOUNT_IN_FFI: &[&str] = &["upload_media", "export_keys"];

/// The same for the commands a newer FFI (the one with `GomuksDownloadMediaPath`, v0.2608
/// on) runs itself against the homeserver. Older ones pass them to hicli, which does not
/// know them and answers so.
const NEEDS_ACCOUNT_IN_NEWER_FFI: &[&str] = &["download_media", "get_url_preview"];

/// What an account command gets while the backend is not logged in.
fn no_account(what: &str) -> Error {
    Error::new(
        Status::ErrState,
        format!(
            "{what} needs a logged-in backend (wait for client_state with is_logged_in): \
             gomuks aborts the whole process otherwise"
        ),
    )
}

/// What a call gets once the backend was stopped (the client closed).
fn closed_before_reply() -> Error {
    Error::new(
        Status::ErrClientClosed,
        crate::session::requests::CLOSED_BEFORE_REPLY,
    )
}

/// Whether a process's one in-process backend is taken.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The process's one in-process backend, taken; given back when dropped.
struct ProcessSlot;

impl ProcessSlot {
    fn take() -> Result<ProcessSlot, Error> {
        RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ProcessSlot)
            .map_err(|_| {
                Error::new(
                    Status::ErrInUse,
                    "an in-process gomuks backend already runs in this process (its FFI \
                     callbacks carry no context, so a process runs one at a time); close that \
                     client first",
                )
            })
    }
}

impl Drop for ProcessSlot {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// What a started client holds exclusively until its backend stopped: the lock on the data
/// root and the process's backend slot. Fields drop in order: the root is unlocked before the
/// slot is free, so a client that takes the slot at once finds the root free too.
struct Held {
    _lock: File,
    _slot: ProcessSlot,
}

/// One in-process gomuks backend.
pub(crate) struct InProcess {
    api: &'static Api,
    root: CString,
    /// `Some` from `GomuksInit` until `GomuksDestroy`. Calls hold it shared for their whole
    /// run, so the destroy waits for them and no call can reach a destroyed handle.
    handle: RwLock<Option<Handle>>,
    held: Mutex<Option<Held>>,
    client: u64,
    /// Set as the client closes, before its requests are ended unanswered: a call waiting
    /// for the lock (a logout above all) must not run after the app was told it ended.
    stopping: AtomicBool,
}

impl InProcess {
    /// Takes the process's backend slot, loads the library and takes the data root's lock;
    /// the backend itself starts in [`Local::start`]. Fails with `ErrConfig` (library, root)
    /// or `ErrInUse`; a failure holds nothing. The slot comes first: a client refused because
    /// another runs loads no library (another library would be a second Go runtime).
    pub(crate) fn open(cfg: &Config, client: u64) -> Result<Arc<InProcess>, Error> {
        let Transport::InProcess { library, root } = cfg.transport() else {
            return Err(Error::new(Status::ErrConfig, "not an in-process client"));
        };
        let slot = ProcessSlot::take()?;
        let api = library::load(library)?;
        let root_c = CString::new(root.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::new(Status::ErrConfig, "data root contains a NUL byte"))?;
        // GomuksInit aborts the process when it cannot create its directories: find out
        // here instead.
        std::fs::create_dir_all(root).map_err(|e| {
            Error::new(
                Status::ErrConfig,
                format!("cannot create the data root {}: {e}", root.display()),
            )
        })?;
        let lock = lock_root(root)?;
        Ok(Arc::new(InProcess {
            api,
            root: root_c,
            handle: RwLock::new(None),
            held: Mutex::new(Some(Held {
                _lock: lock,
                _slot: slot,
            })),
            client,
            stopping: AtomicBool::new(false),
        }))
    }

    /// `logout` alone: newer gomuks sets its client to nil while it logs out, and any call
    /// meanwhile panics, aborting the process; so nothing else runs beside it (the handle's
    /// write lock), and account commands are refused from its start, not from the
    /// `client_state` at its end. If it fails, the account is still there.
    ///
    /// gomuks's logout itself reads the account: a second logout (a double tap, a retry
    /// after a timeout) or one before login would abort the process, so it is refused.
    fn logout(&self, call: Call, sent: &dyn Fn()) -> Result<Bytes, Error> {
        // Also before waiting for the lock, which holds every later call back meanwhile.
        if !library::logged_in() {
            return Err(no_account("logout"));
        }
        let handle = self.handle.write().unwrap_or_else(|e| e.into_inner());
        let Some(h) = *handle else {
            return Err(closed_before_reply());
        };
        if self.stopping.load(Ordering::Acquire) {
            return Err(closed_before_reply());
        }
        if !library::logged_in() {
            return Err(no_account("logout"));
        }
        let mark = library::logout_starts();
        let r = self.run(h, call, 0, sent);
        library::logout_ended(mark, r.is_ok());
        r
    }

    /// Makes the call, calling `sent` just before the backend is; the caller holds the
    /// handle's lock.
    fn run(
        &self,
        h: library::Handle,
        call: Call,
        id: i64,
        sent: &dyn Fn(),
    ) -> Result<Bytes, Error> {
        match call {
            Call::Command { command, data } => {
                let command = CString::new(command).map_err(|_| {
                    Error::new(
                        Status::ErrInvalidArgument,
                        "command name contains a NUL byte",
                    )
                })?;
                sent();
                self.api.submit(h, &command, data, self.client)
            }
            Call::Upload { params, bytes } => {
                sent();
                self.api.upload(h, id, params, bytes, self.client)
            }
            Call::Download { params } => self.api.download(h, id, params, self.client, sent),
        }
    }
}

/// Locks `root/tether.lock` for this process (released when the file closes), so a client
/// of another process on the same data root is refused instead of sharing the database with
/// this one (a second client in this process is refused by the process slot before).
fn lock_root(root: &Path) -> Result<File, Error> {
    use std::os::fd::AsRawFd;
    let path = root.join("tether.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| {
            Error::new(
                Status::ErrConfig,
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
    // A POSIX record lock, not flock(2): it belongs to this process, so a child forked
    // without exec (Python's multiprocessing) does not keep the root locked after this
    // client closed. Such a lock ends when any descriptor of the file closes in this
    // process: only this function opens it, and it does not run while this process holds
    // the lock (the process slot, taken first, refuses a second backend).
    // SAFETY: zeroed is a valid `flock` (plain integers); the fields set are the ones the
    // call reads.
    let mut whole: libc::flock = unsafe { std::mem::zeroed() };
    whole.l_type = libc::F_WRLCK as _;
    whole.l_whence = libc::SEEK_SET as _;
    // SAFETY: a valid open descriptor and a valid `flock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &whole) } != 0 {
        return Err(Error::new(
            Status::ErrInUse,
            format!(
                "the data root {} is in use by another client",
                root.display()
            ),
        ));
    }
    Ok(file)
}

impl Local for InProcess {
    fn start(&self, sink: Sink) -> Result<(), Error> {
        library::set_sink(Some((sink, self.api, self.client)));
        let mut slot = self.handle.write().unwrap_or_else(|e| e.into_inner());
        let h = self.api.init(&self.root);
        *slot = Some(h);
        // Held across the start: no call may reach the FFI before it returned.
        let code = self.api.start(h);
        library::started();
        drop(slot);
        let status = match code {
            0 => return Ok(()),
            10 => Status::ErrBackendDatabase,
            11 => Status::ErrBackendAccount,
            _ => Status::ErrBackendStart,
        };
        Err(Error::new(
            status,
            format!(
                "GomuksStart returned {code}; the backend's log is under the data root ({})",
                self.root.to_string_lossy()
            ),
        ))
    }

    /// Uploads and streamed downloads each take one of the FFI's progress or chunk callbacks
    /// while they run (`library::Slots`).
    fn lane(&self, message: &Message) -> Option<usize> {
        match message {
            Message::Binary(b) => match b.first() {
                Some(&(FRAME_UPLOAD_BYTES | FRAME_UPLOAD_PATH)) => Some(0),
                Some(&FRAME_DOWNLOAD) => Some(1),
                _ => None,
            },
            _ => None,
        }
    }

    fn call(&self, id: i64, message: &Message, sent: &dyn Fn()) -> Result<Bytes, Error> {
        let call = unpack(message)?;
        if matches!(&call, Call::Command { command, .. } if command == "logout") {
            return self.logout(call, sent);
        }
        let newer = self.api.streams_downloads();
        let needs_account = match &call {
            Call::Upload { .. } => Some("upload_media"),
            Call::Command { command, .. } => NEEDS_ACCOUNT_IN_FFI
                .iter()
                .chain(if newer {
                    NEEDS_ACCOUNT_IN_NEWER_FFI
                } else {
                    &[]
                })
                .copied()
                .find(|c| c == command)
                .or_else(|| super::needs_account(command).then_some(command.as_str())),
            // Without the FFI's download, ERR_UNSUPPORTED says more.
            Call::Download { .. } => newer.then_some("download_media"),
        };
        let handle = self.handle.read().unwrap_or_else(|e| e.into_inner());
        let Some(h) = *handle else {
            return Err(closed_before_reply());
        };
        // A call that waited for a logout's lock past the close was answered already.
        if self.stopping.load(Ordering::Acquire) {
            return Err(closed_before_reply());
        }
        if library::revoked() {
            return Err(Error::new(
                Status::ErrState,
                "the backend is logging out by itself: the homeserver no longer accepts this \
                 session (signed out from elsewhere?); requests are refused until its next \
                 client_state (if none comes, its logout failed: close the client)",
            ));
        }
        // Under the lock: a logout, which ends the account, runs under the write lock, so
        // one that was waiting when this call came has finished by now.
        if let Some(what) = needs_account {
            if !library::logged_in() {
                return Err(no_account(what));
            }
        }
        self.run(h, call, id, sent)
    }

    fn closing(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn stop(&self) {
        self.closing();
        let handle = self
            .handle
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            self.api.destroy(h);
            tlog!(self.client, Info, "session", "in-process backend stopped");
        }
        library::set_sink(None);
        crate::lock(&self.held).take();
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // Only reached with something held when the session task died without stopping.
        if self.held.get_mut().map(|h| h.is_some()).unwrap_or(true) {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requests_unpack_to_command_and_data() {
        let m = super::super::codec::request_message(7, "get_state", b"{\"a\":1}");
        assert_eq!(
            unpack(&m).unwrap(),
            Call::Command {
                command: "get_state".into(),
                data: b"{\"a\":1}"
            }
        );
        let m = super::super::codec::request_message(8, "x\"y", b"");
        assert_eq!(
            unpack(&m).unwrap(),
            Call::Command {
                command: "x\"y".into(),
                data: b"{}"
            }
        );
    }

    #[test]
    fn media_frames_round_trip() {
        let m = media_message(
            3,
            Media::Upload(Some(b"\x00\x01raw")),
            b"{\"filename\":\"a\"}",
        );
        assert_eq!(
            unpack(&m).unwrap(),
            Call::Upload {
                params: b"{\"filename\":\"a\"}",
                bytes: Some(b"\x00\x01raw")
            }
        );
        let m = media_message(4, Media::Upload(None), b"{\"path\":\"/p\"}");
        assert_eq!(
            unpack(&m).unwrap(),
            Call::Upload {
                params: b"{\"path\":\"/p\"}",
                bytes: None
            }
        );
        let m = media_message(5, Media::Download, b"{\"mxc\":\"mxc://a/b\"}");
        assert_eq!(
            unpack(&m).unwrap(),
            Call::Download {
                params: b"{\"mxc\":\"mxc://a/b\"}"
            }
        );
    }

    #[test]
    fn broken_frames_are_errors() {
        for bad in [
            Message::binary(vec![]),
            Message::binary(vec![1, 200, 0, 0, 0, b'{']),
            Message::binary(vec![9, 2, 0, 0, 0, b'{', b'}']),
            Message::text("not json"),
            Message::Ping(Default::default()),
        ] {
            assert_eq!(unpack(&bad).unwrap_err().status(), Status::ErrProtocol);
        }
    }
}
