//! Status codes shared by the Rust API and the C ABI.
//!
//! One enum so that the C header, the bindings' exception tables and the Rust `Error` can never
//! drift apart: the C constants are generated from these discriminants.

use std::fmt;

/// Outcome of an operation, or the reason carried by an event.
///
/// The discriminants are the C ABI's `tether_status` values and never change once released.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Success.
    Ok = 0,
    /// `poll` found no event before its timeout.
    Timeout = 1,
    /// The client is closed and its final CLOSED event has been taken.
    Closed = 2,
    /// A required pointer argument was NULL.
    ErrNull = -1,
    /// An argument was out of range or malformed.
    ErrInvalidArgument = -2,
    /// A string argument was not valid UTF-8, or a payload was not valid JSON.
    ErrInvalidUtf8 = -3,
    /// The call is not valid in the client's current state (e.g. connect twice, request after close).
    ErrState = -4,
    /// Poll mode and callback mode were mixed.
    ErrWrongMode = -5,
    /// An internal panic was caught. Inside a call on a client: every later call that takes
    /// that `tether_client` is refused (free still works; a store attached to it keeps
    /// working); on another handle, only that call failed. In a client's session task: each
    /// request in flight gets a RESPONSE of this status and each rwws packet not yet written
    /// an UNSENT of this status, then come a DISCONNECTED of this status and CLOSED, all
    /// taken as usual; the client's state is CLOSED, later requests and sends fail with this
    /// status, and its statistics and resume state still answer.
    ErrPanic = -6,
    /// The process forked after the library started; nothing works in the child.
    ErrForked = -7,
    /// The configuration is invalid (missing URL, bad scheme, bad key, ...).
    ErrConfig = -8,
    /// A caller-supplied buffer was too small (the needed size is reported).
    ErrBufferTooSmall = -9,
    /// The call does not apply to this client's transport or protocol (pause, unpause and
    /// reconnect in-process; media uploads and downloads over the websocket; a download from
    /// a backend library without streaming download).
    ErrUnsupported = -10,
    /// Held by another client: the in-process backend's data root (a lock file guards it
    /// across processes), or the one in-process backend a process can run at a time.
    ErrInUse = -11,
    /// More bytes of requests and packets already wait to be written than the client's
    /// `max_unsent_bytes` allows with this one: the call took nothing; make it again after the
    /// SEND_READY event that follows once room frees.
    ErrSendBufferFull = -12,
    /// The server answered a request with an `error` reply.
    ErrRemote = -20,
    /// A request got no reply within its timeout (a `cancel` was sent).
    ErrRequestTimeout = -21,
    /// A request was cancelled by the caller.
    ErrCancelled = -22,
    /// The connection dropped before the request was answered; its outcome is unknown.
    ErrDisconnected = -23,
    /// The client was closed before the request was answered: by the app, or for good by
    /// the library after an error it does not retry (the RESPONSE's text then says which).
    ErrClientClosed = -24,
    /// TCP connect or I/O failure (refused, reset, unreachable, connect timeout).
    ErrConnect = -30,
    /// The TLS handshake failed for another reason than a certificate (the connection broke
    /// during the handshake, no common protocol version, a bad record); retried with backoff.
    /// Also: the OS trust store holds no usable certificate (`use_os_trust`).
    ErrTls = -31,
    /// The server rejected the credentials (HTTP 401 after one re-authentication).
    ErrUnauthorized = -32,
    /// The server refused the request (HTTP 403, e.g. Origin check).
    ErrForbidden = -33,
    /// The websocket upgrade failed with another HTTP status.
    ErrHttp = -34,
    /// Nothing was received within the receive timeout.
    ErrReceiveTimeout = -35,
    /// The server closed the websocket with a close frame (see the close code).
    ErrRemoteClosed = -36,
    /// A certificate was refused: the server's or an `https://` proxy's (unknown issuer,
    /// wrong name, expired, not yet valid, no pin matches a key of the server's verified
    /// chain) or ours (the server refused or required a client certificate; an `https://`
    /// proxy that requires one, which it is never shown, refuses this way too when it
    /// answers with a TLS alert).
    /// Final: it would fail the same way on every attempt, so the client stops instead of
    /// retrying; reconnect with a new client once the configuration or the server changed.
    ErrCertificate = -37,
    /// The server violated the protocol (wrong frame type, missing envelope field, bad packet).
    ErrProtocol = -40,
    /// Server data could not be inflated (invalid or truncated deflate stream).
    ErrInflate = -41,
    /// Server data was not valid JSON or not valid UTF-8.
    ErrJson = -42,
    /// A server message exceeded the configured size cap (after decompression).
    ErrMessageTooLarge = -43,
    /// rwws: the server's protocol version does not match (close 3002).
    ErrVersionMismatch = -50,
    /// rwws: the access key was revoked (close 3004).
    ErrKeyRevoked = -51,
    /// In-process: the backend could not open its database (`GomuksStart` returned 10).
    ErrBackendDatabase = -60,
    /// In-process: the backend could not look up its account (`GomuksStart` returned 11).
    ErrBackendAccount = -61,
    /// In-process: the backend failed to start (`GomuksStart` returned 12, or another
    /// non-zero code), e.g. a logged-in account whose homeserver is unreachable.
    ErrBackendStart = -62,
}

