//! TCP (Nagle off) + optional rustls + websocket upgrade.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::OptionFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, COOKIE};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use url::Url;

use super::resolve::{self, interleave, interleave_after, Later, Resolved};
use super::tunnel;
use super::uplink::{Uplink, Written};
use crate::config::Config;
use crate::logging::tlog;
use crate::proxy::{self, Proxy, ProxyChoice, ProxyKind};
use crate::stats::{self, Counters, Probe};
use crate::status::{Error, Status};
use crate::tls::Configs;

/// Copies small received payloads out of tungstenite's read buffer into buffers of our own.
///
/// tungstenite hands each frame over as a slice of its read buffer, and can reuse that buffer
/// only once no slice of it is alive. The app holds events for a while, so without the copy
/// every read found the buffer still shared, allocated one just big enough for the frame it
/// lacked and asked the socket for that much: about 2.3 KB per `recv` on a fast stream of
/// small events, each read's buffer later freed on the app's thread under the allocator's
/// lock (bench/RESULTS.md, "What bounds the missed targets"). Dropping tungstenite's slice
/// right after the copy lets it read 16 KiB at a time again; the app's events share one
/// allocation per [`PayloadCopies::CHUNK`]. Large payloads keep tungstenite's buffer: it was
/// allocated for them alone, and copying them would cost more than it saves.
#[derive(Default)]
pub(crate) struct PayloadCopies {
    /// The current chunk; its spare capacity takes the next copies.
    chunk: BytesMut,
}

impl PayloadCopies {
    /// Bytes per chunk (a realistic gomuks event is about 440 bytes).
    const CHUNK: usize = 16 * 1024;
    /// Payloads longer than this are not copied.
    const MAX_COPIED: usize = Self::CHUNK / 4;

    /// `msg` with its payload in a chunk of ours when it is small; control frames unchanged.
    pub(crate) fn rehome(&mut self, msg: Message) -> Message {
        match msg {
            Message::Text(t) if t.len() <= Self::MAX_COPIED => {
                let copy = self.copy(t.as_bytes());
                // SAFETY: the bytes are a copy of a `Utf8Bytes`, which tungstenite validated.
                Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(copy) })
            }
            Message::Binary(b) if b.len() <= Self::MAX_COPIED => Message::Binary(self.copy(&b)),
            other => other,
        }
    }

    fn copy(&mut self, src: &[u8]) -> Bytes {
        if self.chunk.capacity() - self.chunk.len() < src.len() {
            // The old chunk is freed when the last event sharing it is dropped.
            self.chunk = BytesMut::with_capacity(Self::CHUNK);
        }
        self.chunk.extend_from_slice(src);
        self.chunk.split().freeze()
    }
}

/// Plain or TLS stream under the websocket.
pub(crate) enum Stream {
    /// ws://
    Plain(Link),
    /// wss://
    Tls(Box<TlsStream<Link>>),
}

/// What the websocket, or its TLS, runs over: the TCP connection (to the server, or a tunnel
/// through a proxy), or the TLS session with an `https://` proxy that carries the tunnel.
pub(crate) enum Link {
    Tcp(Counted),
    ProxyTls(Box<TlsStream<Counted>>),
}

/// The TCP stream, counting the bytes it carries into the client's statistics (TLS records
/// and websocket framing included, which is what the network sees).
pub(crate) struct Counted {
    tcp: TcpStream,
    counters: Arc<Counters>,
    written: Written,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            stats::add(
                &this.counters.wire_bytes_in,
                (buf.filled().len() - before) as u64,
            );
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            stats::add(&this.counters.wire_bytes_out, n as u64);
            this.written.add(n);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Implements `AsyncRead` and `AsyncWrite` for an enum of one plain and one boxed TLS
/// variant by passing each call to the variant's stream.
macro_rules! delegate_io {
    ($ty:ident, $plain:ident, $tls:ident) => {
        macro_rules! each {
            ($self:ident, $s:ident => $e:expr) => {
                match $self.get_mut() {
                    $ty::$plain($s) => {
                        let $s = Pin::new($s);
                        $e
                    }
                    $ty::$tls($s) => {
                        let $s = Pin::new(&mut **$s);
                        $e
                    }
                }
            };
        }

        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                each!(self, s => s.poll_read(cx, buf))
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                each!(self, s => s.poll_write(cx, buf))
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                each!(self, s => s.poll_flush(cx))
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                each!(self, s => s.poll_shutdown(cx))
            }
        }
    };
}

delegate_io!(Stream, Plain, Tls);
delegate_io!(Link, Tcp, ProxyTls);

impl Stream {
    /// The send side of the TCP connection under any TLS and proxy layers.
    ///
    /// # Safety
    ///
    /// The value must not be used once this stream is dropped (it reads the socket by its
    /// descriptor).
    pub(crate) unsafe fn uplink(&self) -> Uplink {
        let link = match self {
            Stream::Plain(l) => l,
            Stream::Tls(t) => t.get_ref().0,
        };
        let c = match link {
            Link::Tcp(c) => c,
            Link::ProxyTls(t) => t.get_ref().0,
        };
        // SAFETY: passed on to the caller.
        #[cfg(unix)]
        return unsafe { Uplink::new(c.written.clone(), std::os::fd::AsRawFd::as_raw_fd(&c.tcp)) };
        #[cfg(not(unix))]
        return Uplink::new(c.written.clone());
    }
}

/// The websocket type every dialect reads and writes.
pub(crate) type Ws = WebSocketStream<Stream>;

/// Opens the websocket at `url` with the given extra headers (cookie, Origin, ...).
pub(crate) async fn connect(
    cfg: &Config,
    tls: &Configs,
    url: &Url,
    headers: &[(String, String)],
    probe: &Probe,
) -> Result<Ws, ConnectError> {
    let client = probe.client;
    let (stream, peer) = open_stream_to(cfg, tls, url, probe).await?;
    let t2 = Instant::now();
    let req = upgrade_request(url, headers, &cfg.headers)?;
    let sent = req.headers().clone();
    let mut wsc = WebSocketConfig::default();
    wsc.max_message_size = Some(cfg.max_message_bytes);
    wsc.max_frame_size = Some(cfg.max_message_bytes);
    // tungstenite zero-fills a 128 KiB read buffer per connection by default, which alone
    // breaks the 64 KiB-per-idle-connection budget (bench/RESULTS.md §3); 16 KiB reads
    // still carry a 10 KB event per read.
    wsc.read_buffer_size = 16 * 1024;
    let upgrade = tokio_tungstenite::client_async_with_config(req, stream, Some(wsc));
    let (ws, resp) = tokio::time::timeout(cfg.connect_timeout, upgrade)
        .await
        .map_err(|_| {
            stalled(
                probe,
                peer,
                "the websocket upgrade",
                url,
                cfg.connect_timeout,
            )
        })?
        .map_err(|e| ConnectError::from_ws(e, &sent))?;
    if let Some(a) = peer {
        probe.stalled.forget(a);
    }
    tlog!(
        client,
        Debug,
        "transport",
        "websocket upgrade to {} answered {} in {} ms",
        url.path(),
        resp.status().as_u16(),
        t2.elapsed().as_millis()
    );
    Ok(ws)
}

/// The byte stream to `url`'s server (`ws`, `wss`, `http` or `https`): TCP, or a tunnel
/// through the configured proxy, inside TLS for `wss` and `https`. The websocket and the
/// gomuks login both run over it, so they reach the server the same way.
pub(crate) async fn open_stream(
    cfg: &Config,
    tls: &Configs,
    url: &Url,
    probe: &Probe,
) -> Result<Stream, ConnectError> {
    Ok(open_stream_to(cfg, tls, url, probe).await?.0)
}

