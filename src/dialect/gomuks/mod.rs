//! The gomuks JSON RPC dialect (docs/protocol/gomuks-rpc.md; §16 is the algorithm).

pub(crate) mod auth;
pub(crate) mod codec;
pub(crate) mod inproc;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use crate::config::{Config, GOMUKS_SERVER_PING_LIMIT};
use crate::event::{self, Event, EventKind};
use crate::logging::tlog;
use crate::queue::EventQueue;
use crate::resume::{ResumeOutcome, SharedResume, Tracker};
use crate::secret::Secret;
use crate::session::dialect::{CloseIntent, Dialect, Incoming, Opened, Policy, Renewal};
use crate::session::transport::{self, ConnectError};
use crate::stats::{self, Probe};
use crate::status::{Error, Status};
use codec::{parse_envelope, Decompressor, Kind};

/// Whether gomuks runs `command` with its account, its homeserver URL (set only by a login)
/// or its crypto, all nil while it is not logged in: every request command of gomuks
/// v0.2607.0 to main (2026-08) except those that work without an account (`get_state`,
/// `cancel`, `login`, `login_custom`, the `oauth_*` steps, `discover_homeserver`,
/// `get_login_flows`, `get_versions`, `generate_recovery_key`, `register_push`,
/// `listen_to_device`, the database reads `search_local`, `get_related_events`,
/// `get_sticky_events` and `get_specific_room_state`). `logout` reads the account too (a
/// second one panics); in-process it is refused on its own terms before this list is read.
/// Kept to be safe, though they may not touch the account: `get_event_by_rowid` (it
/// reprocesses what it finds) and `rerequest_session` (it wakes the key-request worker).
/// The handler panics: over the websocket the backend recovers and closes with 1011,
/// failing every request in flight (interop/FINDINGS.md F8); in-process nothing recovers and
/// the app's process aborts (I7). So while the backend says it is not logged in, tether
/// refuses them before they leave. A command not listed (newer than this list, or an app's
/// own) goes through.
pub(crate) fn needs_account(command: &str) -> bool {
    const LIST: &[&str] = &[
        "logout",
        "send_message",
        "send_event",
        "send_sticky_event",
        "resend_event",
        "report_event",
        "redact_event",
        "set_state",
        "update_delayed_event",
        "set_membership",
        "set_account_data",
        "mark_read",
        "set_typing",
        "get_profile",
        "set_profile_field",
        "get_mutual_rooms",
        "track_user_devices",
        "reset_master_key_tofu",
        "get_profile_encryption_info",
        "get_own_devices",
        "get_event",
        "get_event_by_rowid",
        "get_event_context",
        "paginate_manual",
        "search_server",
        "get_mentions",
        "get_room_state",
        "get_receipts",
        "paginate",
        "get_room_summary",
        "get_space_hierarchy",
        "join_room",
        "knock_room",
        "leave_room",
        "create_room",
        "mute_room",
        "update_push_rule",
        "ensure_group_session_shared",
        "send_to_device",
        "resolve_alias",
        "request_openid_token",
        "verify",
        "reset_encryption",
        "get_capabilities",
        "register_homeserver_push",
        "get_turn_servers",
        "get_rtc_transports",
        "get_media_config",
        "calculate_room_id",
        "rerequest_session",
    ];
    LIST.contains(&command)
}