impl Status {
    /// Every status, in declaration order (bindings check their mapping tables against it).
    pub const ALL: &'static [Status] = &[
        Status::Ok,
        Status::Timeout,
        Status::Closed,
        Status::ErrNull,
        Status::ErrInvalidArgument,
        Status::ErrInvalidUtf8,
        Status::ErrState,
        Status::ErrWrongMode,
        Status::ErrPanic,
        Status::ErrForked,
        Status::ErrConfig,
        Status::ErrBufferTooSmall,
        Status::ErrUnsupported,
        Status::ErrInUse,
        Status::ErrSendBufferFull,
        Status::ErrRemote,
        Status::ErrRequestTimeout,
        Status::ErrCancelled,
        Status::ErrDisconnected,
        Status::ErrClientClosed,
        Status::ErrConnect,
        Status::ErrTls,
        Status::ErrUnauthorized,
        Status::ErrForbidden,
        Status::ErrHttp,
        Status::ErrReceiveTimeout,
        Status::ErrRemoteClosed,
        Status::ErrCertificate,
        Status::ErrProtocol,
        Status::ErrInflate,
        Status::ErrJson,
        Status::ErrMessageTooLarge,
        Status::ErrVersionMismatch,
        Status::ErrKeyRevoked,
        Status::ErrBackendDatabase,
        Status::ErrBackendAccount,
        Status::ErrBackendStart,
    ];

    /// The C ABI value.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The status for a C ABI value, if it is one.
    pub fn from_code(code: i32) -> Option<Status> {
        Self::ALL.iter().copied().find(|s| s.code() == code)
    }

    /// A static, NUL-terminated description (the C ABI hands out the pointer).
    pub fn description_nul(self) -> &'static str {
        match self {
            Status::Ok => "ok\0",
            Status::Timeout => "timed out waiting for an event\0",
            Status::Closed => "client closed\0",
            Status::ErrNull => "a required argument was NULL\0",
            Status::ErrInvalidArgument => "invalid argument\0",
            Status::ErrInvalidUtf8 => "invalid UTF-8 or JSON in an argument\0",
            Status::ErrState => "not valid in the client's current state\0",
            Status::ErrWrongMode => "poll mode and callback mode cannot be mixed\0",
            Status::ErrPanic => "internal panic; the client is unusable\0",
            Status::ErrForked => "used after fork()\0",
            Status::ErrConfig => "invalid configuration\0",
            Status::ErrBufferTooSmall => "buffer too small\0",
            Status::ErrUnsupported => "not supported by this transport or protocol\0",
            Status::ErrInUse => "in use by another client\0",
            Status::ErrSendBufferFull => "too many bytes already wait to be sent\0",
            Status::ErrRemote => "the server returned an error\0",
            Status::ErrRequestTimeout => "request timed out\0",
            Status::ErrCancelled => "request cancelled\0",
            Status::ErrDisconnected => "connection lost before the reply\0",
            Status::ErrClientClosed => "client closed before the reply\0",
            Status::ErrConnect => "connection failed\0",
            Status::ErrTls => "TLS failure\0",
            Status::ErrCertificate => "certificate refused\0",
            Status::ErrUnauthorized => "unauthorized\0",
            Status::ErrForbidden => "forbidden\0",
            Status::ErrHttp => "unexpected HTTP status at upgrade\0",
            Status::ErrReceiveTimeout => "nothing received within the receive timeout\0",
            Status::ErrRemoteClosed => "server closed the connection\0",
            Status::ErrProtocol => "protocol violation by the server\0",
            Status::ErrInflate => "invalid deflate data from the server\0",
            Status::ErrJson => "invalid JSON or UTF-8 from the server\0",
            Status::ErrMessageTooLarge => "server message over the size cap\0",
            Status::ErrVersionMismatch => "protocol version mismatch\0",
            Status::ErrKeyRevoked => "access key revoked\0",
            Status::ErrBackendDatabase => "the in-process backend could not open its database\0",
            Status::ErrBackendAccount => "the in-process backend could not look up its account\0",
            Status::ErrBackendStart => "the in-process backend failed to start\0",
        }
    }

    /// Human-readable description.
    pub fn description(self) -> &'static str {
        let s = self.description_nul();
        &s[..s.len() - 1]
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// An error with a status and a message for humans. Never contains credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// A new error.
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    /// The status code.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for s in Status::ALL {
            assert!(seen.insert(s.code()), "duplicate code {}", s.code());
            assert_eq!(Status::from_code(s.code()), Some(*s));
            assert!(s.description_nul().ends_with('\0'));
            assert!(!s.description().contains('\0'));
        }
        assert_eq!(Status::from_code(12345), None);
    }
}
