//! `POST /_gomuks/auth` (spec §1.2, §16 step 1).

use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::HeaderMap;
use hyper_util::rt::TokioIo;
use url::{Position, Url};

use crate::config::{is_gomuks_token, BasicAuth, Config};
use crate::session::transport::{self, merge_headers, ConnectError};
use crate::stats::Probe;
use crate::status::{Error, Status};

/// The auth endpoint that belongs to a websocket URL: `…/_gomuks/websocket` → `…/_gomuks/auth`.
pub(crate) fn auth_url(ws_url: &Url) -> Url {
    let mut u = ws_url.clone();
    let secure = u.scheme() == "wss";
    // Infallible for ws/wss URLs: both special schemes.
    let _ = u.set_scheme(if secure { "https" } else { "http" });
    let path = u.path();
    let dir = match path.rfind('/') {
        Some(i) => &path[..i],
        None => "",
    };
    let new_path = format!("{dir}/auth");
    u.set_path(&new_path);
    u.set_query(Some("output=json&no_prompt=true&insecure_cookie=true"));
    u
}

#[derive(serde::Deserialize)]
struct TokenReply {
    token: String,
}

/// What `POST /_gomuks/auth` is shown to get a token.
pub(crate) enum Credentials<'a> {
    /// HTTP Basic: a new token (201).
    Basic(&'a BasicAuth),
    /// A still-valid `gomuks_auth` token, renewed for another 7 days (200, spec §1.2). This is
    /// how a client configured with a token alone keeps a long session alive.
    Cookie(&'a str),
}

/// The most of an auth answer that is read: a token is a few hundred bytes, an error page a
/// few KiB.
const MAX_ANSWER: usize = 64 * 1024;

/// Exchanges credentials for a `gomuks_auth` token; `None` when the backend has auth disabled.
/// The app's headers go along, as on the websocket upgrade: a reverse proxy in front of gomuks
/// with its own header auth must let the login through too. The request runs over the stream
/// the websocket would (`transport::open_stream`: the same proxy, tunnel, TLS and trust) and
/// is bounded as a connection attempt is: its connect by the connect timeout once names are
/// resolved (an address that stays silent is named, as for the websocket), the HTTP exchange
/// by the connect timeout once connected, and the whole call by twice the connect timeout.
pub(crate) async fn fetch_token(
    cfg: &Config,
    tls: &crate::tls::Configs,
    url: &Url,
    creds: Credentials<'_>,
    probe: &Probe,
) -> Result<Option<String>, ConnectError> {
    let (name, value) = match creds {
        Credentials::Basic(b) => {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                b.username,
                b.password.expose()
            ));
            ("Authorization", format!("Basic {basic}"))
        }
        Credentials::Cookie(token) => ("Cookie", format!("gomuks_auth={token}")),
    };
    let headers = merge_headers(&[(name.to_owned(), value)], &cfg.headers)?;
    // Its own counters: the login is not traffic of the client's websocket. What it learns
    // of the server's addresses is the client's.
    let probe = Probe {
        counters: Default::default(),
        ..probe.clone()
    };
    let limit = cfg.connect_timeout * 2;
    let sent = headers.clone();
    let (code, body) = tokio::time::timeout(limit, post(cfg, tls, url, headers, &probe))
        .await
        .map_err(|_| no_answer("", limit))??;
    match code {
        200 | 201 => {
            // Neither message quotes the body: it may be the token, in another shape.
            let refuse = |why: &str| ConnectError {
                error: Error::new(
                    Status::ErrProtocol,
                    format!("auth response (HTTP {code}) is not a token: {why}"),
                ),
                code: Some(code),
            };
            let reply: TokenReply = serde_json::from_slice(&body)
                .map_err(|_| refuse("the body is not {\"token\": \"…\"}"))?;
            if !is_gomuks_token(&reply.token) {
                return Err(refuse("not 1-500 printable characters without ';'"));
            }
            Ok(Some(reply.token))
        }
        // Auth disabled on the backend: no cookie needed.
        204 => Ok(None),
        _ => {
            let status = match code {
                401 => Status::ErrUnauthorized,
                403 => Status::ErrForbidden,
                _ => Status::ErrHttp,
            };
            let what = format!("auth endpoint answered HTTP {code}");
            let message = transport::quoting_answer(what, code, &body, 300, &sent);
            Err(ConnectError {
                error: Error::new(status, message),
                code: Some(code),
            })
        }
    }
}