/// gomuks session state that outlives single connections: credentials and the resume point.
pub(crate) struct Gomuks {
    cfg: Arc<Config>,
    tls: crate::tls::Configs,
    token: Option<Secret>,
    auth_disabled: bool,
    resume: Arc<SharedResume>,
    tracker: Tracker,
    /// Set for a compressed connection (spec §5), afresh for each.
    decompressor: Option<Decompressor>,
    /// Attempts since the last successful upgrade: the gomuks web client refreshes its token
    /// before every retry but the first (spec §11.1).
    attempts_since_open: u32,
    /// A 401 at the upgrade already led to a fresh login or renewal since the last successful
    /// upgrade; a second one is final.
    reauthed: bool,
    /// The current connection got through the backend's start: `init_complete`, or a
    /// `client_state` without a verified account, after which none comes (spec §6.1).
    started: bool,
    /// The upgrade refused the token we hold (401) and no new one came since: it must not be
    /// tried again, nor renewed with itself when a password is configured.
    held_refused: bool,
    /// When the token we hold is renewed: before a reconnect once passed, and while connected
    /// by a timer (spec §1.2: tokens expire). `None`: nothing to renew.
    renew_at: Option<RenewPoint>,
    /// Renewals in a row that failed for a reason other than a refusal: each waits twice as
    /// long as the one before.
    renew_failures: u32,
    /// Where TOKEN_RENEWED goes.
    queue: Arc<EventQueue>,
    probe: Probe,
}

/// A moment to renew the token, on both clocks. Timers run on the monotonic clock, which
/// stops while the device sleeps (CLOCK_MONOTONIC, Apple's uptime clock); the wall clock goes
/// on. A phone asleep for days, or an app paused in the background, would otherwise wake
/// with a token that expired while the monotonic clock said a few hours had passed.
#[derive(Clone, Copy, Debug)]
struct RenewPoint {
    mono: Instant,
    wall: SystemTime,
}

impl RenewPoint {
    /// `after` from now, on both clocks.
    fn after(after: Duration) -> RenewPoint {
        RenewPoint {
            mono: Instant::now() + after,
            wall: SystemTime::now() + after,
        }
    }

    /// Passed on either clock, as read at `mono` and `wall`.
    fn passed_at(&self, mono: Instant, wall: SystemTime) -> bool {
        mono >= self.mono || wall >= self.wall
    }

    fn passed(&self) -> bool {
        self.passed_at(Instant::now(), SystemTime::now())
    }

    /// The monotonic instant a timer waits for: the earlier of the two. Read again at every
    /// turn of the connection's loop (a ping every 15 s at least), so after a sleep the
    /// renewal runs at the next turn.
    fn instant(&self) -> Instant {
        let left = self
            .wall
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        self.mono.min(Instant::now() + left)
    }
}

/// A token is renewed at least this often: well inside the 7-day life of gomuks tokens, and
/// the rule for a token whose expiry cannot be read (spec §1.2).
const TOKEN_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// The first wait after a renewal failed while connected; each later one doubles.
const RENEW_RETRY: Duration = Duration::from_secs(30);

/// Whether the auth endpoint refused the credentials it was shown (as opposed to failing):
/// its 401. Not a 403, which gomuks's endpoint never answers this client (it sends no
/// `secure=false`): that comes from in front of it (a reverse proxy denying the path), as does
/// a proxy's own 407, and neither says anything of the token.
fn refused(e: &ConnectError) -> bool {
    e.error.status() == Status::ErrUnauthorized && e.code != Some(407)
}

/// The shortest wait before a renewal, so a token with a very short life cannot make the
/// client renew in a tight loop.
const MIN_RENEW: Duration = Duration::from_millis(250);

/// Whether `token` has an `expiry` that the wall clock has not reached, or none to read (a
/// token of another shape is taken as valid until the backend says otherwise).
fn unexpired(token: &str) -> bool {
    !token_expiry(token).is_some_and(|expiry| expiry <= unix_now())
}

/// The wall clock as a token's `expiry` counts it (zero before the epoch).
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// How long after it was obtained a token is renewed: halfway through the life it has left,
/// read from the `expiry` inside the token (spec §1.2), and at least daily. A token whose
/// expiry cannot be read, or that looks expired already by our clock (a clock ahead of the
/// server's), is renewed daily.
fn renew_after(token: &str) -> Duration {
    let Some(expiry) = token_expiry(token) else {
        return TOKEN_REFRESH;
    };
    match expiry.checked_sub(unix_now()) {
        Some(left) if !left.is_zero() => (left / 2).clamp(MIN_RENEW, TOKEN_REFRESH),
        _ => TOKEN_REFRESH,
    }
}

