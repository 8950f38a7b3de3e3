//! The interface the supervisor drives each wire dialect through. The supervisor owns it;
//! the dialects (gomuks, rwws) implement it. It carries only what both dialects do: a
//! capability one of them lacks (requests, raw packets) never passes through here.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use super::transport::{ConnectError, Ws};
use crate::event::ResumeOutcome;
use crate::secret::Secret;
use crate::status::{Error, Status};

/// A decoded server message, as the supervisor needs it.
#[derive(Debug)]
pub enum Incoming {
    /// A reply to request `id`: `Ok(data)` or `Err(error data)`.
    Reply {
        /// Request id.
        id: i64,
        /// Whether the server reported success.
        ok: bool,
        /// Raw JSON data.
        data: Bytes,
    },
    /// A keepalive reply.
    Pong {
        /// The ping's id (gomuks) or 0 (rwws).
        id: i64,
        /// Server unix millis (rwws), 0 if unknown.
        server_time_ms: i64,
    },
    /// A server event for the app.
    Event {
        /// Command name, NUL-terminated.
        command: Cow<'static, str>,
        /// Event id (negative, or 0).
        id: i64,
        /// Raw JSON data.
        data: Bytes,
        /// gomuks: the resume era of a buffered event, 0 otherwise (`Event::resume_era`).
        era: u32,
    },
    /// Raw bytes for the app (rwws).
    Packet(Bytes),
    /// gomuks: the outcome of the resume this connection asked for, decided by the message
    /// that follows (§7.2).
    Resumed(ResumeOutcome),
    /// In-process: request `id` failed on our side of the transport (not a backend `error`
    /// reply, which is [`Incoming::Reply`]).
    Failed {
        /// Request id.
        id: i64,
        /// Why.
        error: Error,
    },
    /// In-process: progress of the upload that is request `id`, as the backend reports it.
    Progress {
        /// Request id of the upload.
        id: i64,
        /// Percent done.
        progress: f64,
    },
    /// In-process: the next bytes of the download that is request `id`.
    Chunk {
        /// Request id of the download.
        id: i64,
        /// The bytes.
        data: Bytes,
    },
}

/// The result of a credential renewal that ran beside a connection: the new credential,
/// `None` when the server needs none, or why it failed.
pub(crate) type Renewal = Result<Option<Secret>, ConnectError>;

/// What to do after a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Reconnect after the backoff delay.
    Backoff,
    /// Reconnect at once.
    Immediately,
    /// Give up; the client closes.
    Stop,
}

/// What a client-initiated close tells the server about resuming later (gomuks-rpc.md §7.1:
/// only close code 1001 frees this client's entry in the backend's event buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseIntent {
    /// Done for good: the server may forget us (gomuks: 1001 frees the buffer entry).
    Final,
    /// The app keeps the resume state to resume later: keep our entry (gomuks: 1000).
    KeepResume,
}

/// A connection the dialect opened and, where the protocol has one, authenticated.
pub(crate) struct Opened {
    /// The websocket.
    pub(crate) ws: Ws,
    /// Whether this connection asked the server to resume.
    pub(crate) resume_attempted: bool,
    /// Messages the handshake already decoded (the rwws auth pong), delivered once the
    /// connection is reported.
    pub(crate) early: Vec<Incoming>,
}

/// One protocol's side of the session.
pub(crate) trait Dialect: Send + 'static {
    /// Opens one connection: credentials, the upgrade and the protocol's handshake. The
    /// supervisor bounds the whole call by twice the connect timeout.
    fn open(&mut self) -> impl Future<Output = Result<Opened, ConnectError>> + Send;
    /// Whether the next [`Dialect::open`] will ask the server to resume.
    fn will_resume(&self) -> bool {
        false
    }
    /// Whether the events [`Dialect::decode`] makes from `msg` keep slices of it (so the
    /// session copies a small payload out of tungstenite's read buffer first: see
    /// `transport::PayloadCopies`).
    fn keeps_slices_of(&self, msg: &Message) -> bool {
        let _ = msg;
        true
    }
    /// Decodes one websocket data message.
    fn decode(&mut self, msg: Message, out: &mut dyn FnMut(Incoming)) -> Result<(), Error>;
    /// The next keepalive ping; returns the message and the event id it acknowledges (0 if
    /// none).
    fn ping(&mut self, id: i64) -> (Message, i64);
    /// Delay of the first ping on a new connection.
    fn first_ping_delay(&self, interval: Duration) -> Duration;
    /// What to do after the connection ended with this status and close code. The
    /// supervisor grants `Immediately` once in a row: until a connection proves stable, the
    /// next is `Backoff`, so a server that keeps asking for it gets no reconnect storm.
    fn policy(&self, status: Status, close_code: u16) -> Policy;
    /// What a server's close with this code says about this client, when it says something
    /// the app should hear (logged as a warning with the disconnect).
    fn close_note(&self, _close_code: u16) -> Option<&'static str> {
        None
    }
    /// How long a connection that carried data must have lasted to reset the backoff (and
    /// the once-in-a-row `Immediately`), unless it proved itself sooner ([`Dialect::proved`]).
    /// Zero: any such connection.
    fn stable_after(&self) -> Duration {
        Duration::ZERO
    }
    /// Whether the connection that just ended got through the protocol's start (gomuks: its
    /// `init_complete`, or a `client_state` without a verified account), which resets the
    /// backoff however short it was.
    fn proved(&self) -> bool {
        false
    }
    /// The status a server close frame with `code` maps to.
    fn close_status(&self, code: u16) -> Status;
    /// Close code and reason for a client-initiated close.
    fn final_close(&self, intent: CloseIntent) -> (u16, &'static str);
    /// Close code and reason sent when nothing arrived within the receive timeout.
    fn timeout_close(&self) -> (u16, &'static str);
    /// When a credential renewal is due while connected (gomuks: the token, before it
    /// expires, spec §1.2); `None` when there is nothing to renew.
    fn renew_at(&self) -> Option<std::time::Instant> {
        None
    }
    /// Starts that renewal. The future runs beside the connection (reads, pings and commands
    /// go on meanwhile) and its result goes to [`Dialect::renewed`]; it is dropped if the
    /// connection ends first.
    fn renew(&mut self) -> Pin<Box<dyn Future<Output = Renewal> + Send>> {
        Box::pin(std::future::pending())
    }
    /// Takes the result of a renewal started with [`Dialect::renew`].
    fn renewed(&mut self, _result: Renewal) {}
}
