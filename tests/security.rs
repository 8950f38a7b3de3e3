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
/// auth POST), gomuks desktop key, rwws key.
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
    // Without credentials there is nothing to protect.
    Config::builder("ws://192.0.2.1/").build().unwrap();
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
