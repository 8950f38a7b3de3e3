//! The rwws binary dialect (spec: docs/protocol/rwws-binary.md; §5.3 is the client state
//! machine, §4 the reconnect table).

pub(crate) mod codec;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::config::Config;
use crate::logging::tlog;
use crate::session::dialect::{CloseIntent, Dialect, Incoming, Opened, Policy};
use crate::session::transport::{self, ConnectError, Ws};
use crate::stats::{self, Probe};
use crate::status::{Error, Status};

/// rwws session state: the decoded key, re-sent on every connection.
pub(crate) struct Rwws {
    cfg: Arc<Config>,
    tls: crate::tls::Configs,
    probe: Probe,
}

impl Rwws {
    /// A dialect for this configuration (the key was validated when the config was built).
    pub(crate) fn new(
        cfg: Arc<Config>,
        tls: crate::tls::Configs,
        probe: Probe,
    ) -> Result<Rwws, Error> {
        if cfg.rwws_key.is_none() {
            return Err(Error::new(Status::ErrConfig, "rwws needs an access key"));
        }
        Ok(Rwws { cfg, tls, probe })
    }

    fn key(&self) -> &[u8] {
        self.cfg.rwws_key.as_ref().map_or(&[], |k| &k.0)
    }
}

/// Maps a close code to the status the app sees (spec §1.2, §4).
fn close_status(code: u16) -> Status {
    match code {
        3001 => Status::ErrUnauthorized,
        3002 => Status::ErrVersionMismatch,
        3004 => Status::ErrKeyRevoked,
        _ => Status::ErrRemoteClosed,
    }
}

/// Waits for the next data message of the handshake (binary only unless `text_too`: a text
/// frame is then skipped within the same deadline, and logged for `client`); a close frame
/// becomes an error carrying its code and reason.
async fn next_data(
    ws: &mut Ws,
    deadline: Duration,
    what: &str,
    text_too: bool,
    probe: &Probe,
) -> Result<Message, ConnectError> {
    let client = probe.client;
    // Counted as the session counts the messages after the handshake.
    let data = |m: Message| {
        stats::add(&probe.counters.messages_received, 1);
        stats::add(&probe.counters.payload_bytes_in, m.len() as u64);
        Ok(m)
    };
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(m @ Message::Binary(_))) => return data(m),
                Some(Ok(m @ Message::Text(_))) if text_too => return data(m),
                Some(Ok(Message::Text(_))) => tlog!(
                    client,
                    Debug,
                    "rwws",
                    "ignoring a text frame while waiting for the {what}"
                ),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(ConnectError {
                        error: Error::new(
                            close_status(code),
                            format!("server closed during the handshake ({code}): {reason}"),
                        ),
                        code: Some(code),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(ConnectError::other(
                        Status::ErrConnect,
                        format!("connection failed while waiting for the {what}: {e}"),
                    ))
                }
                None => {
                    return Err(ConnectError::other(
                        Status::ErrConnect,
                        format!("connection closed while waiting for the {what}"),
                    ))
                }
            }
        }
    };
    match tokio::time::timeout(deadline, wait).await {
        Ok(r) => r,
        // Spec §2.4: "on expiry close and reconnect"; a normal close says we are leaving.
        Err(_) => {
            let why = format!("no {what} within {} ms", deadline.as_millis());
            Err(fail_handshake(ws, CloseCode::Normal, Status::ErrProtocol, &why).await)
        }
    }
}

/// Closes the websocket with `code` and `message` as the reason (at most a second is spent on
/// it) and returns the failure.
async fn fail_handshake(
    ws: &mut Ws,
    code: CloseCode,
    status: Status,
    message: &str,
) -> ConnectError {
    let frame = CloseFrame {
        code,
        reason: message.chars().take(100).collect::<String>().into(),
    };
    let _ =
        tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
    ConnectError::other(status, message)
}

