//! `tether_config`: a mutable builder. Setters check their arguments (NULL, UTF-8, ranges
//! that need no context); `tether_client_new` validates the whole and reports the reason.

use std::ffi::{c_char, c_void, CString};
use std::time::Duration;

use crate::config::{ConfigBuilder, Protocol};
use crate::status::{Error, Status};

use super::boundary::{bytes_arg, code, free_handle, out_arg, status_of, str_arg};
use super::dispatch::{tether_destroy_cb, AppCtx};
use super::tether_status;

/// gomuks JSON RPC over `/_gomuks/websocket` (the default).
pub const TETHER_PROTOCOL_GOMUKS: u32 = 1;
/// rwws binary packets over `/api/ws`.
pub const TETHER_PROTOCOL_RWWS: u32 = 2;

/// Connection settings; create with `tether_config_new`, free with `tether_config_free`.
/// A client copies what it needs, so a config may be freed or reused right after
/// `tether_client_new`. Not thread-safe: use one config from one thread at a time.
pub struct tether_config {
    pub(crate) builder: ConfigBuilder,
}

/// Applies `f` to the builder behind `cfg`; on error the config is unchanged.
fn edit(
    cfg: *mut tether_config,
    f: impl FnOnce(ConfigBuilder) -> Result<ConfigBuilder, Error>,
) -> tether_status {
    let cfg = match out_arg(cfg, "config") {
        Ok(c) => c,
        Err(e) => return status_of(Err(e)),
    };
    status_of(f(cfg.builder.clone()).map(|b| {
        let old = std::mem::replace(&mut cfg.builder, b);
        // Dropped once `cfg` is done with: it can hold the last reference to a replaced proxy
        // resolver, whose destroy(ctx) may call back into this very config.
        drop(old);
    }))
}

