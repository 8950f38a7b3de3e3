//! The proxy handshakes that turn a TCP connection to a proxy into a tunnel to the server:
//! HTTP CONNECT (RFC 9110 §9.3.6, Basic proxy auth per RFC 9110 §11.7.1) and SOCKS5
//! (RFC 1928, user/password per RFC 1929, through `tokio-socks`). Which proxy is decided in
//! `proxy.rs`; TLS and the websocket run over the tunnel as over a direct connection.

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proxy::{Proxy, ProxyKind};
use crate::status::Status;

/// Why the proxy did not open the tunnel. The message names the proxy by `host:port` only.
#[derive(Debug)]
pub(crate) struct TunnelError {
    pub(crate) status: Status,
    /// The proxy's HTTP status for a refused CONNECT.
    pub(crate) code: Option<u16>,
    pub(crate) message: String,
}

impl TunnelError {
    fn new(status: Status, code: Option<u16>, message: String) -> TunnelError {
        TunnelError {
            status,
            code,
            message,
        }
    }
}

/// The most a CONNECT response head may take; proxies answer in a few hundred bytes.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Asks `proxy` (already connected as `io`) for a tunnel to `host:port`. For SOCKS5 without
/// the `h`, `resolved` is the address to ask for (the caller resolved the name).
pub(crate) async fn open<S>(
    proxy: &Proxy,
    io: S,
    host: &str,
    port: u16,
    resolved: Option<std::net::SocketAddr>,
) -> Result<S, TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match proxy.kind {
        // An https:// proxy's TLS is the caller's: `io` already runs inside it.
        ProxyKind::Http | ProxyKind::Https => http_connect(proxy, io, host, port).await,
        ProxyKind::Socks5 | ProxyKind::Socks5h => socks5(proxy, io, host, port, resolved).await,
    }
}

/// `host:port` as a URL or a CONNECT request writes it: an IPv6 address in brackets.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn http_connect<S>(proxy: &Proxy, mut io: S, host: &str, port: u16) -> Result<S, TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io_err = |e: std::io::Error| {
        // Inside TLS to an `https://` proxy, TLS 1.3 lets the proxy refuse our certificate (or
        // its absence) only after the handshake: the alert arrives here, and is as final as
        // the same refusal from the server.
        let status = crate::tls::certificate_or(&e, Status::ErrConnect);
        TunnelError::new(status, None, format!("{proxy}: CONNECT: {e}"))
    };
    let authority = authority(host, port);
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, pass)) = &proxy.auth {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", pass.expose()));
        head.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    head.push_str("\r\n");
    io.write_all(head.as_bytes()).await.map_err(io_err)?;
    io.flush().await.map_err(io_err)?;
    drop(head);

    // Read exactly the response head: the tunnel's first bytes belong to TLS or the upgrade,
    // which the client speaks first, so a proxy sends nothing after the head.
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = io.read(&mut chunk).await.map_err(io_err)?;
        if n == 0 {
            return Err(TunnelError::new(
                Status::ErrConnect,
                None,
                format!("{proxy} closed the connection before answering CONNECT"),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let code = resp.code.unwrap_or(0);
                let reason = resp
                    .reason
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(100)
                    .collect::<String>();
                if (200..300).contains(&code) {
                    if buf.len() > len {
                        return Err(TunnelError::new(
                            Status::ErrProtocol,
                            None,
                            format!("{proxy} sent data after its CONNECT answer"),
                        ));
                    }
                    return Ok(io);
                }
                return Err(refused(proxy, code, &reason, &authority));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(TunnelError::new(
                    Status::ErrProtocol,
                    None,
                    format!("{proxy}: CONNECT answer head over {MAX_RESPONSE_HEAD} bytes"),
                ))
            }
            Err(e) => {
                return Err(TunnelError::new(
                    Status::ErrProtocol,
                    None,
                    format!("{proxy}: malformed CONNECT answer: {e}"),
                ))
            }
        }
    }
}

/// A CONNECT answered with a non-2xx status. 407 (the credentials are missing or wrong) is
/// final, like a 401 from the server, and so is 401, which only the proxy can have sent to a
/// CONNECT (tinyproxy answers wrong credentials with it); anything else may be passing (a 502
/// while the proxy cannot reach the server) and is a connect failure the client retries with
/// backoff. Both refusals are reported as 407, the proxy's own status, with the real one in
/// the message: a 401 would read as the server refusing the app's login, so an app would ask
/// for the wrong password and the gomuks dialect would try a fresh login it cannot need.
fn refused(proxy: &Proxy, code: u16, reason: &str, authority: &str) -> TunnelError {
    if code == 407 || code == 401 {
        let what = if proxy.auth.is_some() {
            "refused the proxy credentials"
        } else {
            "requires proxy credentials"
        };
        TunnelError::new(
            Status::ErrUnauthorized,
            Some(407),
            format!("{proxy} {what} (HTTP {code} {reason})"),
        )
    } else {
        TunnelError::new(
            Status::ErrConnect,
            Some(code),
            format!("{proxy} refused CONNECT to {authority}: HTTP {code} {reason}"),
        )
    }
}

