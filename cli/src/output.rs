//! How events are printed: data on stdout as JSON lines, connection state on stderr.

use std::io::Write;

use tether::{Event, EventKind, Status};

/// A JSON string literal.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Short machine name of a status (`ok`, `remote`, `request_timeout`, ...).
pub fn status_name(s: Status) -> String {
    let name = format!("{s:?}");
    let name = name.strip_prefix("Err").unwrap_or(&name);
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The event's data as JSON: raw when it is JSON, else a string.
fn data_json(ev: &Event) -> String {
    let raw = ev.data();
    if !raw.is_empty() && serde_json::from_slice::<&serde_json::value::RawValue>(raw).is_ok() {
        String::from_utf8_lossy(raw).into_owned()
    } else {
        q(&String::from_utf8_lossy(raw))
    }
}

/// Writes a state line to stderr: prose, or the JSON form with --json-status.
pub fn status(prose: &str, json: impl FnOnce() -> String) {
    let mut e = std::io::stderr().lock();
    if JSON_STATUS.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = writeln!(e, "{}", json());
    } else {
        let _ = writeln!(e, "{prose}");
    }
}

static JSON_STATUS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Chooses the stderr format (--json-status).
pub fn set_json_status(on: bool) {
    JSON_STATUS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Prints one event where it belongs.
pub fn emit(ev: &Event) {
    match ev.kind() {
        EventKind::Message => out(&format!(
            r#"{{"type":"message","id":{},"command":{},"data":{}}}"#,
            ev.request_id(),
            q(ev.command()),
            data_json(ev)
        )),
        EventKind::Response => out(&format!(
            r#"{{"type":"response","request_id":{},"status":{},"data":{}}}"#,
            ev.request_id(),
            q(&status_name(ev.status())),
            data_json(ev)
        )),
        EventKind::Packet => out(&format!(r#"{{"type":"packet","hex":"{}"}}"#, hex(ev))),
        // On stdout, like the packets typed: what was never sent, to send again.
        EventKind::Unsent => out(&format!(r#"{{"type":"unsent","hex":"{}"}}"#, hex(ev))),
        EventKind::Connecting => status(&format!("connecting (attempt {})", ev.attempt()), || {
            format!(r#"{{"type":"connecting","attempt":{}}}"#, ev.attempt())
        }),
        EventKind::Connected => status(
            &format!(
                "connected{}",
                if ev.resume_attempted() {
                    ", resuming"
                } else {
                    ""
                }
            ),
            || {
                format!(
                    r#"{{"type":"connected","attempt":{},"resume_attempted":{}}}"#,
                    ev.attempt(),
                    ev.resume_attempted()
                )
            },
        ),
        EventKind::Resumed => {
            let ok = ev.resume_outcome() == Some(tether::ResumeOutcome::Succeeded);
            let prose = if ok {
                "resume succeeded: every missed event is replayed"
            } else {
                "resume failed: the server's state was reset"
            };
            status(prose, || {
                format!(
                    r#"{{"type":"resumed","outcome":"{}"}}"#,
                    if ok { "succeeded" } else { "reset" }
                )
            })
        }
        // The token itself never goes to a terminal.
        EventKind::TokenRenewed => {
            status("token renewed", || r#"{"type":"token_renewed"}"#.to_owned())
        }
        EventKind::Pong => {
            let rtt = ev.rtt().map(|d| d.as_secs_f64() * 1000.0);
            let mut prose = match rtt {
                Some(ms) => format!("pong: rtt {ms:.2} ms"),
                None => "pong".to_owned(),
            };
            if ev.acked_id() != 0 {
                prose.push_str(&format!(", acknowledged event {}", ev.acked_id()));
            }
            if ev.server_time_ms() != 0 {
                prose.push_str(&format!(", server time {} ms", ev.server_time_ms()));
            }
            status(&prose, || {
                format!(
                    r#"{{"type":"pong","rtt_ms":{},"acked_id":{},"server_time_ms":{}}}"#,
                    rtt.map_or("null".into(), |v| format!("{v:.3}")),
                    ev.acked_id(),
                    ev.server_time_ms()
                )
            })
        }
        EventKind::Disconnected => {
            let reason = String::from_utf8_lossy(ev.data());
            let next = match ev.retry_in() {
                Some(d) => format!("reconnecting in {} ms", d.as_millis()),
                None if ev.status() == Status::Ok => "closed by us".to_owned(),
                None => "giving up".to_owned(),
            };
            status(
                &format!(
                    "disconnected: {} (code {}): {reason}; {next}",
                    ev.status(),
                    ev.close_code()
                ),
                || {
                    format!(
                        r#"{{"type":"disconnected","status":{},"code":{},"reason":{},"retry_in_ms":{}}}"#,
                        q(&status_name(ev.status())),
                        ev.close_code(),
                        q(&reason),
                        ev.retry_in()
                            .map_or("null".into(), |d| d.as_millis().to_string())
                    )
                },
            )
        }
        EventKind::SendReady => status("send buffer has room again", || {
            r#"{"type":"send_ready"}"#.to_owned()
        }),
        EventKind::Closed => status("closed", || r#"{"type":"closed"}"#.to_owned()),
        // A kind newer than this binary: say so rather than drop it.
        other => status(&format!("event {other:?}"), || {
            format!(r#"{{"type":"unknown","kind":{}}}"#, other as u32)
        }),
    }
}

/// The event's data as lowercase hex, the form packets are typed in.
fn hex(ev: &Event) -> String {
    ev.data().iter().map(|b| format!("{b:02x}")).collect()
}

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// How much of the received data compression kept off the wire, as a percentage.
pub fn saved_percent(s: &tether::Stats) -> f64 {
    if s.payload_bytes_in == 0 {
        return 0.0;
    }
    100.0 * (1.0 - s.wire_bytes_in as f64 / s.payload_bytes_in as f64)
}

/// Writes the client's statistics to stderr (`--stats`): prose, or one JSON object.
pub fn stats(s: &tether::Stats) {
    let ms = |d: Option<std::time::Duration>| d.map_or(-1.0, |d| d.as_secs_f64() * 1000.0);
    status(
        &format!(
            "stats: {} attempts, {} connections, resumes {} ok / {} reset; in {} wire bytes for \
             {} payload bytes ({:.1}% saved), out {} bytes; {} messages, {} events; requests {} \
             sent, {} in flight, {} timed out; {} bytes unsent; last rtt {:.2} ms",
            s.connect_attempts,
            s.connections,
            s.resumes_succeeded,
            s.resumes_reset,
            s.wire_bytes_in,
            s.payload_bytes_in,
            saved_percent(s),
            s.wire_bytes_out,
            s.messages_received,
            s.events_received,
            s.requests_sent,
            s.requests_in_flight,
            s.requests_timed_out,
            s.unsent_bytes,
            ms(s.last_rtt),
        ),
        || {
            format!(
                r#"{{"type":"stats","connect_attempts":{},"connections":{},"resumes_succeeded":{},"resumes_reset":{},"wire_bytes_in":{},"wire_bytes_out":{},"payload_bytes_in":{},"messages_received":{},"events_received":{},"requests_sent":{},"requests_in_flight":{},"requests_timed_out":{},"queued_events":{},"unsent_bytes":{},"last_rtt_ms":{}}}"#,
                s.connect_attempts,
                s.connections,
                s.resumes_succeeded,
                s.resumes_reset,
                s.wire_bytes_in,
                s.wire_bytes_out,
                s.payload_bytes_in,
                s.messages_received,
                s.events_received,
                s.requests_sent,
                s.requests_in_flight,
                s.requests_timed_out,
                s.queued_events,
                s.unsent_bytes,
                ms(s.last_rtt),
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names() {
        assert_eq!(status_name(Status::Ok), "ok");
        assert_eq!(status_name(Status::ErrRequestTimeout), "request_timeout");
        assert_eq!(status_name(Status::ErrRemote), "remote");
    }
}