/// [`open_stream`], and the server's address it reached when it knows it (not through a
/// proxy that resolves the name itself).
async fn open_stream_to(
    cfg: &Config,
    tls: &Configs,
    url: &Url,
    probe: &Probe,
) -> Result<(Stream, Option<SocketAddr>), ConnectError> {
    let host = url
        .host_str()
        .ok_or_else(|| ConnectError::other(Status::ErrConfig, "URL has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let proxy = route(cfg, url).await?;
    let (link, peer) =
        open_link(proxy.as_ref(), tls, host, port, cfg.connect_timeout, probe).await?;
    let stream = if matches!(url.scheme(), "wss" | "https") {
        // The TLS name drops an IPv6 literal's brackets itself.
        let tls = handshake(&tls.server, host, host, link, probe.client);
        let session = tokio::time::timeout(cfg.connect_timeout, tls)
            .await
            .map_err(|_| stalled(probe, peer, "the TLS handshake", url, cfg.connect_timeout))??;
        Stream::Tls(Box::new(session))
    } else {
        Stream::Plain(link)
    };
    Ok((stream, peer))
}

/// [`silent`], for a server that took the TCP connection at `peer`: later connects of the
/// client try that address last (see [`crate::stats::StalledAddrs`]).
fn stalled(
    probe: &Probe,
    peer: Option<SocketAddr>,
    step: &str,
    url: &Url,
    limit: Duration,
) -> ConnectError {
    if let Some(a) = peer {
        probe.stalled.add(a);
    }
    silent(step, url, limit)
}

/// A server that took the connection but left `step` unanswered for the connect timeout:
/// named, rather than the attempt's generic timeout at twice that.
fn silent(step: &str, url: &Url, limit: Duration) -> ConnectError {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    ConnectError::other(
        Status::ErrConnect,
        format!(
            "no answer to {step} from {} in {} ms",
            tunnel::authority(host.trim_start_matches('[').trim_end_matches(']'), port),
            limit.as_millis()
        ),
    )
}

/// The proxy of one connection to `url`: the app's resolver's answer when it has one (asked
/// on a blocking thread: a PAC script or an OS lookup may take a while), else the configured
/// decision.
async fn route(cfg: &Config, url: &Url) -> Result<Option<Proxy>, ConnectError> {
    let Some(resolver) = &cfg.proxy_resolver else {
        return Ok(cfg.proxy.clone());
    };
    // The resolver is shown where the connection goes, nothing the app put in the query.
    let mut asked = url.clone();
    asked.set_query(None);
    asked.set_fragment(None);
    let answer = resolver.ask(asked.into()).await.map_err(|e| {
        let why = format!("the proxy resolver failed: {}", e.message());
        ConnectError::other(e.status(), why)
    })?;
    let proxy = match ProxyChoice::from_setting(answer.as_deref().unwrap_or("")) {
        ProxyChoice::Environment => return Ok(cfg.proxy.clone()),
        ProxyChoice::Direct => None,
        ProxyChoice::Explicit(text) => Some(
            proxy::parse(
                text.expose(),
                "the proxy resolver's answer",
                "the proxy resolver",
            )
            .map_err(|error| ConnectError { error, code: None })?,
        ),
    };
    cfg.check_proxy_route(proxy.as_ref())
        .map_err(|error| ConnectError { error, code: None })?;
    Ok(proxy)
}

/// The connection the websocket (or its TLS) runs over, to `host:port` (`host` as in the URL,
/// brackets included): TCP to the server, or a tunnel through `proxy`; and the server's
/// address it reached, when known. Addresses that stalled after the TCP connect before are
/// tried last.
async fn open_link(
    proxy: Option<&Proxy>,
    tls: &Configs,
    host: &str,
    port: u16,
    limit: Duration,
    probe: &Probe,
) -> Result<(Link, Option<SocketAddr>), ConnectError> {
    let host_for_dns = host.trim_start_matches('[').trim_end_matches(']');
    let targets = match proxy {
        Some(p) => {
            tlog!(
                probe.client,
                Info,
                "transport",
                "connecting to {host}:{port} through {p} (from {})",
                p.source
            );
            socks_targets(p, host_for_dns, port).await?
        }
        None => vec![None],
    };
    let Resolved { now: hop, later } = first_hop_addrs(proxy, host_for_dns, port).await?;
    // Every server address known so far took the TCP connection and then stalled on an
    // earlier connect (one family behind a path MTU black hole, say): the family still to
    // answer may reach the server, so it is waited for, for a while, instead of the stalled
    // ones going first again (RFC 8305 §4, sorting by what was seen). Not for good: a
    // resolver that drops its queries would take the whole attempt every time, and the
    // stalled addresses are all there is then.
    let (hop, later) = match later {
        Some(mut l) if proxy.is_none() && probe.stalled.all(&hop) => {
            tlog!(
                probe.client,
                Info,
                "transport",
                "every address of {host_for_dns} known so far stalled on an earlier connect; \
                 waiting up to {} ms for its other address family",
                STALLED_FAMILY_WAIT.as_millis()
            );
            match tokio::time::timeout(STALLED_FAMILY_WAIT, &mut l).await {
                Ok(more) => {
                    let mut all = hop;
                    all.extend(more);
                    (interleave(all), None)
                }
                Err(_) => (hop, Some(l)),
            }
        }
        l => (hop, l),
    };
    // The server's own addresses: the targets raced through a plain SOCKS5 proxy, or the
    // first hop without a proxy. A proxy's addresses keep their order.
    let targets = stalled_last(probe, targets, |t| *t);
    let hop = match proxy {
        Some(_) => hop,
        None => stalled_last(probe, hop, |a| Some(*a)),
    };
    open_link_to(
        proxy,
        tls,
        host_for_dns,
        port,
        limit,
        probe,
        &targets,
        &hop,
        later,
    )
    .await
}

/// `items` with the addresses that stalled after the TCP connect before moved to the end,
/// logged so that a bug report shows why the resolver's order was not followed.
fn stalled_last<T>(
    probe: &Probe,
    items: Vec<T>,
    addr: impl Fn(&T) -> Option<SocketAddr>,
) -> Vec<T> {
    let (sorted, moved) = probe.stalled.last(items, &addr);
    let named = |ts: &[T]| -> String {
        let v: Vec<String> = ts
            .iter()
            .filter_map(|t| addr(t).map(|a| a.to_string()))
            .collect();
        v.join(", ")
    };
    if moved > 0 && moved < sorted.len() {
        tlog!(
            probe.client,
            Info,
            "transport",
            "trying {} last: it took the TCP connection and then stalled on an earlier connect",
            named(&sorted[sorted.len() - moved..])
        );
    } else if moved > 1 {
        tlog!(
            probe.client,
            Info,
            "transport",
            "every address took the TCP connection and then stalled on an earlier connect; \
             trying them in the order they stalled: {}",
            named(&sorted)
        );
    }
    sorted
}

/// What the proxy is asked to connect to, in order: for plain `socks5://` every address of
/// `host` (resolved here, families alternating as for a direct connection), otherwise the
/// name itself (`None`), which `socks5h://` and HTTP CONNECT hand to the proxy.
async fn socks_targets(
    p: &Proxy,
    host: &str,
    port: u16,
) -> Result<Vec<Option<SocketAddr>>, ConnectError> {
    if p.kind != ProxyKind::Socks5 {
        return Ok(vec![None]);
    }
    let no_address = |why: String| {
        ConnectError::other(Status::ErrConnect, format!("resolve {host} for {p}: {why}"))
    };
    let addrs = resolve::resolve_all(host, port)
        .await
        .map_err(|e| no_address(e.to_string()))?;
    if addrs.is_empty() {
        return Err(no_address("no address".to_owned()));
    }
    Ok(addrs.into_iter().map(Some).collect())
}

/// [`open_link`] once the names are resolved (`host` without brackets): `targets` as
/// [`socks_targets`] gives them, `hop` and `later` as [`first_hop_addrs`] does. Through a proxy, each
/// target gets a connection of its own, raced as RFC 8305 §5 races addresses: the next target
/// starts after [`CONNECTION_ATTEMPT_DELAY`], or at once when an attempt fails (the proxy
/// cannot reach that address, say), so an address the proxy cannot reach costs the delay, not
/// the connect timeout. Only a failure that every attempt would meet alike (see
/// [`fails_every_attempt`]) ends the race before the other attempts have ended. `limit`
/// (the connect timeout) bounds the TCP connects and tunnels once the names are resolved:
/// attempts still running then are given up and named in the error, rather than the whole
/// connection attempt running out of time with nothing to say.
#[allow(clippy::too_many_arguments)]
async fn open_link_to(
    proxy: Option<&Proxy>,
    tls: &Configs,
    host: &str,
    port: u16,
    limit: Duration,
    probe: &Probe,
    targets: &[Option<SocketAddr>],
    hop: &[SocketAddr],
    later: Option<Later>,
) -> Result<(Link, Option<SocketAddr>), ConnectError> {
    // Name resolution is not the addresses' fault, so it does not count here (the whole
    // attempt's limit still bounds it).
    let t0 = Instant::now();
    let deadline = t0 + limit;
    let (link, reached) = first_hop(proxy, tls, host, port, hop, later, deadline, probe).await?;
    let Some(p) = proxy else {
        return Ok((link, Some(reached)));
    };
    // The proxy is reached once per connect, not once per tunnel: the first tunnel is asked
    // over this connection, and the later ones open theirs to the address that answered it
    // first, so a proxy address that never answers costs the attempt delay once.
    let reached_first = Mutex::new(Some(link));
    let hop: Vec<SocketAddr> = std::iter::once(reached)
        .chain(hop.iter().copied().filter(|a| *a != reached))
        .collect();
    let client = probe.client;
    let attempt = |target: Option<SocketAddr>| {
        let (hop, reached_first) = (&hop, &reached_first);
        async move {
            let tried = async {
                let lent = crate::lock(reached_first).take();
                let link = match lent {
                    Some(link) => link,
                    None => {
                        first_hop(proxy, tls, host, port, hop, None, deadline, probe)
                            .await?
                            .0
                    }
                };
                tunnel::open(p, link, host, port, target)
                    .await
                    .map_err(|e| ConnectError {
                        error: Error::new(e.status, e.message),
                        code: e.code,
                    })
            };
            match (tried.await, target) {
                (Ok(link), _) => {
                    tlog!(
                        client,
                        Debug,
                        "transport",
                        "{p} opened a tunnel to {} in {} ms",
                        tunnel::authority(host, port),
                        t0.elapsed().as_millis()
                    );
                    Ok((link, target))
                }
                (Err(e), Some(a)) if targets.len() > 1 && !fails_every_attempt(&e) => {
                    tlog!(
                        client,
                        Info,
                        "transport",
                        "{} (address {a}, one of {} of {host})",
                        e.error.message(),
                        targets.len()
                    );
                    Err(e)
                }
                (Err(e), _) => Err(e),
            }
        }
    };
    let mut lost = match race(
        targets,
        None,
        |_, rest| rest,
        CONNECTION_ATTEMPT_DELAY,
        deadline,
        attempt,
        fails_every_attempt,
    )
    .await
    {
        Ok(reached) => return Ok(reached),
        Err(lost) => lost,
    };
    if lost.failed.len() == 1 && lost.unanswered.is_empty() {
        if let Some((_, e)) = lost.failed.pop() {
            return Err(e);
        }
    }
    let message = format!(
        "connect to {} through {p}: {}",
        tunnel::authority(host, port),
        lost.describe(
            |t| t.map_or_else(|| p.to_string(), |a| a.to_string()),
            |e| e.error.message().to_owned(),
        )
    );
    Err(match lost.ending_error() {
        Some(e) => ConnectError {
            error: Error::new(e.error.status(), message),
            code: e.code,
        },
        None => ConnectError::other(Status::ErrConnect, message),
    })
}

/// A failure that no other attempt of the same connect can escape: refused credentials or
/// certificates, a configuration the proxy cannot serve. Anything else (a refused address, a
/// reset, a proxy that is busy) may be one attempt's bad luck while another still succeeds.
fn fails_every_attempt(e: &ConnectError) -> bool {
    matches!(
        e.error.status(),
        Status::ErrUnauthorized | Status::ErrCertificate | Status::ErrConfig
    )
}

/// Why the first hop (the server, or the proxy) could not be reached.
fn first_hop_failed(
    proxy: Option<&Proxy>,
    host: &str,
    port: u16,
    why: impl std::fmt::Display,
) -> ConnectError {
    let to = match proxy {
        Some(p) => p.to_string(),
        None => tunnel::authority(host, port),
    };
    ConnectError::other(Status::ErrConnect, format!("connect to {to}: {why}"))
}

/// The addresses of the first hop, in the order RFC 8305 §4 tries them: the server's, or
/// the proxy's, with the family that has not answered yet to come (RFC 8305 §3). Resolved
/// once per connect, however many tunnels are tried through it.
async fn first_hop_addrs(
    proxy: Option<&Proxy>,
    host: &str,
    port: u16,
) -> Result<Resolved, ConnectError> {
    let (dial_host, dial_port) = match proxy {
        Some(p) => p.addr(),
        None => (host, port),
    };
    let dial_host = dial_host.trim_start_matches('[').trim_end_matches(']');
    resolve::resolve(dial_host, dial_port)
        .await
        .map_err(|e| first_hop_failed(proxy, host, port, e))
}

/// The connection to the first hop at one of `addrs`, or of those `later` brings (see
/// [`first_hop_addrs`]): TCP to the
/// server, or to the proxy (inside TLS for an `https://` proxy), and the address that
/// answered.
#[allow(clippy::too_many_arguments)]
async fn first_hop(
    proxy: Option<&Proxy>,
    tls: &Configs,
    host: &str,
    port: u16,
    addrs: &[SocketAddr],
    later: Option<Later>,
    deadline: Instant,
    probe: &Probe,
) -> Result<(Link, SocketAddr), ConnectError> {
    let client = probe.client;
    let t0 = Instant::now();
    // A proxy's addresses keep their order; the server's that stalled before go last.
    let tried_last = |addrs: Vec<SocketAddr>| match proxy {
        Some(_) => addrs,
        None => probe.stalled.last(addrs, |a| Some(*a)).0,
    };
    let (peer, tcp) = happy_eyeballs(addrs, later, tried_last, CONNECTION_ATTEMPT_DELAY, deadline)
        .await
        .map_err(|lost| {
            let why = lost.describe(SocketAddr::to_string, io::Error::to_string);
            first_hop_failed(proxy, host, port, why)
        })?;
    tlog!(
        client,
        Debug,
        "transport",
        "TCP connected to {peer} in {} ms",
        t0.elapsed().as_millis()
    );
    // Pings, acks and small requests must not wait for Nagle.
    tcp.set_nodelay(true).ok();
    let tcp = Counted {
        tcp,
        counters: probe.counters.clone(),
        written: Written::default(),
    };
    let link = match proxy {
        Some(p) if p.kind == ProxyKind::Https => {
            // A proxy that takes the connection and then says nothing is as silent as one
            // that never answers the connect, and is named the same way at the deadline.
            let who = p.to_string();
            let shake = handshake(&tls.proxy, p.addr().0, &who, tcp, client);
            let session = tokio::time::timeout_at(deadline.into(), shake)
                .await
                .map_err(|_| {
                    let why = format!(
                        "no answer to the TLS handshake from {peer} in {} ms",
                        t0.elapsed().as_millis()
                    );
                    first_hop_failed(proxy, host, port, why)
                })??;
            Link::ProxyTls(Box::new(session))
        }
        _ => Link::Tcp(tcp),
    };
    Ok((link, peer))
}

/// The TLS handshake over `io` with the peer named `name` (the server, or an `https://`
/// proxy), shown as `who` in messages.
async fn handshake<S>(
    tls: &Arc<rustls::ClientConfig>,
    name: &str,
    who: &str,
    io: S,
    client: u64,
) -> Result<TlsStream<S>, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server =
        crate::tls::server_name(name).map_err(|error| ConnectError { error, code: None })?;
    let t = Instant::now();
    let session = TlsConnector::from(tls.clone())
        .connect(server, io)
        .await
        .map_err(|e| {
            // A refused certificate is final (the dialects stop on it); any other TLS
            // failure is retried like a broken connection.
            let status = crate::tls::certificate_or(&e, Status::ErrTls);
            ConnectError::other(status, format!("TLS handshake with {who}: {e}"))
        })?;
    tlog!(
        client,
        Debug,
        "transport",
        "TLS handshake with {who} in {} ms",
        t.elapsed().as_millis()
    );
    Ok(session)
}

/// How long a connect whose known addresses all stalled before waits for the other address
/// family's answer (see [`open_link`]): a resolver that answers at all does so well within it.
const STALLED_FAMILY_WAIT: Duration = Duration::from_secs(1);

/// RFC 8305 §5's recommended "Connection Attempt Delay": how long one address may keep us
/// waiting before the next one is tried alongside it.
const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to the first of `addrs` that answers (RFC 8305 §5), raced by [`race`], and says
/// which one it was; the addresses `later` brings (the family that answered late) join the
/// race, families alternating, and `tried_last` moves those to try last to the end. An
/// address that never answers (a broken IPv6 route, a black hole) so costs `delay`, not the
/// whole connect timeout; at `deadline` whatever is still unanswered is given up.
async fn happy_eyeballs(
    addrs: &[SocketAddr],
    later: Option<Later>,
    tried_last: impl Fn(Vec<SocketAddr>) -> Vec<SocketAddr>,
    delay: Duration,
    deadline: Instant,
) -> Result<(SocketAddr, TcpStream), Lost<SocketAddr, io::Error>> {
    let connect = |a| async move { TcpStream::connect(a).await.map(|tcp| (a, tcp)) };
    let order = |last, rest| tried_last(interleave_after(last, rest));
    race(addrs, later, order, delay, deadline, connect, |_| false).await
}

/// How a [`race`] ended without a winner: every attempt failed, one failed in a way that is
/// final, or the deadline passed first.
#[derive(Debug)]
struct Lost<A, E> {
    /// The attempts that failed, in the order they failed; a final error is the last.
    failed: Vec<(A, E)>,
    /// The attempts still running at the deadline, each with how long it ran (none unless
    /// the deadline passed).
    unanswered: Vec<(A, Duration)>,
}

impl<A, E> Lost<A, E> {
    /// The race's story for an error message, so that an app's report names every address
    /// that was tried and what each did, not only the last one's error: `name` shows a
    /// target, `why` an error. With one attempt and no deadline passed, just its error.
    fn describe(&self, name: impl Fn(&A) -> String, why: impl Fn(&E) -> String) -> String {
        if let ([(_, e)], []) = (self.failed.as_slice(), self.unanswered.as_slice()) {
            return why(e);
        }
        let failed = self
            .failed
            .iter()
            .map(|(a, e)| format!("{}: {}", name(a), why(e)));
        let silent = self
            .unanswered
            .iter()
            .map(|(a, ran)| format!("no answer from {} in {} ms", name(a), ran.as_millis()));
        let parts: Vec<String> = failed.chain(silent).collect();
        if parts.is_empty() {
            return "no address to try".to_owned();
        }
        parts.join("; ")
    }

    /// The error that ended the race when one did (it was final, or the last of all), not
    /// when the deadline passed with attempts still running.
    fn ending_error(&self) -> Option<&E> {
        match self.unanswered.is_empty() {
            true => self.failed.last().map(|(_, e)| e),
            false => None,
        }
    }
}

/// Runs `attempt` on each of `targets` as RFC 8305 §5 races connection attempts: a new one
/// starts every `delay`, or at once when one fails, and the first to succeed wins; the others
/// are dropped. An error `is_final` picks ends the race at once; at `deadline` the attempts
/// still running are given up. `later` brings more targets while the race runs (the address
/// family that answered late, RFC 8305 §3): `order` sorts them in with those not started yet,
/// given the target last started, and the race waits for them before it gives up on the ones
/// it has.
async fn race<A, T, E, F>(
    targets: &[A],
    later: Option<Pin<Box<dyn Future<Output = Vec<A>> + Send>>>,
    order: impl Fn(Option<A>, Vec<A>) -> Vec<A>,
    delay: Duration,
    deadline: Instant,
    attempt: impl Fn(A) -> F,
    is_final: impl Fn(&E) -> bool,
) -> Result<T, Lost<A, E>>
where
    A: Copy + PartialEq,
    F: Future<Output = Result<T, E>>,
{
    let mut lost = Lost {
        failed: Vec::new(),
        unanswered: Vec::new(),
    };
    let mut later = later;
    if targets.is_empty() && later.is_none() {
        return Err(lost);
    }
    // The targets not started yet, in the order they start.
    let mut pending: VecDeque<A> = targets.iter().copied().collect();
    // The targets started, in order, each with when its attempt started while it runs: the
    // report at the deadline says how long each one stayed silent.
    let mut tried: Vec<(A, Option<Instant>)> = Vec::new();
    let mut running = FuturesUnordered::new();
    // Starts the next pending target; false when none is left.
    let start = |pending: &mut VecDeque<A>,
                 tried: &mut Vec<(A, Option<Instant>)>,
                 running: &mut FuturesUnordered<_>| {
        let Some(t) = pending.pop_front() else {
            return false;
        };
        let i = tried.len();
        tried.push((t, Some(Instant::now())));
        let fut = attempt(t);
        running.push(async move { (i, fut.await) });
        true
    };
    let timer = tokio::time::sleep(delay);
    tokio::pin!(timer);
    start(&mut pending, &mut tried, &mut running);
    let give_up = tokio::time::sleep_until(deadline.into());
    tokio::pin!(give_up);
    loop {
        let more = !pending.is_empty();
        let waiting = later.is_some();
        // Attempts first: one that ends in the same tick as the deadline (a success, or a
        // deadline of its own that says which hop stayed silent) is not thrown away.
        tokio::select! {
            biased;
            Some((i, r)) = running.next() => {
                tried[i].1 = None;
                match r {
                    Ok(won) => return Ok(won),
                    Err(e) => {
                        let last = is_final(&e) || (!more && running.is_empty() && !waiting);
                        lost.failed.push((tried[i].0, e));
                        if last {
                            break;
                        }
                        // A failed attempt does not make the next one wait out the delay (§5).
                        if start(&mut pending, &mut tried, &mut running) {
                            timer.as_mut().reset((Instant::now() + delay).into());
                        }
                    }
                }
            },
            found = OptionFuture::from(later.as_mut()), if waiting => {
                later = None;
                let known = |t: &A| pending.contains(t) || tried.iter().any(|(x, _)| x == t);
                let fresh: Vec<A> = found
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| !known(t))
                    .collect();
                let rest: Vec<A> = pending.drain(..).chain(fresh).collect();
                pending = order(tried.last().map(|(t, _)| *t), rest).into();
                // Every attempt so far ended: the next starts at once, or nothing is left.
                if running.is_empty() {
                    if !start(&mut pending, &mut tried, &mut running) {
                        break;
                    }
                    timer.as_mut().reset((Instant::now() + delay).into());
                }
            }
            () = &mut give_up => {
                lost.unanswered = tried
                    .iter()
                    .filter_map(|(t, since)| since.map(|at| (*t, at.elapsed())))
                    .collect();
                break;
            }
            () = &mut timer, if more => {
                start(&mut pending, &mut tried, &mut running);
                timer.as_mut().reset((Instant::now() + delay).into());
            }
        }
    }
    Err(lost)
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub(crate) struct ConnectError {
    /// Classified status.
    pub(crate) error: Error,
    /// The HTTP status of a refused upgrade or auth call, or the websocket close code of a
    /// close during the protocol handshake (they never overlap: close codes start at 1000).
    pub(crate) code: Option<u16>,
}

impl ConnectError {
    /// A failure with no HTTP status or close code.
    pub(crate) fn other(status: Status, msg: impl Into<String>) -> ConnectError {
        ConnectError {
            error: Error::new(status, msg),
            code: None,
        }
    }

    /// The failure of an upgrade request that sent `sent`.
    fn from_ws(e: WsError, sent: &HeaderMap) -> ConnectError {
        match e {
            WsError::Http(resp) => {
                let code = resp.status().as_u16();
                let body = resp.body().as_deref().unwrap_or_default();
                let message =
                    quoting_answer(format!("HTTP {code} at upgrade"), code, body, 512, sent);
                let status = match code {
                    401 => Status::ErrUnauthorized,
                    403 => Status::ErrForbidden,
                    _ => Status::ErrHttp,
                };
                ConnectError {
                    error: Error::new(status, message),
                    code: Some(code),
                }
            }
            // In TLS 1.3 the server checks our certificate after our side of the handshake
            // is done, so its refusal arrives as an alert on the upgrade's first read.
            WsError::Io(e) if crate::tls::is_certificate_failure(&e) => ConnectError::other(
                Status::ErrCertificate,
                format!("the server refused the TLS client certificate: {e}"),
            ),
            WsError::Io(e) => ConnectError::other(Status::ErrConnect, format!("upgrade I/O: {e}")),
            other => {
                ConnectError::other(Status::ErrProtocol, format!("websocket upgrade: {other}"))
            }
        }
    }
}

/// The headers of a request the library makes (the websocket upgrade, the gomuks auth call):
/// the library's own, then the app's. Cookies from both go into one `Cookie` header, the
/// library's first: a client sends at most one (RFC 6265 §5.4), and a server that reads only one
/// line would otherwise miss the `gomuks_auth` cookie or the app's. `Cookie` and
/// `Authorization` carry credentials, so they are marked sensitive: http's `Debug` prints
/// "Sensitive" instead of them.
pub(crate) fn merge_headers(
    ours: &[(String, String)],
    app: &[(String, String)],
) -> Result<HeaderMap, ConnectError> {
    let bad = |what: &str| ConnectError::other(Status::ErrConfig, format!("bad header {what}"));
    let mut map = HeaderMap::new();
    let mut cookies: Vec<&str> = Vec::new();
    for (k, v) in ours.iter().chain(app.iter()) {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad("name"))?;
        if name == COOKIE {
            cookies.push(v);
            continue;
        }
        let mut value = HeaderValue::from_str(v).map_err(|_| bad("value"))?;
        value.set_sensitive(name == AUTHORIZATION);
        map.append(name, value);
    }
    if !cookies.is_empty() {
        let mut value = HeaderValue::from_str(&cookies.join("; ")).map_err(|_| bad("value"))?;
        value.set_sensitive(true);
        map.insert(COOKIE, value);
    }
    Ok(map)
}

