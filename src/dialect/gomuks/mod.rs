//! The gomuks JSON RPC dialect (docs/protocol/gomuks-rpc.md; §16 is the algorithm).

pub(crate) mod auth;
pub(crate) mod codec;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_tungstenite::tungstenite::Message;

use crate::config::Config;
use crate::logging::tlog;
use crate::resume::{ResumeOutcome, SharedResume, Tracker};
use crate::secret::Secret;
use crate::session::dialect::{CloseIntent, Dialect, Incoming, Opened, Policy};
use crate::session::transport::{self, ConnectError};
use crate::stats::{self, Probe};
use crate::status::{Error, Status};
use codec::{parse_envelope, Inflater, Kind, LineSplitter};

/// gomuks session state that outlives single connections: credentials and the resume point.
pub(crate) struct Gomuks {
    cfg: Arc<Config>,
    tls: Arc<rustls::ClientConfig>,
    http: reqwest::Client,
    token: Option<Secret>,
    auth_disabled: bool,
    resume: Arc<SharedResume>,
    tracker: Tracker,
    inflater: Option<Inflater>,
    splitter: LineSplitter,
    scratch: BytesMut,
    /// Attempts since the last successful upgrade: the gomuks web client refreshes its token
    /// before every retry but the first (spec §11.1).
    attempts_since_open: u32,
    /// A 401 at the upgrade already led to a fresh login since the last successful upgrade;
    /// a second one is final.
    reauthed: bool,
    /// When the current token was fetched; refreshed daily (spec §1.2: tokens live 7 days).
    token_fetched: Option<Instant>,
    probe: Probe,
}

/// Tokens are refreshed after this long, well inside their 7-day life.
const TOKEN_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// The upgrade request for one attempt.
struct Upgrade {
    url: url::Url,
    headers: Vec<(String, String)>,
    resume_attempted: bool,
}

