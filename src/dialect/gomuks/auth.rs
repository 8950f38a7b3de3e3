//! `POST /_gomuks/auth` (spec §1.2, §16 step 1).

use std::sync::Arc;

use base64::Engine;
use url::Url;

use crate::config::BasicAuth;
use crate::proxy::Proxy;
use crate::session::transport::{merge_headers, ConnectError};
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

/// Exchanges credentials for a `gomuks_auth` token; `None` when the backend has auth disabled.
/// The app's headers go along, as on the websocket upgrade: a reverse proxy in front of gomuks
/// with its own header auth must let the login through too.
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    url: &Url,
    creds: Credentials<'_>,
    app_headers: &[(String, String)],
    proxy: Option<&Proxy>,
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
    let headers = merge_headers(&[(name.to_owned(), value)], app_headers)?;
    let resp = http
        .post(url.as_str())
        .headers(headers)
        .send()
        .await
        .map_err(|e| {
            let e = e.without_url();
            let text = chain(&e);
            if let Some(refusal) = proxy_refusal(&text, proxy) {
                return refusal;
            }
            // reqwest errors may echo the URL but never headers, so no secret leaks here.
            // A refused certificate is final, as on the websocket (the same rustls config).
            let status = if crate::tls::is_certificate_failure(&e) {
                Status::ErrCertificate
            } else if e.is_connect() || e.is_timeout() {
                Status::ErrConnect
            } else {
                Status::ErrHttp
            };
            ConnectError {
                error: Error::new(status, format!("auth request failed: {text}")),
                code: None,
            }
        })?;
    let code = resp.status().as_u16();
    match code {
        200 | 201 => {
            let body = resp.bytes().await.map_err(|e| ConnectError {
                error: Error::new(Status::ErrConnect, format!("auth response: {e}")),
                code: Some(code),
            })?;
            let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| ConnectError {
                error: Error::new(
                    Status::ErrProtocol,
                    format!("auth response is not a token: {e}"),
                ),
                code: Some(code),
            })?;
            Ok(Some(reply.token))
        }
        // Auth disabled on the backend: no cookie needed.
        204 => Ok(None),
        // A plain http:// login goes to an HTTP proxy as a forwarded request, so the proxy's
        // refusal comes back as the answer.
        407 if proxy.is_some() => Err(ConnectError {
            error: Error::new(
                Status::ErrUnauthorized,
                format!(
                    "auth request: {} refused the proxy credentials (HTTP 407)",
                    proxy.map(|p| p.to_string()).unwrap_or_default()
                ),
            ),
            code: Some(407),
        }),
        _ => {
            let status = match code {
                401 => Status::ErrUnauthorized,
                403 => Status::ErrForbidden,
                _ => Status::ErrHttp,
            };
            let text = resp.text().await.unwrap_or_default();
            // Through an HTTP proxy the answer may be the proxy's (tinyproxy answers wrong
            // proxy credentials with 401 and an HTML page): say which way it came, and keep
            // a page to its start.
            let via = proxy.map(|p| format!(" (through {p})")).unwrap_or_default();
            let text: String = text.trim().chars().take(300).collect();
            Err(ConnectError {
                error: Error::new(
                    status,
                    format!("auth endpoint answered HTTP {code}{via}: {text}"),
                ),
                code: Some(code),
            })
        }
    }
}

/// The HTTP client for auth, verifying TLS exactly like the websocket does and going through
/// the proxy the websocket goes through (`Config::proxy`, decided once by `proxy::resolve`):
/// reqwest never reads the proxy environment variables itself.
pub(crate) fn http_client(
    tls: Arc<rustls::ClientConfig>,
    timeout: std::time::Duration,
    proxy: Option<&Proxy>,
) -> Result<reqwest::Client, Error> {
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(p) = proxy {
        // The URL carries the credentials; reqwest percent-decodes them as `proxy::parse`
        // does. Its error would print the URL, so it is not passed on.
        let rp = reqwest::Proxy::all(p.url.expose()).map_err(|_| {
            Error::new(
                Status::ErrConfig,
                format!("{p}: not usable for the auth call"),
            )
        })?;
        b = b.proxy(rp);
    }
    b.build()
        .map_err(|e| Error::new(Status::ErrConfig, format!("HTTP client: {e}")))
}

/// The error and its sources, for the message (reqwest's own text is only "error sending
/// request"). No layer under reqwest prints a header or the proxy URL.
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

/// Whether reqwest failed to open its tunnel through the proxy. Its text (hyper-util's
/// "tunnel error: unsuccessful") does not say why: a refused CONNECT's status is dropped.
pub(crate) fn tunnel_failed(e: &ConnectError) -> bool {
    e.error.message().contains("tunnel error: ")
}

/// A failed auth call that the proxy caused: its refusal of our credentials is final like a
/// 401 (`ErrUnauthorized`), as on the websocket's tunnel. reqwest's proxy layers (hyper-util)
/// only say so in their error text.
fn proxy_refusal(text: &str, proxy: Option<&Proxy>) -> Option<ConnectError> {
    let p = proxy?;
    let code = if text.contains("proxy authorization required") {
        Some(407)
    } else if text.contains("credentials not accepted")
        || text.contains("does not support user/pass authentication")
    {
        None
    } else {
        return None;
    };
    Some(ConnectError {
        error: Error::new(
            Status::ErrUnauthorized,
            format!("auth request: {p} refused the proxy credentials"),
        ),
        code,
    })
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
