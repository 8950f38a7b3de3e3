//! The gomuks JSON RPC dialect (spec: shared/protocols/gomuks-rpc.md, §16 is the algorithm).

pub mod auth;
pub mod codec;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio_tungstenite::tungstenite::Message;

use crate::config::{Config, Secret};
use crate::dialect::{Dialect, Incoming, Policy, SharedResume, Upgrade};
use crate::session::transport::{ConnectError, Ws};
use crate::session::CloseIntent;
use crate::status::{Error, Status};
use codec::{parse_envelope, Inflater, Kind, LineSplitter};

/// gomuks session state that outlives single connections: credentials and the resume point.
pub struct Gomuks {
    cfg: Arc<Config>,
    http: reqwest::Client,
    token: Option<Secret>,
    auth_disabled: bool,
    resume: Arc<SharedResume>,
    listener_id: u64,
    /// Most negative event id seen on the current connection (spec §7.2: a changed run_id
    /// makes every older id meaningless, but ids from this connection already belong to it).
    conn_min_event: i64,
    /// Last id sent as an ack; the same id is never acked twice (spec §7.4 item 2).
    last_sent_ack: i64,
    inflater: Option<Inflater>,
    splitter: LineSplitter,
    scratch: BytesMut,
    /// Attempts since the last successful upgrade: the gomuks web client refreshes its token
    /// before every retry but the first (spec §10).
    attempts_since_open: u32,
    /// When the current token was fetched; refreshed daily (spec §2: tokens live 7 days).
    token_fetched: Option<std::time::Instant>,
}

/// Tokens are refreshed after this long, well inside their 7-day life.
const TOKEN_REFRESH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Gomuks {
    /// A dialect for this configuration.
    pub fn new(
        cfg: Arc<Config>,
        tls: Arc<rustls::ClientConfig>,
        resume: Arc<SharedResume>,
    ) -> Result<Gomuks, Error> {
        let http = auth::http_client(tls, cfg.connect_timeout)?;
        // A configured token's age is unknown: count from now, so a long-running client renews
        // it daily like a fetched one instead of letting it expire after 7 days.
        let token_fetched = cfg.token.as_ref().map(|_| std::time::Instant::now());
        Ok(Gomuks {
            token: cfg.token.clone(),
            splitter: LineSplitter::new(cfg.max_message_bytes),
            cfg,
            http,
            auth_disabled: false,
            resume,
            listener_id: 0,
            conn_min_event: 0,
            last_sent_ack: 0,
            inflater: None,
            scratch: BytesMut::new(),
            attempts_since_open: 0,
            token_fetched,
        })
    }

    /// Gets a fresh token: from the Basic credentials when configured, else by renewing the
    /// token we hold (spec §1.2). Without either there is nothing to do.
    async fn login(&mut self) -> Result<(), ConnectError> {
        let creds = match (&self.cfg.basic_auth, &self.token) {
            (Some(b), _) => auth::Credentials::Basic(b),
            (None, Some(t)) => auth::Credentials::Cookie(t.expose()),
            (None, None) => return Ok(()),
        };
        let url = auth::auth_url(&self.cfg.url);
        match auth::fetch_token(&self.http, &url, creds).await? {
            Some(t) => {
                let t = Secret::new(t);
                self.resume.set_token(t.clone());
                self.token = Some(t);
                self.token_fetched = Some(std::time::Instant::now());
            }
            None => self.auth_disabled = true,
        }
        Ok(())
    }

    fn observe_event(&mut self, command: &str, id: i64, data: &[u8]) {
        if id < 0 {
            self.conn_min_event = self.conn_min_event.min(id);
            self.resume.advance(id);
        }
        if command == "run_id" {
            #[derive(serde::Deserialize)]
            struct RunData {
                run_id: String,
                #[serde(default)]
                listener_id: u64,
            }
            match serde_json::from_slice::<RunData>(data) {
                Ok(rd) => {
                    self.listener_id = rd.listener_id;
                    if self.resume.set_run_id(&rd.run_id) {
                        // New backend process: only this connection's ids are valid.
                        self.resume.reset_last_event(self.conn_min_event);
                        self.last_sent_ack = 0;
                    }
                }
                Err(e) => tracing::warn!("ignoring malformed run_id event: {e}"),
            }
        }
    }

    fn dispatch_line(&mut self, line: Bytes, out: &mut dyn FnMut(Incoming)) -> Result<(), Error> {
        let env = parse_envelope(&line)?;
        match env.kind() {
            Kind::Response | Kind::Error => out(Incoming::Reply {
                id: env.request_id,
                ok: env.kind() == Kind::Response,
                data: env.data,
            }),
            Kind::Pong => out(Incoming::Pong {
                id: env.request_id,
                server_time_ms: 0,
            }),
            Kind::Event => {
                let name = &env.command[..env.command.len() - 1];
                self.observe_event(name, env.request_id, &env.data);
                out(Incoming::Event {
                    command: env.command,
                    id: env.request_id,
                    data: env.data,
                })
            }
        }
        Ok(())
    }
}

