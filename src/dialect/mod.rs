//! Wire dialects. Each plugs into the session supervisor through [`Dialect`].

use std::future::Future;

use bytes::Bytes;
use std::borrow::Cow;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use crate::session::transport::{ConnectError, Ws};
use crate::session::CloseIntent;
use crate::status::{Error, Status};

pub mod gomuks;
pub mod rwws;

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
    },
    /// Raw bytes for the app (rwws).
    Packet(Bytes),
}

/// What to do after a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Reconnect after the backoff delay.
    Backoff,
    /// Reconnect at once.
    Immediately,
    /// Give up; the client closes.
    Stop,
}

/// The upgrade request for one attempt.
pub struct Upgrade {
    /// Websocket URL with query parameters.
    pub url: Url,
    /// Extra headers (auth cookie, ...).
    pub headers: Vec<(String, String)>,
    /// Whether this attempt asks the server to resume.
    pub resume_attempted: bool,
}

/// One protocol's side of the session.
pub trait Dialect: Send + 'static {
    /// Prepares an attempt (auth, resume parameters).
    fn prepare(&mut self) -> impl Future<Output = Result<Upgrade, ConnectError>> + Send;
    /// The upgrade was refused with 401: refresh credentials and return true to retry at once,
    /// or false to give up.
    fn reauthenticate(&mut self) -> impl Future<Output = Result<bool, ConnectError>> + Send;
    /// Protocol handshake after the upgrade (rwws hello/auth); gomuks has none. Events the
    /// handshake decodes (the rwws auth Pong) go to `out` once the connection is reported.
    fn handshake(
        &mut self,
        ws: &mut Ws,
        out: &mut Vec<Incoming>,
    ) -> impl Future<Output = Result<(), ConnectError>> + Send;
    /// Decodes one websocket data message.
    fn decode(&mut self, msg: Message, out: &mut dyn FnMut(Incoming)) -> Result<(), Error>;
    /// The next keepalive ping; returns the message and the id it acknowledges (0 if none).
    fn ping(&mut self, id: i64) -> (Message, i64);
    /// The server answered a ping that carried `acked`.
    fn ping_answered(&mut self, acked: i64);
    /// Encodes a request.
    fn request(&mut self, id: i64, command: &str, data: &[u8]) -> Message;
    /// Encodes a cancel of request `target`, if the dialect has one.
    fn cancel(&mut self, id: i64, target: i64, reason: &str) -> Option<Message>;
    /// The connection ended with this status and close code.
    fn policy(&self, status: Status, close_code: u16) -> Policy;
    /// Close code and reason for a client-initiated close.
    fn final_close(&self, intent: CloseIntent) -> (u16, &'static str);
    /// A new connection starts (reset per-connection state such as the inflater).
    fn on_connected(&mut self);
    /// The status a server close frame with `code` maps to.
    fn close_status(&self, _code: u16) -> Status {
        Status::ErrRemoteClosed
    }
    /// Close code and reason sent when nothing arrived within the receive timeout.
    fn timeout_close(&self) -> (u16, &'static str);
    /// Delay of the first ping on a new connection (`None`: the ping interval).
    fn first_ping_delay(&self) -> Option<std::time::Duration> {
        None
    }
    /// Encodes a raw packet for the wire, if the dialect carries raw packets.
    fn packet(&mut self, _bytes: &[u8]) -> Option<Message> {
        None
    }
}

/// What an app persists to come back later, readable at any time while the session task
/// updates it: the resume point and the credential the next connection sends.
#[derive(Debug, Default)]
pub struct SharedResume {
    run_id: std::sync::Mutex<String>,
    last_event: std::sync::atomic::AtomicI64,
    token: std::sync::Mutex<Option<crate::config::Secret>>,
}

impl SharedResume {
    /// Seeded from the configuration.
    pub fn new(cfg: &crate::config::Config) -> SharedResume {
        SharedResume {
            run_id: std::sync::Mutex::new(cfg.resume.run_id.clone()),
            last_event: std::sync::atomic::AtomicI64::new(cfg.resume.last_received_event),
            token: std::sync::Mutex::new(cfg.token.clone()),
        }
    }

    /// The token the next connection sends: the configured one, or the one the last login or
    /// renewal obtained.
    pub fn token(&self) -> Option<crate::config::Secret> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a token obtained from the backend.
    pub fn set_token(&self, token: crate::config::Secret) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
    }

    /// A consistent snapshot.
    pub fn get(&self) -> crate::config::ResumeState {
        let run_id = self
            .run_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        crate::config::ResumeState {
            run_id,
            last_received_event: self.last_event(),
        }
    }

    /// Most recent negative event id.
    pub fn last_event(&self) -> i64 {
        self.last_event.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records a received event id (ids only decrease within a run).
    pub fn advance(&self, id: i64) {
        self.last_event
            .fetch_min(id, std::sync::atomic::Ordering::AcqRel);
    }

    /// Forgets older ids after a backend restart.
    pub fn reset_last_event(&self, id: i64) {
        self.last_event
            .store(id, std::sync::atomic::Ordering::Release);
    }

    /// Stores the run id; returns true if it changed from a known, different one or was unknown.
    pub fn set_run_id(&self, run_id: &str) -> bool {
        let mut g = self.run_id.lock().unwrap_or_else(|e| e.into_inner());
        if *g == run_id {
            return false;
        }
        *g = run_id.to_owned();
        true
    }
}
