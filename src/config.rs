//! Typed client configuration, validated once by [`ConfigBuilder::build`].

use std::fmt;
use std::time::Duration;

use url::Url;

use crate::proxy::{self, Proxy, ProxyChoice, ProxyKind};
use crate::resume::ResumeState;
use crate::secret::{Secret, SecretBytes};
use crate::status::{Error, Status};
use crate::tls::{self, Trust};

/// Which wire protocol the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// gomuks JSON RPC over `/_gomuks/websocket`.
    Gomuks,
    /// rwws binary packets over `/api/ws`.
    Rwws,
}

impl Protocol {
    /// The websocket path derived from an `http(s)://` base URL.
    pub(crate) fn websocket_path(self) -> &'static str {
        match self {
            Protocol::Gomuks => "/_gomuks/websocket",
            Protocol::Rwws => "/api/ws",
        }
    }
}

/// How a gomuks client reaches its backend.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The websocket at the configured URL (the default).
    Websocket,
    /// The gomuks backend bundled into this process: `libgomuksffi` (gomuks `pkg/ffi`) loaded
    /// at run time from `library`, keeping its data under `root`. Compression, pings, acks,
    /// resume, proxies, TLS and credentials do not apply there and are ignored.
    InProcess {
        /// Path of the `libgomuksffi` shared library.
        library: std::path::PathBuf,
        /// The backend's data root (config, database, cache, logs); created if missing.
        root: std::path::PathBuf,
    },
}

/// Credentials for the gomuks auth endpoint.
#[derive(Clone, Debug)]
pub(crate) struct BasicAuth {
    /// Username (`desktop-key` for the desktop key form).
    pub(crate) username: String,
    /// Password (or the `GOMUKS_DESKTOP_KEY` value).
    pub(crate) password: Secret,
}

/// The app's extra headers, in order. A value may be a credential (a reverse proxy's cookie
/// or bearer token), so `Debug` shows the names only.
#[derive(Clone, Default)]
pub(crate) struct Headers(Vec<(String, String)>);

impl std::ops::Deref for Headers {
    type Target = Vec<(String, String)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Headers {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}: <redacted>")))
            .finish()
    }
}

/// Validated, immutable configuration. Build it with [`Config::builder`].
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) url: Url,
    pub(crate) protocol: Protocol,
    pub(crate) token: Option<Secret>,
    pub(crate) basic_auth: Option<BasicAuth>,
    pub(crate) compression: bool,
    pub(crate) ping_interval: Duration,
    pub(crate) receive_timeout: Duration,
    pub(crate) pong_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) max_unsent_bytes: u64,
    pub(crate) resume: ResumeState,
    pub(crate) last_server_ts: Option<i64>,
    pub(crate) send_prev_listener_id: bool,
    pub(crate) headers: Headers,
    /// Roots, extra CAs, pins and the client certificate, parsed once here.
    pub(crate) trust: Trust,
    /// rwws: the access key, base64-decoded once here.
    pub(crate) rwws_key: Option<SecretBytes>,
    /// The proxy the websocket and the gomuks auth call go through (`None`: direct), decided
    /// once by `proxy::resolve` when the configuration is built.
    pub(crate) proxy: Option<Proxy>,
    /// Asked before each connection; its answer overrides `proxy`.
    pub(crate) proxy_resolver: Option<proxy::Resolver>,
    /// The client sends a token or password over plain `ws://` and the app has not allowed
    /// it through a proxy that is not loopback: decided once when the configuration is built,
    /// and checked against the configured proxy then and each answer of `proxy_resolver`.
    pub(crate) plain_credentials: bool,
    pub(crate) transport: Transport,
}

/// Per-protocol defaults: gomuks follows its web client, rwws its spec (§2.7, reconnect
/// table): ping every 10 s (server limit 30 s), a 20 s pong deadline, backoff 1 s to 60 s,
/// and 64 KiB messages (a legitimate rwws message is a few bytes).
struct Defaults {
    ping_interval: Duration,
    receive_timeout: Duration,
    pong_timeout: Duration,
    backoff: (Duration, Duration),
    max_message_bytes: usize,
}

impl Protocol {
    fn defaults(self) -> Defaults {
        match self {
            Protocol::Gomuks => Defaults {
                ping_interval: Duration::from_secs(15),
                receive_timeout: Duration::from_secs(60),
                pong_timeout: Duration::from_secs(10),
                backoff: (Duration::from_millis(125), Duration::from_secs(10)),
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            },
            Protocol::Rwws => Defaults {
                ping_interval: Duration::from_secs(10),
                receive_timeout: Duration::from_secs(20),
                pong_timeout: Duration::from_secs(20),
                backoff: (Duration::from_secs(1), Duration::from_secs(60)),
                max_message_bytes: 64 * 1024,
            },
        }
    }
}

/// Whether a user header is a `Cookie` that carries `gomuks_auth`.
fn sets_gomuks_cookie(name: &str, value: &str) -> bool {
    name.eq_ignore_ascii_case("cookie")
        && value
            .split(';')
            .any(|c| c.trim_start().starts_with("gomuks_auth="))
}

/// Headers the websocket upgrade and the gomuks login set themselves (the message framing
/// among them: a `Content-Length` of the app's would leave the login's POST unfinished); an
/// extra header may not repeat them.
const HANDSHAKE_HEADERS: [&str; 9] = [
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Upgrade",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Protocol",
];

/// The rwws server closes connections that have not pinged for this long (spec §2.7).
pub(crate) const RWWS_SERVER_PING_LIMIT: Duration = Duration::from_secs(30);

/// The gomuks backend closes a websocket that sent no message for this long (4002 "Ping
/// timeout", checked once a minute: gomuks-rpc.md §8). A longer ping interval is allowed (an
/// app whose requests keep the connection busy, a test of that close) but warned about.
pub(crate) const GOMUKS_SERVER_PING_LIMIT: Duration = Duration::from_secs(60);

/// The largest message the gomuks backend reads from its websocket (`SetReadLimit` in
/// `pkg/gomuks/websocket.go`); a larger one makes it close the connection with 1009, failing
/// every request in flight, not only that one.
pub(crate) const GOMUKS_MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The longest timeout, interval or backoff a configuration or request takes: the C API's
/// `u32` milliseconds (about 49.7 days). Longer ones (`Duration::MAX` for "never") would
/// overflow the runtime's clock arithmetic; they are refused instead.
pub(crate) const MAX_DURATION: Duration = Duration::from_millis(u32::MAX as u64);

