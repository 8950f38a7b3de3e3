//! Security: credentials are never sent over plain ws:// to a non-loopback
//! host unless explicitly allowed (for both dialects, and for gomuks' auth POST, which uses the
//! same base URL), the refusal happens before any connection attempt, and secrets never show
//! in Debug output or error messages. TLS verification is in tests/tls.rs, log capture in
//! tests/secrets_in_logs.rs, the decompressed-size cap in tests/bad_input.rs (the bomb cases);
//! tests/RELIABILITY.md §7 lists them together. (ARCHITECTURE.md "Security", rwws-binary.md §2.6.)

use tether::{Client, Config, ConfigBuilder, Protocol, Status};

const TOKEN: &str = "tok-S3CRET-value";
const PASSWORD: &str = "hunter2-S3CRET";
/// base64 of `tether-test-key`; its raw and encoded forms must never show.
const RWWS_KEY: &str = "dGV0aGVyLXRlc3Qta2V5";

/// Every way a client can carry credentials: gomuks token, gomuks Basic auth (through the
/// auth POST), gomuks desktop key, rwws key, the app's credential headers.
fn with_credentials(url: &str) -> Vec<(&'static str, ConfigBuilder)> {
    vec![
        ("gomuks token", Config::builder(url).token(TOKEN)),
        (
            "gomuks basic auth",
            Config::builder(url).basic_auth("me", PASSWORD),
        ),
        (
            "gomuks desktop key",
            Config::builder(url).desktop_key(PASSWORD),
        ),
        (
            "rwws key",
            Config::builder(url)
                .protocol(Protocol::Rwws)
                .token(RWWS_KEY),
        ),
        // The app's own credentials travel as headers, in the clear alike.
        (
            "app cookie",
            Config::builder(url).header("Cookie", &format!("session={TOKEN}")),
        ),
        (
            "app authorization",
            Config::builder(url).header("authorization", &format!("Bearer {TOKEN}")),
        ),
        (
            "app proxy authorization",
            Config::builder(url).header("Proxy-Authorization", &format!("Bearer {TOKEN}")),
        ),
        // A reverse proxy's or gateway's own key, under names of its choosing.
        (
            "gateway key",
            Config::builder(url).header("X-Api-Key", TOKEN),
        ),
        (
            "gateway token",
            Config::builder(url).header("x_auth_token", TOKEN),
        ),
        (
            "access secret",
            Config::builder(url).header("CF-Access-Client-Secret", TOKEN),
        ),
    ]
}

const NON_LOOPBACK: &[&str] = &[
    "ws://example.org/",
    "http://example.org:29325",
    "ws://10.1.2.3/",
    "http://192.0.2.1:29325",
    "ws://[2001:db8::1]/",
    // Names that merely start like loopback are not loopback.
    "ws://127.0.0.1.nip.io/",
    "ws://localhost.example.org/",
    // An IPv4-mapped loopback is not treated as loopback (it may be routed elsewhere).
    "ws://[::ffff:127.0.0.1]/",
];

/// Plain ws:// (or http://) to a non-loopback host with any credential: ErrConfig from
/// build(), so no client exists and nothing is dialled; the message names the reason and
/// not the secret.
#[test]
fn credentials_over_plain_ws_to_non_loopback_are_refused() {
    for url in NON_LOOPBACK {
        for (what, b) in with_credentials(url) {
            let e = b.build().expect_err(&format!("{what} to {url} accepted"));
            assert_eq!(e.status(), Status::ErrConfig, "{what} {url}");
            assert!(e.message().contains("plain ws://"), "{what} {url}: {e}");
            assert_no_secret(&format!("{e} {e:?}"));
        }
    }
}

/// The same configurations are fine over TLS, to loopback, and with the explicit opt-in.
#[test]
fn tls_loopback_and_explicit_opt_in_are_allowed() {
    for url in [
        "wss://example.org/",
        "https://192.0.2.1:29325",
        "ws://127.0.0.1:29325/",
        "http://localhost:29325",
        "ws://[::1]:29325/",
    ] {
        for (what, b) in with_credentials(url) {
            b.build()
                .unwrap_or_else(|e| panic!("{what} to {url} refused: {e}"));
        }
    }
    for url in NON_LOOPBACK {
        for (what, b) in with_credentials(url) {
            b.allow_insecure_credentials(true)
                .build()
                .unwrap_or_else(|e| panic!("{what} to {url} with opt-in refused: {e}"));
        }
    }
    // Without credentials there is nothing to protect, whatever else the headers say
    // ("Keyboard" is no key).
    Config::builder("ws://192.0.2.1/")
        .header("Accept-Language", "en")
        .header("X-Keyboard-Layout", "de")
        .header("X-Tokenizer", "v2")
        .build()
        .unwrap();
}