fn millis(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

ffi_fn! {
    /// Creates a config with the defaults (gomuks, compression on, request timeout 60 s, connect
    /// timeout 10 s, and per-protocol keepalive and backoff defaults, see the setters) and no URL.
    /// `*out` receives a config owned by the caller (free with `tether_config_free`).
    /// `TETHER_ERR_NULL` if `out` is NULL.
    fn tether_config_new(out: *mut *mut tether_config) -> tether_status {
        status_of(out_arg(out, "out").map(|o| {
            *o = Box::into_raw(Box::new(tether_config {
                builder: ConfigBuilder::new(""),
            }));
        }))
    } ?= code
}

ffi_fn! {
    /// Sets the URL: `ws://` or `wss://` is the websocket endpoint as given; `http://` or
    /// `https://` is the backend's base, from which the dialect's paths are derived. Checked by
    /// `tether_client_new`. The string is copied.
    fn tether_config_set_url(cfg: *mut tether_config, url: *const c_char) -> tether_status {
        edit(cfg, |b| Ok(b.url(str_arg(url, "url")?)))
    } ?= code
}

ffi_fn! {
    /// Selects the protocol: `TETHER_PROTOCOL_GOMUKS` (default) or `TETHER_PROTOCOL_RWWS`.
    /// `TETHER_ERR_INVALID_ARGUMENT` for other values.
    fn tether_config_set_protocol(cfg: *mut tether_config, protocol: u32) -> tether_status {
        edit(cfg, |b| match protocol {
            TETHER_PROTOCOL_GOMUKS => Ok(b.protocol(Protocol::Gomuks)),
            TETHER_PROTOCOL_RWWS => Ok(b.protocol(Protocol::Rwws)),
            _ => Err(Error::new(Status::ErrInvalidArgument, "unknown protocol")),
        })
    } ?= code
}

ffi_fn! {
    /// gomuks: the `gomuks_auth` cookie token; rwws: the access key in base64 (standard or URL-safe
    /// alphabet, padding optional, 1-127 bytes decoded; checked by `tether_client_new`). Copied;
    /// never logged.
    fn tether_config_set_token(cfg: *mut tether_config, token: *const c_char) -> tether_status {
        edit(cfg, |b| Ok(b.token(str_arg(token, "token")?)))
    } ?= code
}

ffi_fn! {
    /// gomuks: username and password for `POST /_gomuks/auth` (used when no token is set or the
    /// token is rejected). Both copied; the password is never logged.
    fn tether_config_set_basic_auth(
        cfg: *mut tether_config,
        user: *const c_char,
        password: *const c_char,
    ) -> tether_status {
        edit(cfg, |b| {
            Ok(b.basic_auth(str_arg(user, "user")?, str_arg(password, "password")?))
        })
    } ?= code
}

ffi_fn! {
    /// gomuks: compression (`compress=1`, raw deflate), on by default.
    fn tether_config_set_compression(cfg: *mut tether_config, on: bool) -> tether_status {
        edit(cfg, |b| Ok(b.compression(on)))
    } ?= code
}

ffi_fn! {
    /// Keepalive ping interval in milliseconds (default gomuks 15000, rwws 10000; must be below the
    /// receive timeout, and for rwws below the server's 30000 limit; a gomuks websocket that
    /// sends nothing else for 60000 ms is closed by the backend with 4002, so an interval of
    /// 60000 or more is logged as a warning at connect).
    fn tether_config_set_ping_interval_ms(cfg: *mut tether_config, ms: u32) -> tether_status {
        edit(cfg, |b| Ok(b.ping_interval(millis(ms))))
    } ?= code
}

ffi_fn! {
    /// Reconnect when nothing arrives for this many milliseconds (default gomuks 60000 or 4 ping
    /// intervals, whichever is longer; rwws 20000 or 2 ping intervals, the pong deadline). While
    /// the deadline of a ping queued behind our own sends is put off (see
    /// `tether_config_set_pong_timeout_ms`), this waits for that ping's verdict.
    fn tether_config_set_receive_timeout_ms(cfg: *mut tether_config, ms: u32) -> tether_status {
        edit(cfg, |b| Ok(b.receive_timeout(millis(ms))))
    } ?= code
}

ffi_fn! {
    /// How long a ping may go unanswered (no byte at all arriving) before the link counts as
    /// dead and the client reconnects, in milliseconds (default: gomuks 10000, rwws 20000): a
    /// silent link is noticed within the ping interval plus this. Also the deadline of the probe that
    /// `tether_client_reconnect_now` sends. Must be positive (checked by `tether_client_new`).
    /// A ping queued behind earlier sends (more than 64 KiB unacknowledged, or messages not
    /// written yet) that the peer keeps acknowledging (read from the kernel on Linux, Android
    /// and Apple systems) has its deadline put off by this much at a time, once more after the
    /// ping itself is acknowledged; the receive timeout waits for that verdict.
    fn tether_config_set_pong_timeout_ms(cfg: *mut tether_config, ms: u32) -> tether_status {
        edit(cfg, |b| Ok(b.pong_timeout(millis(ms))))
    } ?= code
}

ffi_fn! {
    /// Default per-request timeout in milliseconds (default 60000); a request that times out is
    /// cancelled on the server and answered with `TETHER_ERR_REQUEST_TIMEOUT`.
    fn tether_config_set_request_timeout_ms(cfg: *mut tether_config, ms: u32) -> tether_status {
        edit(cfg, |b| Ok(b.request_timeout(millis(ms))))
    } ?= code
}

ffi_fn! {
    /// Bound on a connection's TCP connects and proxy tunnel (an `https://` proxy's TLS
    /// handshake included), once the names are resolved, in milliseconds (default 10000):
    /// addresses still silent then are given up, and the DISCONNECTED reason names them
    /// beside what the others did. It also bounds the server's TLS handshake and the
    /// websocket upgrade, each (a server silent after the connect is named with the step),
    /// and the gomuks login's answer once its connection is open. A whole attempt (name
    /// resolution, gomuks login, TLS and upgrade included), and a token renewal, is bounded
    /// by twice this.
    fn tether_config_set_connect_timeout_ms(cfg: *mut tether_config, ms: u32) -> tether_status {
        edit(cfg, |b| Ok(b.connect_timeout(millis(ms))))
    } ?= code
}

ffi_fn! {
    /// Reconnect backoff: the first delay and the cap, in milliseconds (default gomuks 125 and
    /// 10000, rwws 1000 and 60000);
    /// delays double with jitter, back to the first after a connection that got through its
    /// start (gomuks: delivered `init_complete`, or carried data for 30 s; rwws: stayed
    /// authenticated 60 s). Needs `0 < min_ms <= max_ms` (checked by
    /// `tether_client_new`).
    fn tether_config_set_reconnect_backoff_ms(
        cfg: *mut tether_config,
        min_ms: u32,
        max_ms: u32,
    ) -> tether_status {
        edit(cfg, |b| {
            Ok(b.reconnect_backoff(millis(min_ms), millis(max_ms)))
        })
    } ?= code
}

ffi_fn! {
    /// Cap on one server message after decompression (default gomuks 64 MiB, rwws 64 KiB; at
    /// least 1024). A larger message, a decompression bomb included, ends the connection with
    /// `TETHER_ERR_MESSAGE_TOO_LARGE`, and that connection does not reset the backoff: a
    /// buffered gomuks event that large comes back with every resume, so the client keeps
    /// retrying further apart, the resume point still before it. To get past it, close with
    /// `tether_client_close_keep_resume` and resume in a client with a larger cap.
    fn tether_config_set_max_message_bytes(cfg: *mut tether_config, bytes: usize) -> tether_status {
        edit(cfg, |b| Ok(b.max_message_bytes(bytes)))
    } ?= code
}

ffi_fn! {
    /// How many events may wait for the app before the library stops reading the socket
    /// (default 4096). Nothing is dropped: the server sees TCP backpressure. While
    /// disconnected, a full queue also holds back the next connection attempt until the app
    /// has taken it below its capacity (or calls `tether_client_reconnect_now`), so an app
    /// that stops polling during an outage does not gather two events per attempt; requests
    /// made meanwhile wait unsent.
    fn tether_config_set_queue_capacity(cfg: *mut tether_config, events: usize) -> tether_status {
        edit(cfg, |b| Ok(b.queue_capacity(events)))
    } ?= code
}

ffi_fn! {
    /// How many bytes of requests and packets may wait to be written (default 32 MiB): those
    /// made while disconnected, and those made faster than the uplink carries. A
    /// `tether_client_request*` or `tether_client_send_*` call that would pass it returns
    /// `TETHER_ERR_SEND_BUFFER_FULL` and takes nothing (make it again after the
    /// `TETHER_EVENT_SEND_READY` that follows once room frees). One message larger than the
    /// limit is taken while nothing else waits. Pings and cancels are not counted. 0 is
    /// `TETHER_ERR_CONFIG` at `tether_client_new`.
    fn tether_config_set_max_unsent_bytes(cfg: *mut tether_config, bytes: usize) -> tether_status {
        edit(cfg, |b| Ok(b.max_unsent_bytes(bytes as u64)))
    } ?= code
}

ffi_fn! {
    /// Resume point from an earlier client (see `tether_client_resume_state`): the backend's
    /// `run_id` and the newest event id the app took (0 or negative). The string is copied.
    /// A positive id or a `run_id` over 64 bytes is `TETHER_ERR_CONFIG` at
    /// `tether_client_new`.
    fn tether_config_set_resume_state(
        cfg: *mut tether_config,
        run_id: *const c_char,
        last_received_event: i64,
    ) -> tether_status {
        edit(cfg, |b| {
            Ok(b.resume_state(str_arg(run_id, "run_id")?, last_received_event))
        })
    } ?= code
}

ffi_fn! {
    /// gomuks: sends `last_server_ts` so a failed resume costs a catch-up rather than a full
    /// sync. Only set it if the app persisted its state from that time.
    fn tether_config_set_last_server_ts(cfg: *mut tether_config, ts_ms: i64) -> tether_status {
        edit(cfg, |b| Ok(b.last_server_ts(ts_ms)))
    } ?= code
}

ffi_fn! {
    /// gomuks: send `prev_listener_id` on reconnect (off by default: the current backend then
    /// drops its buffer before the new listener subscribes, which defeats resume).
    fn tether_config_set_prev_listener_id(cfg: *mut tether_config, on: bool) -> tether_status {
        edit(cfg, |b| Ok(b.send_prev_listener_id(on)))
    } ?= code
}

ffi_fn! {
    /// Adds a header to the websocket upgrade request (e.g. `Origin`). Both strings are copied;
    /// `tether_client_new` refuses (`TETHER_ERR_CONFIG`) a name other than letters, digits, `-`
    /// and `_`, a value other than printable ASCII, space and tab, and the handshake's own
    /// headers (`Host`, `Connection`, `Upgrade`, `Sec-WebSocket-*`). `Cookie` headers are sent
    /// as one header after the library's `gomuks_auth` cookie; one that sets `gomuks_auth`
    /// while a token or login is configured is refused (`TETHER_ERR_CONFIG`).
    fn tether_config_add_header(
        cfg: *mut tether_config,
        name: *const c_char,
        value: *const c_char,
    ) -> tether_status {
        edit(cfg, |b| {
            Ok(b.header(str_arg(name, "name")?, str_arg(value, "value")?))
        })
    } ?= code
}

/// PEM data given as (pointer, length): NULL with a length is `ErrNull`, nothing at all
/// `ErrInvalidArgument` (no PEM file is empty on purpose).
fn pem_arg<'a>(pem: *const u8, len: usize) -> Result<&'a [u8], Error> {
    let pem = bytes_arg(pem, len, "pem")?;
    if pem.is_empty() {
        return Err(Error::new(Status::ErrInvalidArgument, "empty PEM data"));
    }
    Ok(pem)
}

ffi_fn! {
    /// Trusts the CA certificates in this PEM data, in addition to the roots (the built-in
    /// webpki roots, or the OS store with `tether_config_set_use_os_trust`).
    /// The bytes are copied; they are parsed by `tether_client_new` (`TETHER_ERR_CONFIG` for
    /// bad PEM). NULL with a length is `TETHER_ERR_NULL`; empty data (NULL with 0 included)
    /// `TETHER_ERR_INVALID_ARGUMENT`.
    fn tether_config_set_ca_pem(
        cfg: *mut tether_config,
        pem: *const u8,
        len: usize,
    ) -> tether_status {
        edit(cfg, |b| Ok(b.extra_ca_pem(pem_arg(pem, len)?)))
    } ?= code
}

ffi_fn! {
    /// Refuses a server certificate that these certificate revocation lists (PEM, `X509 CRL`
    /// blocks) revoke, with `TETHER_ERR_CERTIFICATE` and no retry. Only the leaf is checked,
    /// and only against the lists given: a leaf whose issuer has no list here is accepted,
    /// and a list past its next update still revokes. A list for the leaf's issuer that does
    /// not verify refuses it too; two lists of one issuer and scope are `TETHER_ERR_CONFIG`.
    /// They apply to an `https://` proxy's certificate too. tether fetches no CRL; replace the
    /// lists with a new client. Needs TLS (a `wss://`/`https://` URL or an `https://` proxy).
    /// The bytes are copied; `tether_client_new` parses them (`TETHER_ERR_CONFIG` for a bad
    /// list). NULL with a length is `TETHER_ERR_NULL`; empty data `TETHER_ERR_INVALID_ARGUMENT`.
    fn tether_config_set_crl_pem(
        cfg: *mut tether_config,
        pem: *const u8,
        len: usize,
    ) -> tether_status {
        edit(cfg, |b| Ok(b.crl_pem(pem_arg(pem, len)?)))
    } ?= code
}

ffi_fn! {
    /// Pins the server's public key: adds one SHA-256 hash of a certificate's
    /// SubjectPublicKeyInfo, written `sha256/<base64>` (as OkHttp) or as the bare base64 (as
    /// HPKP's `pin-sha256`). Call once per pin (a backup pin survives a key rotation). With
    /// pins, the server is accepted only when one matches the leaf's key or the key of a
    /// certificate on a verified path from the leaf to a trusted root (an intermediate, the
    /// root), as OkHttp matches, *in addition to* the normal chain and name verification;
    /// another certificate the server sends matches nothing. A pinned self-signed server
    /// still needs its certificate given to `tether_config_set_ca_pem`. A mismatch ends the
    /// client with `TETHER_ERR_CERTIFICATE` (no retry). Checked by `tether_client_new` (the form, and a
    /// `wss://`/`https://` URL). Copied. Default: no pins.
    fn tether_config_add_pin_sha256(cfg: *mut tether_config, pin: *const c_char) -> tether_status {
        edit(cfg, |b| Ok(b.pin_sha256(str_arg(pin, "pin")?)))
    } ?= code
}

ffi_fn! {
    /// A client certificate for servers that ask for one (mTLS): `cert` is the PEM chain,
    /// leaf first; `key` its private key in PEM (PKCS#8, PKCS#1 or SEC1). Both are copied;
    /// `tether_client_new` parses them and refuses a key that does not belong to the
    /// certificate (`TETHER_ERR_CONFIG`). The key is a secret: it never appears in logs or
    /// error messages. A server that refuses the certificate ends the client with
    /// `TETHER_ERR_CERTIFICATE`. It needs a `wss://`/`https://` URL (`TETHER_ERR_CONFIG`
    /// otherwise): it is shown only to the server, never to a proxy. Default: none. NULL with
    /// a length is `TETHER_ERR_NULL`; empty PEM data (NULL with length 0 included) is
    /// `TETHER_ERR_INVALID_ARGUMENT`.
    fn tether_config_set_client_cert_pem(
        cfg: *mut tether_config,
        cert: *const u8,
        cert_len: usize,
        key: *const u8,
        key_len: usize,
    ) -> tether_status {
        edit(cfg, |b| {
            let cert = bytes_arg(cert, cert_len, "cert")?;
            let key = bytes_arg(key, key_len, "key")?;
            if cert.is_empty() || key.is_empty() {
                return Err(Error::new(Status::ErrInvalidArgument, "empty PEM data"));
            }
            Ok(b.client_cert_pem(cert, key))
        })
    } ?= code
}

ffi_fn! {
    /// Trusts the operating system's certificate store instead of the built-in webpki roots
    /// (default off): on Linux the OpenSSL locations (`SSL_CERT_FILE`/`SSL_CERT_DIR` replace
    /// them when set), on macOS the keychain, on Windows the system store; on Android and iOS
    /// no store is found (rustls-native-certs reads none there), so the connect fails. CAs
    /// given to `tether_config_set_ca_pem` still add to it. Only read when TLS is used (a
    /// `wss://` server, or an `https://` proxy). Read when the client connects;
    /// `tether_client_connect` fails with `TETHER_ERR_TLS` when the store holds no usable
    /// certificate.
    fn tether_config_set_use_os_trust(cfg: *mut tether_config, on: bool) -> tether_status {
        edit(cfg, |b| Ok(b.use_os_trust(on)))
    } ?= code
}

ffi_fn! {
    /// The proxy the websocket and the gomuks login (`POST /_gomuks/auth`) both go through:
    /// `http://[user:pass@]host[:port]` (HTTP CONNECT, Basic proxy auth, port 80 by default),
    /// `https://[user:pass@]host[:port]` (the same inside TLS to the proxy, port 443 by
    /// default; its certificate verified with the client's roots, CAs and CRLs, never the
    /// pins, and shown no client certificate: both are the server's),
    /// `socks5://[user:pass@]host[:port]` (SOCKS5 with RFC 1929 auth, port 1080 by default; the
    /// server's name is resolved locally) or `socks5h://...` (the proxy resolves the name).
    /// No scheme means `http://`; user and password may be percent-encoded. An explicit proxy
    /// is used for every host, loopback included. `"direct"` connects directly and ignores
    /// the environment. NULL or `""` restores the default: the environment decides when
    /// `tether_client_new` runs (`https_proxy`/`HTTPS_PROXY` for `wss://`/`https://`,
    /// `http_proxy`/`HTTP_PROXY` for `ws://`/`http://`, then `all_proxy`/`ALL_PROXY`, lower
    /// case first, neither `http_proxy` spelling when `REQUEST_METHOD` is set (a CGI
    /// program, where a request header sets `HTTP_PROXY`); hosts in `no_proxy`/`NO_PROXY` —
    /// a comma list of domain suffixes, IPs, networks or `*` — and loopback hosts go
    /// directly). The URL is checked by
    /// `tether_client_new` (`TETHER_ERR_CONFIG`, a message that does not repeat the URL). A
    /// proxy that refuses the credentials (HTTP 407, SOCKS5 auth failure) ends the client
    /// with `TETHER_ERR_UNAUTHORIZED`, like a 401 from the server, but with close code 407
    /// (also when the proxy answered a CONNECT with 401), so an app can tell the proxy's
    /// refusal from the server's; other refusals are
    /// `TETHER_ERR_CONNECT` and retried. Copied; the credentials are never logged.
    fn tether_config_set_proxy(cfg: *mut tether_config, url: *const c_char) -> tether_status {
        edit(cfg, |b| {
            let url = if url.is_null() { "" } else { str_arg(url, "url")? };
            Ok(b.proxy(url))
        })
    } ?= code
}

/// The answer a `tether_proxy_resolver_cb` gives, set with `tether_proxy_answer_set`. Lent to
/// the callback for the duration of the call only.
pub struct tether_proxy_answer {
    proxy: Option<String>,
}

/// Says which proxy one connection takes: `url` is the URL about to be opened (NUL-terminated
/// UTF-8, valid during the call: `ws[s]://host:port/path`, or `http[s]://host:port/_gomuks/auth`
/// for the gomuks login, the scheme following the configured URL's; no query). Set the answer
/// with `tether_proxy_answer_set` and return `TETHER_OK`; leaving it unset leaves the decision
/// to `tether_config_set_proxy` and the environment. `TETHER_ERR_CONFIG` ends the client with
/// that status (the app's settings cannot work); any other return value fails that connection
/// attempt (`TETHER_ERR_CONNECT`, retried with backoff). Runs on a blocking thread of the
/// library, never on a network thread; one call per client at a time (an attempt that timed
/// out waiting for a call leaves it running, and the next attempt waits for it to return
/// before calling again), but clients made from one config may call it at once. It may block
/// (a PAC script, an OS lookup), and its time counts against the attempt's limit (twice the
/// connect timeout): an attempt that ran out of time while it was still running says so ("the
/// proxy resolver has not answered for N ms"), and a resolver that is always slower than that
/// fails every attempt (raise the connect timeout, or answer from a cache of its own).
/// `tether_client_free` waits for a call in progress for that client, so none runs once it
/// has returned; called from inside that call it returns without waiting. Freeing another
/// client from inside a resolver waits for that client's call: two resolvers that each free
/// the other's client at the same time wait for each other for ever, like two threads joining
/// each other.
pub type tether_proxy_resolver_cb = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        url: *const c_char,
        answer: *mut tether_proxy_answer,
    ) -> tether_status,