/// Whether `t` can be a `gomuks_auth` cookie value: 1-500 printable ASCII characters, no
/// `;` (which would end the cookie and start another). Both the app's token and one the
/// auth endpoint answers are held to it.
pub(crate) fn is_gomuks_token(t: &str) -> bool {
    !t.is_empty() && t.len() <= 500 && t.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';')
}

impl Config {
    /// A builder with the defaults of the gomuks web client (§8, §16 of the spec).
    pub fn builder(url: &str) -> ConfigBuilder {
        ConfigBuilder::new(url)
    }

    /// The rustls configs a client of this configuration verifies and shows itself with.
    pub(crate) fn tls_configs(&self) -> Result<tls::Configs, Error> {
        let https_proxy = may_use_https_proxy(self.proxy.as_ref(), self.proxy_resolver.is_some());
        // The OS store is in `trust` only for an `https://` proxy a resolver may answer (the
        // server is plain `ws://`, no such proxy configured): a store with nothing usable then
        // falls back to the webpki roots instead of failing the connect of a client that may
        // never use TLS.
        let os_trust_optional = self.trust.os_store
            && self.url.scheme() == "ws"
            && !may_use_https_proxy(self.proxy.as_ref(), false);
        match tls::configs(&self.trust, https_proxy) {
            Err(_) if os_trust_optional => {
                let trust = Trust {
                    os_store: false,
                    ..self.trust.clone()
                };
                tls::configs(&trust, https_proxy)
            }
            built => built,
        }
    }

    /// Checks a proxy a resolver answered as [`ConfigBuilder::build`] checks the configured
    /// one.
    pub(crate) fn check_proxy_route(&self, proxy: Option<&Proxy>) -> Result<(), Error> {
        insecure_proxy_route(self.plain_credentials, proxy)
    }

    /// The websocket URL this configuration connects to.
    pub fn websocket_url(&self) -> &Url {
        &self.url
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// How the client reaches its backend.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The largest request message the backend takes: the gomuks websocket's read limit;
    /// none in process.
    pub(crate) fn max_request_bytes(&self) -> Option<usize> {
        match (self.protocol, &self.transport) {
            (Protocol::Gomuks, Transport::Websocket) => Some(GOMUKS_MAX_REQUEST_BYTES),
            _ => None,
        }
    }
}

/// The URL as the app gave it to the builder. Its `Debug` leaves out a user and password,
/// which [`ConfigBuilder::build`] refuses: apps tend to log the builder when `build` fails.
/// Everything after the scheme up to the last `@` is hidden: a raw password may hold `/`, `:`
/// or `@` and so parse as something else (`wss://me:1234/pw@h/` has host `me`, port 1234), and
/// an `@` in a path hides more than the userinfo, never less.
#[derive(Clone)]
struct GivenUrl(String);

impl std::fmt::Debug for GivenUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(at) = self.0.rfind('@') else {
            return write!(f, "{:?}", self.0);
        };
        let scheme = self.0[..at]
            .find("://")
            .filter(|&i| {
                let s = &self.0[..i];
                s.starts_with(|c: char| c.is_ascii_alphabetic())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            })
            .map_or(0, |i| i + 3);
        write!(
            f,
            "{:?}",
            format!("{}<redacted>{}", &self.0[..scheme], &self.0[at..])
        )
    }
}

/// Builder for [`Config`]; setters never fail, [`ConfigBuilder::build`] validates everything.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    url: GivenUrl,
    protocol: Protocol,
    token: Option<Secret>,
    basic_auth: Option<BasicAuth>,
    compression: bool,
    ping_interval: Option<Duration>,
    receive_timeout: Option<Duration>,
    pong_timeout: Option<Duration>,
    request_timeout: Duration,
    connect_timeout: Duration,
    backoff: Option<(Duration, Duration)>,
    max_message_bytes: Option<usize>,
    queue_capacity: usize,
    max_unsent_bytes: u64,
    resume: ResumeState,
    last_server_ts: Option<i64>,
    send_prev_listener_id: bool,
    headers: Headers,
    extra_ca_pem: Option<Vec<u8>>,
    crl_pem: Option<Vec<u8>>,
    pins: Vec<String>,
    client_cert: Option<(Vec<u8>, SecretBytes)>,
    use_os_trust: bool,
    allow_insecure_credentials: bool,
    proxy: ProxyChoice,
    proxy_resolver: Option<proxy::Resolver>,
    transport: Transport,
}

/// Default cap on one server message after decompression; the gomuks Go client reads up to
/// 50 MiB and initial-sync payloads reach several MB.
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Default send budget (see [`ConfigBuilder::max_unsent_bytes`]): room for what a phone
/// queues through an outage, far below what would strain one.
pub(crate) const DEFAULT_MAX_UNSENT_BYTES: u64 = 32 * 1024 * 1024;

impl ConfigBuilder {
    /// Starts a builder; `url` is a `ws(s)://` endpoint or an `http(s)://` backend base.
    pub fn new(url: &str) -> ConfigBuilder {
        ConfigBuilder {
            url: GivenUrl(url.to_owned()),
            protocol: Protocol::Gomuks,
            token: None,
            basic_auth: None,
            compression: true,
            ping_interval: None,
            receive_timeout: None,
            pong_timeout: None,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            backoff: None,
            max_message_bytes: None,
            queue_capacity: 4096,
            max_unsent_bytes: DEFAULT_MAX_UNSENT_BYTES,
            resume: ResumeState::default(),
            last_server_ts: None,
            send_prev_listener_id: false,
            headers: Headers::default(),
            extra_ca_pem: None,
            crl_pem: None,
            pins: Vec::new(),
            client_cert: None,
            use_os_trust: false,
            allow_insecure_credentials: false,
            proxy: ProxyChoice::Environment,
            proxy_resolver: None,
            transport: Transport::Websocket,
        }
    }

