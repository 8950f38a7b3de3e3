//! tether: a resumable native client for websocket RPC backends.
//!
//! The Rust API is async-friendly and usable without the C ABI:
//!
//! ```no_run
//! # async fn demo() -> Result<(), tether::Error> {
//! let cfg = tether::Config::builder("http://127.0.0.1:29325").basic_auth("user", "pass").build()?;
//! let client = tether::Client::new(cfg);
//! client.connect()?;
//! while let Some(ev) = client.next_event().await {
//!     println!("{:?} {} {}", ev.kind(), ev.command(), String::from_utf8_lossy(ev.data()));
//! }
//! # Ok(()) }
//! ```
//!
//! Every module is private; the items below are the whole public API. ARCHITECTURE.md in the
//! repository describes the layers and which way imports point.

// The layers, from the C boundary down, one group each; a module imports only from groups
// below its own, and the last group imports nothing of the crate (tests/layers.rs checks both,
// and that no modules anywhere import each other in a circle). ARCHITECTURE.md explains them.
mod ffi;

mod store;

mod client;

mod dialect;

mod session;

mod config;
mod queue;
mod runtime;

mod event;
mod proxy;
mod resume;
mod tls;

mod ids;
mod logging;
mod secret;
mod stats;
mod status;

pub use client::Client;
pub use config::{Config, ConfigBuilder, Protocol};
pub use event::{Event, EventKind, ResumeOutcome};
pub use logging::{set_log_sink, LogLevel, LogRecord, LogSink};
pub use queue::Pop;
pub use resume::ResumeState;
pub use stats::{ConnectionState, Stats};
pub use status::{Error, Status};
pub use store::{Store, READS as STORE_READS};

/// Locks `m`, also after a panic elsewhere poisoned it: the data behind tether's locks stays
/// whole across a panic (each holder leaves it consistent), and a poisoned lock must not make
/// the client unusable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a caught panic said (its message, when it has one), for the log and the app.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Not part of the API and without any semver promise: the internals that tether's own fuzz
/// targets, benchmarks and test tools drive directly.
#[doc(hidden)]
pub mod internals {
    pub use crate::dialect::gomuks::codec::{
        parse_envelope, Envelope, Inflater, Kind, LineSplitter,
    };
    pub use crate::dialect::rwws::codec::{parse_server_message, MAX_PACKETS_PER_MESSAGE};
    pub use crate::session::dialect::Incoming;
    pub use crate::store::Harness as StoreHarness;

    /// The C ABI's functions, for Rust-side fuzzing of call sequences.
    pub mod ffi {
        pub use crate::ffi::*;
    }

    /// Opens a websocket exactly as a client connection does (TLS, the config's headers and
    /// size limits), without a session: for the Autobahn conformance harness.
    pub async fn open_websocket(
        cfg: &crate::Config,
        url: &url::Url,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        >,
        crate::Error,
    > {
        let tls = cfg.tls_configs()?;
        crate::session::transport::connect(cfg, &tls, url, &[], &Default::default())
            .await
            .map_err(|e| e.error)
    }
}