>;

/// The app's resolver and its context; dropping the last copy runs `destroy`.
struct AppResolver {
    cb: unsafe extern "C" fn(*mut c_void, *const c_char, *mut tether_proxy_answer) -> tether_status,
    ctx: AppCtx,
}

impl AppResolver {
    fn ask(&self, url: &str) -> Result<Option<String>, Error> {
        let url = CString::new(url)
            .map_err(|_| Error::new(Status::ErrConnect, "the URL holds a NUL byte"))?;
        let mut answer = tether_proxy_answer { proxy: None };
        // SAFETY: the app registered `cb` for this call; `url` and `answer` outlive it.
        let code = unsafe { (self.cb)(self.ctx.ptr(), url.as_ptr(), &mut answer) };
        if code == Status::Ok.code() {
            return Ok(answer.proxy);
        }
        let status = Status::from_code(code);
        let what = status
            .map(|s| s.description_nul().trim_end_matches('\0'))
            .unwrap_or("not a tether status");
        // The app's own verdict that its settings cannot work ends the client; anything else
        // may pass.
        let status = match status {
            Some(Status::ErrConfig) => Status::ErrConfig,
            _ => Status::ErrConnect,
        };
        Err(Error::new(status, format!("it returned {code} ({what})")))
    }
}

ffi_fn! {
    /// Asks `cb(ctx, url, answer)` before every connection a client of this config opens
    /// (each websocket attempt and each gomuks login) which proxy to take: for settings that
    /// change while the app runs, such as a PAC script or the OS's proxy settings, which
    /// follow the network. Its answer overrides `tether_config_set_proxy` and the environment
    /// for that connection; see `tether_proxy_resolver_cb`. An answer that is not a proxy URL,
    /// or that would carry a token or password over plain `ws://` to a proxy that is not
    /// loopback (without `tether_config_set_allow_insecure_credentials`), ends the client
    /// with `TETHER_ERR_CONFIG`; the answer is never logged (it may hold a password). `cb`
    /// NULL removes the resolver. `destroy(ctx)` (may be NULL) runs exactly once, whatever
    /// this call returns: at once when `cb` is NULL or the call fails, otherwise when neither
    /// this config nor any client made from it can call `cb` any more (after
    /// `tether_config_free`, a later call of this function, and `tether_client_free` of those
    /// clients), inside whichever of those calls lets go last and on its thread: after it, the
    /// app's code for this resolver never runs again, so an interpreter may shut down. That is
    /// one of the library's threads only when the app made it so: a client freed from inside
    /// its own resolver call (`destroy(ctx)` runs when that call returns, on its thread), or
    /// from inside an event or log callback (on that callback's thread). After
    /// fork(), in the child, the call returns `TETHER_ERR_FORKED` and calls nothing: `ctx`
    /// stays the app's. Default: no resolver.
    fn tether_config_set_proxy_resolver(
        cfg: *mut tether_config,
        cb: tether_proxy_resolver_cb,
        ctx: *mut c_void,
        destroy: tether_destroy_cb,
    ) -> tether_status {
        let ctx = AppCtx::new(ctx, destroy);
        // Without a resolver the context is the app's again, at once.
        let app = cb.map(|cb| AppResolver { cb, ctx });
        edit(cfg, |b| {
            Ok(match app {
                Some(app) => b.proxy_resolver_with_status(crate::proxy::Resolver::new(
                    std::sync::Arc::new(move |url: &str| app.ask(url)),
                )),
                None => b.no_proxy_resolver(),
            })
        })
    } ?= code
}