    /// Replaces the URL.
    pub fn url(mut self, url: &str) -> Self {
        self.url = GivenUrl(url.to_owned());
        self
    }
    /// Selects the protocol (default gomuks).
    pub fn protocol(mut self, p: Protocol) -> Self {
        self.protocol = p;
        self
    }
    /// gomuks: the `gomuks_auth` cookie token.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(Secret::new(token));
        self
    }
    /// gomuks: username and password for `POST /_gomuks/auth`.
    pub fn basic_auth(mut self, username: &str, password: &str) -> Self {
        self.basic_auth = Some(BasicAuth {
            username: username.to_owned(),
            password: Secret::new(password),
        });
        self
    }
    /// gomuks: the desktop key form of auth (Basic user `desktop-key`).
    pub fn desktop_key(self, key: &str) -> Self {
        self.basic_auth("desktop-key", key)
    }
    /// gomuks: `compress=1` (default on).
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }
    /// Interval between keepalive pings (default gomuks 15 s; at 60 s or more the backend closes
    /// a websocket that sends nothing else with 4002 after a minute, which is logged as a
    /// warning at connect; rwws 10 s, and it must stay below the server's 30 s limit).
    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.ping_interval = Some(d);
        self
    }
    /// Reconnect when nothing arrives for this long (default gomuks 60 s or 4 ping intervals,
    /// whichever is longer; rwws 20 s or 2 ping intervals, the pong deadline since the server
    /// only answers pings). Must exceed the ping interval. While the deadline of a ping queued
    /// behind our own sends is put off (see [`ConfigBuilder::pong_timeout`]), this waits for
    /// that ping's verdict.
    pub fn receive_timeout(mut self, d: Duration) -> Self {
        self.receive_timeout = Some(d);
        self
    }
    /// How long a ping may go unanswered (no byte at all arrives) before the link counts as
    /// dead and the client reconnects (default: gomuks 10 s, rwws 20 s as its spec's pong
    /// deadline): a silent link is noticed within the ping interval plus this, not only after
    /// the receive timeout. Any byte counts as an answer, so a pong queued behind a large or
    /// slow message is not taken for silence; nor is a ping queued behind our own sends (more
    /// than 64 KiB unacknowledged, or messages not written yet) while the peer keeps
    /// acknowledging them (read from the kernel on Linux, Android and Apple systems): its
    /// deadline is put off by this much at a time, once more after the ping itself is
    /// acknowledged, and the receive timeout waits for the verdict.
    /// Also the deadline of the probe that [`crate::Client::reconnect_now`] sends.
    pub fn pong_timeout(mut self, d: Duration) -> Self {
        self.pong_timeout = Some(d);
        self
    }
    /// Default per-request timeout (default 60 s); a timed-out request is cancelled server-side.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }
    /// Bound on a connection's TCP connects and proxy tunnel (an `https://` proxy's TLS
    /// handshake included), once the names are resolved (default 10 s): addresses still
    /// silent then are given up, and the DISCONNECTED reason names them beside what the
    /// others did. It also bounds the server's TLS handshake and the websocket upgrade, each
    /// (a server that took the connection and stays silent is named with the step), and the
    /// gomuks login's answer once its connection is open. A whole attempt (name resolution,
    /// gomuks login, TLS and upgrade included), and a token renewal, is bounded by twice
    /// this.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// Reconnect backoff bounds (default gomuks 125 ms doubling to 10 s, as its web client;
    /// rwws 1 s doubling to 60 s), back to the minimum after a connection that got through
    /// its start (gomuks: delivered `init_complete`, or carried data for 30 s; rwws: stayed
    /// authenticated 60 s, its spec's rule).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Some((min, max));
        self
    }
    /// Cap on one server message after decompression (default gomuks 64 MiB, rwws 64 KiB). A
    /// connection that ends on a larger message does not reset the backoff (a buffered event
    /// that large comes back with every resume).
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = Some(n);
        self
    }
    /// How many events may wait for the app before the socket stops being read (default 4096).
    /// While disconnected, a full queue also holds back the next connection attempt until the
    /// app has taken it below its capacity (or cues a reconnect): attempts would only add
    /// their CONNECTING and DISCONNECTED to it, and requests made meanwhile wait unsent.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }
    /// How many bytes of requests and packets may wait to be written (default 32 MiB): those
    /// made while disconnected, and those made faster than the uplink carries. A call that
    /// would pass it fails with `ErrSendBufferFull` and takes nothing, and a
    /// [`crate::EventKind::SendReady`] follows once room frees; `unsent_bytes` in
    /// [`crate::Client::stats`] tells how much waits. One message larger than the limit is
    /// taken while nothing else waits. Pings and cancels are not counted.
    pub fn max_unsent_bytes(mut self, n: u64) -> Self {
        self.max_unsent_bytes = n;
        self
    }
    /// Resume point from an earlier client (see [`crate::Client::resume_state`]).
    /// [`ConfigBuilder::build`] refuses a positive `last_received_event`, and a `run_id` over
    /// 64 bytes or holding a NUL.
    pub fn resume_state(mut self, run_id: &str, last_received_event: i64) -> Self {
        self.resume = ResumeState {
            run_id: run_id.to_owned(),
            last_received_event,
        };
        self
    }
    /// gomuks: send `last_server_ts` so a failed resume costs a catchup, not a full sync.
    /// Only set this if the app persisted state from that time (spec §2, §7.4).
    pub fn last_server_ts(mut self, ts: i64) -> Self {
        self.last_server_ts = Some(ts);
        self
    }
    /// gomuks: send `prev_listener_id` on reconnect. Off by default: in the current backend it
    /// empties the buffer before the new listener subscribes and so defeats resume (spec §7.4).
    pub fn send_prev_listener_id(mut self, on: bool) -> Self {
        self.send_prev_listener_id = on;
        self
    }
    /// Adds a header to the upgrade request (e.g. `Origin`). [`ConfigBuilder::build`] refuses
    /// a name other than letters, digits, `-` and `_`, a value other than printable ASCII,
    /// space and tab, and the headers the library sets itself (`Host`, `Upgrade`,
    /// `Content-Length`, ...).
    /// `Cookie` headers are merged into one, after the library's `gomuks_auth` cookie; one that
    /// sets `gomuks_auth` next to a configured token or login is refused.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    /// Trusts the CA certificates in this PEM data in addition to the roots (the webpki
    /// roots, or the OS store with [`ConfigBuilder::use_os_trust`]).
    pub fn extra_ca_pem(mut self, pem: &[u8]) -> Self {
        self.extra_ca_pem = Some(pem.to_vec());
        self
    }
    /// Refuses a server certificate that these certificate revocation lists (PEM, `X509
    /// CRL` blocks, each signed by the CA that issued the certificates it lists) revoke, with
    /// [`Status::ErrCertificate`] and no retry. Only the leaf certificate is checked, and only
    /// against the lists given: a leaf whose issuer has no list here is accepted as before,
    /// and a list past its next update still revokes what it lists. A list for the leaf's
    /// issuer that does not verify also refuses it, for good; two lists of one issuer and
    /// scope are a config error (give the newest only). The lists apply to every certificate
    /// this configuration verifies: an `https://` proxy's and the login's too. For a private
    /// PKI whose CRL the app ships or fetches (tether fetches none); replace the lists with a
    /// new client. Needs TLS (a `wss://`/`https://` URL or an `https://` proxy). Default: none.
    pub fn crl_pem(mut self, pem: &[u8]) -> Self {
        self.crl_pem = Some(pem.to_vec());
        self
    }
    /// Pins the server's public key: adds one SHA-256 hash of a SubjectPublicKeyInfo, as
    /// `sha256/<base64>` (OkHttp's form) or the bare base64 (HPKP's `pin-sha256`); `openssl
    /// x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst
    /// -sha256 -binary | base64` prints it. With pins, a connection is accepted only when
    /// one matches the leaf certificate's key or the key of a certificate on a verified path
    /// from the leaf to a trusted root (an intermediate, the root; as OkHttp matches; a pin of
    /// the issuing intermediate survives the leaf's renewal), *in addition to* the normal
    /// chain and name verification (a pinned self-signed server still needs its certificate
    /// as an extra CA). A certificate the server sends that is on no such path matches
    /// nothing. Call once per pin; give a backup pin to survive a key rotation. A mismatch
    /// ends the client with [`Status::ErrCertificate`] (no retry). Pins need a `wss://` or
    /// `https://` URL. Default: no pins.
    pub fn pin_sha256(mut self, pin: &str) -> Self {
        self.pins.push(pin.to_owned());
        self
    }
    /// A client certificate (PEM chain, leaf first) and its private key (PEM: PKCS#8,
    /// PKCS#1 or SEC1), shown to a server that asks for one (mTLS). Checked by
    /// [`ConfigBuilder::build`], which refuses a key that does not belong to the certificate;
    /// the key is a secret and never appears in `Debug` output, logs or errors. A server that
    /// refuses the certificate ends the client with [`Status::ErrCertificate`]. It needs a
    /// `wss://` or `https://` URL: it is shown only to the server, never to a proxy. Default:
    /// none.
    pub fn client_cert_pem(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        self.client_cert = Some((cert_pem.to_vec(), SecretBytes(key_pem.to_vec())));
        self
    }
    /// Trusts the operating system's certificate store *instead of* the webpki roots (the
    /// default, Mozilla's list compiled into the library), so that a CA the administrator
    /// added is trusted and one the system distrusts is not; extra CAs still add to it. Read
    /// through `rustls-native-certs` when the client connects: on Linux the OpenSSL locations
    /// (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace them when set), on macOS the keychain, on
    /// Windows the system store; on Android and iOS none is found. Only read when TLS is used
    /// (a `wss://` server, or an `https://` proxy).
    /// A store with no usable certificate fails the connect with [`Status::ErrTls`]. Default
    /// off.
    pub fn use_os_trust(mut self, on: bool) -> Self {
        self.use_os_trust = on;
        self
    }
    /// Connects through this proxy, for the websocket and the gomuks login alike:
    /// `http://[user:pass@]host[:port]` (HTTP CONNECT with Basic proxy auth),
    /// `https://[user:pass@]host[:port]` (the same inside TLS to the proxy; its certificate is
    /// verified with this configuration's roots, extra CAs and revocation lists, never its
    /// pins, and it is shown no client certificate: both are the server's),
    /// `socks5://[user:pass@]host[:port]` (SOCKS5, RFC 1929 auth, the server's name resolved
    /// locally) or `socks5h://…` (the proxy resolves the name); no scheme means `http://`.
    /// An explicit proxy is used for every host, loopback included, and no environment
    /// variable is read. `""` restores the default, `"direct"` is [`ConfigBuilder::no_proxy`].
    ///
    /// Default: the environment decides when the configuration is built — `https_proxy` /
    /// `HTTPS_PROXY` for `wss://`, `http_proxy` / `HTTP_PROXY` for `ws://` (neither when
    /// `REQUEST_METHOD` is set: in a CGI program a request header sets `HTTP_PROXY`), then
    /// `all_proxy` / `ALL_PROXY`, minus the hosts in `no_proxy` / `NO_PROXY` (comma list:
    /// domain suffixes, IPs, networks, `*`) and minus loopback hosts, which are never proxied
    /// from the environment. [`ConfigBuilder::build`] rejects a URL it cannot use without
    /// echoing it.
    pub fn proxy(mut self, url: &str) -> Self {
        self.proxy = ProxyChoice::from_setting(url);
        self
    }
    /// Connects directly and ignores the proxy environment variables.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxyChoice::Direct;
        self
    }
    /// Asks `resolve` which proxy to take before every connection the client opens (each
    /// websocket attempt and each gomuks login), for settings that change while the app runs:
    /// a PAC script, the OS's or the platform's proxy settings, which follow the network.
    ///
    /// `resolve` gets the URL about to be opened (`ws[s]://host:port/path` or
    /// `http[s]://host:port/_gomuks/auth`, the scheme following the configured URL's; no
    /// query) and answers `Ok(Some(proxy))` with a
    /// proxy URL as [`ConfigBuilder::proxy`] takes it or `"direct"`, or `Ok(None)` (an empty
    /// answer too) to leave the decision to [`ConfigBuilder::proxy`] and the environment. It
    /// runs on a blocking thread of the library, never on a network thread, and may take a
    /// while (its time counts against the attempt's limit, twice the connect timeout).
    /// `Err(why)` fails that attempt with [`Status::ErrConnect`], retried with backoff; an
    /// answer that is not a proxy URL, or that would carry credentials over plain `ws://` to
    /// a proxy that is not loopback (without [`ConfigBuilder::allow_insecure_credentials`]),
    /// ends the client with
    /// [`Status::ErrConfig`]. One call per client runs at a time (an attempt that timed out
    /// waiting for a call leaves it running, and the next one waits for it to return before
    /// calling again), and dropping the client waits for a call in progress. Default: none.
    pub fn proxy_resolver(
        mut self,
        resolve: impl Fn(&str) -> Result<Option<String>, String> + Send + Sync + 'static,
    ) -> Self {
        self.proxy_resolver = Some(proxy::Resolver::new(std::sync::Arc::new(move |url| {
            resolve(url).map_err(|why| Error::new(Status::ErrConnect, why))
        })));
        self
    }
    /// [`ConfigBuilder::proxy_resolver`] for a resolver whose errors carry their status (the
    /// C API's).
    pub(crate) fn proxy_resolver_with_status(mut self, r: proxy::Resolver) -> Self {
        self.proxy_resolver = Some(r);
        self
    }
    /// Removes the resolver of [`ConfigBuilder::proxy_resolver`].
    pub fn no_proxy_resolver(mut self) -> Self {
        self.proxy_resolver = None;
        self
    }
    /// Allows credentials over plain `ws://`/`http://` to a non-loopback host (or through a
    /// proxy that is not loopback): the token, the username and password, and the app's own
    /// headers that carry credentials: `Cookie`, `Authorization`, `Proxy-Authorization`, and
    /// any whose name has a word such as `key`, `token`, `secret`, `auth` or `session`
    /// (`X-Api-Key`, `X-Auth-Token`, `CF-Access-Client-Secret`).
    pub fn allow_insecure_credentials(mut self, on: bool) -> Self {
        self.allow_insecure_credentials = on;
        self
    }

    /// gomuks: talks to the backend bundled into this process instead of a websocket; no URL
    /// is needed then. `library` is the path of `libgomuksffi`, loaded when the client
    /// connects; `root` holds the backend's data. What only a connection uses (compression,
    /// pings, resume, proxies, TLS, credentials, headers, backoff, the connect timeout) is
    /// ignored, not checked, but for the resume state and token: unused, they are kept (the
    /// resume state checked as for a websocket), and [`crate::Client::resume_state`] and
    /// [`crate::Client::auth_token`] return them unchanged.
    pub fn in_process(
        mut self,
        library: impl Into<std::path::PathBuf>,
        root: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.transport = Transport::InProcess {
            library: library.into(),
            root: root.into(),
        };
        self
    }

    /// Uses the websocket at the configured URL (the default; undoes
    /// [`ConfigBuilder::in_process`]).
    pub fn websocket(mut self) -> Self {
        self.transport = Transport::Websocket;
        self
    }

    /// The in-process transport's stand-in for the websocket endpoint: the data root as a
    /// `file:` URL, which is what logs show. Nothing of the websocket applies.
    fn in_process_endpoint(&self, root: &std::path::Path) -> Result<Url, Error> {
        let bad = |m: &str| Error::new(Status::ErrConfig, m.to_owned());
        if self.protocol != Protocol::Gomuks {
            return Err(bad("the in-process transport is for gomuks clients"));
        }
        if root.as_os_str().is_empty() || root.to_str().is_none() {
            return Err(bad("in-process data root must be a non-empty UTF-8 path"));
        }
        let root =
            std::path::absolute(root).map_err(|e| bad(&format!("in-process data root: {e}")))?;
        Url::from_file_path(&root).map_err(|()| bad("in-process data root is not a usable path"))
    }

    /// The builder with every setting only a connection uses back at its default, for an
    /// in-process client: there they do not apply, and are ignored rather than checked (an
    /// app may share one configuration between both transports, pins and all). The resume
    /// state and token stay: unused, but the client hands them back as it got them, so an
    /// app that saves them after an in-process run keeps what its websocket client needs.
    fn without_connection_settings(self) -> ConfigBuilder {
        ConfigBuilder {
            url: self.url,
            protocol: self.protocol,
            token: self.token,
            resume: self.resume,
            request_timeout: self.request_timeout,
            max_message_bytes: self.max_message_bytes,
            queue_capacity: self.queue_capacity,
            max_unsent_bytes: self.max_unsent_bytes,
            transport: self.transport,
            ..ConfigBuilder::new("")
        }
    }

    /// Validates and freezes the configuration. `ErrConfig` names what is wrong; every
    /// timeout, interval and backoff must be positive and at most `u32::MAX` ms.
    pub fn build(self) -> Result<Config, Error> {
        let bad = |m: &str| Error::new(Status::ErrConfig, m.to_owned());
        if let Transport::InProcess { library, root } = &self.transport {
            if library.as_os_str().is_empty() {
                return Err(bad("in-process library path is empty"));
            }
            let url = self.in_process_endpoint(root)?;
            return self
                .without_connection_settings()
                .freeze(url, false, None, false, None);
        }
        if self.url.0.is_empty() {
            return Err(bad("no URL set"));
        }
        let mut url = Url::parse(&self.url.0).map_err(|e| bad(&format!("invalid URL: {e}")))?;
        let secure = match url.scheme() {
            "ws" => false,
            "wss" => true,
            "http" | "https" => {
                let secure = url.scheme() == "https";
                let base = url.path().trim_end_matches('/').to_owned();
                url.set_path(&format!("{base}{}", self.protocol.websocket_path()));
                url.set_scheme(if secure { "wss" } else { "ws" })
                    .map_err(|_| bad("cannot derive websocket URL"))?;
                secure
            }
            other => return Err(bad(&format!("unsupported URL scheme {other:?}"))),
        };
        if url.host_str().is_none() {
            return Err(bad("URL has no host"));
        }
        // RFC 1035 §2.3.4: no resolver takes a longer name, and a SOCKS5 request cannot carry
        // one (RFC 1928 §5: one length byte).
        if let Some(url::Host::Domain(d)) = url.host() {
            if d.trim_end_matches('.').len() > 253 {
                return Err(bad("the URL's host name is longer than 253 bytes"));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials in the URL are not supported; use the auth setters",
            ));
        }
        let proxy = proxy::resolve(&self.proxy, &url, &proxy::process_env)?;
        let has_credentials = self.token.is_some() || self.basic_auth.is_some();
        // The app's own cookies, authorization and gateway keys go out in the clear as the
        // token would.
        let sends_credentials =
            has_credentials || self.headers.iter().any(|(k, _)| is_credential_header(k));
        if sends_credentials && !secure && !self.allow_insecure_credentials && !is_loopback(&url) {
            return Err(bad(
                "refusing to send credentials over plain ws:// to a non-loopback host",
            ));
        }
        let plain_credentials = sends_credentials && !secure && !self.allow_insecure_credentials;
        insecure_proxy_route(plain_credentials, proxy.as_ref())?;
        if self.protocol == Protocol::Gomuks {
            if let Some(t) = &self.token {
                if !is_gomuks_token(t.expose()) {
                    return Err(bad("gomuks token must be 1-500 printable characters"));
                }
            }
            // The library sends `gomuks_auth` itself when it has credentials; a second one
            // from the app would make the backend pick one of the two.
            if has_credentials && self.headers.iter().any(|(k, v)| sets_gomuks_cookie(k, v)) {
                return Err(bad(
                    "a Cookie header with gomuks_auth conflicts with the token or login; \
                     set the token instead",
                ));
            }
            // The login carries Basic in `Authorization`, a field with one value (RFC 9110
            // §11.6.2): a proxy would read one of the two and refuse, blaming the password.
            if self.basic_auth.is_some()
                && self
                    .headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            {
                return Err(bad(
                    "an Authorization header conflicts with the username and password, which \
                     the login sends as Authorization: Basic",
                ));
            }
            // RFC 7617 §2: the user-id ends at the first colon.
            if self
                .basic_auth
                .as_ref()
                .is_some_and(|b| b.username.contains(':'))
            {
                return Err(bad(
                    "a username cannot contain ':' (HTTP Basic ends it there)",
                ));
            }
        }
        let rwws_key = match self.protocol {
            Protocol::Rwws => {
                Some(decode_rwws_key(self.token.as_ref().ok_or_else(|| {
                    bad("rwws needs an access key (the token setting)")
                })?)?)
            }
            Protocol::Gomuks => None,
        };
        self.freeze(url, secure, proxy, plain_credentials, rwws_key)
    }

    /// The checks and defaults every transport shares, and the frozen [`Config`].
    fn freeze(
        self,
        url: Url,
        secure: bool,
        proxy: Option<Proxy>,
        plain_credentials: bool,
        rwws_key: Option<SecretBytes>,
    ) -> Result<Config, Error> {
        let bad = |m: &str| Error::new(Status::ErrConfig, m.to_owned());
        let d = self.protocol.defaults();
        let ping_interval = self.ping_interval.unwrap_or(d.ping_interval);
        // Unset, it keeps the default's ratio to the ping interval, so raising only the ping
        // interval does not make the config invalid.
        let ratio = (d.receive_timeout.as_millis() / d.ping_interval.as_millis()) as u32;
        // Capped: a long ping interval alone must not make the derived timeout too long.
        let receive_timeout = self.receive_timeout.unwrap_or_else(|| {
            d.receive_timeout
                .max(ping_interval.saturating_mul(ratio))
                .min(MAX_DURATION)
        });
        let pong_timeout = self.pong_timeout.unwrap_or(d.pong_timeout);
        let (min, max) = self.backoff.unwrap_or(d.backoff);
        let longest = [
            ping_interval,
            receive_timeout,
            self.request_timeout,
            self.connect_timeout,
            pong_timeout,
            max,
        ];
        if longest.iter().any(|d| *d > MAX_DURATION) {
            return Err(bad(
                "timeouts, intervals and the backoff must be at most u32::MAX ms (about 49 days)",
            ));
        }
        let ms = |d: Duration| d.as_millis();
        if ms(ping_interval) == 0 || ms(receive_timeout) == 0 {
            return Err(bad("ping interval and receive timeout must be positive"));
        }
        if receive_timeout <= ping_interval {
            return Err(bad("receive timeout must exceed the ping interval"));
        }
        if self.protocol == Protocol::Rwws && ping_interval >= RWWS_SERVER_PING_LIMIT {
            return Err(bad(
                "rwws ping interval must stay below the server's 30 s limit",
            ));
        }
        if ms(self.request_timeout) == 0 || ms(self.connect_timeout) == 0 || ms(pong_timeout) == 0 {
            return Err(bad("timeouts must be positive"));
        }
        let max_message_bytes = self.max_message_bytes.unwrap_or(d.max_message_bytes);
        if min.is_zero() || max < min {
            return Err(bad("reconnect backoff needs 0 < min <= max"));
        }
        if max_message_bytes < 1024 {
            return Err(bad("max message bytes must be at least 1024"));
        }
        if self.queue_capacity == 0 {
            return Err(bad("queue capacity must be positive"));
        }
        if self.max_unsent_bytes == 0 {
            return Err(bad("max unsent bytes must be positive"));
        }
        if self.resume.last_received_event > 0 {
            return Err(bad("last_received_event must be 0 or negative"));
        }
        if let Some(why) = crate::resume::unusable_run_id(&self.resume.run_id) {
            return Err(bad(&format!("resume state: {why}")));
        }
        for (name, value) in self.headers.iter() {
            let ok_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            // Visible ASCII, space and tab only: the upgrade request is built with
            // header values that must be ASCII text, so anything else would fail at connect
            // (for ever, on every retry) instead of here.
            let ok_value = value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
            if !ok_name || !ok_value {
                return Err(bad("invalid extra header (name: letters, digits, '-' or '_'; value: printable ASCII)"));
            }
            if HANDSHAKE_HEADERS
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
            {
                return Err(bad(
                    "extra header would replace one the library sets (handshake or framing)",
                ));
            }
        }
        // Plain ws:// without an https:// proxy never uses TLS: no reason to read the store
        // (or fail on its absence).
        let tls_proxy = may_use_https_proxy(proxy.as_ref(), self.proxy_resolver.is_some());
        let mut trust = Trust {
            os_store: self.use_os_trust && (secure || tls_proxy),
            ..Trust::default()
        };
        if let Some(pem) = &self.extra_ca_pem {
            trust.extra_ca = tls::parse_ca_pem(pem)?;
        }
        for pin in &self.pins {
            trust.pins.push(tls::parse_pin(pin)?);
        }
        if let Some(pem) = &self.crl_pem {
            trust.crls = tls::parse_crl_pem(pem)?;
            if !(secure || tls_proxy) {
                return Err(bad(
                    "revocation lists need TLS: a wss:// or https:// URL, or an https:// proxy",
                ));
            }
        }
        // Over plain ws:// nothing would check a pin: fail loudly instead.
        if !trust.pins.is_empty() && !secure {
            return Err(bad("public key pins need a wss:// or https:// URL"));
        }
        if let Some((cert, key)) = &self.client_cert {
            trust.client_cert = Some(tls::parse_client_cert(cert, &key.0)?);
            // Only the server's TLS handshake shows it (never a proxy's): over plain ws://
            // it would go unused, and the app believe it authenticates.
            if !secure {
                return Err(bad("a client certificate needs a wss:// or https:// URL"));
            }
        }
        Ok(Config {
            url,
            protocol: self.protocol,
            token: self.token,
            basic_auth: self.basic_auth,
            compression: self.compression,
            ping_interval,
            receive_timeout,
            pong_timeout,
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            backoff_min: min,
            backoff_max: max,
            max_message_bytes,
            queue_capacity: self.queue_capacity,
            max_unsent_bytes: self.max_unsent_bytes,
            resume: self.resume,
            last_server_ts: self.last_server_ts,
            send_prev_listener_id: self.send_prev_listener_id,
            headers: self.headers,
            trust,
            rwws_key,
            proxy,
            proxy_resolver: self.proxy_resolver,
            plain_credentials,
            transport: self.transport,
        })
    }
}