impl Rwws {
    /// Spec §2.4: hello `6d 73` (binary or text), then one binary auth message, then the first
    /// Pong means authenticated. Each wait is bounded by the connect timeout.
    async fn handshake(&self, ws: &mut Ws, out: &mut Vec<Incoming>) -> Result<(), ConnectError> {
        let deadline = self.cfg.connect_timeout;
        let hello = next_data(ws, deadline, "rwws hello", true, &self.probe).await?;
        if !codec::is_hello(&hello) {
            // Not a retryable condition: the URL points at something that is not rwws.
            return Err(fail_handshake(
                ws,
                CloseCode::Protocol,
                Status::ErrConfig,
                "the server did not send the rwws hello; is this an rwws /api/ws endpoint?",
            )
            .await);
        }
        let auth = codec::auth_message(self.key());
        tokio::time::timeout(deadline, ws.send(Message::binary(auth)))
            .await
            .map_err(|_| {
                ConnectError::other(Status::ErrConnect, "sending the auth message timed out")
            })?
            .map_err(|e| {
                ConnectError::other(Status::ErrConnect, format!("sending the auth message: {e}"))
            })?;
        let reply = next_data(ws, deadline, "auth reply", false, &self.probe)
            .await?
            .into_data();
        let mut first_is_pong = false;
        codec::parse_for(self.probe.client, &reply, |item| {
            if out.is_empty() {
                first_is_pong = matches!(item, Incoming::Pong { .. });
            }
            out.push(item);
        });
        if !first_is_pong {
            out.clear();
            return Err(fail_handshake(
                ws,
                CloseCode::Protocol,
                Status::ErrProtocol,
                "the auth reply was not a pong",
            )
            .await);
        }
        Ok(())
    }
}

impl Dialect for Rwws {
    async fn open(&mut self) -> Result<Opened, ConnectError> {
        let mut ws =
            transport::connect(&self.cfg, &self.tls, &self.cfg.url, &[], &self.probe).await?;
        let mut early = Vec::new();
        self.handshake(&mut ws, &mut early).await?;
        Ok(Opened {
            ws,
            resume_attempted: false,
            early,
        })
    }

    fn decode(&mut self, msg: Message, out: &mut dyn FnMut(Incoming)) -> Result<(), Error> {
        match msg {
            Message::Binary(data) => {
                stats::add(&self.probe.counters.payload_bytes_in, data.len() as u64);
                codec::parse_for(self.probe.client, &data, out)
            }
            // Spec §2.1: after the hello, text frames carry nothing; log and ignore.
            Message::Text(_) => tlog!(
                self.probe.client,
                Debug,
                "rwws",
                "ignoring a text frame from the server"
            ),
            _ => {}
        }
        Ok(())
    }

    fn ping(&mut self, _id: i64) -> (Message, i64) {
        (Message::binary(Bytes::from_static(&[codec::PING])), 0)
    }

    fn policy(&self, status: Status, close_code: u16) -> Policy {
        match close_code {
            3001 | 3002 | 3004 => Policy::Stop,
            // The server saw our pings stall (machine sleep, blocked runtime): come back now
            // (once: a 3003 again before the connection proved stable backs off).
            3003 => Policy::Immediately,
            // An HTTP 401 at the upgrade (or a proxy's refusal, reported as 407) refuses the
            // credentials of the app's headers, or asks for some: retrying cannot help (§4).
            _ => match status {
                Status::ErrConfig
                | Status::ErrUnauthorized
                | Status::ErrVersionMismatch
                | Status::ErrKeyRevoked
                | Status::ErrCertificate => Policy::Stop,
                _ => Policy::Backoff,
            },
        }
    }

    /// §2.7: "log it loudly".
    fn close_note(&self, close_code: u16) -> Option<&'static str> {
        (close_code == 3003).then_some(
            "the server saw this client's pings stall (was the machine asleep, the runtime \
             blocked, or the pings held behind a large send?)",
        )
    }

    /// §4: the backoff resets once a session stayed authenticated for 60 s; a server that
    /// accepts and drops every connection (each answers the first ping) must see it grow.
    fn stable_after(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn final_close(&self, _intent: CloseIntent) -> (u16, &'static str) {
        // rwws has no resume: both intents are a normal close.
        (1000, "client closed")
    }

    fn timeout_close(&self) -> (u16, &'static str) {
        (1000, "pong timeout")
    }

    fn close_status(&self, code: u16) -> Status {
        close_status(code)
    }

    fn first_ping_delay(&self, _interval: Duration) -> Duration {
        // Spec §2.7: ping right after auth, then at the interval.
        Duration::ZERO
    }
}
