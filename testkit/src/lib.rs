//! tether's test kit: a reference backend for gomuks and rwws, and realistic event payloads.
//! Never linked into the library.

pub mod blackhole;
pub mod buffer;
pub mod events;
pub mod gomuks;
pub mod proxy;
pub mod rooms;
pub mod rwws;
pub mod socks;
pub mod throttle;
pub mod tls;