/// `message` about a server's answer (`code`, `body`) to a request that sent `sent`, with
/// what of it an error may quote after a colon: the start of an error page (4xx, 5xx) and
/// nothing else, since other answers are not there to explain a refusal and a 2xx body may be
/// a token. Without the credentials the request carried (a page may echo the request's
/// headers: debug endpoints do) and without control characters (a server must not forge
/// lines in the app's log); at most `max_chars` characters of it.
pub(crate) fn quoting_answer(
    message: String,
    code: u16,
    body: &[u8],
    max_chars: usize,
    sent: &HeaderMap,
) -> String {
    if !(400..600).contains(&code) {
        return message;
    }
    let secrets = credentials_in(sent);
    // Only the start is quoted: scrubbing a 64 KiB page for each of many secrets would cost
    // far more than the quote is worth. The cut leaves room for a secret that straddles it.
    let longest = secrets.first().map_or(0, String::len);
    let cut = body.len().min(4 * max_chars + 2 * longest + 4096);
    let mut text = String::from_utf8_lossy(&body[..cut]).into_owned();
    for secret in &secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "<redacted>");
        }
    }
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let page: String = text.trim().chars().take(max_chars).collect();
    if page.is_empty() {
        message
    } else {
        format!("{message}: {page}")
    }
}