/// The `expiry` (unix seconds) in a gomuks token: `base64url_nopad(JSON).signature`, the JSON
/// holding `"expiry"` (spec §1.2). `None` for a token of another shape.
fn token_expiry(token: &str) -> Option<Duration> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Payload {
        expiry: u64,
    }
    let (payload, _) = token.split_once('.')?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let p: Payload = serde_json::from_slice(&json).ok()?;
    Some(Duration::from_secs(p.expiry))
}

/// What `POST /_gomuks/auth` is shown.
enum Show {
    /// The configured username and password.
    Basic,
    /// The token we hold, to renew it.
    Cookie(Secret),
}

/// One `POST /_gomuks/auth`, logged (without the secret); owns what it needs so it can run
/// beside a connection.
async fn auth_call(
    tls: crate::tls::Configs,
    cfg: Arc<Config>,
    show: Show,
    probe: Probe,
) -> Result<Option<String>, ConnectError> {
    let client = probe.client;
    let (creds, how) = match (&show, &cfg.basic_auth) {
        (Show::Basic, Some(b)) => (
            auth::Credentials::Basic(b),
            "log in with the username and password",
        ),
        (Show::Cookie(t), _) => (auth::Credentials::Cookie(t.expose()), "renew the token"),
        (Show::Basic, None) => return Ok(None),
    };
    let url = auth::auth_url(&cfg.url);
    // A resolver decides per connection; the transport logs its answer.
    let via = match &cfg.proxy {
        Some(p) if cfg.proxy_resolver.is_none() => format!(" through {p}"),
        _ => String::new(),
    };
    let t0 = Instant::now();
    let got = auth::fetch_token(&cfg, &tls, &url, creds, &probe).await;
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
    got
}

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
        tls: crate::tls::Configs,
        resume: Arc<SharedResume>,
        queue: Arc<EventQueue>,
        probe: Probe,
    ) -> Result<Gomuks, Error> {
        if cfg.ping_interval >= GOMUKS_SERVER_PING_LIMIT {
            tlog!(
                probe.client,
                Warn,
                "gomuks",
                "the ping interval ({} ms) is not below the backend's 60 s limit: a connection \
                 that sends nothing else is closed with 4002 after about a minute",
                cfg.ping_interval.as_millis()
            );
        }
        // A configured token is renewed like a fetched one, from the expiry it carries (or
        // daily), so a long-running client never lets it expire.
        let renew_at = cfg
            .token
            .as_ref()
            .map(|t| RenewPoint::after(renew_after(t.expose())));
        Ok(Gomuks {
            token: cfg.token.clone(),
            cfg,
            tls,
            auth_disabled: false,
            tracker: Tracker::new(resume.clone()),
            resume,
            decompressor: None,
            attempts_since_open: 0,
            reauthed: false,
            started: false,
            held_refused: false,
            renew_at,
            renew_failures: 0,
            queue,
            probe,
        })
    }

    /// Gets a fresh token. The token we hold is renewed with itself as the cookie (spec §1.2),
    /// as the web client does: the backend checks a signature, not a password hash. The
    /// configured username and password log in when we hold no token, when the upgrade
    /// refused the one we hold (`held_refused`), or when its renewal is refused. Without
    /// either there is nothing to do.
    async fn login(&mut self, held_refused: bool) -> Result<(), ConnectError> {
        let basic = self.cfg.basic_auth.is_some();
        let renewable = self.token.clone().filter(|_| !(held_refused && basic));
        if let Some(t) = renewable {
            match self.auth(Show::Cookie(t)).await {
                Ok(got) => {
                    self.took_token(got);
                    return Ok(());
                }
                Err(e) if basic && refused(&e) => {}
                Err(e) => return Err(e),
            }
        } else if !basic {
            return Ok(());
        }
        let got = self.auth(Show::Basic).await?;
        self.took_token(got);
        Ok(())
    }

    /// One `POST /_gomuks/auth` showing `show`; owns what it needs, so it may run beside a
    /// connection.
    fn auth(&self, show: Show) -> impl Future<Output = Result<Option<String>, ConnectError>> {
        auth_call(self.tls.clone(), self.cfg.clone(), show, self.probe.clone())
    }

    /// Keeps a token the auth endpoint issued (`None`: the backend has auth disabled),
    /// schedules its renewal and tells the app (without the secret) when it changed.
    fn took_token(&mut self, got: Option<String>) {
        let Some(t) = got else {
            self.auth_disabled = true;
            self.renew_at = None;
            return;
        };
        self.renew_at = Some(RenewPoint::after(renew_after(&t)));
        self.renew_failures = 0;
        self.held_refused = false;
        // Announced when it replaces a token the app could have persisted; the first token
        // of a password login is read after CONNECTED, as before.
        let replaces = match &self.token {
            Some(old) if old.expose() == t => return,
            Some(_) => true,
            None => false,
        };
        let t = Secret::new(t);
        self.resume.set_token(t.clone());
        self.token = Some(t);
        if replaces {
            self.queue.push(Event::new(EventKind::TokenRenewed));
        }
    }

    /// Credentials and resume parameters for the next upgrade (spec §16 steps 1-2).
    async fn prepare(&mut self) -> Result<Upgrade, ConnectError> {
        let stale = self.renew_at.is_some_and(|t| t.passed());
        let retrying = self.attempts_since_open >= 2;
        let fresh = self.token.is_none() || stale || retrying || self.held_refused;
        if fresh && !self.auth_disabled {
            if let Err(e) = self.login(self.held_refused).await {
                // A renewal that failed for another reason than a refusal (an auth endpoint
                // a reverse proxy does not publish, a 5xx, a blip) must not keep a valid
                // token off the upgrade; the upgrade says whether it still opens. Not a
                // token the upgrade refused already.
                let held = self.token.as_ref().filter(|t| unexpired(t.expose()));
                if held.is_none() || self.held_refused || refused(&e) {
                    return Err(e);
                }
                // The next renewal waits as after a failure while connected, instead of
                // running again as soon as the connection opens.
                self.renewal_failed();
                tlog!(
                    self.probe.client,
                    Warn,
                    "gomuks",
                    "connecting with the token held, which has not expired, after its renewal failed"
                );
            }
        }
        let mut url = self.cfg.url.clone();
        let resume = self
            .tracker
            .begin_attempt(self.cfg.last_server_ts.is_some());
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

    /// The upgrade was refused with 401: log in afresh with the configured username and
    /// password, or else renew the token we hold, and retry once (spec §1.2). A token the
    /// upgrade refused is usually refused by the auth endpoint too, which makes the 401 final.
    async fn reauthenticate(&mut self) -> Result<bool, ConnectError> {
        if self.reauthed || self.token.is_none() && self.cfg.basic_auth.is_none() {
            return Ok(false);
        }
        // The backend had auth disabled and has turned it on: log in now.
        self.auth_disabled = false;
        self.reauthed = true;
        self.held_refused = self.token.is_some();
        // With a password configured this logs in afresh (the refused token is replaced);
        // else it renews the token with itself.
        self.login(true).await?;
        Ok(true)
    }

    /// The backend or the network failed a renewal: the next one backs off from 30 s,
    /// doubling, and always comes before the expiry (halfway through the life left).
    fn renewal_failed(&mut self) {
        let backoff = RENEW_RETRY.saturating_mul(1 << self.renew_failures.min(12));
        self.renew_failures = self.renew_failures.saturating_add(1);
        let wait = self
            .token
            .as_ref()
            .map_or(TOKEN_REFRESH, |t| renew_after(t.expose()))
            .min(backoff);
        self.renew_at = Some(RenewPoint::after(wait));
    }

    /// Per-connection state starts afresh: the deflate stream and the line splitter (spec §5).
    fn connection_opened(&mut self) {
        self.attempts_since_open = 0;
        self.reauthed = false;
        self.started = false;
        self.decompressor = self
            .cfg
            .compression
            .then(|| Decompressor::new(self.cfg.max_message_bytes));
        self.tracker.connection_opened();
    }

    /// Follows the run id, the first sync of a resume and `client_state`; returns the resume
    /// outcome this event decides, if any.
    fn observe_event(&mut self, command: &str, data: &[u8]) -> Option<event::ResumeOutcome> {
        let outcome = match command {
            "run_id" => {
                #[derive(serde::Deserialize)]
                struct RunData {
                    run_id: String,
                    #[serde(default)]
                    listener_id: u64,
                }
                match serde_json::from_slice::<RunData>(data) {
                    Ok(rd) => match crate::resume::unusable_run_id(&rd.run_id) {
                        Some(why) => {
                            tlog!(
                                self.probe.client,
                                Warn,
                                "gomuks",
                                "ignoring a run_id event: {why}"
                            );
                            None
                        }
                        None => self.tracker.run_id(&rd.run_id, rd.listener_id),
                    },
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
                    #[serde(default)]
                    catchup: bool,
                }
                let d = serde_json::from_slice::<SyncData>(data).unwrap_or(SyncData {
                    clear_state: false,
                    catchup: false,
                });
                self.tracker.sync_complete(d.clear_state, d.catchup)
            }
            "init_complete" => {
                self.started = true;
                self.tracker.init_complete()
            }
            "client_state" => {
                #[derive(serde::Deserialize)]
                struct ClientState {
                    #[serde(default)]
                    is_logged_in: bool,
                    #[serde(default)]
                    is_verified: bool,
                    /// `false` while the backend's client starts: `is_logged_in` says nothing
                    /// yet. Absent in older gomuks.
                    #[serde(default)]
                    is_initialized: Option<bool>,
                }
                if let Ok(st) = serde_json::from_slice::<ClientState>(data) {
                    self.started |= !(st.is_logged_in && st.is_verified);
                    // While the backend starts it says nothing of its account: what was
                    // known stays.
                    if st.is_initialized != Some(false) {
                        self.probe
                            .logged_out
                            .store(!st.is_logged_in, Ordering::Release);
                    }
                }
                None
            }
            _ => None,
        };
        let c = &self.probe.counters;
        match outcome? {
            ResumeOutcome::Succeeded => {
                stats::add(&c.resumes_succeeded, 1);
                tlog!(
                    self.probe.client,
                    Info,
                    "gomuks",
                    "resume succeeded: every missed event was replayed"
                );
                Some(event::ResumeOutcome::Succeeded)
            }
            ResumeOutcome::Reset => {
                stats::add(&c.resumes_reset, 1);
                tlog!(
                    self.probe.client,
                    Warn,
                    "gomuks",
                    "resume failed: the backend sent its state afresh (cached state is stale)"
                );
                Some(event::ResumeOutcome::Reset)
            }
            ResumeOutcome::CaughtUp => {
                stats::add(&c.resumes_reset, 1);
                tlog!(
                    self.probe.client,
                    Warn,
                    "gomuks",
                    "resume failed: the missed events are gone; a catchup sync since last_server_ts follows"
                );
                Some(event::ResumeOutcome::CaughtUp)
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
                let era = self.tracker.event(env.request_id, name == "init_complete");
                if name == "sync_complete" && env.request_id == 0 {
                    self.tracker.unreplayable_state();
                }
                if name == "init_complete" && env.request_id < 0 && self.tracker.deciding() {
                    // A buffered init_complete ends the room list of a login (§4.2). In a
                    // replay, that list went out while this client was away, and no resume
                    // brings it: only a connection that starts afresh does.
                    self.tracker.missed_state();
                    return Err(Error::new(
                        Status::ErrConnect,
                        "the backend sent a room list while this client was away (after a \
                         login), which no resume replays: reconnecting without resuming",
                    ));
                }
                // The outcome goes first: an app that drops its cache on a reset must do so
                // before the fresh state this message starts (§7.2).
                if let Some(outcome) = self.observe_event(name, &env.data) {
                    out(Incoming::Resumed(outcome));
                }
                out(Incoming::Event {
                    command: env.command,
                    id: env.request_id,
                    data: env.data,
                    era,
                })
            }
        }
        Ok(())
    }
}