/// `POST url` with `headers` and no body over a new stream to the server; the answer's status
/// and body.
async fn post(
    cfg: &Config,
    tls: &crate::tls::Configs,
    url: &Url,
    headers: HeaderMap,
    probe: &Probe,
) -> Result<(u16, Bytes), ConnectError> {
    let stream = transport::open_stream(cfg, tls, url, probe)
        .await
        .map_err(|e| ConnectError {
            error: Error::new(
                e.error.status(),
                format!("auth request: {}", e.error.message()),
            ),
            code: e.code,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    let mut req = hyper::Request::post(&url[Position::BeforePath..])
        .header(HOST, &url[Position::BeforeHost..Position::AfterPort])
        .header(CONTENT_LENGTH, 0)
        .body(Empty::<Bytes>::new())
        .map_err(|e| ConnectError::other(Status::ErrConfig, format!("auth request: {e}")))?;
    req.headers_mut().extend(headers);
    let exchange = async {
        let resp = sender.send_request(req).await.map_err(failed)?;
        let code = resp.status().as_u16();
        let mut body = Limited::new(resp.into_body(), MAX_ANSWER);
        let mut got = BytesMut::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        got.extend_from_slice(&data);
                    }
                }
                // A refusal stays a refusal when its page is cut or too long: only a token
                // must arrive whole.
                Err(_) if !(200..300).contains(&code) => break,
                Err(e) => {
                    return Err(ConnectError {
                        error: Error::new(
                            Status::ErrHttp,
                            format!("auth response: {}", chain(&*e)),
                        ),
                        code: Some(code),
                    })
                }
            }
        }
        Ok((code, got.freeze()))
    };
    // The connection is driven beside the exchange and dropped with it: nothing outlives
    // the call. The connection can end first although the answer arrived whole (a server
    // that closes right after it, with or without TLS's close_notify): the exchange then
    // still has it, or fails with hyper's reason, at once.
    tokio::pin!(conn, exchange);
    let answered = async {
        tokio::select! {
            biased;
            r = &mut exchange => r,
            c = &mut conn => match c {
                Ok(()) => exchange.await,
                Err(e) => exchange.await.map_err(|_| failed(e)),
            },
        }
    };
    tokio::time::timeout(cfg.connect_timeout, answered)
        .await
        .map_err(|_| no_answer("connected, but ", cfg.connect_timeout))?
}

/// The login ran out of time: `after` says how far it got.
fn no_answer(after: &str, limit: Duration) -> ConnectError {
    ConnectError::other(
        Status::ErrConnect,
        format!(
            "auth request: {after}no answer within {} ms",
            limit.as_millis()
        ),
    )
}

/// A failed HTTP exchange with the auth endpoint. A certificate the server refuses (ours,
/// with TLS 1.3 only on the first read) is final, as on the websocket; anything else is
/// retried as an HTTP failure.
fn failed(e: hyper::Error) -> ConnectError {
    let status = crate::tls::certificate_or(&e, Status::ErrHttp);
    ConnectError::other(status, format!("auth request failed: {}", chain(&e)))
}

/// The error and its sources, for the message. No layer prints a header.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec1_2_auth_url_from_websocket_url() {
        let u = Url::parse("ws://127.0.0.1:5/_gomuks/websocket?compress=1").unwrap();
        assert_eq!(
            auth_url(&u).as_str(),
            "http://127.0.0.1:5/_gomuks/auth?output=json&no_prompt=true&insecure_cookie=true"
        );
        let u = Url::parse("wss://h/sub/_gomuks/websocket").unwrap();
        assert!(auth_url(&u)
            .as_str()
            .starts_with("https://h/sub/_gomuks/auth?"));
    }
}