/// Debug output of builders, configs, clients' configs and errors never shows a secret.
#[test]
fn secrets_never_in_debug_output() {
    for (what, b) in with_credentials("wss://example.org/") {
        assert_no_secret(&format!("{b:?}"));
        let cfg = b.build().unwrap();
        assert_no_secret(&format!("{cfg:?}"));
        let c = Client::new(cfg);
        assert_no_secret(&format!("{:?}", c.config()));
        let _ = what;
    }
    // Malformed secrets: the error says what is wrong, not what was given.
    for bad in ["S3CRET*not*base64", "S3CRET;semicolon"] {
        for proto in [Protocol::Gomuks, Protocol::Rwws] {
            let built = Config::builder("ws://127.0.0.1/")
                .protocol(proto)
                .token(bad)
                .build();
            // A gomuks token is any printable cookie value without `;`, so gomuks may take the
            // first as it is: no error to check. Every other pair is malformed and refused.
            if proto == Protocol::Gomuks && !bad.contains(';') {
                continue;
            }
            let e = built.unwrap_err();
            let s = format!("{e} {e:?}");
            assert!(!s.contains("S3CRET"), "{proto:?}: {s}");
        }
    }
}

fn assert_no_secret(s: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let basic = b64.encode(format!("me:{PASSWORD}"));
    let desktop = b64.encode(format!("desktop-key:{PASSWORD}"));
    for secret in [
        TOKEN,
        PASSWORD,
        RWWS_KEY,
        "tether-test-key",
        &basic,
        &desktop,
    ] {
        assert!(!s.contains(secret), "secret {secret:?} in: {s}");
    }
}

/// A server at `127.0.0.1:port` that answers every request with `code` and the body `body`
/// makes of the request head (an echo of the headers, as debug endpoints and some error pages
/// do), then closes.
async fn answering(code: u16, body: fn(&str) -> String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = body(&String::from_utf8_lossy(&head));
                let answer = format!(
                    "HTTP/1.1 {code} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

/// The first DISCONNECTED's text of a client built by `f` for `http://127.0.0.1:port`.
async fn refusal(port: u16, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> String {
    let c = Client::new(
        f(Config::builder(&format!("http://127.0.0.1:{port}")))
            .no_proxy()
            .build()
            .unwrap(),
    );
    c.connect().unwrap();
    let text = loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), c.next_event())
            .await
            .expect("an event within 10 s")
            .expect("an event");
        if ev.kind() == tether::EventKind::Disconnected {
            break String::from_utf8_lossy(ev.data()).into_owned();
        }
    };
    let _ = c.close();
    text
}

/// A server's answer is quoted in the error only when it is an error page (4xx, 5xx), and
/// never with the credentials the request carried: a page that echoes the request's headers
/// (a debug endpoint behind a misrouted reverse proxy) would otherwise put the token, the app's
/// bearer or the Basic credentials into the DISCONNECTED text and the log, on every retry. A
/// 2xx answer to the login that is not one gomuks gives is never quoted: it may be a token.
#[tokio::test]
async fn server_answers_never_quote_the_credentials_sent() {
    const BEARER: &str = "bearer-S3CRET-value";
    for code in [200, 400, 502] {
        let port = answering(code, |head| head.to_owned()).await;
        let text = refusal(port, |c| {
            c.token(TOKEN)
                .header("Authorization", &format!("Bearer {BEARER}"))
        })
        .await;
        assert_no_secret(&text);
        assert!(!text.contains(BEARER), "{text}");
        assert!(text.contains(&format!("HTTP {code}")), "{text}");
        // The page itself is still quoted where it explains a refusal.
        assert_eq!(text.contains("GET /"), code >= 400, "{text}");
    }
    // Echoed as JSON escapes it and as a query encodes it, with a key of the app's own
    // (a reverse proxy's credential, of any header name).
    let echoes: [fn(&str) -> String; 2] = [
        |head| head.replace('/', "\\/"),
        |head| url::form_urlencoded::byte_serialize(head.as_bytes()).collect(),
    ];
    for echo in echoes {
        let port = answering(400, echo).await;
        let text = refusal(port, |c| {
            c.token(TOKEN)
                .header("Authorization", &format!("Bearer {BEARER}"))
                .header("X-Api-Key", "key/S3CRET/value")
        })
        .await;
        assert!(!text.contains("S3CRET"), "{text}");
        assert!(text.contains("HTTP 400"), "{text}");
    }
    // The login: the Basic credentials echoed in a 400, a token in an unusual 2xx.
    let port = answering(400, |head| head.to_owned()).await;
    let text = refusal(port, |c| c.basic_auth("me", PASSWORD)).await;
    assert_no_secret(&text);
    assert!(text.contains("POST /"), "{text}");
    let port = answering(203, |_| format!("{{\"token\":\"{TOKEN}\"}}")).await;
    let text = refusal(port, |c| c.basic_auth("me", PASSWORD)).await;
    assert_no_secret(&text);
    assert!(text.contains("HTTP 203"), "{text}");
}
