//! The bad-input corpus. One table of named cases of server misbehaviour
//! (both dialects) and one of API misuse; each case states its input, the status the app sees
//! and the recovery, and the test asserts all three, that the client is still usable
//! afterwards, and that it lets go of every connection when closed (nothing leaks, nothing
//! hangs: every wait is bounded). Cases are listed in tests/RELIABILITY.md §2.
//!
//! Spec sections: gomuks-rpc.md §1.2 (auth), §3 (envelope), §4.2 (events), §5 (deflate),
//! §9 (close codes), §16 (reconnect); rwws-binary.md §2 (framing, hello, pong), §4 (close
//! codes and the reconnect table); ARCHITECTURE.md "Errors".

mod common;
#[path = "common/script.rs"]
mod script;

use std::time::Duration;

use futures_util::FutureExt;

use common::*;
use script::{
    close_frame, deflate_sync, frame, frame_with, Script, ScriptServer, Step, BINARY, CLOSE, PING,
    TEXT,
};
use tether::{Client, Config, ConfigBuilder, EventKind, Pop, Protocol, Status};
use tether_testkit::gomuks::{Backend, BackendConfig, Fault};
use tether_testkit::rwws::{Hello, RwwsFault, DEFAULT_KEY};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dialect {
    /// gomuks with `compress=1` (binary frames, raw deflate).
    Gz,
    /// gomuks without compression (text frames).
    Plain,
    Rwws,
}

/// Where the misbehaviour comes from.
enum Server {
    /// The testkit backend, configured by `setup`, doing `act` once the client is connected.
    Testkit(fn(&mut BackendConfig), Act),
    /// The scripted server in tests/common/script.rs.
    Script(Script),
}

/// What the testkit does to an established connection.
enum Act {
    Nothing,
    Fault(Fault),
    RwwsFault(RwwsFault),
    Close(u16),
    Cut,
    Restart,
    /// Before the client starts: refuse this many upgrades with 503.
    RejectUpgrades(u64),
    RevokeKey,
}

/// How the client must come out of it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Recovery {
    /// The connection stays up: no DISCONNECTED, and the client keeps working.
    StaysUp,
    /// DISCONNECTED with a retry, then a new connection that works.
    Reconnects,
    /// DISCONNECTED without a retry, then CLOSED.
    Stops,
}

/// What the app sees first.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// DISCONNECTED with this status (and close code, if given).
    Drop(Status, Option<u16>),
    /// An event of this kind (StaysUp cases), e.g. PACKET for an rwws packet nobody consumes.
    Event(EventKind),
    /// Nothing but the normal traffic.
    Normal,
}

struct Case {
    name: &'static str,
    dialect: Dialect,
    server: Server,
    /// Client tweaks beyond the fast defaults (timeouts, size cap).
    tweak: fn(ConfigBuilder) -> ConfigBuilder,
    expect: Expect,
    recovery: Recovery,
}

fn same(c: ConfigBuilder) -> ConfigBuilder {
    c
}
fn short_timeouts(c: ConfigBuilder) -> ConfigBuilder {
    c.connect_timeout(ms(300))
        .ping_interval(ms(200))
        .receive_timeout(ms(600))
}
fn cap_1m(c: ConfigBuilder) -> ConfigBuilder {
    c.max_message_bytes(1 << 20)
}
fn no_cfg(_: &mut BackendConfig) {}

fn tk(act: Act) -> Server {
    Server::Testkit(no_cfg, act)
}

fn up(steps: Vec<Step>) -> Server {
    Server::Script(Script::Upgrade(steps))
}

/// The rwws hello, then `step` as the answer to the client's auth message.
fn after_hello(step: Vec<u8>) -> Server {
    up(vec![Step::Raw(frame(BINARY, b"ms")), Step::Raw(step)])
}

/// One scripted text or binary message, then the socket stays open.
fn msg(opcode: u8, payload: &[u8]) -> Server {
    up(vec![Step::Raw(frame(opcode, payload))])
}

/// A compressed gomuks message (one deflate batch) carrying `line`.
fn gz(line: &[u8]) -> Server {
    msg(BINARY, &deflate_sync(line))
}

fn case(
    name: &'static str,
    dialect: Dialect,
    server: Server,
    expect: Expect,
    recovery: Recovery,
) -> Case {
    Case {
        name,
        dialect,
        server,
        tweak: same,
        expect,
        recovery,
    }
}

fn drop_with(s: Status) -> Expect {
    Expect::Drop(s, None)
}
fn close_with(s: Status, code: u16) -> Expect {
    Expect::Drop(s, Some(code))
}

