//! The native gomuks store over a real socket against the testkit's room model
//! (docs/store.md; the shapes are gomuks-rpc.md §4.2 and the hicli types it cites).

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tether::{Client, Event, EventKind, Status, Store};
use tether_testkit::gomuks::Backend;
use tether_testkit::rooms::{room_id, ALICE, BOB, INVITE_ID, ME, SPACE_ID};

use common::*;

/// A seeded backend and a client with a store attached before connect.
async fn setup(rooms: usize, history: usize) -> (Backend, Client, Store) {
    setup_with(rooms, history, b"").await
}

async fn setup_with(rooms: usize, history: usize, opts: &[u8]) -> (Backend, Client, Store) {
    let b = backend().await;
    b.seed_rooms(rooms, history);
    let (c, s) = attached(&b, opts);
    until_init(&c).await;
    (b, c, s)
}

fn attached(b: &Backend, opts: &[u8]) -> (Client, Store) {
    let cfg = tether::Config::builder(&b.http_url())
        .token(&b.token())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    let c = Client::new(cfg);
    let s = Store::attach(&c, opts).expect("attach before connect");
    c.connect().unwrap();
    (c, s)
}

async fn until_init(c: &Client) -> Vec<Event> {
    let (_, seen) = until_command(c, "init_complete").await;
    seen
}

fn read(s: &Store, what: &str, args: Value) -> Value {
    let out = s.read(what, args.to_string().as_bytes()).expect(what);
    serde_json::from_slice(&out).unwrap()
}