/// The credentials in `headers` as a page could echo them: the value of each header that is
/// not the protocol's own (the library's cookie, and the app's headers, which may be a reverse
/// proxy's credentials of any name), its parts (cookies, their values, an `Authorization`
/// header's credentials), the user and password inside Basic credentials, and each of those
/// as JSON escapes `/` and as a query percent-encodes it; longest first so that no part of a
/// longer one is left. Parts under four characters are left: replacing them would garble the
/// page and hide nothing.
fn credentials_in(headers: &HeaderMap) -> Vec<String> {
    use base64::Engine;
    const PROTOCOL: [&str; 10] = [
        "host",
        "connection",
        "upgrade",
        "content-length",
        "sec-websocket-version",
        "sec-websocket-key",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "user-agent",
        "origin",
    ];
    let mut found = Vec::new();
    for (name, value) in headers {
        if PROTOCOL.contains(&name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        found.push(value.to_string());
        for part in value.split([';', ',']).map(str::trim) {
            found.push(part.to_owned());
            if let Some((_, v)) = part.split_once('=') {
                found.extend([v.to_owned(), v.trim_matches('"').to_owned()]);
            }
            if let Some((scheme, cred)) = part.split_once(' ') {
                found.push(cred.to_owned());
                let decoded = base64::engine::general_purpose::STANDARD.decode(cred.trim());
                if let (true, Ok(Ok(pair))) = (
                    scheme.eq_ignore_ascii_case("basic"),
                    decoded.map(String::from_utf8),
                ) {
                    if let Some((user, pass)) = pair.split_once(':') {
                        found.extend([user.to_owned(), pass.to_owned()]);
                    }
                    found.push(pair);
                }
            }
        }
    }
    let escaped: Vec<String> = found
        .iter()
        .flat_map(|s| {
            let json = s.replace('/', "\\/");
            let query: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            [json, query]
        })
        .collect();
    found.extend(escaped);
    found.retain(|s| s.chars().count() >= 4);
    found.sort();
    found.dedup();
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found
}

/// The upgrade request with the dialect's headers, then the user's ([`merge_headers`]).
fn upgrade_request(
    url: &Url,
    headers: &[(String, String)],
    extra: &[(String, String)],
) -> Result<Request, ConnectError> {
    let mut req = url.as_str().into_client_request().map_err(|e| {
        ConnectError::other(Status::ErrConfig, format!("bad websocket request: {e}"))
    })?;
    for (name, value) in merge_headers(headers, extra)?.iter() {
        req.headers_mut().append(name.clone(), value.clone());
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::resolve::fake::resolving;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server `scheme://name:port` with two addresses on one port, as a dual-stack server
    /// has: `name` resolves to 127.0.0.2 first, which takes TCP connections and never says a
    /// word (until the returned task is aborted), then to 127.0.0.1, the returned listener.
    /// The first connect of a client therefore stalls after its TCP connect, on 127.0.0.2.
    // Linux only, here and below: other systems have only 127.0.0.1 on the loopback
    // interface by default.
    #[cfg(target_os = "linux")]
    async fn one_silent_address(
        scheme: &str,
        name: &str,
    ) -> (Url, tokio::net::TcpListener, tokio::task::JoinHandle<()>) {
        let (silent, other) = loop {
            let silent = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
            let port = silent.local_addr().unwrap().port();
            if let Ok(other) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                break (silent, other);
            }
        };
        let held = tether_testkit::blackhole::hold_silently(silent);
        resolving(
            name,
            &["127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        );
        let port = other.local_addr().unwrap().port();
        let url = Url::parse(&format!("{scheme}://{name}:{port}/_gomuks/websocket")).unwrap();
        (url, other, held)
    }

    /// The first connect to `url` with a 300 ms connect timeout, which must stall at `step`;
    /// the client's configuration and probe for the next.
    #[cfg(target_os = "linux")]
    async fn stalls_first(url: &Url, step: &str) -> (Config, Configs, Probe) {
        let cfg = Config::builder(url.as_str())
            .connect_timeout(Duration::from_millis(300))
            .no_proxy()
            .build()
            .unwrap();
        let tls = cfg.tls_configs().unwrap();
        let probe = Probe::default();
        let first = connect(&cfg, &tls, url, &[], &probe).await.err().unwrap();
        let at = tunnel::authority(url.host_str().unwrap(), url.port().unwrap());
        assert_eq!(
            first.error.message(),
            format!("no answer to {step} from {at} in 300 ms")
        );
        (cfg, tls, probe)
    }

    /// RFC 8305 §4, sorting by what the client has seen: a server address that takes the TCP
    /// connection and then leaves the websocket upgrade unanswered (one family behind a path
    /// MTU black hole: the TCP handshake gets through, the rest does not) is tried last by
    /// the client's next connect, which reaches the server at its other address instead of
    /// stalling on the same one again until the connect timeout, attempt after attempt.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn rfc8305_4_an_address_that_stalled_after_the_tcp_connect_is_tried_last() {
        let (url, good, held) = one_silent_address("ws", "dual.test").await;
        let served = tokio::spawn(async move {
            let (c, _) = good.accept().await.unwrap();
            tokio_tungstenite::accept_async(c).await.unwrap()
        });
        let (cfg, tls, probe) = stalls_first(&url, "the websocket upgrade").await;
        let _ws = tokio::time::timeout(
            Duration::from_secs(5),
            connect(&cfg, &tls, &url, &[], &probe),
        )
        .await
        .expect("the next connect ends in time")
        .expect("the next connect reaches the server at its other address");
        assert!(served.await.is_ok());
        // 127.0.0.2 stays last; 127.0.0.1, which completed a connection, is not moved.
        let port = url.port().unwrap();
        let addrs = ["127.0.0.2", "127.0.0.1"].map(|ip| SocketAddr::new(ip.parse().unwrap(), port));
        let (sorted, moved) = probe.stalled.last(addrs.to_vec(), |a| Some(*a));
        assert_eq!((sorted[0], moved), (addrs[1], 1));
        held.abort();
    }

    /// A client of the testkit's backend `b` that reaches it by `name` (which the test made
    /// resolve to its addresses), with its token and no proxy, set up further by `f`.
    fn client_by_name(
        b: &tether_testkit::gomuks::Backend,
        name: &str,
        f: impl FnOnce(crate::ConfigBuilder) -> crate::ConfigBuilder,
    ) -> crate::Client {
        let cfg = Config::builder(&format!("http://{name}:{}", b.addr().port()))
            .token(&b.token())
            // The name is not loopback, though its addresses are.
            .allow_insecure_credentials(true)
            .no_proxy();
        crate::Client::new(f(cfg).build().unwrap())
    }

    /// The same through a whole client against the testkit's gomuks backend, which listens at
    /// 127.0.0.1 only: the first attempt stalls at 127.0.0.2 and its DISCONNECTED names the
    /// step, the next reaches the backend and the session starts (`init_complete`).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn rfc8305_4_a_client_reaches_a_dual_stack_backend_over_the_address_that_works() {
        use crate::EventKind;
        // Another test may hold the backend's port on 127.0.0.2: then a new backend.
        let (b, silent) = loop {
            let b = tether_testkit::gomuks::Backend::start(Default::default())
                .await
                .unwrap();
            let port = b.addr().port();
            if let Ok(silent) = tokio::net::TcpListener::bind(("127.0.0.2", port)).await {
                break (b, silent);
            }
        };
        let port = b.addr().port();
        let held = tether_testkit::blackhole::hold_silently(silent);
        resolving(
            "dual-backend.test",
            &["127.0.0.2".parse().unwrap(), b.addr().ip()],
        );
        let c = client_by_name(&b, "dual-backend.test", |c| {
            // Room for the second attempt's upgrade on a busy machine.
            c.connect_timeout(Duration::from_millis(1000))
                .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
        });
        c.connect().unwrap();
        let mut kinds = Vec::new();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(20), c.next_event())
                .await
                .expect("init_complete within 20 s")
                .expect("an event");
            if ev.kind() == EventKind::Disconnected {
                let why = String::from_utf8_lossy(ev.data()).into_owned();
                let stalled = format!(
                    "no answer to the websocket upgrade from dual-backend.test:{port} in 1000 ms"
                );
                assert_eq!(why, stalled, "only the first attempt fails");
            }
            kinds.push(ev.kind());
            if ev.kind() == EventKind::Message && ev.command() == "init_complete" {
                break;
            }
        }
        let count = |k| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(
            (count(EventKind::Connecting), count(EventKind::Disconnected)),
            (2, 1),
            "{kinds:?}"
        );
        c.close().unwrap();
        held.abort();
    }

    /// The same for a `wss://` server whose address takes the TCP connection and then never
    /// answers TLS: the next connect goes to the other address (here one that closes at
    /// once, so the TLS handshake fails there quickly instead of stalling).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn rfc8305_4_an_address_that_stalled_in_tls_is_tried_last() {
        let (url, other, held) = one_silent_address("wss", "dual-tls.test").await;
        let closing = tokio::spawn(async move {
            while let Ok((c, _)) = other.accept().await {
                drop(c);
            }
        });
        let (cfg, tls, probe) = stalls_first(&url, "the TLS handshake").await;
        // The stalled address would end it as ErrConnect ("no answer to the TLS handshake").
        let next = connect(&cfg, &tls, &url, &[], &probe).await.err().unwrap();
        let why = next.error.message();
        assert_eq!(next.error.status(), Status::ErrTls, "{why}");
        held.abort();
        closing.abort();
    }

    /// Whether `inner` lies inside `outer`'s memory.
    fn within(inner: &[u8], outer: &[u8]) -> bool {
        let o = outer.as_ptr_range();
        o.start <= inner.as_ptr() && inner.as_ptr() < o.end
    }

    #[test]
    fn small_payloads_leave_the_read_buffer_and_share_a_chunk() {
        // A frame as tungstenite hands it over: a slice of its read buffer.
        let read_buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut copies = PayloadCopies::default();
        let mut held = Vec::new();
        for at in [0usize, 500, 1000] {
            let frame = read_buffer.slice(at..at + 500);
            let text = Utf8Bytes::try_from(frame).unwrap();
            let Message::Text(copy) = copies.rehome(Message::Text(text)) else {
                panic!("a text message stays text")
            };
            assert_eq!(copy.as_str(), "x".repeat(500));
            assert!(!within(copy.as_bytes(), &read_buffer));
            held.push(copy);
        }
        // One chunk for all three, back to back.
        assert_eq!(
            held[1].as_bytes().as_ptr(),
            held[0].as_bytes().as_ptr().wrapping_add(500)
        );
        // Nothing of the read buffer is held any more: tungstenite could reuse it.
        assert!(read_buffer.is_unique());

        let binary = read_buffer.slice(0..100);
        let Message::Binary(copy) = copies.rehome(Message::Binary(binary)) else {
            panic!("a binary message stays binary")
        };
        assert!(!within(&copy, &read_buffer));
    }

    #[test]
    fn large_payloads_and_control_frames_are_not_copied() {
        let read_buffer = Bytes::from(vec![b'y'; 64 * 1024]);
        let mut copies = PayloadCopies::default();
        let big = read_buffer.slice(0..PayloadCopies::MAX_COPIED + 1);
        let Message::Binary(kept) = copies.rehome(Message::Binary(big)) else {
            panic!("a binary message stays binary")
        };
        assert!(within(&kept, &read_buffer));
        let ping = read_buffer.slice(0..4);
        let Message::Ping(kept) = copies.rehome(Message::Ping(ping)) else {
            panic!("a ping stays a ping")
        };
        assert!(within(&kept, &read_buffer));
    }

    #[test]
    fn a_full_chunk_is_replaced_not_grown() {
        let mut copies = PayloadCopies::default();
        let payload = vec![b'z'; PayloadCopies::MAX_COPIED];
        let first: Vec<Bytes> = (0..4).map(|_| copies.copy(&payload)).collect();
        // The fifth does not fit the 16 KiB chunk: a new one, the old one kept alive by the
        // four slices only.
        let fifth = copies.copy(&payload);
        assert!(first.iter().all(|b| b.len() == payload.len()));
        assert_ne!(
            fifth.as_ptr(),
            first[3].as_ptr().wrapping_add(payload.len()),
            "a new chunk, not the old one grown in place"
        );
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn cookies_of_the_library_and_the_app_share_one_header() {
        let url = Url::parse("ws://127.0.0.1:1/_gomuks/websocket").unwrap();
        let req = upgrade_request(
            &url,
            &pairs(&[("Cookie", "gomuks_auth=T")]),
            &pairs(&[
                ("cookie", "theme=dark"),
                ("Origin", "http://x"),
                ("COOKIE", "a=b"),
            ]),
        )
        .unwrap();
        let cookies: Vec<_> = req.headers().get_all(COOKIE).iter().collect();
        assert_eq!(cookies, ["gomuks_auth=T; theme=dark; a=b"]);
        assert!(cookies[0].is_sensitive());
        assert_eq!(req.headers()["origin"], "http://x");
    }

    #[test]
    fn repeated_app_headers_all_go_out_and_authorization_is_sensitive() {
        let map = merge_headers(
            &pairs(&[("Authorization", "Basic eDp5")]),
            &pairs(&[("X-Proxy", "a"), ("x-proxy", "b")]),
        )
        .unwrap();
        let got: Vec<_> = map.get_all("x-proxy").iter().collect();
        assert_eq!(got, ["a", "b"]);
        assert!(map["authorization"].is_sensitive());
        let url = Url::parse("ws://127.0.0.1:1/x").unwrap();
        let req =
            upgrade_request(&url, &[], &pairs(&[("X-Proxy", "a"), ("x-proxy", "b")])).unwrap();
        assert_eq!(req.headers().get_all("x-proxy").iter().count(), 2);
    }

    fn v4(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn v6(port: u16) -> SocketAddr {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))
    }

    #[test]
    fn rfc8305_4_families_alternate_from_the_first() {
        assert_eq!(
            interleave(vec![v6(1), v6(2), v6(3), v4(4), v4(5)]),
            [v6(1), v4(4), v6(2), v4(5), v6(3)]
        );
        assert_eq!(interleave(vec![v4(1), v6(2), v4(3)]), [v4(1), v6(2), v4(3)]);
        assert!(interleave(vec![]).is_empty());
    }

    /// RFC 8305 §5: a first address that never answers costs the attempt delay, not the
    /// connect timeout; the next address (here IPv6 loopback) connects.
    #[tokio::test]
    async fn rfc8305_5_a_black_hole_first_costs_only_the_delay() {
        let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
        let good = tokio::net::TcpListener::bind(v6(0)).await.unwrap();
        let addrs = [hole.addr(), good.local_addr().unwrap()];
        let t0 = Instant::now();
        let (won, tcp) = tokio::time::timeout(
            Duration::from_secs(5),
            happy_eyeballs(&addrs, None, |v| v, Duration::from_millis(100), far()),
        )
        .await
        .expect("connected well within the hole's hang")
        .unwrap();
        let took = t0.elapsed();
        assert_eq!(won, addrs[1]);
        assert_eq!(tcp.peer_addr().unwrap(), addrs[1]);
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(1500),
            "{took:?}"
        );
    }

    /// A refused address does not wait out the delay: the next one starts at once.
    #[tokio::test]
    async fn rfc8305_5_a_refused_address_moves_on_at_once() {
        let refused = refusing(v4(0));
        let good = tokio::net::TcpListener::bind(v4(0)).await.unwrap();
        let addrs = [refused, good.local_addr().unwrap()];
        let t0 = Instant::now();
        let (won, tcp) = happy_eyeballs(&addrs, None, |v| v, Duration::from_secs(10), far())
            .await
            .unwrap();
        assert_eq!(won, addrs[1]);
        assert_eq!(tcp.peer_addr().unwrap(), addrs[1]);
        assert!(t0.elapsed() < Duration::from_secs(2));
        // Every address refused: the refusal.
        let lost = happy_eyeballs(&[refused], None, |v| v, Duration::from_secs(10), far())
            .await
            .unwrap_err();
        assert_eq!(lost.failed.len(), 1);
        assert_eq!(lost.failed[0].1.kind(), io::ErrorKind::ConnectionRefused);
        let lost = happy_eyeballs(&[], None, |v| v, Duration::from_secs(1), far())
            .await
            .unwrap_err();
        assert!(lost.failed.is_empty() && lost.unanswered.is_empty());
    }

    /// Addresses that arrive `after` (a family that answered late).
    fn arriving(after: Duration, addrs: Vec<SocketAddr>) -> Option<Later> {
        Some(Box::pin(async move {
            tokio::time::sleep(after).await;
            addrs
        }))
    }

    /// A TCP race of `first` and what `later` brings, families alternating after the last
    /// attempt: the address that connected, and every address tried, in order.
    async fn race_counted(
        first: SocketAddr,
        later: Option<Later>,
        delay: Duration,
    ) -> (SocketAddr, Vec<SocketAddr>) {
        let tried = Mutex::new(Vec::new());
        let connect = |a: SocketAddr| {
            crate::lock(&tried).push(a);
            async move { TcpStream::connect(a).await.map(|tcp| (a, tcp)) }
        };
        let order = |last, rest| interleave_after(last, rest);
        let (won, _) = race(&[first], later, order, delay, far(), connect, |_| false)
            .await
            .unwrap();
        (won, tried.into_inner().unwrap())
    }

    /// RFC 8305 §3: addresses of the family that answered late join the race still under
    /// way: behind an address that hangs, the late one connects as soon as it is known (the
    /// attempt delay has passed by then), not only after the connect timeout.
    #[tokio::test]
    async fn rfc8305_3_late_addresses_join_a_race_under_way() {
        let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
        let good = tokio::net::TcpListener::bind(v6(0)).await.unwrap();
        let late = good.local_addr().unwrap();
        let t0 = Instant::now();
        let later = arriving(Duration::from_millis(300), vec![late]);
        let (won, _) = tokio::time::timeout(
            Duration::from_secs(5),
            happy_eyeballs(
                &[hole.addr()],
                later,
                |v| v,
                Duration::from_millis(100),
                far(),
            ),
        )
        .await
        .expect("connected well within the hole's hang")
        .unwrap();
        let took = t0.elapsed();
        assert_eq!(won, late);
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(2000),
            "{took:?}"
        );
    }

    /// RFC 8305 §3: when every address tried so far has failed, the race waits for the late
    /// family instead of giving up; one that brings nothing ends it with what failed.
    #[tokio::test]
    async fn rfc8305_3_a_race_whose_addresses_failed_waits_for_the_late_family() {
        let refused = refusing(v4(0));
        let good = tokio::net::TcpListener::bind(v6(0)).await.unwrap();
        let late = good.local_addr().unwrap();
        // Every attempt, counted: the late answer repeats the refused address.
        let later = arriving(Duration::from_millis(200), vec![refused, late]);
        let delay = Duration::from_secs(10);
        let (won, tried) = race_counted(refused, later, delay).await;
        assert_eq!(won, late);
        assert_eq!(tried, [refused, late], "none tried twice");
        let lost = happy_eyeballs(
            &[refused],
            arriving(Duration::from_millis(50), Vec::new()),
            |v| v,
            delay,
            far(),
        )
        .await
        .unwrap_err();
        assert_eq!(lost.failed.len(), 1);
        // Only a late family: the race starts when it comes.
        let (won, _) = happy_eyeballs(
            &[],
            arriving(Duration::from_millis(50), vec![late]),
            |v| v,
            delay,
            far(),
        )
        .await
        .unwrap();
        assert_eq!(won, late);
    }

    /// RFC 8305 §4 with §3: when every address of the family that answered first stalled on
    /// an earlier connect (IPv6 behind a path MTU black hole), the connect waits for the other
    /// family and tries it first, instead of reaching the stalled address again at once.
    #[tokio::test]
    async fn rfc8305_4_a_stalled_family_waits_for_the_other_to_answer() {
        let (v6_side, v4_side) = loop {
            let a = tokio::net::TcpListener::bind(v6(0)).await.unwrap();
            let port = a.local_addr().unwrap().port();
            if let Ok(b) = tokio::net::TcpListener::bind(v4(port)).await {
                break (a, b);
            }
        };
        let port = v4_side.local_addr().unwrap().port();
        // `::1` answers at once, `127.0.0.1` 100 ms later.
        crate::session::resolve::fake::resolving_after(
            "stalled-v6.test",
            &["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()],
            Some(Duration::ZERO),
            Some(Duration::from_millis(100)),
        );
        let probe = Probe::default();
        probe.stalled.add(v6_side.local_addr().unwrap());
        let cfg = Config::builder("ws://example.invalid/").build().unwrap();
        let tls = cfg.tls_configs().unwrap();
        let (_, reached) = open_link(
            None,
            &tls,
            "stalled-v6.test",
            port,
            Duration::from_secs(5),
            &probe,
        )
        .await
        .unwrap();
        assert_eq!(reached, Some(v4_side.local_addr().unwrap()));
        drop(v6_side);
    }

    /// RFC 8305 §4: late addresses are sorted in so that families keep alternating after the
    /// last attempt started, not after the family just tried again.
    #[test]
    fn rfc8305_4_late_addresses_alternate_with_the_last_attempt() {
        assert_eq!(
            interleave_after(Some(v6(1)), vec![v6(2), v4(3), v4(4)]),
            [v4(3), v6(2), v4(4)]
        );
        assert_eq!(
            interleave_after(Some(v4(1)), vec![v4(2), v4(3), v6(4), v6(5)]),
            [v6(4), v4(2), v6(5), v4(3)]
        );
        assert_eq!(interleave_after(Some(v4(1)), vec![v4(2)]), [v4(2)]);
        assert_eq!(interleave_after(Some(v4(1)), vec![v6(2)]), [v6(2)]);
        assert!(interleave_after(Some(v4(1)), vec![]).is_empty());
        assert_eq!(interleave_after(None, vec![v4(2), v6(3)]), [v4(2), v6(3)]);
    }

    /// The race sorts late addresses in after the attempt it last started: behind a hanging
    /// IPv4 address, a late answer of both families goes on with IPv6.
    #[tokio::test]
    async fn rfc8305_4_the_race_alternates_after_its_last_attempt() {
        let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
        assert!(hole.addr().is_ipv4());
        let a = tokio::net::TcpListener::bind(v4(0)).await.unwrap();
        let b = tokio::net::TcpListener::bind(v6(0)).await.unwrap();
        let (late_v4, late_v6) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let later = arriving(Duration::from_millis(100), vec![late_v4, late_v6]);
        let (won, tried) = race_counted(hole.addr(), later, Duration::from_millis(50)).await;
        assert_eq!(won, late_v6);
        assert_eq!(tried, [hole.addr(), late_v6]);
    }

    /// A connect whose known addresses all stalled before waits for the other family only a
    /// while: a resolver that drops the AAAA queries would otherwise take every attempt, and
    /// the stalled address is all there is.
    #[tokio::test]
    async fn a_stalled_family_waits_for_the_other_only_a_while() {
        let only = tokio::net::TcpListener::bind(v4(0)).await.unwrap();
        let addr = only.local_addr().unwrap();
        crate::session::resolve::fake::resolving_after(
            "stalled-no-aaaa.test",
            &[addr.ip()],
            None,
            Some(Duration::ZERO),
        );
        let probe = Probe::default();
        probe.stalled.add(addr);
        let cfg = Config::builder("ws://example.invalid/").build().unwrap();
        let tls = cfg.tls_configs().unwrap();
        let t0 = Instant::now();
        let (_, reached) = open_link(
            None,
            &tls,
            "stalled-no-aaaa.test",
            addr.port(),
            Duration::from_secs(10),
            &probe,
        )
        .await
        .unwrap();
        let took = t0.elapsed();
        assert_eq!(reached, Some(addr));
        assert!(
            took >= STALLED_FAMILY_WAIT && took < STALLED_FAMILY_WAIT * 4,
            "{took:?}"
        );
    }

    /// RFC 8305 §3 through a whole client against the testkit's gomuks backend: a name whose
    /// AAAA lookup never answers (a resolver or middlebox that drops those queries) connects
    /// over its A answer after the Resolution Delay, not after the resolver's timeout (here:
    /// never), and the session starts (`init_complete`).
    #[tokio::test]
    async fn rfc8305_3_a_client_connects_while_the_aaaa_lookup_never_answers() {
        use crate::EventKind;
        let b = tether_testkit::gomuks::Backend::start(Default::default())
            .await
            .unwrap();
        crate::session::resolve::fake::resolving_after(
            "no-aaaa-backend.test",
            &[b.addr().ip()],
            None,
            Some(Duration::ZERO),
        );
        let c = client_by_name(&b, "no-aaaa-backend.test", |c| {
            c.connect_timeout(Duration::from_secs(30))
        });
        let t0 = Instant::now();
        c.connect().unwrap();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), c.next_event())
                .await
                .expect("init_complete within 10 s")
                .expect("an event");
            assert_ne!(ev.kind(), EventKind::Disconnected, "{ev:?}");
            if ev.kind() == EventKind::Message && ev.command() == "init_complete" {
                break;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        c.close().unwrap();
    }

    /// A client whose resolver stalls through many attempts holds a few lookups per family,
    /// not two more per attempt (they cannot be cancelled, and would fill the blocking pool
    /// during a long outage), and connects once the resolver answers.
    #[tokio::test]
    async fn attempts_during_a_stalled_lookup_share_it() {
        use crate::EventKind;
        let b = tether_testkit::gomuks::Backend::start(Default::default())
            .await
            .unwrap();
        let held = crate::session::resolve::fake::held("held-backend.test", &[b.addr().ip()]);
        let _release = crate::session::resolve::fake::Release(held.clone());
        let c = client_by_name(&b, "held-backend.test", |c| {
            c.connect_timeout(Duration::from_millis(50))
                .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2))
        });
        c.connect().unwrap();
        let next = || async {
            tokio::time::timeout(Duration::from_secs(10), c.next_event())
                .await
                .expect("an event within 10 s")
                .expect("an event")
        };
        // Attempts of at most 100 ms (twice the connect timeout) for 2.5 s, each asking both
        // families: two dozen or so, which without the sharing would start about 50 lookups.
        let (t0, mut failed) = (Instant::now(), 0);
        while t0.elapsed() < Duration::from_millis(2500) {
            if next().await.kind() == EventKind::Disconnected {
                failed += 1;
            }
        }
        assert!(failed >= 10, "{failed} attempts");
        let most = 2 * crate::session::resolve::MAX_RUNNING;
        assert!(held.started() <= most, "{} lookups", held.started());
        held.release();
        loop {
            let ev = next().await;
            if ev.kind() == EventKind::Message && ev.command() == "init_complete" {
                break;
            }
        }
        c.close().unwrap();
    }

    /// A deadline far beyond any test.
    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// A port on which nothing listens (connects to it are refused).
    fn refusing(addr: SocketAddr) -> SocketAddr {
        std::net::TcpListener::bind(addr)
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// The error of `connect`, given a deadline 400 ms from now (or given nothing, with a
    /// 400 ms limit of its own): a retried connect failure, at the deadline and not long
    /// after it.
    async fn given_up_at_400_ms<T, F>(connect: impl FnOnce(Instant) -> F) -> String
    where
        F: Future<Output = Result<T, ConnectError>>,
    {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(400);
        let err = tokio::time::timeout(Duration::from_secs(5), connect(deadline))
            .await
            .expect("given up at the deadline")
            .err()
            .expect("nothing answered");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        assert_eq!(err.error.status(), Status::ErrConnect);
        err.error.message().to_owned()
    }

    /// [`first_hop`] straight to the port-9 server `example.invalid` at `addrs`.
    async fn direct(addrs: &[SocketAddr], deadline: Instant) -> Result<Link, ConnectError> {
        let cfg = Config::builder("ws://example.invalid:9/_gomuks/websocket")
            .build()
            .unwrap();
        let tls = cfg.tls_configs().unwrap();
        let probe = Probe::default();
        let (link, _) = first_hop(
            None,
            &tls,
            "example.invalid",
            9,
            addrs,
            None,
            deadline,
            &probe,
        )
        .await?;
        Ok(link)
    }

    /// RFC 8305 §5 with every address failing: the error names each address and what it
    /// did, in the order they failed, not only the last one's refusal.
    #[tokio::test]
    async fn rfc8305_5_every_failed_address_is_named() {
        let addrs = [refusing(v6(0)), refusing(v4(0))];
        let err = direct(&addrs, far()).await.err().expect("refused");
        assert_eq!(err.error.status(), Status::ErrConnect);
        let msg = err.error.message();
        assert!(msg.starts_with("connect to example.invalid:9: "), "{msg}");
        for a in addrs {
            assert!(msg.contains(&format!("{a}: Connection refused")), "{msg}");
        }
        // One address: its error, as it was.
        let err = direct(&addrs[..1], far()).await.err().expect("refused");
        let msg = err.error.message();
        assert!(
            msg.starts_with("connect to example.invalid:9: Connection refused"),
            "{msg}"
        );
        assert!(!msg.contains(&addrs[0].to_string()), "{msg}");
    }

    /// RFC 8305 §5 under the connect timeout: an address that never answers is given up at
    /// the deadline, and the error says so beside the other address's refusal; the attempt
    /// does not wait for the whole connect attempt's limit.
    #[tokio::test]
    async fn rfc8305_5_an_unanswered_address_is_named_at_the_deadline() {
        let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
        let refused = refusing(v4(0));
        let addrs = [hole.addr(), refused];
        let msg = given_up_at_400_ms(|deadline| direct(&addrs, deadline)).await;
        let msg = msg.as_str();
        assert!(
            msg.contains(&format!("{refused}: Connection refused")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("no answer from {} in ", hole.addr())),
            "{msg}"
        );
    }

    /// [`open_link_to`] through the SOCKS5 proxy at `proxy` to the port-9 server
    /// `example.invalid`, whose addresses are `targets`.
    async fn through_socks(
        proxy: SocketAddr,
        targets: &[Option<SocketAddr>],
    ) -> Result<Link, ConnectError> {
        through_socks_until(proxy, targets, Duration::from_secs(3600)).await
    }

    /// [`through_socks`], giving up at `deadline`.
    async fn through_socks_until(
        proxy: SocketAddr,
        targets: &[Option<SocketAddr>],
        limit: Duration,
    ) -> Result<Link, ConnectError> {
        through_socks_at(proxy, &[proxy], targets, limit).await
    }

    /// [`through_socks_until`] with the proxy's name resolving to `hop`.
    async fn through_socks_at(
        proxy: SocketAddr,
        hop: &[SocketAddr],
        targets: &[Option<SocketAddr>],
        limit: Duration,
    ) -> Result<Link, ConnectError> {
        through(&format!("socks5://{proxy}"), hop, targets, limit).await
    }

    /// [`open_link_to`] through the proxy `proxy` (a URL), whose name resolves to `hop`.
    async fn through(
        proxy: &str,
        hop: &[SocketAddr],
        targets: &[Option<SocketAddr>],
        limit: Duration,
    ) -> Result<Link, ConnectError> {
        let cfg = Config::builder("ws://example.invalid/_gomuks/websocket")
            .proxy(proxy)
            .build()
            .unwrap();
        let tls = cfg.tls_configs().unwrap();
        let p = cfg.proxy.as_ref();
        let probe = Probe::default();
        open_link_to(
            p,
            &tls,
            "example.invalid",
            9,
            limit,
            &probe,
            targets,
            hop,
            None,
        )
        .await
        .map(|(link, _)| link)
    }

    /// Bytes written into `link` come out at `server`'s next accepted connection.
    async fn reaches(mut link: Link, server: &tokio::net::TcpListener) {
        let (mut conn, _) = server.accept().await.unwrap();
        link.write_all(b"through").await.unwrap();
        let mut got = [0u8; 7];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"through");
    }

    /// Plain SOCKS5 (RFC 1928 §4, §6): the proxy's refusal of one address of the server's
    /// name moves on to the next over a new proxy connection; a refusal of the last one, or
    /// of anything but the address, ends the attempt with the proxy's reason.
    #[tokio::test]
    async fn rfc1928_6_a_socks_refusal_of_one_address_tries_the_next() {
        let socks = tether_testkit::socks::Socks5::start().await.unwrap();
        let refused = refusing(v6(0));
        let good = tokio::net::TcpListener::bind(v4(0)).await.unwrap();
        let good_addr = good.local_addr().unwrap();
        let link = through_socks(socks.addr(), &[Some(refused), Some(good_addr)])
            .await
            .unwrap();
        assert_eq!(
            socks.asked(),
            [refused.to_string(), good_addr.to_string()],
            "one CONNECT per address, in order"
        );
        reaches(link, &good).await;

        // Only refused addresses: the last refusal, as a connect error to retry later.
        let err = through_socks(socks.addr(), &[Some(refused)])
            .await
            .err()
            .expect("refused");
        assert_eq!(err.error.status(), Status::ErrConnect);
        assert!(
            err.error.message().contains("Connection refused"),
            "{}",
            err.error.message()
        );

        // Two refused: each address is named with the proxy's reason for it.
        let other = refusing(v4(0));
        let err = through_socks(socks.addr(), &[Some(refused), Some(other)])
            .await
            .err()
            .expect("refused");
        assert_eq!(err.error.status(), Status::ErrConnect);
        let msg = err.error.message();
        let proxy = format!("SOCKS5 proxy {}", socks.addr());
        assert!(
            msg.starts_with(&format!("connect to example.invalid:9 through {proxy}: ")),
            "{msg}"
        );
        for a in [refused, other] {
            // The race names each address, and the proxy's reason names it too.
            assert!(
                msg.contains(&format!("{a}: {proxy} did not connect to {a}: ")),
                "{msg}"
            );
        }
        assert_eq!(msg.matches("Connection refused").count(), 2, "{msg}");
    }

    /// RFC 8305 §5 through a proxy under the connect timeout: an address the proxy cannot
    /// reach is given up at the deadline and named, so the report does not read as a
    /// generic timeout.
    #[tokio::test]
    async fn rfc8305_5_an_address_the_socks_proxy_never_reaches_is_named_at_the_deadline() {
        let socks = tether_testkit::socks::Socks5::start().await.unwrap();
        let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
        let t0 = Instant::now();
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            through_socks_until(
                socks.addr(),
                &[Some(hole.addr())],
                Duration::from_millis(400),
            ),
        )
        .await
        .expect("given up at the deadline")
        .err()
        .expect("nothing answered");
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(err.error.status(), Status::ErrConnect);
        let msg = err.error.message();
        assert!(
            msg.contains(&format!("no answer from {} in ", hole.addr())),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("SOCKS5 proxy {}", socks.addr())),
            "{msg}"
        );
    }

    /// Plain SOCKS5 raced as RFC 8305 §5 races addresses: an address the proxy cannot reach
    /// (its connect hangs, as behind a broken IPv6 route) costs the attempt delay, not the
    /// connect timeout; the next address, over a second proxy connection, wins.
    #[tokio::test]
    async fn rfc8305_5_an_address_the_socks_proxy_cannot_reach_costs_only_the_delay() {
        let socks = tether_testkit::socks::Socks5::start().await.unwrap();
        let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
        let good = tokio::net::TcpListener::bind(v6(0)).await.unwrap();
        let targets = [Some(hole.addr()), Some(good.local_addr().unwrap())];
        let t0 = Instant::now();
        let link = tokio::time::timeout(
            Duration::from_secs(5),
            through_socks(socks.addr(), &targets),
        )
        .await
        .expect("connected well within the hole's hang")
        .unwrap();
        let took = t0.elapsed();
        assert!(
            took >= CONNECTION_ATTEMPT_DELAY && took < Duration::from_millis(1500),
            "{took:?}"
        );
        assert_eq!(
            socks.asked(),
            [hole.addr().to_string(), targets[1].unwrap().to_string()]
        );
        reaches(link, &good).await;
    }

    /// RFC 8305 §5 over two races: the proxy's name has a silent address first, and the
    /// proxy refuses the server's first address. The second tunnel goes straight to the proxy
    /// address that answered the first, so the silent one costs the attempt delay once
    /// (re-racing it would cost it twice: each tunnel's wait for it runs after the other's).
    #[tokio::test]
    async fn rfc8305_5_the_proxy_address_that_answered_goes_first_in_later_tunnels() {
        let socks = tether_testkit::socks::Socks5::start().await.unwrap();
        let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
        let refused = refusing(v6(0));
        let good = tokio::net::TcpListener::bind(v4(0)).await.unwrap();
        let targets = [Some(refused), Some(good.local_addr().unwrap())];
        let t0 = Instant::now();
        let link = tokio::time::timeout(
            Duration::from_secs(5),
            through_socks_at(
                socks.addr(),
                &[hole.addr(), socks.addr()],
                &targets,
                Duration::from_secs(3600),
            ),
        )
        .await
        .expect("connected well within the hole's hang")
        .unwrap();
        let took = t0.elapsed();
        assert!(
            took >= CONNECTION_ATTEMPT_DELAY && took < 2 * CONNECTION_ATTEMPT_DELAY,
            "{took:?}"
        );
        assert_eq!(
            socks.asked(),
            [refused.to_string(), targets[1].unwrap().to_string()]
        );
        // One connection per tunnel: the first tunnel went over the connection that found
        // the proxy.
        assert_eq!(socks.connections(), 2);
        reaches(link, &good).await;
    }

    /// A proxy that never answers is the one named at the deadline, not the server's
    /// addresses the tunnels would have been for: the proxy is reached before any tunnel is
    /// asked for.
    #[tokio::test]
    async fn rfc8305_5_a_silent_proxy_is_blamed_not_the_addresses_behind_it() {
        let hole = tether_testkit::blackhole::BlackHole::start().await.unwrap();
        let targets = [Some(v4(1)), Some(v4(2))];
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            through_socks_until(hole.addr(), &targets, Duration::from_millis(400)),
        )
        .await
        .expect("given up at the deadline")
        .err()
        .expect("nothing answered");
        assert_eq!(err.error.status(), Status::ErrConnect);
        let msg = err.error.message();
        assert!(
            msg.contains(&format!("no answer from {} in ", hole.addr())),
            "{msg}"
        );
        for t in targets.iter().flatten() {
            assert!(!msg.contains(&format!("no answer from {t} ")), "{msg}");
        }
    }

    /// An `https://` proxy that accepts the connection and never answers the TLS handshake is
    /// named at the connect timeout, like one that never answers the connect.
    #[tokio::test]
    async fn rfc8305_5_an_https_proxy_silent_in_the_tls_handshake_is_named_at_the_deadline() {
        let mute = tokio::net::TcpListener::bind(v4(0)).await.unwrap();
        let at = mute.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = mute.accept().await {
                kept.push(s);
            }
        });
        let proxy = format!("https://{at}");
        let limit = Duration::from_millis(400);
        let (hop, targets) = ([at], [None]);
        let msg = given_up_at_400_ms(|_| through(&proxy, &hop, &targets, limit)).await;
        assert!(
            msg.starts_with(&format!(
                "connect to HTTPS proxy {at}: no answer to the TLS handshake from {at} in "
            )),
            "{msg}"
        );
    }

    /// A refusal that is not about the address (here the proxy wants credentials we do not
    /// have: it accepts none of our methods, or picks user/password anyway) is final and not
    /// retried on the next address.
    #[tokio::test]
    async fn rfc1928_3_an_auth_refusal_is_not_retried_per_address() {
        for method in [0xff, 0x02] {
            auth_refusal(method).await;
        }
    }

    async fn auth_refusal(method: u8) {
        // A SOCKS5 server that answers our greeting with `method`.
        let proxy = tokio::net::TcpListener::bind(v4(0)).await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let mut n = 0;
            while let Ok(Ok((mut s, _))) =
                tokio::time::timeout(Duration::from_millis(500), proxy.accept()).await
            {
                n += 1;
                let mut head = [0u8; 3];
                let _ = s.read_exact(&mut head).await;
                let _ = s.write_all(&[5, method]).await;
            }
            n
        });
        let err = through_socks(proxy_addr, &[Some(v4(1)), Some(v4(2))])
            .await
            .err()
            .expect("refused");
        assert_eq!(err.error.status(), Status::ErrUnauthorized, "{method:#x}");
        // Reported like an HTTP proxy's refusal: the close code of the DISCONNECTED.
        assert_eq!(err.code, Some(407), "{method:#x}");
        assert!(
            err.error.message().contains("requires proxy credentials"),
            "{}",
            err.error.message()
        );
        assert_eq!(served.await.unwrap(), 1, "one connection to the proxy");
    }

    /// RFC 8305 §5: a later attempt that fails for a reason of its own (the proxy drops the
    /// second connection, as under a per-client connection limit) does not end the race while
    /// an earlier attempt is still on its way to a tunnel.
    #[tokio::test]
    async fn rfc8305_5_a_failed_later_attempt_does_not_cancel_a_running_one() {
        let proxy = tokio::net::TcpListener::bind(v4(0)).await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        tokio::spawn(async move {
            let mut first = None;
            while let Ok((mut s, _)) = proxy.accept().await {
                if first.is_some() {
                    drop(s);
                    continue;
                }
                // Greeting, then a CONNECT to an IPv4 address, answered after 600 ms.
                first = Some(tokio::spawn(async move {
                    let mut head = [0u8; 3];
                    s.read_exact(&mut head).await.unwrap();
                    s.write_all(&[5, 0]).await.unwrap();
                    let mut req = [0u8; 10];
                    s.read_exact(&mut req).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    s.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }));
            }
        });
        let t0 = Instant::now();
        let r = through_socks(proxy_addr, &[Some(v4(1)), Some(v4(2))]).await;
        assert!(r.is_ok(), "{:?}", r.err().map(|e| e.error));
        assert!(t0.elapsed() >= Duration::from_millis(600));
    }

    #[test]
    fn without_cookies_no_cookie_header_is_sent() {
        let url = Url::parse("ws://127.0.0.1:1/api/ws").unwrap();
        let req = upgrade_request(&url, &[], &pairs(&[("Origin", "http://x")])).unwrap();
        assert!(req.headers().get(COOKIE).is_none());
    }
}