/// Whether a connection may go through an `https://` proxy: the configured one is, or a
/// resolver (`has_resolver`) may answer one at any connection.
fn may_use_https_proxy(configured: Option<&Proxy>, has_resolver: bool) -> bool {
    has_resolver || configured.is_some_and(|p| p.kind == ProxyKind::Https)
}

/// Through a proxy, plain `ws://` credentials also cross the way to the proxy: refused unless
/// the proxy is on this machine. `exposed`: the client sends credentials over plain `ws://`
/// and the app has not allowed it.
/// Whether a header named `name` carries a credential: `Cookie`, `Authorization`,
/// `Proxy-Authorization`, or a name a reverse proxy or API gateway gives its key, token or
/// secret (`X-Api-Key`, `X-Auth-Token`, `CF-Access-Client-Secret`, `X-Session`): any of its
/// words, split at `-` and `_`, names one.
fn is_credential_header(name: &str) -> bool {
    const WORDS: [&str; 14] = [
        "cookie",
        "authorization",
        "auth",
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "credential",
        "credentials",
        "session",
        "signature",
        "jwt",
    ];
    name.split(['-', '_'])
        .any(|w| WORDS.iter().any(|c| w.eq_ignore_ascii_case(c)))
}

fn insecure_proxy_route(exposed: bool, proxy: Option<&Proxy>) -> Result<(), Error> {
    if exposed && proxy.is_some_and(|p| !p.is_loopback()) {
        return Err(Error::new(
            Status::ErrConfig,
            "refusing to send credentials over plain ws:// through a non-loopback proxy",
        ));
    }
    Ok(())
}

