//! TCP (Nagle off) + optional rustls + websocket upgrade.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::header::COOKIE;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;
use url::Url;

use crate::config::Config;
use crate::logging::tlog;
use crate::stats::{self, Counters, Probe};
use crate::status::{Error, Status};

/// Plain or TLS stream under the websocket.
pub(crate) enum Stream {
    /// ws://
    Plain(Counted),
    /// wss://
    Tls(Box<TlsStream<Counted>>),
}

/// The TCP stream, counting the bytes it carries into the client's statistics (TLS records
/// and websocket framing included, which is what the network sees).
pub(crate) struct Counted {
    tcp: TcpStream,
    counters: Arc<Counters>,
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

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// The websocket type every dialect reads and writes.
pub(crate) type Ws = WebSocketStream<Stream>;

/// Opens the websocket at `url` with the given extra headers (cookie, Origin, ...).
pub(crate) async fn connect(
    cfg: &Config,
    tls: &Arc<ClientConfig>,
    url: &Url,
    headers: &[(String, String)],
    probe: &Probe,
) -> Result<Ws, ConnectError> {
    let client = probe.client;
    let host = url
        .host_str()
        .ok_or_else(|| ConnectError::other(Status::ErrConfig, "URL has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host_for_dns = host.trim_start_matches('[').trim_end_matches(']');
    let t0 = Instant::now();
    let tcp = TcpStream::connect((host_for_dns, port))
        .await
        .map_err(|e| {
            ConnectError::other(Status::ErrConnect, format!("connect to {host}:{port}: {e}"))
        })?;
    if let Ok(peer) = tcp.peer_addr() {
        tlog!(
            client,
            Debug,
            "transport",
            "TCP connected to {peer} in {} ms",
            t0.elapsed().as_millis()
        );
    }
    // Pings, acks and small requests must not wait for Nagle.
    tcp.set_nodelay(true).ok();
    let tcp = Counted {
        tcp,
        counters: probe.counters.clone(),
    };
    let stream = if url.scheme() == "wss" {
        let name = ServerName::try_from(host_for_dns.to_owned()).map_err(|e| {
            ConnectError::other(Status::ErrConfig, format!("bad TLS server name: {e}"))
        })?;
        let t1 = Instant::now();
        let tls_stream = TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                ConnectError::other(Status::ErrTls, format!("TLS handshake with {host}: {e}"))
            })?;
        tlog!(
            client,
            Debug,
            "transport",
            "TLS handshake with {host} in {} ms",
            t1.elapsed().as_millis()
        );
        Stream::Tls(Box::new(tls_stream))
    } else {
        Stream::Plain(tcp)
    };
    let t2 = Instant::now();
    let req = upgrade_request(url, headers, &cfg.headers)?;
    let mut wsc = WebSocketConfig::default();
    wsc.max_message_size = Some(cfg.max_message_bytes);
    wsc.max_frame_size = Some(cfg.max_message_bytes);
    // tungstenite zero-fills a 128 KiB read buffer per connection by default, which alone
    // breaks the 64 KiB-per-idle-connection budget (bench/RESULTS.md §3); 16 KiB reads
    // still carry a 10 KB event per read.
    wsc.read_buffer_size = 16 * 1024;
    let (ws, resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(wsc))
        .await
        .map_err(ConnectError::from_ws)?;
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

    fn from_ws(e: WsError) -> ConnectError {
        match e {
            WsError::Http(resp) => {
                let code = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(512)]).into_owned())
                    .unwrap_or_default();
                let status = match code {
                    401 => Status::ErrUnauthorized,
                    403 => Status::ErrForbidden,
                    _ => Status::ErrHttp,
                };
                ConnectError {
                    error: Error::new(status, format!("HTTP {code} at upgrade: {}", body.trim())),
                    code: Some(code),
                }
            }
            WsError::Io(e) => ConnectError::other(Status::ErrConnect, format!("upgrade I/O: {e}")),
            other => {
                ConnectError::other(Status::ErrProtocol, format!("websocket upgrade: {other}"))
            }
        }
    }
}

/// The upgrade request with the dialect's headers, then the user's. Cookies from both go into
/// one `Cookie` header, the library's first: a client sends at most one (RFC 6265 §5.4), and a
/// server that reads only one line would otherwise miss the `gomuks_auth` cookie or the app's.
fn upgrade_request(
    url: &Url,
    headers: &[(String, String)],
    extra: &[(String, String)],
) -> Result<Request, ConnectError> {
    let mut req = url.as_str().into_client_request().map_err(|e| {
        ConnectError::other(Status::ErrConfig, format!("bad websocket request: {e}"))
    })?;
    let mut cookies: Vec<&str> = Vec::new();
    for (k, v) in headers.iter().chain(extra.iter()) {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| ConnectError::other(Status::ErrConfig, "bad header name"))?;
        if name == COOKIE {
            cookies.push(v);
            continue;
        }
        let value = HeaderValue::from_str(v)
            .map_err(|_| ConnectError::other(Status::ErrConfig, "bad header value"))?;
        req.headers_mut().append(name, value);
    }
    if !cookies.is_empty() {
        let mut value = HeaderValue::from_str(&cookies.join("; "))
            .map_err(|_| ConnectError::other(Status::ErrConfig, "bad header value"))?;
        // Holds the token: kept out of any header dump (http's Debug prints "Sensitive").
        value.set_sensitive(true);
        req.headers_mut().insert(COOKIE, value);
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn without_cookies_no_cookie_header_is_sent() {
        let url = Url::parse("ws://127.0.0.1:1/api/ws").unwrap();
        let req = upgrade_request(&url, &[], &pairs(&[("Origin", "http://x")])).unwrap();
        assert!(req.headers().get(COOKIE).is_none());
    }
}