/// The server-misbehaviour corpus.
fn server_cases() -> Vec<Case> {
    use Dialect::*;
    use Recovery::*;
    let bomb = {
        // 65 MiB of spaces inflate from a few KiB: the default 64 MiB cap must stop it.
        let zeros = vec![b' '; 65 << 20];
        deflate_sync(&zeros)
    };
    let mut cases = vec![
        // --- gomuks, testkit faults (ARCHITECTURE.md "Errors", gomuks-rpc.md §3, §5) ---
        case(
            "gz invalid deflate",
            Gz,
            tk(Act::Fault(Fault::InvalidDeflate)),
            drop_with(Status::ErrInflate),
            Reconnects,
        ),
        case(
            "gz invalid JSON",
            Gz,
            tk(Act::Fault(Fault::InvalidJson)),
            drop_with(Status::ErrJson),
            Reconnects,
        ),
        case(
            "plain invalid JSON",
            Plain,
            tk(Act::Fault(Fault::InvalidJson)),
            drop_with(Status::ErrJson),
            Reconnects,
        ),
        case(
            "gz invalid UTF-8",
            Gz,
            tk(Act::Fault(Fault::InvalidUtf8)),
            drop_with(Status::ErrJson),
            Reconnects,
        ),
        case(
            "plain invalid UTF-8",
            Plain,
            tk(Act::Fault(Fault::InvalidUtf8)),
            drop_with(Status::ErrJson),
            Reconnects,
        ),
        case(
            "gz envelope without command",
            Gz,
            tk(Act::Fault(Fault::MissingFields)),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "plain envelope without command",
            Plain,
            tk(Act::Fault(Fault::MissingFields)),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "text frame in compressed mode",
            Gz,
            tk(Act::Fault(Fault::WrongFrameType)),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "binary frame in uncompressed mode",
            Plain,
            tk(Act::Fault(Fault::WrongFrameType)),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        Case {
            tweak: cap_1m,
            ..case(
                "gz oversize event (3 MiB, cap 1 MiB)",
                Gz,
                tk(Act::Fault(Fault::Oversize(3 << 20))),
                drop_with(Status::ErrMessageTooLarge),
                Reconnects,
            )
        },
        Case {
            tweak: cap_1m,
            ..case(
                "plain oversize frame (3 MiB, cap 1 MiB)",
                Plain,
                tk(Act::Fault(Fault::Oversize(3 << 20))),
                drop_with(Status::ErrMessageTooLarge),
                Reconnects,
            )
        },
        Case {
            tweak: cap_1m,
            ..case(
                "gz decompression bomb (64 MiB)",
                Gz,
                tk(Act::Fault(Fault::Bomb(64 << 20))),
                drop_with(Status::ErrMessageTooLarge),
                Reconnects,
            )
        },
        case(
            "unknown event command",
            Gz,
            tk(Act::Fault(Fault::UnknownCommandEvent)),
            Expect::Normal,
            StaysUp,
        ),
        case(
            "reply to an unknown request id",
            Gz,
            tk(Act::Fault(Fault::ResponseUnknownId)),
            Expect::Normal,
            StaysUp,
        ),
        case(
            "gomuks cut without close frame",
            Gz,
            tk(Act::Cut),
            drop_with(Status::ErrConnect),
            Reconnects,
        ),
        case(
            "gomuks backend restart (new run_id)",
            Gz,
            tk(Act::Restart),
            drop_with(Status::ErrConnect),
            Reconnects,
        ),
        case(
            "gomuks HTTP 503 at upgrade",
            Gz,
            tk(Act::RejectUpgrades(1)),
            close_with(Status::ErrHttp, 503),
            Reconnects,
        ),
        // --- gomuks, scripted envelopes (§3.1-§3.3) ---
        case(
            "plain envelope is a JSON array",
            Plain,
            msg(TEXT, b"[1,2,3]\n"),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "plain envelope is a bare string",
            Plain,
            msg(TEXT, b"\"hello\"\n"),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "plain command is a number",
            Plain,
            msg(TEXT, br#"{"command":5,"request_id":0,"data":{}}"#),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "plain request_id is a string",
            Plain,
            msg(TEXT, br#"{"command":"typing","request_id":"7","data":{}}"#),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "plain request_id is a float",
            Plain,
            msg(TEXT, br#"{"command":"typing","request_id":1.5,"data":{}}"#),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "plain trailing garbage after the envelope",
            Plain,
            msg(TEXT, br#"{"command":"typing","request_id":0,"data":{}} x"#),
            drop_with(Status::ErrJson),
            Reconnects,
        ),
        case(
            "plain empty text frame",
            Plain,
            msg(TEXT, b""),
            drop_with(Status::ErrJson),
            Reconnects,
        ),
        case(
            "gz truncated deflate then close",
            Gz,
            up(vec![
                Step::Raw(frame(
                    BINARY,
                    &deflate_sync(br#"{"command":"typing","request_id":0,"data":{}}"#)[..10],
                )),
                Step::Raw(close_frame(1000, "bye")),
            ]),
            close_with(Status::ErrRemoteClosed, 1000),
            Reconnects,
        ),
        case(
            "gz truncated deflate then cut",
            Gz,
            up(vec![
                Step::Raw(frame(
                    BINARY,
                    &deflate_sync(br#"{"command":"typing","request_id":0,"data":{}}"#)[..10],
                )),
                Step::Drop,
            ]),
            drop_with(Status::ErrConnect),
            Reconnects,
        ),
        case(
            "gz decompression bomb (65 MiB, default cap)",
            Gz,
            msg(BINARY, &bomb),
            drop_with(Status::ErrMessageTooLarge),
            Reconnects,
        ),
        case(
            "gz deflate stream with a final block",
            Gz,
            msg(BINARY, &[0x03, 0x00, 0x03, 0x00]),
            drop_with(Status::ErrInflate),
            Reconnects,
        ),
        case(
            "gz envelope is a JSON array",
            Gz,
            gz(b"[1,2,3]\n"),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "gz request_id is a string",
            Gz,
            gz(b"{\"command\":\"typing\",\"request_id\":\"7\",\"data\":{}}\n"),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        // --- websocket framing violations (RFC 6455, both dialects use it) ---
        case(
            "masked frame from the server",
            Plain,
            up(vec![Step::Raw(frame_with(0x81, b"{}", Some([1, 2, 3, 4])))]),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "reserved opcode 0x3",
            Plain,
            up(vec![Step::Raw(frame_with(0x83, b"x", None))]),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "RSV1 set without an extension",
            Plain,
            up(vec![Step::Raw(frame_with(0xC1, b"{}", None))]),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "fragmented control frame",
            Plain,
            up(vec![Step::Raw(frame_with(0x09, b"p", None))]),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "continuation without a start",
            Plain,
            up(vec![Step::Raw(frame_with(0x80, b"x", None))]),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "text frame with invalid UTF-8",
            Plain,
            msg(TEXT, b"{\"command\":\"\xff\xfe\"}"),
            drop_with(Status::ErrJson),
            Reconnects,
        ),
        case(
            "server ping frame is answered",
            Plain,
            msg(PING, b"hi"),
            Expect::Normal,
            StaysUp,
        ),
        case(
            "close frame without a code",
            Plain,
            up(vec![Step::Raw(frame(0x8, b""))]),
            close_with(Status::ErrRemoteClosed, 1005),
            Reconnects,
        ),
        case(
            "close frame with invalid code 999",
            Plain,
            up(vec![Step::Raw(close_frame(999, "bad"))]),
            close_with(Status::ErrRemoteClosed, 1002),
            Reconnects,
        ),
        case(
            "close frame with a 1-byte payload",
            Plain,
            up(vec![Step::Raw(frame(0x8, b"\x03"))]),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        // --- upgrade and transport misbehaviour (§16 step 2) ---
        case(
            "HTTP 400 at upgrade",
            Plain,
            Server::Script(Script::Http(400)),
            close_with(Status::ErrHttp, 400),
            Reconnects,
        ),
        case(
            "HTTP 404 at upgrade",
            Plain,
            Server::Script(Script::Http(404)),
            close_with(Status::ErrHttp, 404),
            Reconnects,
        ),
        case(
            "HTTP 500 at upgrade",
            Plain,
            Server::Script(Script::Http(500)),
            close_with(Status::ErrHttp, 500),
            Reconnects,
        ),
        case(
            "HTTP 502 at upgrade",
            Plain,
            Server::Script(Script::Http(502)),
            close_with(Status::ErrHttp, 502),
            Reconnects,
        ),
        case(
            "HTTP 200 instead of 101",
            Plain,
            Server::Script(Script::Http(200)),
            close_with(Status::ErrHttp, 200),
            Reconnects,
        ),
        case(
            "HTTP 403 at upgrade",
            Plain,
            Server::Script(Script::Http(403)),
            close_with(Status::ErrForbidden, 403),
            Stops,
        ),
        case(
            "rwws HTTP 401 at upgrade",
            Rwws,
            Server::Script(Script::Http(401)),
            close_with(Status::ErrUnauthorized, 401),
            Stops,
        ),
        case(
            "rwws HTTP 503 at upgrade",
            Rwws,
            Server::Script(Script::Http(503)),
            close_with(Status::ErrHttp, 503),
            Reconnects,
        ),
        case(
            "not HTTP at all",
            Plain,
            Server::Script(Script::NotHttp),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        Case {
            tweak: short_timeouts,
            ..case(
                "slowloris upgrade",
                Plain,
                Server::Script(Script::Slowloris),
                drop_with(Status::ErrConnect),
                Reconnects,
            )
        },
        Case {
            tweak: short_timeouts,
            ..case(
                "server never answers the upgrade",
                Plain,
                Server::Script(Script::Silent),
                drop_with(Status::ErrConnect),
                Reconnects,
            )
        },
        Case {
            tweak: short_timeouts,
            ..case(
                "server silent after the upgrade",
                Plain,
                up(vec![]),
                drop_with(Status::ErrReceiveTimeout),
                Reconnects,
            )
        },
        Case {
            tweak: short_timeouts,
            ..case(
                "rwws server never answers the upgrade",
                Rwws,
                Server::Script(Script::Silent),
                drop_with(Status::ErrConnect),
                Reconnects,
            )
        },
        // --- rwws (rwws-binary.md §2, §4) ---
        case(
            "rwws unknown packet",
            Rwws,
            tk(Act::RwwsFault(RwwsFault::UnknownPacket)),
            Expect::Event(EventKind::Packet),
            StaysUp,
        ),
        case(
            "rwws truncated pong",
            Rwws,
            tk(Act::RwwsFault(RwwsFault::TruncatedPong)),
            Expect::Event(EventKind::Packet),
            StaysUp,
        ),
        case(
            "rwws two pongs in one message",
            Rwws,
            tk(Act::RwwsFault(RwwsFault::DoublePong)),
            Expect::Event(EventKind::Pong),
            StaysUp,
        ),
        case(
            "rwws little-endian pong time",
            Rwws,
            tk(Act::RwwsFault(RwwsFault::LittleEndianPong)),
            Expect::Event(EventKind::Pong),
            StaysUp,
        ),
        case(
            "rwws text frame after auth",
            Rwws,
            tk(Act::RwwsFault(RwwsFault::TextFrame)),
            Expect::Normal,
            StaysUp,
        ),
        case(
            "rwws oversize message (128 KiB, cap 64 KiB)",
            Rwws,
            tk(Act::RwwsFault(RwwsFault::Oversize(128 << 10))),
            drop_with(Status::ErrMessageTooLarge),
            Reconnects,
        ),
        Case {
            tweak: |c| c.ping_interval(ms(100)).receive_timeout(ms(500)),
            ..case(
                "rwws server stops answering pings",
                Rwws,
                tk(Act::RwwsFault(RwwsFault::Mute)),
                drop_with(Status::ErrReceiveTimeout),
                Reconnects,
            )
        },
        case(
            "rwws wrong hello",
            Rwws,
            Server::Testkit(|c| c.rwws.hello = Hello::Wrong, Act::Nothing),
            drop_with(Status::ErrConfig),
            Stops,
        ),
        Case {
            tweak: short_timeouts,
            ..case(
                "rwws missing hello",
                Rwws,
                Server::Testkit(|c| c.rwws.hello = Hello::Silent, Act::Nothing),
                drop_with(Status::ErrProtocol),
                Reconnects,
            )
        },
        Case {
            tweak: short_timeouts,
            ..case(
                "rwws no reply to auth",
                Rwws,
                Server::Testkit(|c| c.rwws.silent_auth = true, Act::Nothing),
                drop_with(Status::ErrProtocol),
                Reconnects,
            )
        },
        Case {
            tweak: short_timeouts,
            // §2.4: the wait for the auth reply is bounded once, not restarted by each frame
            // that is not the reply.
            ..case(
                "rwws text frames instead of the auth reply",
                Rwws,
                up(std::iter::once(Step::Raw(frame(BINARY, b"ms")))
                    .chain((0..10).flat_map(|_| {
                        [
                            Step::Sleep(ms(200)),
                            Step::Raw(frame(TEXT, b"not the reply")),
                        ]
                    }))
                    .collect()),
                drop_with(Status::ErrProtocol),
                Reconnects,
            )
        },
        case(
            "rwws hello as text frame",
            Rwws,
            Server::Testkit(|c| c.rwws.hello = Hello::Text, Act::Nothing),
            Expect::Normal,
            StaysUp,
        ),
        case(
            "rwws key refused (3001)",
            Rwws,
            Server::Testkit(|c| c.rwws.keys = vec![b"other".to_vec()], Act::Nothing),
            close_with(Status::ErrUnauthorized, 3001),
            Stops,
        ),
        case(
            "rwws key revoked (3004)",
            Rwws,
            tk(Act::RevokeKey),
            close_with(Status::ErrKeyRevoked, 3004),
            Stops,
        ),
        case(
            "rwws cut without close frame",
            Rwws,
            tk(Act::Cut),
            drop_with(Status::ErrConnect),
            Reconnects,
        ),
        case(
            "rwws hello then binary garbage",
            Rwws,
            after_hello(frame(BINARY, b"\x7f\x7f")),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "rwws pong before the hello",
            Rwws,
            msg(BINARY, &[0, 0, 0, 1, 0x91, 0x75, 0xaa, 0x98, 0]),
            drop_with(Status::ErrConfig),
            Stops,
        ),
        case(
            "rwws empty auth reply",
            Rwws,
            after_hello(frame(BINARY, b"")),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "rwws cut-off pong as the auth reply",
            Rwws,
            after_hello(frame(BINARY, &[0, 0, 0, 1])),
            drop_with(Status::ErrProtocol),
            Reconnects,
        ),
        case(
            "rwws version mismatch (3002) during the handshake",
            Rwws,
            after_hello(close_frame(3002, "version")),
            close_with(Status::ErrVersionMismatch, 3002),
            Stops,
        ),
        case(
            "rwws key revoked (3004) during the handshake",
            Rwws,
            after_hello(close_frame(3004, "revoked")),
            close_with(Status::ErrKeyRevoked, 3004),
            Stops,
        ),
        case(
            "rwws ping lapsed (3003) during the handshake",
            Rwws,
            after_hello(close_frame(3003, "timeout")),
            close_with(Status::ErrRemoteClosed, 3003),
            Reconnects,
        ),
        case(
            "rwws 3005 during the handshake",
            Rwws,
            after_hello(close_frame(3005, "busy")),
            close_with(Status::ErrRemoteClosed, 3005),
            Reconnects,
        ),
        case(
            "rwws close without a code (1005) during the handshake",
            Rwws,
            after_hello(frame(CLOSE, b"")),
            close_with(Status::ErrRemoteClosed, 1005),
            Reconnects,
        ),
        case(
            "rwws hello with a trailing byte",
            Rwws,
            msg(BINARY, b"ms\0"),
            drop_with(Status::ErrConfig),
            Stops,
        ),
    ];
    // Every close code a server may send (gomuks-rpc.md §9, rwws-binary.md §4).
    for &(code, name) in &[
        (1000u16, "gomuks close 1000"),
        (1001, "gomuks close 1001"),
        (1002, "gomuks close 1002"),
        (1003, "gomuks close 1003"),
        (1008, "gomuks close 1008"),
        (1011, "gomuks close 1011"),
        (1012, "gomuks close 1012"),
        (4001, "gomuks close 4001 (event queue full)"),
        (4002, "gomuks close 4002 (ping timeout)"),
        (4999, "gomuks close 4999 (unknown)"),
    ] {
        cases.push(case(
            name,
            Gz,
            tk(Act::Close(code)),
            close_with(Status::ErrRemoteClosed, code),
            Reconnects,
        ));
    }
    for &(code, name, status, rec) in &[
        (
            1000u16,
            "rwws close 1000",
            Status::ErrRemoteClosed,
            Reconnects,
        ),
        (1011, "rwws close 1011", Status::ErrRemoteClosed, Reconnects),
        (3000, "rwws close 3000", Status::ErrRemoteClosed, Reconnects),
        (
            3002,
            "rwws close 3002 (version)",
            Status::ErrVersionMismatch,
            Stops,
        ),
        (
            3003,
            "rwws close 3003 (ping lapsed)",
            Status::ErrRemoteClosed,
            Reconnects,
        ),
        (3005, "rwws close 3005", Status::ErrRemoteClosed, Reconnects),
        (
            4321,
            "rwws close 4321 (unknown)",
            Status::ErrRemoteClosed,
            Reconnects,
        ),
    ] {
        cases.push(case(
            name,
            Rwws,
            tk(Act::Close(code)),
            close_with(status, code),
            rec,
        ));
    }
    cases
}

/// The client config for a case at `url`.
fn config(
    url: &str,
    token: &str,
    dialect: Dialect,
    tweak: fn(ConfigBuilder) -> ConfigBuilder,
) -> Config {
    let b = Config::builder(url)
        .reconnect_backoff(ms(20), ms(200))
        .connect_timeout(ms(1000));
    let b = match dialect {
        Dialect::Gz => b.token(token),
        Dialect::Plain => b.token(token).compression(false),
        Dialect::Rwws => b.protocol(Protocol::Rwws).token(DEFAULT_KEY),
    };
    tweak(b).build().expect("valid config")
}

/// The client still works: gomuks answers a request; rwws answers a ping.
async fn assert_usable(c: &Client, dialect: Dialect) -> Result<(), String> {
    if dialect == Dialect::Rwws {
        until_kind(c, EventKind::Pong).await;
        return Ok(());
    }
    let id = c
        .request("echo", br#"{"still":"usable"}"#)
        .map_err(|e| e.to_string())?;
    let (r, _) = until(c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    if r.status() != Status::Ok {
        return Err(format!("echo after recovery: {:?}", r.status()));
    }
    Ok(())
}

/// The connected signal for a dialect: gomuks' `run_id` message, rwws' auth PONG.
async fn until_up(c: &Client, dialect: Dialect) {
    match dialect {
        Dialect::Rwws => until_kind(c, EventKind::Pong).await,
        _ => until_command(c, "run_id").await,
    };
}

async fn run_case(case: Case) -> Result<(), String> {
    let name = case.name;
    let mut backend: Option<Backend> = None;
    let mut script: Option<ScriptServer> = None;
    let persistent = matches!(case.server, Server::Testkit(_, Act::Nothing));
    let c = match case.server {
        Server::Testkit(setup, act) => {
            let b = backend_with(setup).await;
            if let Act::RejectUpgrades(n) = act {
                b.reject_upgrades(n);
            }
            let c = start(config(&b.http_url(), &b.token(), case.dialect, case.tweak));
            let waits_for_up = matches!(
                act,
                Act::Fault(_)
                    | Act::RwwsFault(_)
                    | Act::Close(_)
                    | Act::Cut
                    | Act::Restart
                    | Act::RevokeKey
            );
            if waits_for_up {
                until_up(&c, case.dialect).await;
            }
            match act {
                Act::Fault(f) => b.inject(f),
                Act::RwwsFault(f) => b.rwws().inject(f),
                Act::Close(code) if case.dialect == Dialect::Rwws => {
                    b.rwws().close_all(code, "corpus")
                }
                Act::Close(code) => b.close_all(code, "corpus"),
                Act::Cut if case.dialect == Dialect::Rwws => b.rwws().cut_all(),
                Act::Cut => b.cut_all(),
                Act::Restart => b.restart(),
                Act::RevokeKey => {
                    use base64::Engine;
                    let key = base64::engine::general_purpose::STANDARD
                        .decode(DEFAULT_KEY)
                        .unwrap();
                    b.rwws().revoke(&key);
                }
                Act::Nothing | Act::RejectUpgrades(_) => {}
            }
            backend = Some(b);
            c
        }
        Server::Script(s) => {
            let srv = ScriptServer::start(s).await;
            let c = start(config(
                &srv.http_url(),
                "scripted-token",
                case.dialect,
                case.tweak,
            ));
            script = Some(srv);
            c
        }
    };

    match (case.expect, case.recovery) {
        (Expect::Drop(status, code), rec) => {
            let (d, seen) = until_kind(&c, EventKind::Disconnected).await;
            let why = String::from_utf8_lossy(d.data()).into_owned();
            if d.status() != status || code.is_some_and(|k| k != d.close_code()) {
                return Err(format!(
                    "{name}: got {:?} code {} ({why}), want {status:?} {code:?}; before: {:?}",
                    d.status(),
                    d.close_code(),
                    kinds(&seen)
                ));
            }
            match rec {
                Recovery::Stops => {
                    if d.retry_in().is_some() {
                        return Err(format!("{name}: retries but should stop"));
                    }
                    let (last, _) = until_kind(&c, EventKind::Closed).await;
                    drop(last);
                    if !matches!(c.poll(Some(Duration::ZERO)), Pop::Finished) {
                        return Err(format!("{name}: events after CLOSED"));
                    }
                    // Stopped for good: a request is refused with a status, not queued forever.
                    let refused = match case.dialect {
                        Dialect::Rwws => c.send_packet(b"\x00").map(|_| ()),
                        _ => c.request("echo", b"{}").map(|_| ()),
                    };
                    if refused.is_ok() {
                        return Err(format!("{name}: accepted a request after stopping"));
                    }
                }
                Recovery::Reconnects => {
                    if d.retry_in().is_none() {
                        return Err(format!("{name}: stops but should retry ({why})"));
                    }
                    if persistent {
                        // The server keeps misbehaving: a second attempt is the recovery.
                        until(&c, |e| {
                            e.kind() == EventKind::Connecting && e.attempt() >= 2
                        })
                        .await;
                    } else if let Some(srv) = &script {
                        // A scripted server never serves a good session: a second attempt
                        // reaching it is the recovery.
                        let end = tokio::time::Instant::now() + WAIT;
                        while srv.accepted() < 2 {
                            if tokio::time::Instant::now() > end {
                                return Err(format!("{name}: no retry reached the server"));
                            }
                            tokio::time::sleep(ms(10)).await;
                        }
                    } else {
                        until_up(&c, case.dialect).await;
                        assert_usable(&c, case.dialect).await?;
                    }
                    close_and_drain(&c).await;
                }
                Recovery::StaysUp => return Err(format!("{name}: a drop cannot stay up")),
            }
        }
        (expect, Recovery::StaysUp) => {
            if let Expect::Event(kind) = expect {
                let (_, seen) = until_kind(&c, kind).await;
                assert_no_drop_named(name, &seen)?;
            }
            if script.is_some() {
                // A scripted server answers no request: its connection simply stays up.
                tokio::time::sleep(ms(300)).await;
                let mut evs = Vec::new();
                c.drain(&mut evs, usize::MAX);
                assert_no_drop_named(name, &evs)?;
            } else {
                assert_usable(&c, case.dialect).await?;
            }
            let evs = close_and_drain(&c).await;
            assert_no_drop_named(name, &evs)?;
        }
        (e, r) => return Err(format!("{name}: bad table entry {e:?} {r:?}")),
    }
    drop(c);
    // Nothing leaks: the server sees every connection of this client end.
    if let Some(b) = &backend {
        let ok = b.wait_for(|s| s.connections == 0, WAIT).await;
        let rw_ok = {
            let end = tokio::time::Instant::now() + WAIT;
            loop {
                if b.rwws().stats().connections == 0 {
                    break true;
                }
                if tokio::time::Instant::now() > end {
                    break false;
                }
                tokio::time::sleep(ms(10)).await;
            }
        };
        if !ok || !rw_ok {
            return Err(format!("{name}: connections left open on the backend"));
        }
    }
    if let Some(s) = &script {
        if !s.wait_idle(WAIT).await {
            return Err(format!(
                "{name}: client kept a connection to the scripted server"
            ));
        }
    }
    Ok(())
}

fn assert_no_drop_named(name: &str, evs: &[tether::Event]) -> Result<(), String> {
    let drops: Vec<_> = evs
        .iter()
        .filter(|e| e.kind() == EventKind::Disconnected && e.status() != Status::Ok)
        .map(|e| format!("{:?} {}", e.status(), String::from_utf8_lossy(e.data())))
        .collect();
    if drops.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}: unexpected drop {drops:?}"))
    }
}

/// Every server-misbehaviour case, several at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_misbehaviour_corpus() {
    // CORPUS_CASE=substring runs only the matching cases (for debugging one).
    let only = std::env::var("CORPUS_CASE").unwrap_or_default();
    let cases: Vec<Case> = server_cases()
        .into_iter()
        .filter(|c| c.name.contains(&only))
        .collect();
    let total = cases.len();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "duplicate case name {}", c.name);
    }
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut set = tokio::task::JoinSet::new();
    for c in cases {
        let sem = sem.clone();
        set.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let name = c.name;
            eprintln!("case: {name}");
            let run = std::panic::AssertUnwindSafe(run_case(c)).catch_unwind();
            match tokio::time::timeout(Duration::from_secs(60), run).await {
                Ok(Ok(r)) => r,
                Ok(Err(p)) => Err(format!("{name}: {}", panic_text(&*p))),
                Err(_) => Err(format!("{name}: hung")),
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("a case task failed: {e}")),
        }
    }
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("server misbehaviour corpus: {total} cases passed");
}

/// §1.2: a login endpoint that misbehaves is a clear error on the first DISCONNECTED, never a
/// hang past the connect timeout nor a crash: silence, a closed connection mid-answer, an
/// answer that is not a token, one too big to read, and bytes that are not HTTP. The refusals
/// a server means (401, 403) are final; everything else is retried.
#[tokio::test]
async fn spec1_2_a_misbehaving_login_endpoint_is_a_clear_error() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n{{\"token\":\"{pad}\"}}",
        n = 200_012,
        pad = "x".repeat(200_000)
    );
    let big401 = format!(
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 200000\r\n\r\n{}",
        "x".repeat(200_000)
    );
    // Name, server, status, HTTP code, words of the message, retried.
    type LoginCase = (
        &'static str,
        Script,
        Status,
        Option<u16>,
        &'static str,
        bool,
    );
    let cases: Vec<LoginCase> = vec![
        (
            "silent",
            Script::Silent,
            Status::ErrConnect,
            None,
            "auth request: connected, but no answer within",
            true,
        ),
        (
            "cut mid-answer",
            Script::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"tok".to_vec()),
            Status::ErrHttp,
            Some(200),
            "auth response",
            true,
        ),
        (
            "not a token",
            Script::Answer(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nnope!".to_vec()),
            Status::ErrProtocol,
            Some(201),
            "not a token",
            true,
        ),
        (
            "too big",
            Script::Answer(big.into_bytes()),
            Status::ErrHttp,
            Some(200),
            "length limit exceeded",
            true,
        ),
        // A refusal whose page is too long or cut short is still the refusal.
        (
            "401, a page too long",
            Script::Answer(big401.into_bytes()),
            Status::ErrUnauthorized,
            Some(401),
            "HTTP 401: xxxx",
            false,
        ),
        (
            "403, a page cut short",
            Script::Answer(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\nnot you".to_vec(),
            ),
            Status::ErrForbidden,
            Some(403),
            "HTTP 403: not you",
            false,
        ),
        (
            "not HTTP",
            Script::NotHttp,
            Status::ErrHttp,
            None,
            "auth request failed",
            true,
        ),
        (
            "500",
            Script::Http(500),
            Status::ErrHttp,
            Some(500),
            "HTTP 500",
            true,
        ),
        (
            "401",
            Script::Http(401),
            Status::ErrUnauthorized,
            Some(401),
            "HTTP 401",
            false,
        ),
        (
            "403",
            Script::Http(403),
            Status::ErrForbidden,
            Some(403),
            "HTTP 403",
            false,
        ),
    ];
    for (name, script, status, code, says, retried) in cases {
        let s = ScriptServer::start(script).await;
        let c = start(
            Config::builder(&s.http_url())
                .basic_auth("tether", "tether-password")
                .connect_timeout(ms(500))
                .reconnect_backoff(ms(20), ms(200))
                .build()
                .unwrap(),
        );
        let t0 = std::time::Instant::now();
        let (d, _) = until_kind(&c, EventKind::Disconnected).await;
        let msg = String::from_utf8_lossy(d.data()).into_owned();
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{name}: {:?}",
            t0.elapsed()
        );
        assert_eq!(d.status(), status, "{name}: {msg}");
        assert_eq!(d.close_code(), code.unwrap_or(0), "{name}: {msg}");
        assert!(msg.contains(says), "{name}: {msg}");
        assert!(!msg.contains("tether-password"), "{name}: {msg}");
        assert_eq!(d.retry_in().is_some(), retried, "{name}: {msg}");
        close_and_drain(&c).await;
        assert!(
            s.wait_idle(Duration::from_secs(5)).await,
            "{name}: the login let go"
        );
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A config misuse: the builder refuses it with ErrConfig and never echoes a secret.
fn config_misuse() -> Vec<(&'static str, ConfigBuilder)> {
    let g = |u: &str| Config::builder(u);
    let r = |u: &str| Config::builder(u).protocol(Protocol::Rwws);
    vec![
        ("config: unsupported URL scheme", g("ftp://127.0.0.1/")),
        ("config: not a URL", g("not a url")),
        (
            "config: credentials in the URL",
            g("ws://user:pw@127.0.0.1/"),
        ),
        ("config: URL with an empty host", g("ws://:80/")),
        (
            "config: token with a semicolon",
            g("ws://127.0.0.1/").token("a;b"),
        ),
        ("config: empty token", g("ws://127.0.0.1/").token("")),
        (
            "config: token over 500 bytes",
            g("ws://127.0.0.1/").token(&"t".repeat(501)),
        ),
        (
            "config: receive timeout not above ping interval",
            g("ws://127.0.0.1/")
                .ping_interval(ms(500))
                .receive_timeout(ms(500)),
        ),
        (
            "config: zero ping interval",
            g("ws://127.0.0.1/").ping_interval(Duration::ZERO),
        ),
        (
            "config: header with CRLF",
            g("ws://127.0.0.1/").header("X-A\r\nX-B", "v"),
        ),
        (
            "config: unparsable CA PEM",
            g("wss://127.0.0.1/")
                .extra_ca_pem(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"),
        ),
        (
            "config: resume point without run_id",
            g("ws://127.0.0.1/").resume_state("", 5),
        ),
        ("config: rwws without a key", r("ws://127.0.0.1/")),
        (
            "config: rwws key not base64",
            r("ws://127.0.0.1/").token("not*base64*at*all"),
        ),
        (
            "config: rwws key empty after decoding",
            r("ws://127.0.0.1/").token("===="),
        ),
        (
            "config: rwws key over 127 bytes",
            r("ws://127.0.0.1/").token(&"QUFB".repeat(60)),
        ),
        (
            "config: rwws ping interval at the server's 30 s limit",
            r("ws://127.0.0.1/")
                .token(DEFAULT_KEY)
                .ping_interval(Duration::from_secs(30))
                .receive_timeout(Duration::from_secs(40)),
        ),
        (
            "config: token over plain ws:// to a non-loopback host",
            g("ws://192.0.2.1/").token("tok"),
        ),
    ]
}

/// API misuse: every bad configuration is refused with ErrConfig, and the
/// message never contains the secret it was given.
#[test]
fn api_misuse_config_corpus() {
    let cases = config_misuse();
    assert!(cases.len() >= 18);
    for (name, b) in cases {
        // Refused by build(), or at the latest by connect() before any network attempt.
        let refused = b.build().and_then(|cfg| Client::new(cfg).connect());
        match refused {
            Ok(()) => panic!("{name}: accepted"),
            Err(e) => {
                assert_eq!(e.status(), Status::ErrConfig, "{name}: {e}");
                for secret in ["QUFBQUFB", "not*base64", "a;b", "tok\""] {
                    assert!(
                        !e.to_string().contains(secret),
                        "{name}: echoes a secret: {e}"
                    );
                }
            }
        }
    }
}

/// API misuse on a live client: each call fails with its status, changes
/// nothing, and the client still answers a request afterwards (gomuks-rpc.md §3.1).
#[tokio::test]
async fn api_misuse_on_a_live_client() {
    let b = backend().await;
    let c = client(&b, |c| c);
    until_command(&c, "init_complete").await;
    let r = start(
        Config::builder(&b.http_url())
            .protocol(Protocol::Rwws)
            .token(DEFAULT_KEY)
            .build()
            .unwrap(),
    );
    until_kind(&r, EventKind::Pong).await;
    let st = |r: Result<(), tether::Error>| r.map_err(|e| e.status()).err();
    let cases: Vec<(&str, Option<Status>)> = vec![
        ("misuse: connect twice", st(c.connect())),
        (
            "misuse: empty command",
            st(c.request("", b"{}").map(|_| ())),
        ),
        (
            "misuse: request data not JSON",
            st(c.request("echo", b"{nope").map(|_| ())),
        ),
        (
            "misuse: request data invalid UTF-8",
            st(c.request("echo", b"\"\xff\"").map(|_| ())),
        ),
        ("misuse: cancel an id never issued", st(c.cancel(-5))),
        ("misuse: cancel id 0", st(c.cancel(0))),
        ("misuse: send_packet on gomuks", st(c.send_packet(b"\x00"))),
        (
            "misuse: request on rwws",
            st(r.request("echo", b"{}").map(|_| ())),
        ),
        ("misuse: empty rwws packet", st(r.send_packet(b""))),
        (
            "misuse: rwws setting id 0x00",
            st(r.send_settings(&[(0x00, b"x")])),
        ),
        (
            "misuse: rwws setting id 0xff",
            st(r.send_settings(&[(0xff, b"x")])),
        ),
    ];
    let want = [
        Status::ErrState,
        Status::ErrInvalidArgument,
        Status::ErrInvalidUtf8,
        Status::ErrInvalidUtf8,
        Status::ErrInvalidArgument,
        Status::ErrInvalidArgument,
        Status::ErrState,
        Status::ErrState,
        Status::ErrInvalidArgument,
        Status::ErrInvalidArgument,
        Status::ErrInvalidArgument,
    ];
    for ((name, got), want) in cases.iter().zip(want) {
        assert_eq!(*got, Some(want), "{name}");
    }
    // Nothing changed: both clients still work, and nothing dropped.
    let id = c.request("echo", b"{}").unwrap();
    let (resp, seen) = until(&c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    assert_eq!(resp.status(), Status::Ok);
    assert_no_drop(&seen);
    let (_, seen) = until(&r, |e| e.kind() == EventKind::Pong && e.rtt().is_some()).await;
    assert_no_drop(&seen);
    for cl in [&c, &r] {
        close_and_drain(cl).await;
        // After close: every call is refused, a second close too.
        assert_eq!(
            cl.close().unwrap_err().status(),
            Status::ErrState,
            "misuse: close twice"
        );
        assert_eq!(
            cl.connect().unwrap_err().status(),
            Status::ErrState,
            "misuse: connect after close"
        );
    }
    assert_eq!(
        c.request("echo", b"{}").unwrap_err().status(),
        Status::ErrState,
        "misuse: request after close"
    );
    assert_eq!(
        r.send_packet(b"\x00").unwrap_err().status(),
        Status::ErrState,
        "misuse: packet after close"
    );
    assert!(
        b.wait_for(|s| s.connections == 0, WAIT).await,
        "gomuks connection left open"
    );
}

/// gomuks-rpc.md §5 (batched lines) with §7.2 (resume point): a compressed message whose
/// third line is malformed still delivers the two events before it, in order and before the
/// DISCONNECTED, since the resume point has already moved past them; dropping them would lose
/// them for good (the resume replays only what comes after). The start is complete first
/// (`init_complete`): only then do events count for the point the app persists.
#[tokio::test]
async fn spec5_events_before_a_bad_line_in_a_batch_are_delivered() {
    let batch = concat!(
        r#"{"command":"init_complete","request_id":0,"data":{}}"#,
        "\n",
        r#"{"command":"first","request_id":-1,"data":{}}"#,
        "\n",
        r#"{"command":"second","request_id":-2,"data":{}}"#,
        "\n",
        "{not json\n",
    );
    let srv = ScriptServer::start(Script::Upgrade(vec![Step::Raw(frame(
        BINARY,
        &deflate_sync(batch.as_bytes()),
    ))]))
    .await;
    let c = start(config(&srv.http_url(), "scripted-token", Dialect::Gz, same));
    let (d, seen) = until_kind(&c, EventKind::Disconnected).await;
    assert_eq!(d.status(), Status::ErrJson);
    let got: Vec<(String, i64)> = seen
        .iter()
        .filter(|e| e.kind() == EventKind::Message && e.request_id() < 0)
        .map(|e| (e.command().to_owned(), e.request_id()))
        .collect();
    assert_eq!(
        got,
        [("first".to_owned(), -1), ("second".to_owned(), -2)],
        "{:?}",
        kinds(&seen)
    );
    assert_eq!(c.resume_state().last_received_event, -2);
    close_and_drain(&c).await;
}

/// gomuks-rpc.md §7.2: a `run_id` holding a NUL cannot be handed to C intact (the resume state
/// is copied NUL-terminated, so an app would persist a cut-off id and resume a run that never
/// was), and one over 64 bytes would go into every upgrade URL. Each is ignored like any
/// other malformed `run_id`: the message is still delivered, the resume point keeps no run,
/// and the connection stays up.
#[tokio::test]
async fn spec7_2_a_run_id_with_a_nul_or_overlong_is_not_taken_as_the_resume_point() {
    for run_id in [r"ab\u0000cd".to_owned(), "9".repeat(65)] {
        let batch = format!(
            "{}\n{}\n{}\n",
            r#"{"command":"init_complete","request_id":0,"data":{}}"#,
            format_args!(
                r#"{{"command":"run_id","request_id":-1,"data":{{"run_id":"{run_id}","etag":""}}}}"#
            ),
            r#"{"command":"after","request_id":-2,"data":{}}"#,
        );
        let srv = ScriptServer::start(Script::Upgrade(vec![Step::Raw(frame(
            BINARY,
            &deflate_sync(batch.as_bytes()),
        ))]))
        .await;
        let c = start(config(&srv.http_url(), "scripted-token", Dialect::Gz, same));
        let (after, seen) = until_command(&c, "after").await;
        assert_eq!(after.request_id(), -2);
        assert!(
            seen.iter().any(|e| e.command() == "run_id"),
            "{:?}",
            kinds(&seen)
        );
        assert_no_drop_named("run_id with a NUL or overlong", &seen).unwrap();
        let st = c.resume_state();
        assert_eq!((st.run_id.as_str(), st.last_received_event), ("", -2));
        close_and_drain(&c).await;
    }
}
