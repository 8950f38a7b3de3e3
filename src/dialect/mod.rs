//! The wire dialects. Each implements the supervisor's
//! [`Dialect`](crate::session::dialect::Dialect) interface; what only one of them has
//! (gomuks requests, rwws packets and settings) is encoded here and reached from the client.

pub(crate) mod gomuks;
pub(crate) mod rwws;