/// Decodes an rwws access key leniently (spec §2.6): surrounding whitespace ignored, standard
/// or URL-safe alphabet, padding optional; 1 to 127 bytes (the length travels in a signed
/// byte). Errors never contain the key.
fn decode_rwws_key(key: &Secret) -> Result<SecretBytes, Error> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let bad = |m: &str| Error::new(Status::ErrConfig, m.to_owned());
    let text = key.expose().trim();
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if text.contains(['-', '_']) {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    let bytes = base64::Engine::decode(&GeneralPurpose::new(alphabet, cfg), text)
        .map_err(|_| bad("the rwws access key is not valid base64"))?;
    if bytes.is_empty() || bytes.len() > 127 {
        return Err(bad("the rwws access key must decode to 1-127 bytes"));
    }
    Ok(SecretBytes(bytes))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_base_derives_websocket_path() {
        let c = Config::builder("http://127.0.0.1:29325").build().unwrap();
        assert_eq!(c.url.as_str(), "ws://127.0.0.1:29325/_gomuks/websocket");
        let c = Config::builder("https://example.org/sub/").build().unwrap();
        assert_eq!(c.url.as_str(), "wss://example.org/sub/_gomuks/websocket");
        let c = Config::builder("wss://h/x?y=1").build().unwrap();
        assert_eq!(c.url.as_str(), "wss://h/x?y=1");
    }

    /// `Duration::MAX` ("never") in any timeout, interval or backoff is refused at build,
    /// not left to overflow the session's clock arithmetic (a panic that poisoned the
    /// client); the longest taken is u32::MAX ms, the C API's range.
    #[test]
    fn durations_past_the_clock_are_refused() {
        type Set = fn(ConfigBuilder, Duration) -> ConfigBuilder;
        let setters: [Set; 6] = [
            |b, d| b.ping_interval(d),
            |b, d| b.receive_timeout(d),
            |b, d| b.request_timeout(d),
            |b, d| b.connect_timeout(d),
            |b, d| b.pong_timeout(d),
            |b, d| b.reconnect_backoff(Duration::from_secs(1), d),
        ];
        for set in setters {
            let b = || Config::builder("http://127.0.0.1:1");
            let e = set(b(), Duration::MAX).build().unwrap_err();
            assert_eq!(e.status(), Status::ErrConfig, "{e}");
            assert!(e.message().contains("u32::MAX ms"), "{e}");
        }
        let c = Config::builder("http://127.0.0.1:1")
            .request_timeout(MAX_DURATION)
            .connect_timeout(MAX_DURATION)
            .pong_timeout(MAX_DURATION)
            .reconnect_backoff(Duration::from_secs(1), MAX_DURATION)
            .build()
            .unwrap();
        assert_eq!(c.request_timeout, MAX_DURATION);
    }

    /// rwws-binary.md §2.7: a 20 s pong deadline for rwws; gomuks keeps 10 s. Set, it wins.
    #[test]
    fn spec2_7_pong_deadline_defaults_per_protocol() {
        let b = || Config::builder("http://127.0.0.1:1");
        assert_eq!(b().build().unwrap().pong_timeout, Duration::from_secs(10));
        let rwws = || b().protocol(Protocol::Rwws).token("a2V5");
        assert_eq!(
            rwws().build().unwrap().pong_timeout,
            Duration::from_secs(20)
        );
        let set = rwws()
            .pong_timeout(Duration::from_millis(1500))
            .build()
            .unwrap();
        assert_eq!(set.pong_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn unset_receive_timeout_follows_a_longer_ping_interval() {
        let b = || Config::builder("http://127.0.0.1:1");
        let c = b().ping_interval(Duration::from_secs(60)).build().unwrap();
        assert_eq!(c.receive_timeout, Duration::from_secs(240));
        let c = b().ping_interval(Duration::from_secs(5)).build().unwrap();
        assert_eq!(c.receive_timeout, Duration::from_secs(60));
        let c = b()
            .protocol(Protocol::Rwws)
            .token("a2V5")
            .ping_interval(Duration::from_secs(25))
            .build()
            .unwrap();
        assert_eq!(c.receive_timeout, Duration::from_secs(50));
        // Set explicitly, it is still checked against the ping interval.
        let e = b()
            .ping_interval(Duration::from_secs(60))
            .receive_timeout(Duration::from_secs(30))
            .build()
            .unwrap_err();
        assert_eq!(e.status(), Status::ErrConfig);
        // 12.7 days of ping interval: 4x that is over the limit, so the derived timeout stops
        // at it rather than fail the config over a value the app never set.
        let long = Duration::from_millis(1_100_000_000);
        let c = b().ping_interval(long).build().unwrap();
        assert_eq!(c.receive_timeout, MAX_DURATION);
    }

    #[test]
    fn rejects_bad_input() {
        for url in ["ftp://x", "not a url", "ws://u:p@h/"] {
            assert_eq!(
                Config::builder(url).build().unwrap_err().status(),
                Status::ErrConfig
            );
        }
        let e = Config::builder("ws://example.org/")
            .token("t")
            .build()
            .unwrap_err();
        assert!(e.message().contains("plain ws://"));
        assert!(Config::builder("ws://example.org/")
            .token("t")
            .allow_insecure_credentials(true)
            .build()
            .is_ok());
        assert!(Config::builder("ws://localhost/")
            .token("bad;token")
            .build()
            .is_err());
        assert!(Config::builder("ws://localhost/")
            .resume_state("1", 5)
            .build()
            .is_err());
        // §7.2: a run id goes into every upgrade URL and reaches C NUL-terminated.
        for run_id in ["a\0b".to_owned(), "9".repeat(65)] {
            let e = Config::builder("ws://localhost/")
                .resume_state(&run_id, -5)
                .build()
                .unwrap_err();
            assert!(e.message().contains("run_id"), "{e}");
        }
        assert!(Config::builder("ws://localhost/")
            .resume_state(&"9".repeat(64), -5)
            .build()
            .is_ok());
        assert!(Config::builder("ws://localhost/")
            .ping_interval(Duration::from_secs(60))
            .receive_timeout(Duration::from_secs(60))
            .build()
            .is_err());
        assert!(Config::builder("ws://localhost/")
            .header("X\r\n", "v")
            .build()
            .is_err());
        let e = Config::builder("ws://localhost/")
            .max_unsent_bytes(0)
            .build()
            .unwrap_err();
        assert!(e.message().contains("max unsent bytes"), "{e}");
    }

    #[test]
    fn proxy_option_is_checked_and_never_printed() {
        let b = || Config::builder("wss://h/").basic_auth("u", "pw");
        let c = b()
            .proxy("socks5h://me:hunter2@127.0.0.1:1080")
            .build()
            .unwrap();
        let p = c.proxy.as_ref().unwrap();
        assert_eq!(p.addr(), ("127.0.0.1", 1080));
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = b().proxy("ftp://me:hunter2@p:1").build().unwrap_err();
        assert_eq!(e.status(), Status::ErrConfig);
        assert!(!e.message().contains("hunter2"), "{}", e.message());
        assert!(b().no_proxy().build().unwrap().proxy.is_none());
        assert!(b().proxy("direct").build().unwrap().proxy.is_none());
        // Plain credentials through a proxy elsewhere are refused like plain ws:// elsewhere.
        let e = Config::builder("ws://127.0.0.1:5/")
            .token("t")
            .proxy("http://proxy.example:3128")
            .build()
            .unwrap_err();
        assert!(e.message().contains("proxy"), "{}", e.message());
        assert!(Config::builder("ws://127.0.0.1:5/")
            .token("t")
            .proxy("http://127.0.0.1:3128")
            .build()
            .is_ok());
    }

    #[test]
    fn secrets_never_print() {
        let b = Config::builder("wss://h/")
            .basic_auth("u", "hunter2")
            .token("tok-SECRET");
        let s = format!("{:?}", b.clone().build().unwrap());
        assert!(!s.contains("hunter2") && !s.contains("tok-SECRET"), "{s}");
        assert!(!format!("{b:?}").contains("hunter2"));
        // A URL with a password is refused, and the refused builder does not print it.
        for url in [
            "wss://me:hunter2@h/",
            "wss://me:hun@ter2@h/",
            "not a url me:hunter2@",
            "foo:me:hunter2@h",
        ] {
            let b = Config::builder(url);
            assert!(!format!("{b:?}").contains("ter2"), "{b:?}");
            assert!(!b.build().unwrap_err().message().contains("ter2"));
        }
        // A password that parses as a port and a path is hidden too.
        let b = Config::builder("wss://me:1234/hunter2@h/");
        assert!(
            format!("{b:?}").contains("\"wss://<redacted>@h/\""),
            "{b:?}"
        );
        // The app's headers may be a reverse proxy's credentials: names only.
        let b = Config::builder("wss://h/")
            .token("tok")
            .header("Cookie", "session=COOKIE-SECRET")
            .header("X-Auth", "Bearer BEARER-SECRET");
        for s in [format!("{b:?}"), format!("{:?}", b.build().unwrap())] {
            assert!(!s.contains("SECRET"), "{s}");
            assert!(
                s.contains("Cookie: <redacted>") && s.contains("X-Auth"),
                "{s}"
            );
        }
    }

    /// RFC 9110 §11.6.2, RFC 7617 §2: the login's `Authorization: Basic` leaves no room for
    /// an app's `Authorization`, and a username with `:` could never log in.
    #[test]
    fn the_login_credentials_are_refused_where_basic_cannot_carry_them() {
        let e = Config::builder("wss://h/")
            .basic_auth("u", "p")
            .header("authorization", "Bearer X")
            .build()
            .unwrap_err();
        assert_eq!(e.status(), Status::ErrConfig);
        assert!(e.message().contains("Authorization"), "{}", e.message());
        // With a token alone the login never sends Basic: the header is the app's.
        Config::builder("wss://h/")
            .token("t")
            .header("Authorization", "Bearer X")
            .build()
            .unwrap();
        let e = Config::builder("wss://h/")
            .basic_auth("a:b", "p")
            .build()
            .unwrap_err();
        assert!(e.message().contains("':'"), "{}", e.message());
    }

    /// A client certificate is shown only in the server's TLS handshake: over plain `ws://`
    /// it would be silently unused, so the configuration is refused, like pins there.
    #[test]
    fn a_client_certificate_needs_tls_to_the_server() {
        let me = rcgen::generate_simple_self_signed(vec!["me".to_owned()]).unwrap();
        let (cert, key) = (me.cert.pem(), me.key_pair.serialize_pem());
        let with_cert = |url: &str| {
            Config::builder(url)
                .client_cert_pem(cert.as_bytes(), key.as_bytes())
                .build()
        };
        for url in ["ws://127.0.0.1:1/", "http://localhost:1"] {
            let e = with_cert(url).unwrap_err();
            assert_eq!(e.status(), Status::ErrConfig);
            assert!(e.message().contains("wss://"), "{}", e.message());
        }
        // Not even an https:// proxy is shown it.
        let e = Config::builder("ws://127.0.0.1:1/")
            .proxy("https://127.0.0.1:3128")
            .client_cert_pem(cert.as_bytes(), key.as_bytes())
            .build()
            .unwrap_err();
        assert!(
            e.message().contains("client certificate"),
            "{}",
            e.message()
        );
        for url in ["wss://localhost:1/", "https://localhost:1"] {
            assert!(with_cert(url).unwrap().trust.client_cert.is_some(), "{url}");
        }
    }
}
