//! Autobahn fuzzingserver echo agent (RFC 6455 conformance).
//!
//! Every connection is opened by `tether::internals::open_websocket` with the exact
//! `WebSocketConfig` the library uses in production (frame and message caps from
//! `tether::Config`), so the cases test tether's websocket layer, not a test-only setup.
//!
//! Usage: `tether-autobahn-client ws://127.0.0.1:9001 [agent]`

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use url::Url;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let agent = args.next().unwrap_or_else(|| "tether".into());
    // The library refuses ws:// in a Config (it derives the websocket URL itself), so the
    // config carries the equivalent http:// URL; only its limits and TLS settings matter here.
    let http = base.replacen("ws://", "http://", 1);
    let cfg = tether::Config::builder(&http)
        .build()
        .expect("tether config");

    let count: u32 = {
        let url = Url::parse(&format!("{base}/getCaseCount")).unwrap();
        let mut ws = tether::internals::open_websocket(&cfg, &url)
            .await
            .expect("getCaseCount");
        let mut n = None;
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                n = t.as_str().trim().parse().ok();
            }
        }
        n.expect("case count")
    };
    eprintln!("autobahn: {count} cases");

    for case in 1..=count {
        let url = Url::parse(&format!("{base}/runCase?case={case}&agent={agent}")).unwrap();
        let mut ws = match tether::internals::open_websocket(&cfg, &url).await {
            Ok(ws) => ws,
            Err(e) => {
                // Some cases legitimately fail the connection; the fuzzingserver judges it.
                eprintln!("case {case}: connect failed: {e}");
                continue;
            }
        };
        while let Some(m) = ws.next().await {
            let echo = match m {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => m,
                Ok(_) => continue,
                Err(_) => break,
            };
            if ws.send(echo).await.is_err() {
                break;
            }
        }
    }

    let url = Url::parse(&format!("{base}/updateReports?agent={agent}")).unwrap();
    if let Ok(mut ws) = tether::internals::open_websocket(&cfg, &url).await {
        while let Some(Ok(_)) = ws.next().await {}
    }
}