ffi_fn! {
    /// Sets the answer of a `tether_proxy_resolver_cb`: a proxy URL as
    /// `tether_config_set_proxy` takes it, or `"direct"`; NULL or `""` takes the answer back
    /// (the configured decision). Copied. Only valid inside the callback that was given
    /// `answer`. `TETHER_ERR_NULL` if `answer` is NULL, `TETHER_ERR_INVALID_UTF8` if `proxy`
    /// is not UTF-8 (the answer is then unchanged).
    fn tether_proxy_answer_set(
        answer: *mut tether_proxy_answer,
        proxy: *const c_char,
    ) -> tether_status {
        status_of(out_arg(answer, "answer").and_then(|a| {
            let text = if proxy.is_null() { "" } else { str_arg(proxy, "proxy")? };
            a.proxy = (!text.is_empty()).then(|| text.to_owned());
            Ok(())
        }))
    } ?= code
}

ffi_fn! {
    /// Allows credentials over plain `ws://`/`http://` to a host that is not loopback, or
    /// through a proxy that is not loopback (refused by default, `tether_client_new` failing
    /// with `TETHER_ERR_CONFIG`): the token, the username and password, and the app's own
    /// headers that carry credentials: `Cookie`, `Authorization`, `Proxy-Authorization`, and
    /// any whose name has a word such as `key`, `token`, `secret`, `auth` or `session`
    /// (`X-Api-Key`, `X-Auth-Token`, `CF-Access-Client-Secret`; words split at `-` and `_`).
    fn tether_config_set_allow_insecure_credentials(
        cfg: *mut tether_config,
        on: bool,
    ) -> tether_status {
        edit(cfg, |b| Ok(b.allow_insecure_credentials(on)))
    } ?= code
}

