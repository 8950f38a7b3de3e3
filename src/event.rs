//! Events delivered to the application, in order, through the bounded queue.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;

use crate::status::Status;

/// What an [`Event`] reports. Discriminants are the C ABI's `TETHER_EVENT_*` values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A connection attempt starts (in-process: the backend is being started).
    Connecting = 1,
    /// The websocket is open (and, for rwws, authenticated); in-process: the backend started.
    Connected = 2,
    /// The connection ended; see status, close code, reason and whether a retry follows.
    /// In-process: the backend stopped (closed by the app, or its start failed); never
    /// retried.
    Disconnected = 3,
    /// A server event (gomuks: every non-reply message, `run_id` and friends included;
    /// in-process: every event of the backend's callback, all with id 0).
    Message = 4,
    /// The reply to a request (success or failure, see status).
    Response = 5,
    /// A keepalive reply, with the round-trip time.
    Pong = 6,
    /// rwws: a packet the library does not consume.
    Packet = 7,
    /// The client is closed; always the last event.
    Closed = 8,
    /// gomuks: what became of the resume this connection asked for (CONNECTED said
    /// `resume_attempted`): see the resume outcome. Once per such connection, as soon as the
    /// first messages decide it, and before the message that decided it (`run_id`,
    /// `sync_complete` with `clear_state`, or `init_complete`), so an app that drops its cache
    /// on a reset does so before the fresh state arrives (gomuks-rpc.md §7.2, §7.5). None when
    /// the connection ends before the outcome is known (the next one asks again).
    Resumed = 9,
    /// gomuks: a new `gomuks_auth` token replaced the one the client held (a renewal while
    /// connected before the old one expires, one before a reconnect or after a 401, or a new
    /// login with the configured username and password); read it with `auth_token()` and
    /// persist it in place of the old one. Carries no secret (gomuks-rpc.md §1.2). The first
    /// token of a password login is not announced: read it after CONNECTED.
    TokenRenewed = 10,
    /// In-process: progress of the media upload with this request id (see `progress`; the
    /// data is the same number as JSON). Any number of them precede the upload's RESPONSE.
    Progress = 11,
    /// In-process: the next bytes of the media download with this request id (the data).
    /// They arrive in order, before the download's RESPONSE.
    Chunk = 12,
    /// A store attached to this client applied an event or an answer (see `Store`): the data
    /// is the JSON change set (`gen`, what changed, the ids). It follows the MESSAGE (or
    /// CONNECTED, DISCONNECTED with a retry) it reflects and precedes the RESPONSE of a store action, so a read after either sees the
    /// change.
    Store = 13,
    /// A request, packet or upload was refused (SEND_BUFFER_FULL), and enough has been
    /// written (or has ended) since that the largest message refused would fit with at most
    /// half of `max_unsent_bytes` waiting: send again. One per run of refusals, however many
    /// calls were refused; an app that is never refused never sees one, and none follows the
    /// DISCONNECTED that ends the client for good, or a close (bar one already under way).
    /// Carries nothing. Another thread (a callback, an event-fd loop) may get it before the
    /// refused call has returned to its caller: keep what was refused where the handler finds
    /// it, under the lock the send holds.
    SendReady = 14,
    /// rwws: a packet the client took (`send_packet`, `send_settings`) but never wrote,
    /// handed back as the client ends (the app closed it, or it stopped for good) so nothing
    /// is lost without a word: the data is the packet's bytes, ready to send again on another
    /// client. One per packet, in the order they were sent, after the DISCONNECTED of a stop
    /// for good and before CLOSED; the status is CLIENT_CLOSED (PANIC after an internal
    /// panic, before its DISCONNECTED). Written means handed to the
    /// connection: the websocket writer's buffer (about 128 KiB) and the kernel's send
    /// buffer hold what the peer has not taken yet, and what they hold when a connection is
    /// cut, or a close runs out of time against a peer that stopped reading, is lost with it;
    /// the protocol has no acknowledgement to tell. Freeing (dropping) a client without
    /// closing it discards its events, these too.
    Unsent = 15,
}

/// What a RESUMED event reports. Discriminants are the C ABI's `TETHER_RESUME_*` values (0
/// means "no outcome": every event that is not RESUMED).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResumeOutcome {
    /// The resume succeeded: every event missed since the resume point is delivered exactly
    /// once, in order, before `init_complete`; the app's cached state stays valid.
    Succeeded = 1,
    /// The server's state was reset (the backend restarted and its `run_id` changed, or its
    /// event buffer no longer held the resume point): missed events are lost and the server
    /// sends its state afresh (`sync_complete` with `clear_state`); drop the cached state.
    Reset = 2,
    /// The resume point was gone (the backend restarted or no longer held it, as for `Reset`),
    /// but the app configured `last_server_ts`, so the server sends what changed since then as
    /// one `sync_complete` with `catchup` instead of the missed events: the cached state stays
    /// valid once that is applied; the missed events themselves are not delivered
    /// (gomuks-rpc.md §6.1).
    CaughtUp = 3,
}

/// One event. Cheap to move: payloads are reference-counted slices of the received message.
#[derive(Clone, Debug)]
pub struct Event {
    pub(crate) kind: EventKind,
    pub(crate) request_id: i64,
    pub(crate) status: Status,
    /// Always NUL-terminated so the C ABI can lend it without copying.
    pub(crate) command: Cow<'static, str>,
    pub(crate) data: Bytes,
    pub(crate) close_code: u16,
    pub(crate) resume_attempted: bool,
    pub(crate) retry_in: Option<Duration>,
    pub(crate) rtt: Option<Duration>,
    pub(crate) acked_id: i64,
    pub(crate) server_time_ms: i64,
    pub(crate) attempt: u32,
    pub(crate) resume_outcome: Option<ResumeOutcome>,
    pub(crate) progress: Option<f64>,
    /// gomuks: the resume era of a buffered event (see `SharedResume`), 0 for any other
    /// event: taking it moves the resume point the app persists.
    pub(crate) resume_era: u32,
}