impl Dialect for Gomuks {
    async fn prepare(&mut self) -> Result<Upgrade, ConnectError> {
        self.attempts_since_open = self.attempts_since_open.saturating_add(1);
        let stale = self
            .token_fetched
            .is_some_and(|t| t.elapsed() >= TOKEN_REFRESH);
        let retrying = self.attempts_since_open >= 2;
        if (self.token.is_none() || stale || retrying) && !self.auth_disabled {
            self.login().await?;
        }
        let mut url = self.cfg.url.clone();
        let snapshot = self.resume.get();
        let resume_attempted = !snapshot.run_id.is_empty() && snapshot.last_received_event < 0;
        {
            let mut q = url.query_pairs_mut();
            if self.cfg.compression {
                q.append_pair("compress", "1");
            }
            if resume_attempted {
                q.append_pair("run_id", &snapshot.run_id);
                q.append_pair(
                    "last_received_event",
                    &snapshot.last_received_event.to_string(),
                );
                if self.cfg.send_prev_listener_id && self.listener_id != 0 {
                    q.append_pair("prev_listener_id", &self.listener_id.to_string());
                }
            }
            if let Some(ts) = self.cfg.last_server_ts {
                q.append_pair("last_server_ts", &ts.to_string());
            }
        }
        let mut headers = Vec::new();
        if let Some(t) = &self.token {
            headers.push(("Cookie".to_owned(), format!("gomuks_auth={}", t.expose())));
        }
        // The server's ack entry for a resumed listener starts at the resume point.
        self.last_sent_ack = if resume_attempted {
            snapshot.last_received_event
        } else {
            0
        };
        Ok(Upgrade {
            url,
            headers,
            resume_attempted,
        })
    }

    async fn reauthenticate(&mut self) -> Result<bool, ConnectError> {
        if self.cfg.basic_auth.is_none() {
            return Ok(false);
        }
        self.token = None;
        self.login().await?;
        Ok(true)
    }

    async fn handshake(
        &mut self,
        _ws: &mut Ws,
        _out: &mut Vec<Incoming>,
    ) -> Result<(), ConnectError> {
        Ok(())
    }

    fn decode(&mut self, msg: Message, out: &mut dyn FnMut(Incoming)) -> Result<(), Error> {
        match msg {
            Message::Text(text) => {
                if self.inflater.is_some() {
                    return Err(Error::new(
                        Status::ErrProtocol,
                        "text frame in compressed mode",
                    ));
                }
                let mut b = Bytes::from(text);
                while b.last() == Some(&b'\n') {
                    b.truncate(b.len() - 1);
                }
                self.dispatch_line(b, out)
            }
            Message::Binary(data) => {
                let Some(inf) = self.inflater.as_mut() else {
                    return Err(Error::new(
                        Status::ErrProtocol,
                        "binary frame in uncompressed mode",
                    ));
                };
                let mut buf = std::mem::take(&mut self.scratch);
                buf.clear();
                inf.inflate(&data, &mut buf)?;
                let decoded = buf.split().freeze();
                self.scratch = buf;
                let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(0));
                let r = splitter.feed(decoded, |line| self.dispatch_line(line, out));
                self.splitter = splitter;
                r
            }
            _ => Ok(()),
        }
    }

    fn ping(&mut self, id: i64) -> (Message, i64) {
        let last = self.resume.last_event();
        let ack = if last != 0 && last != self.last_sent_ack {
            last
        } else {
            0
        };
        if ack != 0 {
            self.last_sent_ack = ack;
        }
        let text = format!(
            r#"{{"command":"ping","request_id":{id},"data":{{"last_received_id":{ack}}}}}"#
        );
        (Message::text(text), ack)
    }

    fn ping_answered(&mut self, _acked: i64) {}

    fn request(&mut self, id: i64, command: &str, data: &[u8]) -> Message {
        let cmd = serde_json::to_string(command).unwrap_or_else(|_| "\"\"".to_owned());
        let data = if data.is_empty() {
            "{}"
        } else {
            std::str::from_utf8(data).unwrap_or("{}")
        };
        Message::text(format!(
            r#"{{"command":{cmd},"request_id":{id},"data":{data}}}"#
        ))
    }

    fn cancel(&mut self, id: i64, target: i64, reason: &str) -> Option<Message> {
        let reason = serde_json::to_string(reason).unwrap_or_else(|_| "\"\"".to_owned());
        Some(Message::text(format!(
            r#"{{"command":"cancel","request_id":{id},"data":{{"request_id":{target},"reason":{reason}}}}}"#
        )))
    }

    fn policy(&self, status: Status, _close_code: u16) -> Policy {
        match status {
            Status::ErrUnauthorized | Status::ErrForbidden | Status::ErrConfig => Policy::Stop,
            _ => Policy::Backoff,
        }
    }

    fn timeout_close(&self) -> (u16, &'static str) {
        (4002, "Ping timeout")
    }

    fn final_close(&self, intent: CloseIntent) -> (u16, &'static str) {
        // Only 1001 makes the backend drop this listener's buffer entry (spec §7.1, §7.4);
        // any other code keeps the missed events for a later resume.
        match intent {
            CloseIntent::Final => (1001, "client closed"),
            CloseIntent::KeepResume => (1000, "client suspended, will resume"),
        }
    }

    fn on_connected(&mut self) {
        self.attempts_since_open = 0;
        self.inflater = self
            .cfg
            .compression
            .then(|| Inflater::new(self.cfg.max_message_bytes));
        self.splitter = LineSplitter::new(self.cfg.max_message_bytes);
        self.conn_min_event = 0;
    }
}