ffi_fn! {
    /// gomuks: talks to the backend bundled into this process instead of a websocket.
    /// `library_path` names `libgomuksffi` (gomuks `pkg/ffi`), loaded by
    /// `tether_client_connect` and never unloaded (a Go runtime cannot be); `data_root` is
    /// the backend's directory for its config, database, cache and logs, created if missing.
    /// No URL is needed; compression, pings, acks, resume, proxies, TLS settings, credentials,
    /// extra headers, the reconnect backoff and the connect timeout do not apply and are
    /// ignored, not checked (the start may take minutes); a resume state and token are
    /// unused but kept (the resume state checked as for a websocket):
    /// `tether_client_resume_state` and `tether_client_auth_token` return them unchanged. One
    /// in-process backend runs per process at a time, and a data root is locked while its
    /// client runs: a second client gets `TETHER_ERR_IN_USE` from `tether_client_connect`, and
    /// a library at another path than one built by Go already loaded gets `TETHER_ERR_CONFIG`
    /// (Go supports one runtime per process). At most 64 calls run in the backend at once,
    /// of them at most 8 uploads and 8 streamed downloads; later requests wait in tether,
    /// where their timeouts and cancels still answer them. A
    /// close answers every request at once (those the backend already answered with that
    /// answer) but waits up to 5 s for calls the backend is still
    /// running (the FFI can neither cancel them nor be destroyed under them); past that
    /// CLOSED comes and the backend stops once they return, keeping the root locked until
    /// then. The backend writes its own log to stdout and to a file under the data root (the
    /// FFI offers no way to configure it).
    /// Both strings are copied. `TETHER_ERR_NULL` if either is NULL; `tether_client_new`
    /// checks the rest (`TETHER_ERR_CONFIG` for an rwws client or an empty path).
    fn tether_config_set_in_process(
        cfg: *mut tether_config,
        library_path: *const c_char,
        data_root: *const c_char,
    ) -> tether_status {
        edit(cfg, |b| {
            let library = str_arg(library_path, "library_path")?;
            let root = str_arg(data_root, "data_root")?;
            Ok(b.in_process(library, root))
        })
    } ?= code
}

ffi_fn! {
    /// Frees a config. NULL is fine; never twice. Clients created from it are unaffected.
    fn tether_config_free(cfg: *mut tether_config) {
        // SAFETY: the caller passes a config from tether_config_new, once, or NULL.
        unsafe { free_handle(cfg, |_| ()) }
    } ?= |_| ()
}
