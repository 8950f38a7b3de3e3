//! The room model (`rooms.rs`) over a real websocket: initial sync, commands, buffered events,
//! control endpoints and resume.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tether_testkit::gomuks::{Backend, BackendConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

async fn backend() -> Backend {
    Backend::start(BackendConfig {
        disable_auth: true,
        ..BackendConfig::default()
    })
    .await
    .unwrap()
}

async fn connect(b: &Backend, query: &str) -> Ws {
    let tcp = TcpStream::connect(b.addr()).await.unwrap();
    let url = format!("{}{query}", b.ws_url());
    let (ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    ws
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("stream open")
            .expect("no error");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn send(ws: &mut Ws, id: i64, command: &str, data: Value) {
    let m = json!({"command": command, "request_id": id, "data": data}).to_string();
    ws.send(Message::text(m)).await.unwrap();
}

/// Reads the start-up sequence up to and including `init_complete`.
async fn startup(ws: &mut Ws) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = next(ws).await;
        let done = v["command"] == "init_complete";
        out.push(v);
        if done {
            return out;
        }
    }
}

async fn http_post(b: &Backend, path: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(b.addr()).await.unwrap();
    let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let code = resp[9..12].parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn empty_model_keeps_the_single_test_room() {
    let b = backend().await;
    let mut ws = connect(&b, "").await;
    let s = startup(&mut ws).await;
    let syncs: Vec<&Value> = s
        .iter()
        .filter(|v| v["command"] == "sync_complete")
        .collect();
    assert_eq!(syncs.len(), 1);
    assert_eq!(
        syncs[0]["data"]["rooms"]["!room:example.org"]["meta"]["name"],
        "Test room"
    );
    // The new commands answer, with errors for unknown rooms.
    send(
        &mut ws,
        1,
        "paginate",
        json!({"room_id": "!room:example.org", "limit": 5}),
    )
    .await;
    let r = next(&mut ws).await;
    assert_eq!(r["command"], "error");
    assert_eq!(r["request_id"], 1);
}

#[tokio::test]
async fn initial_sync_commands_and_resume() {
    let b = backend().await;
    b.seed_rooms(150, 30);
    let mut ws = connect(&b, "").await;
    let s = startup(&mut ws).await;
    let cmds: Vec<&str> = s.iter().map(|v| v["command"].as_str().unwrap()).collect();
    assert_eq!(
        &cmds[..4],
        ["run_id", "client_state", "sync_status", "image_auth_token"]
    );
    let run_id = s[0]["data"]["run_id"].as_str().unwrap().to_owned();
    let syncs: Vec<&Value> = s[4..s.len() - 1].iter().map(|v| &v["data"]).collect();
    assert!(s[4..s.len() - 1]
        .iter()
        .all(|v| v["command"] == "sync_complete" && v["request_id"] == 0));
    assert_eq!(syncs[0]["clear_state"], true);
    assert!(syncs[0]["rooms"]["!space:example.org"].is_object());
    assert_eq!(
        syncs[0]["invited_rooms"][0]["room_id"],
        "!invite:example.org"
    );
    // 150 rooms: 99 + 51 (upstream leaves the last row of a full batch for the next one),
    // then the deferred account-data payload.
    assert_eq!(syncs.len(), 4);
    assert_eq!(syncs[1]["rooms"].as_object().unwrap().len(), 99);
    assert_eq!(syncs[2]["rooms"].as_object().unwrap().len(), 51);
    assert!(syncs[1]["rooms"]["!r149:example.org"].is_object());
    assert!(syncs[2]["rooms"]["!r0:example.org"].is_object());
    assert!(syncs.iter().all(|p| p["server_timestamp"].is_i64()));

    // paginate: three pages of 10 + an empty tail.
    let mut max = 0;
    let mut got = Vec::new();
    for id in 1..=3 {
        send(
            &mut ws,
            id,
            "paginate",
            json!({"room_id": "!r5:example.org", "max_timeline_id": max, "limit": 10, "reset": false}),
        )
        .await;
        let r = next(&mut ws).await;
        assert_eq!(r["command"], "response");
        assert_eq!(r["request_id"], id);
        for e in r["data"]["events"].as_array().unwrap() {
            got.push(e["timeline_rowid"].as_i64().unwrap());
        }
        max = *got.last().unwrap();
        assert_eq!(r["data"]["has_more"], id < 3);
    }
    assert_eq!(got.len(), 30);
    assert!(got.windows(2).all(|w| w[0] > w[1]));

    // get_room_state with and without members; get_specific_room_state.
    send(
        &mut ws,
        4,
        "get_room_state",
        json!({"room_id": "!r5:example.org"}),
    )
    .await;
    let r = next(&mut ws).await;
    let types: Vec<&str> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["m.room.create", "m.room.name", "m.room.power_levels"]
    );
    send(
        &mut ws,
        5,
        "get_room_state",
        json!({"room_id": "!r5:example.org", "include_members": true}),
    )
    .await;
    assert_eq!(next(&mut ws).await["data"].as_array().unwrap().len(), 6);
    send(
        &mut ws,
        6,
        "get_specific_room_state",
        json!({"keys": [
            {"room_id": "!r5:example.org", "type": "m.room.member", "state_key": "@bob:example.org"},
            {"room_id": "!r5:example.org", "type": "m.room.member", "state_key": "@nobody:example.org"}]}),
    )
    .await;
    let r = next(&mut ws).await;
    assert_eq!(r["data"].as_array().unwrap().len(), 1);
    assert_eq!(r["data"][0]["content"]["displayname"], "Bob");

    // send_message: reply, then send_complete, then sync_complete, both buffered.
    send(
        &mut ws,
        7,
        "send_message",
        json!({"room_id": "!r5:example.org", "text": "hello"}),
    )
    .await;
    let reply = next(&mut ws).await;
    assert_eq!(reply["command"], "response");
    assert_eq!(reply["request_id"], 7);
    let rowid = reply["data"]["rowid"].clone();
    assert_eq!(reply["data"]["send_error"], "not sent");
    let sc = next(&mut ws).await;
    assert_eq!(sc["command"], "send_complete");
    assert!(sc["request_id"].as_i64().unwrap() < 0);
    assert_eq!(sc["data"]["event"]["rowid"], rowid);
    assert_eq!(sc["data"]["error"], Value::Null);
    let sync = next(&mut ws).await;
    assert_eq!(sync["command"], "sync_complete");
    assert!(sync["request_id"].as_i64().unwrap() < sc["request_id"].as_i64().unwrap());
    let sr = &sync["data"]["rooms"]["!r5:example.org"];
    assert_eq!(sr["timeline"][0]["event_rowid"], rowid);
    assert_eq!(
        sr["events"][0]["transaction_id"],
        reply["data"]["transaction_id"]
    );
    assert_eq!(sr["meta"]["preview_event_rowid"], rowid);

    // A failing send: send_complete with the error and nothing else.
    send(
        &mut ws,
        8,
        "send_message",
        json!({"room_id": "!r5:example.org", "text": "fail"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["command"], "response");
    let sc = next(&mut ws).await;
    assert_eq!(sc["command"], "send_complete");
    assert_eq!(sc["data"]["error"], json!({}));
    assert_eq!(
        sc["data"]["event"]["send_error"],
        "M_FORBIDDEN: you are not allowed to send"
    );

    // mark_read zeroes the counts.
    send(
        &mut ws,
        9,
        "mark_read",
        json!({"room_id": "!r2:example.org", "event_id": "$x", "receipt_type": "m.read"}),
    )
    .await;
    let r = next(&mut ws).await;
    assert_eq!(
        (r["command"].as_str(), r["request_id"].as_i64()),
        (Some("response"), Some(9))
    );
    let sync = next(&mut ws).await;
    let sr = &sync["data"]["rooms"]["!r2:example.org"];
    assert_eq!(sr["meta"]["unread_messages"], 0);
    assert_eq!(sr["meta"]["unread_notifications"], 0);
    assert_eq!(sr["receipts"], json!({}), "hicli sends no own receipts");
    let last_id = sync["request_id"].as_i64().unwrap();

    // Typing over HTTP: uncached, request_id 0.
    let (code, _) = http_post(
        &b,
        "/_testkit/rooms/typing?room=!r5:example.org&users=@alice:example.org,@bob:example.org",
    )
    .await;
    assert_eq!(code, 200);
    let t = next(&mut ws).await;
    assert_eq!(t["command"], "typing");
    assert_eq!(t["request_id"], 0);
    assert_eq!(
        t["data"],
        json!({"room_id": "!r5:example.org", "user_ids": ["@alice:example.org", "@bob:example.org"]})
    );

    // Disconnect, a remote message meanwhile, resume: it is replayed, no initial sync.
    drop(ws);
    assert!(
        b.wait_for(|s| s.connections == 0, Duration::from_secs(5))
            .await
    );
    let (code, body) = http_post(
        &b,
        "/_testkit/rooms/message?room=!r5:example.org&sender=@bob:example.org&body=while%20away",
    )
    .await;
    assert_eq!(code, 200);
    assert!(body["rowid"].as_i64().unwrap() > 0);
    let mut ws = connect(
        &b,
        &format!("?run_id={run_id}&last_received_event={last_id}"),
    )
    .await;
    let s = startup(&mut ws).await;
    let syncs: Vec<&Value> = s
        .iter()
        .filter(|v| v["command"] == "sync_complete")
        .collect();
    assert_eq!(syncs.len(), 1);
    assert!(syncs[0]["request_id"].as_i64().unwrap() < last_id);
    let sr = &syncs[0]["data"]["rooms"]["!r5:example.org"];
    assert_eq!(sr["events"][0]["content"]["body"], "while away");
    assert_eq!(sr["timeline"][0]["timeline_rowid"], body["timeline_rowid"]);
    assert_eq!(sr["meta"]["unread_messages"], 1);

    let (code, _) = http_post(&b, "/_testkit/rooms/message?room=!nope:example.org&body=x").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn seed_over_http() {
    let b = backend().await;
    let (code, body) = http_post(&b, "/_testkit/rooms/seed?n=3&history=4").await;
    assert_eq!(code, 200);
    assert_eq!(body["rooms"], 3);
    let rooms = b.rooms();
    assert_eq!(rooms.timeline("!r2:example.org").unwrap().len(), 4);
    let mut ws = connect(&b, "").await;
    let s = startup(&mut ws).await;
    let batch = s
        .iter()
        .find(|v| {
            v["command"] == "sync_complete" && v["data"]["rooms"]["!r0:example.org"].is_object()
        })
        .expect("a batch with the rooms");
    assert_eq!(batch["data"]["rooms"].as_object().unwrap().len(), 3);
}

#[tokio::test]
async fn backend_binary_seeds_rooms() {
    use std::io::BufRead;
    for (args, env) in [
        (vec!["--rooms", "2", "--history", "1"], None),
        (vec![], Some("2")),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tether-backend"));
        cmd.args(&args)
            .arg("--disable-auth")
            .stdout(std::process::Stdio::piped());
        if let Some(n) = env {
            cmd.env("TETHER_BACKEND_ROOMS", n);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        let addr = v["address"].as_str().unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("ws://{addr}/_gomuks/websocket"), tcp)
                .await
                .unwrap();
        let s = startup(&mut ws).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let batch = s
            .iter()
            .find(|v| v["data"]["rooms"]["!r1:example.org"].is_object())
            .expect("the seeded rooms");
        assert_eq!(batch["data"]["rooms"].as_object().unwrap().len(), 2);
    }
}