fn names(list: &Value) -> Vec<String> {
    list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The next STORE event, and what came before it.
async fn until_store(c: &Client, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Event>) {
    let (ev, seen) = until(c, |e| e.kind() == EventKind::Store && pred(&json(e))).await;
    (json(&ev), seen)
}

/// A store action's RESPONSE, asserting a STORE event for that request came first.
async fn answered(c: &Client, id: i64) -> (Event, Value) {
    let mut change = Value::Null;
    let (ev, seen) = until(c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    for e in seen.iter().rev() {
        if e.kind() == EventKind::Store && json(e)["cause"]["request_id"] == id {
            change = json(e);
            break;
        }
    }
    (ev, change)
}

/// §4.2 sync_complete, initial sync: the list is ordered by activity with the invite on top
/// and favourites first; spaces are not listed; pseudo-spaces and a space filter the list.
#[tokio::test]
async fn initial_sync_builds_an_ordered_room_list() {
    let (_b, c, s) = setup(6, 5).await;
    let list = read(&s, "room_list", json!({}));
    assert_eq!(
        names(&list),
        [
            "Invite room",
            "Room 3",
            "Room 5",
            "Room 4",
            "Room 2",
            "Room 1",
            "Room 0"
        ]
    );
    assert_eq!(list["rooms"][0]["invite"], true);
    assert_eq!(list["rooms"][1]["favourite"], true);
    let plain = read(
        &s,
        "room_list",
        json!({"favourites_first": false, "invites": false}),
    );
    assert_eq!(
        names(&plain),
        ["Room 5", "Room 4", "Room 3", "Room 2", "Room 1", "Room 0"]
    );
    let by_name = read(
        &s,
        "room_list",
        json!({"order": "name", "invites": false, "favourites_first": false}),
    );
    assert_eq!(names(&by_name)[0], "Room 0");
    let dms = read(&s, "room_list", json!({"space": "dms", "invites": false}));
    assert_eq!(names(&dms), ["Room 0"]);
    assert_eq!(dms["rooms"][0]["dm_user_id"], ALICE);
    let space = read(&s, "room_list", json!({"space": SPACE_ID}));
    assert_eq!(names(&space), ["Room 2", "Room 1"]);
    let unread = read(
        &s,
        "room_list",
        json!({"space": "unreads", "invites": false}),
    );
    assert_eq!(names(&unread), ["Room 2"]);
    let query = read(&s, "room_list", json!({"query": "room 4"}));
    assert_eq!(names(&query), ["Room 4"]);
    // Each entry shows its preview event.
    assert_eq!(list["rooms"][2]["preview"]["room_id"], room_id(5));
    let spaces = read(&s, "spaces", json!({}));
    assert_eq!(spaces["top_level"], json!([SPACE_ID]));
    assert_eq!(spaces["spaces"][SPACE_ID]["unread"]["messages"], 3);
    assert_eq!(spaces["spaces"][SPACE_ID]["name"], "Space");
    let session = read(&s, "session", json!({}));
    assert_eq!(session["init_complete"], true);
    assert_eq!(session["client_state"]["is_logged_in"], true);
    assert_eq!(session["image_auth_token"], "image-token");
    assert_eq!(session["undecodable"], 0);
    assert!(read(&s, "room", json!({"room_id": SPACE_ID}))["entry"].is_null());
    assert_eq!(
        read(&s, "room", json!({"room_id": INVITE_ID}))["invite"]["room_id"],
        INVITE_ID
    );
    close_and_drain(&c).await;
}

/// The STORE event follows the MESSAGE it reflects, and a read made after it sees the event
/// applied (§4.2 live sync: timeline append, meta replaced).
#[tokio::test]
async fn a_live_message_is_applied_before_its_notification() {
    let (b, c, s) = setup(4, 3).await;
    let gen0 = s.generation();
    let (rowid, _) = b.room_message(&room_id(0), BOB, "hello").unwrap();
    let (sync, _) = until_command(&c, "sync_complete").await;
    // Taken the MESSAGE: the store has it already.
    assert_eq!(
        names(&read(&s, "room_list", json!({"invites": false})))[0],
        "Room 3"
    );
    let tl = read(&s, "timeline", json!({"room_id": room_id(0)}));
    assert_eq!(
        tl["events"].as_array().unwrap().last().unwrap()["event"]["rowid"],
        rowid
    );
    let ev = next(&c).await;
    assert_eq!(
        ev.kind(),
        EventKind::Store,
        "the change set right after {}",
        sync.command()
    );
    let ch = json(&ev);
    assert_eq!(ch["gen"], gen0 + 1);
    assert_eq!(ch["cause"]["command"], "sync_complete");
    assert_eq!(ch["cause"]["event_id"], sync.request_id());
    assert_eq!(ch["room_list"], true);
    assert_eq!(ch["rooms"][room_id(0)]["appended"], json!([rowid]));
    assert_eq!(ch["rooms"][room_id(0)]["meta"], true);
    let plain = read(
        &s,
        "room_list",
        json!({"invites": false, "favourites_first": false}),
    );
    assert_eq!(names(&plain)[0], "Room 0", "the room moved to the top");
    assert_eq!(plain["rooms"][0]["unread_messages"], 1);
    close_and_drain(&c).await;
}

/// paginate (§4.3 store actions): pages go before the oldest row, in order and without
/// overlap, until has_more is false; one pagination per room at a time; the RESPONSE comes
/// after the STORE event with the prepended rows.
#[tokio::test]
async fn paginate_fills_the_timeline_page_by_page() {
    let (_b, c, s) = setup(3, 25).await;
    let r = room_id(1);
    let mut seen = Vec::new();
    for round in 0.. {
        let id = s.paginate(&r, 10).unwrap();
        assert_eq!(s.paginate(&r, 10).unwrap_err().status(), Status::ErrInUse);
        let room = read(&s, "room", json!({"room_id": r}));
        assert_eq!(room["paginating"], true);
        let (resp, change) = answered(&c, id).await;
        assert_eq!(resp.status(), Status::Ok);
        let n = change["rooms"][&r]["prepended"].as_u64().unwrap_or(0)
            + change["rooms"][&r]["appended"]
                .as_array()
                .map_or(0, |a| a.len() as u64);
        let tl = read(&s, "timeline", json!({"room_id": r, "limit": 1000}));
        let rows: Vec<i64> = tl["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["timeline_rowid"].as_i64().unwrap())
            .collect();
        assert!(rows.windows(2).all(|w| w[0] < w[1]), "{rows:?}");
        assert_eq!(rows.len() as u64, seen.len() as u64 + n, "round {round}");
        seen = rows;
        if tl["has_more"] == false {
            break;
        }
        assert!(round < 10, "has_more never ended");
    }
    assert_eq!(seen.len(), 25);
    // The timeline reads back in pages through `before`.
    let last = read(&s, "timeline", json!({"room_id": r, "limit": 10}));
    assert_eq!(last["events"].as_array().unwrap().len(), 10);
    let older = read(
        &s,
        "timeline",
        json!({"room_id": r, "limit": 10, "before": last["oldest"]}),
    );
    let o: Vec<i64> = older["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["timeline_rowid"].as_i64().unwrap())
        .collect();
    assert_eq!(o, seen[5..15]);
    assert_eq!(older["has_more"], true);
    close_and_drain(&c).await;
}

/// send_message with local echo (§4.3): the echo is pending before the RESPONSE; the synced
/// event replaces it in the timeline; a failed send stays pending with the server's reason.
#[tokio::test]
async fn send_message_shows_a_local_echo_until_synced() {
    let (_b, c, s) = setup(3, 2).await;
    let r = room_id(2);
    let params = json!({"room_id": r, "text": "hi there"}).to_string();
    let id = s.send_message(params.as_bytes()).unwrap();
    let (resp, change) = answered(&c, id).await;
    assert_eq!(resp.status(), Status::Ok);
    assert_eq!(change["rooms"][&r]["pending"], true);
    let echo: Value = serde_json::from_slice(resp.data()).unwrap();
    let tl = read(&s, "timeline", json!({"room_id": r}));
    assert_eq!(tl["pending"][0]["event"]["rowid"], echo["rowid"]);
    assert_eq!(tl["pending"][0]["event"]["content"]["body"], "hi there");
    assert_eq!(tl["pending"][0]["send_status"], "sending");
    // send_complete, then the sync with the real event.
    until_store(&c, |ch| {
        ch["cause"]["command"] == "sync_complete" && ch["rooms"][&r]["appended"].is_array()
    })
    .await;
    let tl = read(&s, "timeline", json!({"room_id": r}));
    assert_eq!(tl["pending"], json!([]));
    let last = tl["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["event"]["rowid"], echo["rowid"]);
    assert!(last["event"]["event_id"].as_str().unwrap().starts_with('$'));
    assert_eq!(
        last["send_status"], "sent",
        "gomuks keeps \"not sent\" on it: {last}"
    );
    assert!(read(
        &s,
        "event",
        json!({"room_id": r, "event_id": last["event"]["event_id"]})
    )["event"]
        .is_object());

    let fail = json!({"room_id": r, "text": "fail"}).to_string();
    let id = s.send_message(fail.as_bytes()).unwrap();
    answered(&c, id).await;
    until_store(&c, |ch| ch["cause"]["command"] == "send_complete").await;
    let tl = read(&s, "timeline", json!({"room_id": r}));
    let failed = &tl["pending"][0]["event"];
    assert!(
        failed["send_error"]
            .as_str()
            .unwrap()
            .starts_with("M_FORBIDDEN"),
        "{failed}"
    );
    close_and_drain(&c).await;
}

/// A message whose simulated send fails (`text` one of the testkit's failing texts): its
/// rowid, once `send_complete` has marked it failed.
async fn failed_send(c: &Client, s: &Store, room: &str, text: &str) -> i64 {
    let params = json!({"room_id": room, "text": text}).to_string();
    let id = s.send_message(params.as_bytes()).unwrap();
    let (resp, _) = answered(c, id).await;
    let echo: Value = serde_json::from_slice(resp.data()).unwrap();
    until_store(c, |ch| ch["cause"]["command"] == "send_complete").await;
    let tl = read(s, "timeline", json!({"room_id": room}));
    assert_eq!(tl["pending"][0]["send_status"], "failed", "{tl}");
    echo["rowid"].as_i64().unwrap()
}

/// The room's pending echo reads failed, with the homeserver's refusal.
fn assert_refused_again(s: &Store, room: &str) {
    let tl = read(s, "timeline", json!({"room_id": room}));
    let p = &tl["pending"][0];
    assert_eq!(p["send_status"], "failed", "{tl}");
    assert!(p["event"]["send_error"]
        .as_str()
        .unwrap()
        .starts_with("M_FORBIDDEN"));
}

/// A room whose message `text` failed, resent: the room, the echo's rowid and the resend's
/// request id.
struct Resent {
    _b: Backend,
    c: Client,
    s: Store,
    r: String,
    rowid: i64,
    id: i64,
}

async fn resent(text: &str) -> Resent {
    let (_b, c, s) = setup(3, 2).await;
    let r = room_id(2);
    let rowid = failed_send(&c, &s, &r, text).await;
    let id = s.resend(&r, rowid).unwrap();
    Resent {
        _b,
        c,
        s,
        r,
        rowid,
        id,
    }
}

/// Resending a failed send (§4.3; hicli `resend_event`): the echo shows as sending at once,
/// in a STORE event before the RESPONSE, without `send_error` as gomuks answers it; a send
/// that goes through then syncs like any other and reads as sent.
#[tokio::test]
async fn a_failed_send_is_resent_until_synced() {
    let Resent {
        _b,
        c,
        s,
        r,
        rowid,
        id,
    } = resent("fail once").await;
    let (change, _) = until_store(&c, |ch| ch["cause"]["command"] == "resend").await;
    assert_eq!(change["rooms"][&r]["pending"], true);
    assert_eq!(change["rooms"][&r]["updated"], json!([rowid]));
    let tl = read(&s, "timeline", json!({"room_id": r}));
    assert_eq!(tl["pending"][0]["send_status"], "sending", "{tl}");
    assert!(tl["pending"][0]["event"].get("send_error").is_none());
    let (resp, _) = answered(&c, id).await;
    assert_eq!(resp.status(), Status::Ok);
    until_store(&c, |ch| {
        ch["cause"]["command"] == "sync_complete" && ch["rooms"][&r]["appended"].is_array()
    })
    .await;
    let tl = read(&s, "timeline", json!({"room_id": r}));
    assert_eq!(tl["pending"], json!([]));
    let last = tl["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["event"]["rowid"], rowid);
    assert_eq!(last["send_status"], "sent", "{last}");
    close_and_drain(&c).await;
}

/// A resend the homeserver refuses at once (§4.3): hicli's `send_complete` then comes before
/// the answer, which must not turn the failure back into sending.
#[tokio::test]
async fn a_resend_that_fails_again_stays_failed_when_its_answer_comes_last() {
    let Resent {
        _b, c, s, r, id, ..
    } = resent("fail").await;
    let (resp, seen) = until(&c, |e| {
        e.kind() == EventKind::Response && e.request_id() == id
    })
    .await;
    assert_eq!(resp.status(), Status::Ok);
    assert!(
        seen.iter().any(|e| e.kind() == EventKind::Store
            && json(e)["cause"]["command"] == "send_complete"),
        "the outcome came first"
    );
    assert_refused_again(&s, &r);
    close_and_drain(&c).await;
}

/// A resend the backend refuses (hicli's "unknown transaction ID"): the echo is failed again,
/// reported by the answer's STORE event.
#[tokio::test]
async fn a_refused_resend_shows_the_failure_again() {
    let Resent {
        _b,
        c,
        s,
        r,
        rowid,
        id,
    } = resent("fail, forget").await;
    let (resp, change) = answered(&c, id).await;
    assert_ne!(resp.status(), Status::Ok);
    assert_eq!(change["rooms"][&r]["updated"], json!([rowid]), "{change}");
    assert_refused_again(&s, &r);
    close_and_drain(&c).await;
}

/// Discarding a failed send (gomuks web's "undo send"): it leaves the pending tail, in a
/// STORE event (cause `discard`); only a failed send in the pending tail can be discarded
/// or resent.
#[tokio::test]
async fn a_failed_send_can_be_discarded_and_nothing_else() {
    let (_b, c, s) = setup(3, 2).await;
    let r = room_id(2);
    let rowid = failed_send(&c, &s, &r, "fail").await;
    s.discard(&r, rowid).unwrap();
    let (change, _) = until_store(&c, |ch| ch["cause"]["command"] == "discard").await;
    assert_eq!(change["rooms"][&r]["pending"], true);
    assert_eq!(
        read(&s, "timeline", json!({"room_id": r}))["pending"],
        json!([])
    );

    let refused = |e: tether::Error| assert_eq!(e.status(), Status::ErrInvalidArgument, "{e}");
    refused(s.discard(&r, rowid).unwrap_err());
    refused(s.resend(&r, rowid).unwrap_err());
    refused(s.discard("!nowhere:example.org", rowid).unwrap_err());
    // A sending echo, and then a synced one: neither is a failed send.
    let params = json!({"room_id": r, "text": "hello"}).to_string();
    let id = s.send_message(params.as_bytes()).unwrap();
    let (resp, _) = answered(&c, id).await;
    let echo: Value = serde_json::from_slice(resp.data()).unwrap();
    let sent = echo["rowid"].as_i64().unwrap();
    refused(s.discard(&r, sent).unwrap_err());
    refused(s.resend(&r, sent).unwrap_err());
    until_store(&c, |ch| ch["rooms"][&r]["appended"].is_array()).await;
    refused(s.discard(&r, sent).unwrap_err());
    close_and_drain(&c).await;
}

/// mark_read (§4.3): the backend's sync zeroes the counts (and brings no receipt of ours:
/// hicli leaves the user's own receipts out).
#[tokio::test]
async fn mark_read_clears_the_unread_count() {
    let (_b, c, s) = setup(4, 3).await;
    let r = room_id(2);
    let before = read(
        &s,
        "room_list",
        json!({"space": "unreads", "invites": false}),
    );
    assert_eq!(names(&before), ["Room 2"]);
    let id = s.mark_read(&r, "").unwrap();
    let (resp, _) = answered(&c, id).await;
    assert_eq!(resp.status(), Status::Ok);
    until_store(&c, |ch| ch["rooms"][&r]["meta"] == true).await;
    assert_eq!(
        read(&s, "room", json!({"room_id": r}))["entry"]["unread_messages"],
        0
    );
    let after = read(
        &s,
        "room_list",
        json!({"space": "unreads", "invites": false}),
    );
    assert_eq!(names(&after), Vec::<String>::new());
    let receipts = read(&s, "receipts", json!({"room_id": r}));
    assert!(!receipts.to_string().contains(ME), "{receipts}");
    assert_eq!(
        read(&s, "spaces", json!({}))["pseudo"]["unreads"]["rooms"],
        1,
        "only the invite"
    );
    close_and_drain(&c).await;
    drop(c);
    // The store outlives its client: reads work, actions on a room it knows are refused.
    assert!(s.read("session", b"").is_ok());
    let e = s.mark_read(&r, "").unwrap_err();
    assert_eq!(e.status(), Status::ErrState, "{e}");
}

/// State and members (§4.3 load room state): members sorted by power level, then name;
/// a batched member fetch skips the members the store holds.
#[tokio::test]
async fn load_state_gives_members_by_power_level() {
    let (_b, c, s) = setup(2, 2).await;
    let r = room_id(1);
    assert!(s.request_members(&r, &[BOB, ALICE]).unwrap() > 0);
    let id = s.load_state(&r, true).unwrap();
    let (resp, change) = answered(&c, id).await;
    assert_eq!(resp.status(), Status::Ok);
    assert!(change["rooms"][&r]["state"]
        .as_array()
        .unwrap()
        .contains(&json!("m.room.member")));
    let m = read(&s, "members", json!({"room_id": r}));
    let order: Vec<&str> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [ALICE, ME, BOB]);
    assert_eq!(m["members"][0]["power_level"], 100);
    assert_eq!(m["complete"], true);
    assert_eq!(
        read(
            &s,
            "state",
            json!({"room_id": r, "type": "m.room.name", "state_key": ""})
        )["content"]["name"],
        "Room 1"
    );
    assert_eq!(
        s.request_members(&r, &[BOB, ALICE]).unwrap(),
        0,
        "all known: nothing to send"
    );
    close_and_drain(&c).await;
}

/// §7 resume: after a cut the store equals a fresh client's view, and the message missed
/// while cut arrives in the timeline exactly once.
#[tokio::test]
async fn a_cut_and_resume_keep_the_store_equal_to_a_fresh_view() {
    let (b, c, s) = setup(5, 3).await;
    let r = room_id(1);
    let id = s.paginate(&r, 10).unwrap();
    answered(&c, id).await;
    // A buffered event first, so the client has a point to resume from (§7.1).
    b.room_message(&room_id(0), BOB, "before the cut").unwrap();
    until_store(&c, |ch| ch["rooms"][room_id(0)]["appended"].is_array()).await;
    let rows_before = read(&s, "timeline", json!({"room_id": r}))["events"]
        .as_array()
        .unwrap()
        .len();
    b.cut_all();
    until_kind(&c, EventKind::Disconnected).await;
    let (missed, _) = b.room_message(&r, ALICE, "while you were away").unwrap();
    let (resumed, _) = until_kind(&c, EventKind::Resumed).await;
    assert_eq!(
        resumed.resume_outcome(),
        Some(tether::ResumeOutcome::Succeeded)
    );
    until_command(&c, "init_complete").await;
    let (c2, s2) = attached(&b, b"");
    until_init(&c2).await;
    let strip = |mut v: Value| {
        v["gen"] = Value::Null;
        v
    };
    assert_eq!(
        strip(read(&s, "room_list", json!({}))),
        strip(read(&s2, "room_list", json!({})))
    );
    let tl = read(&s, "timeline", json!({"room_id": r}));
    let rowids: Vec<&Value> = tl["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["event"]["rowid"])
        .collect();
    assert_eq!(rowids.len(), rows_before + 1);
    assert_eq!(rowids.iter().filter(|&&x| x == &json!(missed)).count(), 1);
    assert_eq!(**rowids.last().unwrap(), json!(missed));
    close_and_drain(&c).await;
    close_and_drain(&c2).await;
}

/// §7.2 reset: a backend restart clears the store visibly and rebuilds it.
#[tokio::test]
async fn a_backend_restart_resets_the_store_visibly() {
    let (b, c, s) = setup(3, 2).await;
    let id = s.paginate(&room_id(0), 5).unwrap();
    answered(&c, id).await;
    assert!(
        read(&s, "room", json!({"room_id": room_id(0)}))["timeline_rows"]
            .as_u64()
            .unwrap()
            > 0
    );
    b.restart();
    let (ch, _) = until_store(&c, |ch| ch["cleared"] == true).await;
    assert_eq!(ch["room_list"], true);
    until_command(&c, "init_complete").await;
    assert_eq!(
        read(&s, "room", json!({"room_id": room_id(0)}))["timeline_rows"],
        0
    );
    assert_eq!(names(&read(&s, "room_list", json!({}))).len(), 4);
    close_and_drain(&c).await;
}

/// §6 a new connection: nobody is typing any more as far as the store knows (the backend
/// sends typing only as it changes) and the startup is not complete until this connection's
/// own `init_complete`, as gomuks web resets both on every connect and disconnect.
#[tokio::test]
async fn a_cut_clears_typing_and_init_complete_until_the_next_one() {
    let (b, c, s) = setup(2, 2).await;
    assert_eq!(read(&s, "session", json!({}))["init_complete"], true);
    b.room_typing(&room_id(1), &[BOB.to_owned()]);
    until_store(&c, |ch| ch["rooms"][room_id(1)]["typing"] == true).await;
    // Kept out until the reads below, so the next connection cannot have set it again.
    b.reject_upgrades(u64::MAX);
    b.cut_all();
    let (ch, seen) = until_store(&c, |ch| ch["cause"]["command"] == "disconnected").await;
    assert_eq!(seen.last().unwrap().kind(), EventKind::Disconnected);
    assert_eq!(ch["session"], true);
    assert_eq!(ch["rooms"][room_id(1)]["typing"], true);
    assert_eq!(
        read(&s, "typing", json!({"room_id": room_id(1)}))["user_ids"],
        json!([])
    );
    assert_eq!(read(&s, "session", json!({}))["init_complete"], false);
    b.reject_upgrades(0);
    // The next connection's own init_complete sets it again.
    let (_, seen) = until_store(&c, |ch| ch["cause"]["command"] == "init_complete").await;
    assert!(seen.iter().any(|e| e.kind() == EventKind::Connected));
    assert_eq!(read(&s, "session", json!({}))["init_complete"], true);
    close_and_drain(&c).await;
}

/// typing (§4.2) replaces the list; a watch list limits per-room detail to watched rooms.
#[tokio::test]
async fn typing_and_the_watch_filter() {
    let (b, c, s) = setup(3, 2).await;
    b.room_typing(&room_id(1), &[BOB.to_owned()]);
    let (ch, _) = until_store(&c, |ch| ch["rooms"].get(room_id(1)).is_some()).await;
    assert_eq!(ch["rooms"][room_id(1)]["typing"], true);
    assert_eq!(
        read(&s, "typing", json!({"room_id": room_id(1)}))["user_ids"],
        json!([BOB])
    );
    assert_eq!(
        s.watch(Some("!nope:x"), true).unwrap_err().status(),
        Status::ErrInvalidArgument
    );
    s.watch(None, false).unwrap();
    s.open_room(&room_id(2)).unwrap();
    b.room_message(&room_id(1), BOB, "unwatched").unwrap();
    let (ch, _) = until_store(&c, |ch| ch["rooms"].get(room_id(1)).is_some()).await;
    assert_eq!(
        ch["rooms"][room_id(1)],
        json!({"meta": true}),
        "only what a list needs"
    );
    b.room_message(&room_id(2), BOB, "watched").unwrap();
    let (ch, _) = until_store(&c, |ch| ch["rooms"].get(room_id(2)).is_some()).await;
    assert!(ch["rooms"][room_id(2)]["appended"].is_array());
    close_and_drain(&c).await;
}

/// Per-room detail of a message from Bob in `r`: every detail (`appended`) or only what a
/// room list needs.
async fn detailed(b: &Backend, c: &Client, r: &str) -> bool {
    b.room_message(r, BOB, "hello").unwrap();
    let (ch, _) = until_store(c, |ch| ch["rooms"].get(r).is_some()).await;
    let detailed = ch["rooms"][r]["appended"].is_array();
    assert!(detailed || ch["rooms"][r] == json!({"meta": true}), "{ch}");
    detailed
}

/// §4.2 `left_rooms`: the store forgets a left room, its watch setting too.
async fn leave(b: &Backend, c: &Client, r: &str) {
    b.push_event(
        "sync_complete",
        json!({"rooms": {}, "left_rooms": [r], "invited_rooms": [], "account_data": {}}),
    );
    until_store(c, |ch| ch["rooms"][r]["removed"] == true).await;
}

/// §4.2 `left_rooms` of a space: it leaves the top-level list as well (gomuks sends
/// `top_level_spaces` again only when space edges change), so every id the `spaces` read
/// lists at the top has its entry.
#[tokio::test]
async fn a_left_space_leaves_the_top_level_list() {
    let (b, c, s) = setup(4, 2).await;
    assert_eq!(
        read(&s, "spaces", json!({}))["top_level"],
        json!([SPACE_ID])
    );
    leave(&b, &c, SPACE_ID).await;
    let spaces = read(&s, "spaces", json!({}));
    assert_eq!(spaces["top_level"], json!([]), "{spaces}");
    assert!(spaces["spaces"].get(SPACE_ID).is_none(), "{spaces}");
    close_and_drain(&c).await;
}

/// The watch list as the C header states it: an open room is always watched, whatever the
/// list says; an explicit watch outlives closing the room; after "watch every room" a room
/// joined later is watched though another was unwatched; after "watch none" a room left and
/// rejoined (§4.2 `left_rooms`, then the room's meta again) is a new room, not watched.
#[tokio::test]
async fn the_watch_list_follows_open_joined_and_left_rooms() {
    let (b, c, s) = setup(4, 2).await;
    let (r0, r1, r2, r3) = (room_id(0), room_id(1), room_id(2), room_id(3));

    // Every room but r0; r2 left before that, so it is joined later.
    leave(&b, &c, &r2).await;
    s.watch(Some(&r0), false).unwrap();
    assert!(!detailed(&b, &c, &r0).await);
    assert!(detailed(&b, &c, &r1).await);
    assert!(detailed(&b, &c, &r2).await, "joined after the list changed");

    // None but the open ones and r1.
    s.watch(None, false).unwrap();
    s.watch(Some(&r1), true).unwrap();
    s.open_room(&r3).unwrap();
    s.watch(Some(&r3), false).unwrap();
    assert!(detailed(&b, &c, &r3).await, "open, so watched");
    s.close_room(&r3).unwrap();
    assert!(!detailed(&b, &c, &r3).await);
    s.open_room(&r1).unwrap();
    s.close_room(&r1).unwrap();
    assert!(detailed(&b, &c, &r1).await, "watched before it was opened");
    leave(&b, &c, &r1).await;
    assert!(!detailed(&b, &c, &r1).await, "rejoined: a new room");
    close_and_drain(&c).await;
}

/// §4.2 SyncRoom `notifications` and `dismiss_notifications`: a mention in a room the app does
/// not watch still reaches it, resolved to the stored event; a plain message does not notify;
/// reading the room elsewhere (here: mark_read's echo) dismisses.
#[tokio::test]
async fn notifications_reach_unwatched_rooms_and_reading_dismisses_them() {
    let (b, c, s) = setup(4, 3).await;
    s.watch(None, false).unwrap();
    let r = room_id(1);
    b.room_message(&r, BOB, "no mention").unwrap();
    let (ch, _) = until_store(&c, |ch| ch["rooms"].get(&r).is_some()).await;
    assert_eq!(ch["rooms"][&r], json!({"meta": true}));
    let (rowid, _) = b.room_message(&r, BOB, &format!("ping {ME}")).unwrap();
    let (ch, _) = until_store(&c, |ch| ch["rooms"].get(&r).is_some()).await;
    let ev = read(&s, "event", json!({"room_id": r, "rowid": rowid}));
    let event_id = ev["event"]["event_id"].as_str().expect("stored").to_owned();
    assert_eq!(
        ch["rooms"][&r],
        json!({"meta": true, "notifications": [{"rowid": rowid, "event_id": event_id,
               "sender": BOB, "sound": true, "highlight": true}]}),
        "only the list's and the notification's part, the room being unwatched"
    );
    assert_eq!(
        read(&s, "room", json!({"room_id": r}))["entry"]["unread_notifications"],
        1
    );
    let id = s.mark_read(&r, "").unwrap();
    answered(&c, id).await;
    let (ch, _) = until_store(&c, |ch| ch["rooms"][&r]["dismiss_notifications"] == true).await;
    assert_eq!(ch["rooms"][&r]["meta"], true);
    assert!(ch["rooms"][&r].get("notifications").is_none());
    close_and_drain(&c).await;
}

/// Memory stays bounded: a closed room's timeline is evicted (web GC), an open one's is
/// kept; the preview event survives.
#[tokio::test]
async fn idle_rooms_lose_their_timeline() {
    let (b, c, s) = setup_with(3, 12, br#"{"evict_after_ms": 0}"#).await;
    for r in [room_id(0), room_id(1)] {
        let id = s.paginate(&r, 10).unwrap();
        answered(&c, id).await;
    }
    s.open_room(&room_id(1)).unwrap();
    assert_eq!(s.collect_garbage(), 1);
    let r0 = read(&s, "room", json!({"room_id": room_id(0)}));
    assert_eq!(r0["timeline_rows"], 0);
    assert!(r0["entry"]["preview"].is_object(), "the preview stays");
    assert_eq!(
        read(&s, "room", json!({"room_id": room_id(1)}))["timeline_rows"],
        10
    );
    // The eviction is announced at once.
    let (ch, _) = until_store(&c, |ch| ch["cause"]["command"] == "gc").await;
    assert_eq!(ch["rooms"][room_id(0)]["reset"], true);
    assert!(ch["rooms"].get(room_id(1)).is_none());
    // An open room keeps paginating from where it was.
    let id = s.paginate(&room_id(1), 1).unwrap();
    let (_, ch) = answered(&c, id).await;
    assert_eq!(ch["rooms"][room_id(1)]["prepended"], 1);
    // Receipts an evicted room gathers since go at the next collection, alone: its timeline
    // is not reset again.
    let r0 = room_id(0);
    b.push_event(
        "sync_complete",
        json!({"rooms": {&r0: {"receipts": {"$x": [{"user_id": ALICE, "receipt_type": "m.read",
                                                    "timestamp": 1}]}}}}),
    );
    until_store(&c, |ch| ch["rooms"][&r0]["receipts"].is_array()).await;
    assert_eq!(s.collect_garbage(), 0);
    let (ch, _) = until_store(&c, |ch| ch["cause"]["command"] == "gc").await;
    assert_eq!(ch["rooms"][&r0], json!({"receipts": ["$x"]}));
    assert_eq!(read(&s, "receipts", json!({"room_id": r0})), json!({}));
    close_and_drain(&c).await;
}

/// Bad input loses nothing (§4.2 is not versioned): an undecodable sync is counted and
/// skipped, a room without meta that the store does not know is skipped (v0.2608 omits
/// unchanged meta), unknown fields are ignored, and the rest of the stream goes on.
#[tokio::test]
async fn malformed_and_newer_shapes_are_tolerated() {
    let (b, c, s) = setup(2, 1).await;
    b.push_event("sync_complete", json!([1, 2, 3]));
    b.push_event(
        "sync_complete",
        json!({"rooms": {"!unknown:example.org": {"timeline": [{"timeline_rowid": 1, "event_rowid": 1}]},
                         (room_id(0)): {"new_field": {"x": 1}, "typing_v2": true}},
               "catchup": false, "server_timestamp": 5, "brand_new": [1]}),
    );
    b.push_event("events_decrypted", json!("not an object"));
    b.room_message(&room_id(0), BOB, "still here").unwrap();
    until_store(&c, |ch| ch["rooms"][room_id(0)]["appended"].is_array()).await;
    let session = read(&s, "session", json!({}));
    assert_eq!(session["undecodable"], 2);
    assert_eq!(session["skipped_rooms"], 1);
    assert_eq!(
        names(&read(&s, "room_list", json!({"invites": false}))).len(),
        2
    );
    close_and_drain(&c).await;
}

/// Misuse is refused and changes nothing: attaching after connect or twice, an rwws client,
/// unknown reads and rooms, bad arguments, actions after close.
#[tokio::test]
async fn misuse_is_refused_clearly() {
    let b = backend().await;
    let c = client(&b, |x| x);
    assert_eq!(
        Store::attach(&c, b"").unwrap_err().status(),
        Status::ErrState
    );
    let fresh = Client::new(
        tether::Config::builder(&b.http_url())
            .token(&b.token())
            .build()
            .unwrap(),
    );
    let s = Store::attach(&fresh, b"").unwrap();
    assert_eq!(
        Store::attach(&fresh, b"").unwrap_err().status(),
        Status::ErrInUse
    );
    assert_eq!(
        Store::attach(
            &Client::new(
                tether::Config::builder(&b.http_url())
                    .token(&b.token())
                    .build()
                    .unwrap()
            ),
            b"{\"nope\":1}"
        )
        .unwrap_err()
        .status(),
        Status::ErrInvalidArgument
    );
    // A zero timeout would time every action out at once.
    let unattached = Client::new(
        tether::Config::builder(&b.http_url())
            .token(&b.token())
            .build()
            .unwrap(),
    );
    let e = Store::attach(&unattached, br#"{"request_timeout_ms": 0}"#).unwrap_err();
    assert_eq!(e.status(), Status::ErrInvalidArgument, "{e}");
    // One past what a request takes would be refused by every action.
    let e = Store::attach(&unattached, br#"{"request_timeout_ms": 4294967296}"#).unwrap_err();
    assert_eq!(e.status(), Status::ErrInvalidArgument, "{e}");
    assert!(Store::attach(&unattached, br#"{"request_timeout_ms": 1}"#).is_ok());
    // gomuks-rpc.md §2: with `last_server_ts` the first sync is a catchup of what changed
    // since then, meant for a client holding the rest from that time; a store starts empty.
    let catching_up = Client::new(
        tether::Config::builder(&b.http_url())
            .token(&b.token())
            .last_server_ts(1)
            .build()
            .unwrap(),
    );
    let e = Store::attach(&catching_up, b"").unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig, "{e}");
    assert!(e.message().contains("last_server_ts"), "{e}");
    // gomuks-rpc.md §7.2: a resume that succeeds replays only the events missed since then.
    let resuming = Client::new(
        tether::Config::builder(&b.http_url())
            .token(&b.token())
            .resume_state(&b.stats().run_id, -1)
            .build()
            .unwrap(),
    );
    let e = Store::attach(&resuming, b"").unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig, "{e}");
    assert!(e.message().contains("resume state"), "{e}");
    let rw = Client::new(
        tether::Config::builder(&b.rwws_url())
            .protocol(tether::Protocol::Rwws)
            .token("AAECAw==")
            .build()
            .unwrap(),
    );
    assert_eq!(
        Store::attach(&rw, b"").unwrap_err().status(),
        Status::ErrUnsupported
    );
    for (what, args) in [
        ("nope", "{}"),
        ("timeline", "{}"),
        ("timeline", r#"{"room_id": "!nope:x"}"#),
        ("room_list", r#"{"space": "!nope:x"}"#),
        ("room_list", r#"{"order": "random"}"#),
        ("room_list", "[1]"),
        ("event", r#"{"room_id": "!nope:x", "rowid": 1}"#),
    ] {
        let e = s.read(what, args.as_bytes()).unwrap_err();
        assert_eq!(e.status(), Status::ErrInvalidArgument, "{what} {args}: {e}");
    }
    assert_eq!(
        s.read("room", br#"{"room_id": "!nope:x"}"#).unwrap(),
        b"null"
    );
    assert_eq!(
        s.paginate("!nope:x", 0).unwrap_err().status(),
        Status::ErrInvalidArgument
    );
    assert_eq!(
        s.send_message(b"{}").unwrap_err().status(),
        Status::ErrInvalidArgument
    );
    fresh.close().unwrap();
    drop(fresh);
    // A room it does not know is the first thing an action finds wrong.
    assert!(s.read("session", b"").is_ok());
    assert_eq!(
        s.mark_read("!nope:x", "").unwrap_err().status(),
        Status::ErrInvalidArgument
    );
    close_and_drain(&c).await;
}
