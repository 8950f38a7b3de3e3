//! tether's test kit: a reference gomuks backend and realistic event payloads.
//! Never linked into the library.

pub mod events;
pub mod gomuks;
pub mod proxy;
