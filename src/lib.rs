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

pub mod client;
pub mod config;
pub mod dialect;
pub mod event;
pub mod ffi;
pub mod queue;
pub mod runtime;
pub mod session;
pub mod status;

pub use client::Client;
pub use config::{Config, ConfigBuilder, Protocol, ResumeState};
pub use event::{Event, EventKind};
pub use queue::Pop;
pub use status::{Error, Status};