async fn socks5<S>(
    proxy: &Proxy,
    io: S,
    host: &str,
    port: u16,
    resolved: Option<std::net::SocketAddr>,
) -> Result<S, TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio_socks::tcp::Socks5Stream;
    use tokio_socks::{Error as SocksError, IntoTargetAddr, TargetAddr};
    // A literal address goes as one (RFC 1928 §5, ATYP 1 or 4): strict proxies refuse it as
    // a name. The conversion also refuses a name longer than the request's length byte.
    let target: TargetAddr<'_> = match resolved {
        Some(addr) => TargetAddr::Ip(addr),
        None => (host, port).into_target_addr().map_err(|e| {
            TunnelError::new(
                Status::ErrConfig,
                None,
                format!("{proxy} cannot be asked for {}: {e}", authority(host, port)),
            )
        })?,
    };
    let r = match &proxy.auth {
        Some((user, pass)) => {
            Socks5Stream::connect_with_password_and_socket(io, target, user, pass.expose()).await
        }
        None => Socks5Stream::connect_with_socket(io, target).await,
    };
    match r {
        Ok(s) => Ok(s.into_inner()),
        Err(e) => {
            let (status, what) = match &e {
                SocksError::PasswordAuthFailure(_) => (
                    Status::ErrUnauthorized,
                    "refused the proxy credentials".to_owned(),
                ),
                SocksError::NoAcceptableAuthMethods => (
                    Status::ErrUnauthorized,
                    if proxy.auth.is_some() {
                        "accepts none of our authentication methods".to_owned()
                    } else {
                        "requires proxy credentials".to_owned()
                    },
                ),
                // The proxy chose user/password although we offered none.
                SocksError::AuthorizationRequired => (
                    Status::ErrUnauthorized,
                    "requires proxy credentials".to_owned(),
                ),
                SocksError::Io(io) => (Status::ErrConnect, format!("I/O error: {io}")),
                // tokio-socks reports both as "Unknown auth method"; which one it was is not
                // kept, so the message names both rather than mislead.
                SocksError::UnknownAuthMethod => (
                    Status::ErrConnect,
                    "answered outside RFC 1928 (a reply code it does not define, or an \
                     authentication method we did not offer)"
                        .to_owned(),
                ),
                // The SOCKS reply codes (RFC 1928 §6) and malformed replies; none echoes a
                // credential.
                other => {
                    // The address asked for, when it was one of several of the name.
                    let to = match resolved {
                        Some(addr) => addr.to_string(),
                        None => authority(host, port),
                    };
                    (
                        Status::ErrConnect,
                        format!("did not connect to {to}: {other}"),
                    )
                }
            };
            // A refusal of the credentials reads as an HTTP proxy's 407, as the header says.
            let code = (status == Status::ErrUnauthorized).then_some(407);
            Err(TunnelError::new(status, code, format!("{proxy} {what}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// A SOCKS5 proxy on loopback that answers the method selection with `method` and, if
    /// that is "no authentication", the CONNECT with reply code `code` (RFC 1928 §3, §6);
    /// the error `open` returns through it.
    async fn socks_answering(method: u8, code: u8) -> TunnelError {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut down, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 2];
            down.read_exact(&mut head).await.unwrap();
            let mut methods = vec![0u8; head[1] as usize];
            down.read_exact(&mut methods).await.unwrap();
            down.write_all(&[5, method]).await.unwrap();
            if method != 0 {
                return;
            }
            // VER CMD RSV ATYP(3) LEN NAME PORT.
            let mut req = [0u8; 5];
            down.read_exact(&mut req).await.unwrap();
            let mut rest = vec![0u8; req[4] as usize + 2];
            down.read_exact(&mut rest).await.unwrap();
            down.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0])
                .await
                .unwrap();
        });
        let proxy = crate::proxy::parse(&format!("socks5h://{addr}"), "proxy", "explicit").unwrap();
        let io = TcpStream::connect(addr).await.unwrap();
        let err = open(&proxy, io, "example.invalid", 9, None)
            .await
            .expect_err("the proxy refused");
        server.await.unwrap();
        err
    }

    /// RFC 1928 §6 defines reply codes 0-8: a code past them (and a method we did not offer,
    /// §3, which the SOCKS crate reports the same way) is named as the proxy answering
    /// outside the RFC, not as an authentication problem, and is retried as a failed connect.
    #[tokio::test]
    async fn rfc1928_6_an_undefined_reply_code_or_method_is_named_as_such() {
        for (method, code) in [(0u8, 9u8), (0, 0x7f), (1, 0)] {
            let err = socks_answering(method, code).await;
            assert_eq!(err.status, Status::ErrConnect, "{}", err.message);
            assert!(
                err.message.contains("answered outside RFC 1928"),
                "{}",
                err.message
            );
            assert!(!err.message.contains("Unknown auth"), "{}", err.message);
        }
        // A defined code keeps its own reason.
        let err = socks_answering(0, 5).await;
        assert!(
            err.message.contains("Connection refused"),
            "{}",
            err.message
        );
    }
}