impl Dialect for Gomuks {
    fn will_resume(&self) -> bool {
        self.tracker.will_resume()
    }

    async fn open(&mut self) -> Result<Opened, ConnectError> {
        // Counted once per attempt: the retry after a re-authentication is the same attempt
        // and must not log in again.
        self.attempts_since_open = self.attempts_since_open.saturating_add(1);
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

    fn keeps_slices_of(&self, msg: &Message) -> bool {
        // A compressed message is inflated into a buffer of ours and dropped.
        !msg.is_binary()
    }

    fn decode(&mut self, msg: Message, out: &mut dyn FnMut(Incoming)) -> Result<(), Error> {
        match msg {
            Message::Text(text) => {
                if self.decompressor.is_some() {
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
                let Some(mut dec) = self.decompressor.take() else {
                    return Err(Error::new(
                        Status::ErrProtocol,
                        "binary frame in uncompressed mode",
                    ));
                };
                let r = dec.inflate(&data).and_then(|size| {
                    stats::add(&self.probe.counters.payload_bytes_in, size as u64);
                    dec.lines(|line| self.dispatch_line(line, out))
                });
                self.decompressor = Some(dec);
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

    /// §11.1: a backend that drops every connection as it starts it (a failing start, a 4001
    /// during a large resume) must see the backoff grow; one whose session got through its
    /// start (see `started`) resets it however soon it ended, and any other once it lasted
    /// this long.
    fn stable_after(&self) -> Duration {
        Duration::from_secs(30)
    }

    fn proved(&self) -> bool {
        self.started
    }

    fn policy(&self, status: Status, _close_code: u16) -> Policy {
        match status {
            // A refused certificate repeats on every attempt: stop instead of a retry storm.
            Status::ErrUnauthorized
            | Status::ErrForbidden
            | Status::ErrConfig
            | Status::ErrCertificate => Policy::Stop,
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

    fn renew_at(&self) -> Option<Instant> {
        if self.auth_disabled || self.token.is_none() {
            return None;
        }
        self.renew_at.map(|r| r.instant())
    }

    /// Renews the token with itself as the cookie (spec §1.2: 200 and a fresh token), with the
    /// app's headers, as before a reconnect.
    fn renew(&mut self) -> Pin<Box<dyn Future<Output = Renewal> + Send>> {
        let Some(t) = self.token.clone() else {
            return Box::pin(std::future::pending());
        };
        let call = self.auth(Show::Cookie(t));
        Box::pin(async move { call.await.map(|got| got.map(Secret::new)) })
    }

    fn renewed(&mut self, result: Renewal) {
        match result {
            Ok(got) => self.took_token(got.map(|t| t.expose().to_owned())),
            // The token was refused: renewing it again cannot help; the next reconnect reports
            // the 401 (spec §1.2).
            Err(e) if refused(&e) => {
                self.renew_at = None;
            }
            Err(_) => self.renewal_failed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §1.2: only the backend's 401 refuses the credentials; a 403 (gomuks's auth endpoint
    /// never answers one) and a proxy's 407 come from in front of it, so they neither end a
    /// client holding a valid token nor make it try the password through a refusing proxy.
    #[test]
    fn spec1_2_only_the_backends_401_is_a_refusal() {
        let e = |status, code| ConnectError {
            error: Error::new(status, "x"),
            code: Some(code),
        };
        assert!(refused(&e(Status::ErrUnauthorized, 401)));
        assert!(!refused(&e(Status::ErrUnauthorized, 407)), "the proxy's");
        assert!(!refused(&e(Status::ErrForbidden, 403)));
        assert!(!refused(&e(Status::ErrHttp, 502)));
    }

    /// §1.2: a renewal point passed on the wall clock alone (the device slept, so the
    /// monotonic clock stood still) is due, and the connection's timer fires at once.
    #[test]
    fn spec1_2_a_renewal_point_passed_on_the_wall_clock_alone_is_due() {
        let hour = Duration::from_secs(3600);
        let p = RenewPoint::after(hour);
        let (mono, wall) = (Instant::now(), SystemTime::now());
        assert!(!p.passed_at(mono, wall));
        assert!(p.passed_at(mono, wall + 2 * hour), "asleep for two hours");
        assert!(p.passed_at(mono + 2 * hour, wall));
        assert!(p.instant() > Instant::now() + hour / 2);
        let slept = RenewPoint {
            mono: Instant::now() + hour,
            wall: SystemTime::now() - Duration::from_secs(1),
        };
        assert!(slept.passed());
        assert!(slept.instant() <= Instant::now());
    }

    /// A dialect for `cfg` (its resume state and token seed the shared state, as the client
    /// does) reporting through `probe`.
    fn dialect(cfg: Config, probe: Probe) -> Gomuks {
        let cfg = Arc::new(cfg);
        let tls = cfg.tls_configs().unwrap();
        let resume = Arc::new(SharedResume::new(&cfg.resume, cfg.token.clone()));
        let queue = Arc::new(EventQueue::new(8));
        Gomuks::new(cfg, tls, resume, queue, probe).unwrap()
    }

    /// §4.2/§7.2: a replay holding a buffered `init_complete` followed a login's room list,
    /// sent while the client was away, which no resume replays. The connection ends, and the
    /// next one starts afresh instead of resuming without the rooms.
    #[test]
    fn spec7_2_a_replayed_login_room_list_end_restarts_afresh() {
        let cfg = Config::builder("ws://127.0.0.1:9/")
            .resume_state("r", -5)
            .build()
            .unwrap();
        let mut g = dialect(cfg, Probe::new());
        assert!(g.tracker.begin_attempt(false).is_some());
        g.tracker.connection_opened();
        let mut line = |json: &str| g.dispatch_line(Bytes::from(json.to_owned()), &mut |_| {});
        line(r#"{"command":"run_id","request_id":0,"data":{"run_id":"r"}}"#).unwrap();
        line(r#"{"command":"client_state","request_id":-6,"data":{"is_logged_in":true,"is_verified":true}}"#).unwrap();
        let e = line(r#"{"command":"init_complete","request_id":-7,"data":{}}"#).unwrap_err();
        assert_eq!(e.status(), Status::ErrConnect, "{e}");
        assert!(
            !g.tracker.will_resume(),
            "the next connection starts afresh"
        );
        // Live, the same message ends a room list this connection received: no error.
        let mut g = dialect(
            Config::builder("ws://127.0.0.1:9/").build().unwrap(),
            Probe::new(),
        );
        g.tracker.begin_attempt(false);
        g.tracker.connection_opened();
        g.dispatch_line(
            Bytes::from_static(br#"{"command":"init_complete","request_id":-7,"data":{}}"#),
            &mut |_| {},
        )
        .unwrap();
    }

    /// §4.2/§7.2: a login completed on a live connection sends its room list (id 0, which no
    /// resume replays) and ends it with a buffered `init_complete`. Taking that
    /// `init_complete` is what makes the state the app holds resumable, so it moves the point
    /// the app persists; the live events before it do not.
    #[test]
    fn spec4_2_a_login_room_list_counts_from_its_buffered_init_complete() {
        let cfg = Config::builder("ws://127.0.0.1:9/").build().unwrap();
        let mut g = dialect(cfg, Probe::new());
        let shared = g.resume.clone();
        g.tracker.begin_attempt(false);
        g.tracker.connection_opened();
        let mut take = |json: &str| {
            let mut events = Vec::new();
            g.dispatch_line(Bytes::from(json.to_owned()), &mut |i| events.push(i))
                .unwrap();
            for i in events {
                if let Incoming::Event { id, era, .. } = i {
                    shared.took(era, id);
                }
            }
        };
        take(r#"{"command":"run_id","request_id":0,"data":{"run_id":"r"}}"#);
        take(r#"{"command":"init_complete","request_id":0,"data":{}}"#);
        take(r#"{"command":"client_state","request_id":-1,"data":{"is_logged_in":true}}"#);
        assert_eq!(shared.get().last_received_event, -1);
        // The login's room list, with a live event inside it.
        take(r#"{"command":"sync_complete","request_id":0,"data":{"rooms":{}}}"#);
        take(r#"{"command":"typing","request_id":-2,"data":{}}"#);
        assert_eq!(
            shared.get().last_received_event,
            0,
            "resuming from inside the room list would skip the rest of it"
        );
        take(r#"{"command":"init_complete","request_id":-3,"data":{}}"#);
        assert_eq!(shared.get().last_received_event, -3);
        assert!(g.tracker.will_resume());
    }

    /// §7.2: a `run_id` event whose id holds a NUL or is over 64 bytes is ignored: it would
    /// be persisted cut off, or go into every upgrade URL.
    #[test]
    fn spec7_2_an_unusable_run_id_event_is_ignored() {
        let mut g = dialect(
            Config::builder("ws://127.0.0.1:9/").build().unwrap(),
            Probe::new(),
        );
        for run_id in ["1\\u00002".to_owned(), "9".repeat(65)] {
            let line =
                format!(r#"{{"command":"run_id","request_id":0,"data":{{"run_id":"{run_id}"}}}}"#);
            g.dispatch_line(Bytes::from(line), &mut |_| {}).unwrap();
            assert_eq!(g.resume.get().run_id, "");
        }
        let ok = format!(
            r#"{{"command":"run_id","request_id":0,"data":{{"run_id":"{}"}}}}"#,
            "9".repeat(64)
        );
        g.dispatch_line(Bytes::from(ok), &mut |_| {}).unwrap();
        assert_eq!(g.resume.get().run_id.len(), 64);
    }

    /// §6.1: the backend's `client_state` says whether account commands may go out; one sent
    /// while its client starts (`is_initialized: false`) says nothing of the account, so what
    /// was known stays.
    #[test]
    fn spec6_1_client_state_sets_the_logged_out_flag_except_while_starting() {
        let probe = Probe::new();
        let cfg = Config::builder("ws://127.0.0.1:9/").build().unwrap();
        let mut g = dialect(cfg, probe.clone());
        let flag = || probe.logged_out.load(Ordering::Acquire);
        let mut state = |json: &str| {
            g.observe_event("client_state", json.as_bytes());
        };
        assert!(!flag(), "unknown before the first client_state");
        state(r#"{"is_initialized":true,"is_logged_in":false}"#);
        assert!(flag());
        state(r#"{"is_initialized":false,"is_logged_in":false}"#);
        assert!(flag(), "a starting backend says nothing of its account");
        state(r#"{"is_logged_in":true,"is_verified":true}"#);
        assert!(!flag(), "older gomuks sends no is_initialized");
        state(r#"{"is_initialized":false}"#);
        assert!(!flag());
    }

    /// §1.2: a renewal while connected that keeps failing without a refusal is retried
    /// after 30 s, then twice as long each time, never later than the token's own
    /// schedule (daily for a token whose expiry cannot be read), and a success resets it.
    #[test]
    fn spec1_2_failed_renewals_back_off() {
        let cfg = Config::builder("ws://127.0.0.1:9/")
            .token("opaque-token")
            .build()
            .unwrap();
        let mut g = dialect(cfg, Probe::new());
        let failed = || {
            Err(ConnectError {
                error: Error::new(Status::ErrHttp, "auth endpoint answered HTTP 502"),
                code: Some(502),
            })
        };
        let mut waits = Vec::new();
        for _ in 0..14 {
            g.renewed(failed());
            let left = g.renew_at().unwrap() - Instant::now();
            waits.push((left.as_secs_f64() / 30.0).round() as u64);
        }
        let mut want: Vec<u64> = (0..12).map(|i| 1 << i).collect();
        want.extend([2880, 2880]); // 24 h
        assert_eq!(waits, want);
        g.renewed(Ok(Some(Secret::new("opaque-token-2"))));
        g.renewed(failed());
        let left = g.renew_at().unwrap() - Instant::now();
        assert!(left <= RENEW_RETRY && left > RENEW_RETRY / 2, "{left:?}");
    }
}