impl Gomuks {
    /// A dialect for this configuration.
    pub(crate) fn new(
        cfg: Arc<Config>,
        tls: Arc<rustls::ClientConfig>,
        resume: Arc<SharedResume>,
        probe: Probe,
    ) -> Result<Gomuks, Error> {
        let http = auth::http_client(tls.clone(), cfg.connect_timeout, cfg.proxy.as_ref())?;
        // A configured token's age is unknown: count from now, so a long-running client renews
        // it daily like a fetched one instead of letting it expire after 7 days.
        let token_fetched = cfg.token.as_ref().map(|_| Instant::now());
        Ok(Gomuks {
            token: cfg.token.clone(),
            splitter: LineSplitter::new(cfg.max_message_bytes),
            cfg,
            tls,
            http,
            auth_disabled: false,
            tracker: Tracker::new(resume.clone()),
            resume,
            inflater: None,
            scratch: BytesMut::new(),
            attempts_since_open: 0,
            reauthed: false,
            token_fetched,
            probe,
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
        let how = match creds {
            auth::Credentials::Basic(_) => "log in with the username and password",
            auth::Credentials::Cookie(_) => "renew the token",
        };
        let url = auth::auth_url(&self.cfg.url);
        let via = match &self.cfg.proxy {
            Some(p) => format!(" through {p}"),
            None => String::new(),
        };
        let t0 = Instant::now();
        let got = auth::fetch_token(
            &self.http,
            &url,
            creds,
            &self.cfg.headers,
            self.cfg.proxy.as_ref(),
        )
        .await;
        let client = self.probe.client;
        match &got {
            Ok(_) => tlog!(
                client,
                Info,
                "gomuks",
                "POST {}{via} to {how}: done in {} ms",
                url.path(),
                t0.elapsed().as_millis()
            ),
            Err(e) => tlog!(
                client,
                Warn,
                "gomuks",
                "POST {}{via} to {how} failed: {}",
                url.path(),
                e.error.message()
            ),
        }
        match got? {
            Some(t) => {
                let t = Secret::new(t);
                self.resume.set_token(t.clone());
                self.token = Some(t);
                self.token_fetched = Some(Instant::now());
            }
            None => self.auth_disabled = true,
        }
        Ok(())
    }

    /// Credentials and resume parameters for the next upgrade (spec §16 steps 1-2).
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
        let resume = self.tracker.begin_attempt();
        {
            let mut q = url.query_pairs_mut();
            if self.cfg.compression {
                q.append_pair("compress", "1");
            }
            if let Some(r) = &resume {
                tlog!(
                    self.probe.client,
                    Info,
                    "gomuks",
                    "asking to resume run {} after event {}",
                    r.run_id,
                    r.last_received_event
                );
                q.append_pair("run_id", &r.run_id);
                q.append_pair("last_received_event", &r.last_received_event.to_string());
                if let (true, Some(l)) =
                    (self.cfg.send_prev_listener_id, self.tracker.listener_id())
                {
                    q.append_pair("prev_listener_id", &l.to_string());
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
        Ok(Upgrade {
            url,
            headers,
            resume_attempted: resume.is_some(),
        })
    }

    /// The upgrade was refused with 401: with a login configured, log in afresh and retry
    /// once (spec §1.2); a token alone cannot recover.
    async fn reauthenticate(&mut self) -> Result<bool, ConnectError> {
        if self.reauthed || self.cfg.basic_auth.is_none() {
            return Ok(false);
        }
        self.reauthed = true;
        self.token = None;
        self.login().await?;
        Ok(true)
    }

    /// Per-connection state starts afresh: the deflate stream and the line splitter (spec §5).
    fn connection_opened(&mut self) {
        self.attempts_since_open = 0;
        self.reauthed = false;
        self.inflater = self
            .cfg
            .compression
            .then(|| Inflater::new(self.cfg.max_message_bytes));
        self.splitter = LineSplitter::new(self.cfg.max_message_bytes);
        self.tracker.connection_opened();
    }

    fn observe_event(&mut self, command: &str, id: i64, data: &[u8]) {
        self.tracker.event(id);
        let outcome = match command {
            "run_id" => {
                #[derive(serde::Deserialize)]
                struct RunData {
                    run_id: String,
                    #[serde(default)]
                    listener_id: u64,
                }
                match serde_json::from_slice::<RunData>(data) {
                    Ok(rd) => self.tracker.run_id(&rd.run_id, rd.listener_id),
                    Err(e) => {
                        tlog!(
                            self.probe.client,
                            Warn,
                            "gomuks",
                            "ignoring a malformed run_id event: {e}"
                        );
                        None
                    }
                }
            }
            // Only the first sync of a connection that asked to resume is looked into.
            "sync_complete" if self.tracker.deciding() => {
                #[derive(serde::Deserialize)]
                struct SyncData {
                    #[serde(default)]
                    clear_state: bool,
                }
                let clear = serde_json::from_slice::<SyncData>(data).is_ok_and(|d| d.clear_state);
                self.tracker.sync_complete(clear)
            }
            "init_complete" => self.tracker.init_complete(),
            _ => None,
        };
        let c = &self.probe.counters;
        match outcome {
            Some(ResumeOutcome::Succeeded) => {
                stats::add(&c.resumes_succeeded, 1);
                tlog!(
                    self.probe.client,
                    Info,
                    "gomuks",
                    "resume succeeded: every missed event was replayed"
                );
            }
            Some(ResumeOutcome::Reset) => {
                stats::add(&c.resumes_reset, 1);
                tlog!(
                    self.probe.client,
                    Warn,
                    "gomuks",
                    "resume failed: the backend sent its state afresh (cached state is stale)"
                );
            }
            None => {}
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
    async fn open(&mut self) -> Result<Opened, ConnectError> {
        loop {
            let up = self.prepare().await?;
            match transport::connect(&self.cfg, &self.tls, &up.url, &up.headers, &self.probe).await
            {
                Ok(ws) => {
                    self.connection_opened();
                    return Ok(Opened {
                        ws,
                        resume_attempted: up.resume_attempted,
                        early: Vec::new(),
                    });
                }
                Err(e) if e.code == Some(401) => {
                    if !self.reauthenticate().await? {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
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
                stats::add(&self.probe.counters.payload_bytes_in, b.len() as u64);
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
                stats::add(&self.probe.counters.payload_bytes_in, decoded.len() as u64);
                let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(0));
                let r = splitter.feed(decoded, |line| self.dispatch_line(line, out));
                self.splitter = splitter;
                r
            }
            _ => Ok(()),
        }
    }

    fn ping(&mut self, id: i64) -> (Message, i64) {
        let ack = self.tracker.ack();
        (codec::ping_message(id, ack), ack)
    }

    fn first_ping_delay(&self, interval: Duration) -> Duration {
        interval
    }

    fn policy(&self, status: Status, _close_code: u16) -> Policy {
        match status {
            Status::ErrUnauthorized | Status::ErrForbidden | Status::ErrConfig => Policy::Stop,
            _ => Policy::Backoff,
        }
    }

    fn close_status(&self, _code: u16) -> Status {
        Status::ErrRemoteClosed
    }

    fn final_close(&self, intent: CloseIntent) -> (u16, &'static str) {
        // Only 1001 makes the backend drop this listener's buffer entry (spec §7.1, §7.4);
        // any other code keeps the missed events for a later resume.
        match intent {
            CloseIntent::Final => (1001, "client closed"),
            CloseIntent::KeepResume => (1000, "client suspended, will resume"),
        }
    }

    fn timeout_close(&self) -> (u16, &'static str) {
        (4002, "Ping timeout")
    }
}