const EMPTY_COMMAND: &str = "\0";

impl Event {
    pub(crate) fn new(kind: EventKind) -> Event {
        Event {
            kind,
            request_id: 0,
            status: Status::Ok,
            command: Cow::Borrowed(EMPTY_COMMAND),
            data: Bytes::new(),
            close_code: 0,
            resume_attempted: false,
            retry_in: None,
            rtt: None,
            acked_id: 0,
            server_time_ms: 0,
            attempt: 0,
            resume_outcome: None,
            progress: None,
            resume_era: 0,
        }
    }

    /// The kind.
    pub fn kind(&self) -> EventKind {
        self.kind
    }
    /// Request id for RESPONSE and PONG; the server's event id (negative, or 0) for MESSAGE.
    pub fn request_id(&self) -> i64 {
        self.request_id
    }
    /// RESPONSE: the outcome; DISCONNECTED: the reason; UNSENT: `ErrClientClosed`, or
    /// `ErrPanic` after an internal panic; otherwise `Ok`.
    pub fn status(&self) -> Status {
        self.status
    }
    /// gomuks command name of a MESSAGE (`sync_complete`, `run_id`, ...), `""` otherwise.
    pub fn command(&self) -> &str {
        &self.command[..self.command.len() - 1]
    }
    /// The command name with its terminating NUL (for the C ABI).
    pub fn command_with_nul(&self) -> &str {
        &self.command
    }
    /// MESSAGE/RESPONSE: the raw JSON of the envelope's `data`, exactly as received;
    /// PACKET and UNSENT: the packet bytes; DISCONNECTED: the close reason or error text.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// The data as a shared buffer (no copy).
    pub fn data_bytes(&self) -> &Bytes {
        &self.data
    }
    /// DISCONNECTED: the websocket close code (0 when the connection ended without a close
    /// frame), or the HTTP status when the upgrade was refused.
    pub fn close_code(&self) -> u16 {
        self.close_code
    }
    /// CONNECTING, CONNECTED, DISCONNECTED: whether this connection asked (CONNECTING: will
    /// ask) the server to resume.
    pub fn resume_attempted(&self) -> bool {
        self.resume_attempted
    }
    /// DISCONNECTED: when the next attempt starts; `None` means no retry (CLOSED follows).
    /// Later if the event queue is full by then: the attempt waits for room (see
    /// [`crate::ConfigBuilder::queue_capacity`]).
    pub fn retry_in(&self) -> Option<Duration> {
        self.retry_in
    }
    /// PONG: the round-trip time of the ping. `None` for a pong that answers no ping of ours
    /// (rwws: the answer to the auth frame), and for one that may have waited unread: while
    /// the app lets its queue fill, the client stops reading, and the time would be the app's
    /// stall, not the network's latency.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }
    /// PONG (gomuks): the event id this ping acknowledged (0 if it carried no ack).
    pub fn acked_id(&self) -> i64 {
        self.acked_id
    }
    /// PONG (rwws): the server's unix time in milliseconds (0 if absent or not a date).
    pub fn server_time_ms(&self) -> i64 {
        self.server_time_ms
    }
    /// CONNECTING/CONNECTED/DISCONNECTED: the connection attempt number (1-based).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// RESUMED: whether the resume succeeded or the server's state was reset; `None` for other
    /// kinds.
    pub fn resume_outcome(&self) -> Option<ResumeOutcome> {
        self.resume_outcome
    }
    /// PROGRESS: how much of the upload is done, as the backend reports it: gomuks v0.2607.0
    /// reports a fraction from 0 to 1 (its header promises a percentage); `None` for other
    /// kinds.
    pub fn progress(&self) -> Option<f64> {
        self.progress
    }
    /// Whether the data is a JSON `null` (or empty).
    pub fn data_is_null(&self) -> bool {
        self.data.is_empty() || &self.data[..] == b"null"
    }
}

/// Interns the command names of the gomuks spec (§4.2) so most events allocate nothing.
pub(crate) fn command_name(name: &str) -> Cow<'static, str> {
    const KNOWN: &[&str] = &[
        "sync_complete\0",
        "events_decrypted\0",
        "typing\0",
        "send_complete\0",
        "run_id\0",
        "client_state\0",
        "sync_status\0",
        "image_auth_token\0",
        "init_complete\0",
    ];
    for k in KNOWN {
        if &k[..k.len() - 1] == name {
            return Cow::Borrowed(k);
        }
    }
    let mut s = String::with_capacity(name.len() + 1);
    // An interior NUL would truncate the name for C callers; the server never sends one.
    s.extend(name.chars().filter(|&c| c != '\0'));
    s.push('\0');
    Cow::Owned(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_keep_nul_internally() {
        assert!(matches!(command_name("typing"), Cow::Borrowed(_)));
        let c = command_name("x\0y");
        assert_eq!(&*c, "xy\0");
        let mut ev = Event::new(EventKind::Message);
        ev.command = command_name("custom");
        assert_eq!(ev.command(), "custom");
        assert_eq!(Event::new(EventKind::Pong).command(), "");
    }
}
