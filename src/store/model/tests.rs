//! Rules of applying events, one per test, on hand-made gomuks shapes (tests/fixtures/gomuks:
//! v0.2607.0 as the pinned backend sends it, and the v0.2608 changes the research in
//! docs/store.md lists).

use serde_json::{json, Value};

use super::*;

const INITIAL: &str = include_str!("../../../tests/fixtures/gomuks/v0.2607_initial.json");
const WITHOUT_META: &str =
    include_str!("../../../tests/fixtures/gomuks/v0.2608_sync_without_meta.json");
const CATCHUP: &str = include_str!("../../../tests/fixtures/gomuks/v0.2608_catchup.json");
const ROOM: &str = "!known:example.org";

fn apply(m: &mut Model, command: &str, data: Value) -> Changes {
    m.apply_event(command, data.to_string().as_bytes())
        .expect("consumed")
}

fn seeded() -> Model {
    let mut m = Model::default();
    m.apply_event("sync_complete", INITIAL.as_bytes()).unwrap();
    m
}

fn msg(rowid: i64, body: &str) -> Value {
    json!({"rowid": rowid, "room_id": ROOM, "event_id": format!("$e{rowid}"), "sender": "@bob:example.org",
           "type": "m.room.message", "timestamp": 1_700_000_000_000i64 + rowid, "content": {"body": body}})
}

/// The seeded model with one live row (timeline rowid 10, event 1), and the room's epoch.
fn with_one_row() -> (Model, u64) {
    let mut m = seeded();
    let one =
        json!({"timeline": [{"timeline_rowid": 10, "event_rowid": 1}], "events": [msg(1, "a")]});
    apply(&mut m, "sync_complete", json!({"rooms": {ROOM: one}}));
    let epoch = m.rooms[ROOM].epoch;
    (m, epoch)
}

fn rows(m: &Model) -> Vec<(i64, i64)> {
    m.rooms[ROOM]
        .timeline
        .iter()
        .map(|r| (r.timeline_rowid, r.event_rowid))
        .collect()
}

#[test]
fn initial_sync_has_no_timeline_but_previews_and_member_state() {
    let m = seeded();
    let r = &m.rooms[ROOM];
    assert!(r.timeline.is_empty());
    assert_eq!(r.events.len(), 2);
    assert_eq!(
        r.state_event("m.room.member", "@bob:example.org")
            .unwrap()
            .head
            .rowid,
        50
    );
    assert!(m.account_data.contains_key("m.push_rules"));
}

/// v0.2608 omits unchanged meta (and every empty field): a known room applies the rest, an
/// unknown one is skipped and counted.
#[test]
fn a_room_without_meta_applies_when_known_and_is_skipped_when_not() {
    let mut m = seeded();
    let ch = m
        .apply_event("sync_complete", WITHOUT_META.as_bytes())
        .unwrap();
    assert_eq!(rows(&m), [(7, 70)]);
    assert_eq!(ch.rooms[ROOM].appended, [70]);
    assert!(!ch.rooms[ROOM].meta);
    assert!(ch.rooms[ROOM].receipts.contains("$e70"));
    assert!(!m.rooms.contains_key("!unknown:example.org"));
    assert_eq!(m.skipped_rooms, 1);
    assert!(!ch.rooms.contains_key("!unknown:example.org"));
}

/// Spec §6.1: a catch-up names only rooms whose row changed; one that got only reactions in
/// the gap is left out. Every room is collected: timelines, receipts and loaded state are
/// stale, open rooms included, and each is reported `reset`.
#[test]
fn a_catchup_collects_the_rooms_it_does_not_name() {
    let (mut m, epoch) = with_one_row();
    let other = "!other:example.org";
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {other: {"meta": {"room_id": other}}}}),
    );
    {
        let r = m.rooms.get_mut(ROOM).unwrap();
        r.open = true;
        r.state_loaded = true;
    }
    let ch = apply(
        &mut m,
        "sync_complete",
        json!({"catchup": true, "rooms": {other: {"meta": {"room_id": other, "name": "O"}}}}),
    );
    let r = &m.rooms[ROOM];
    assert!(
        ch.rooms[ROOM].reset,
        "left out of the catch-up, still reset"
    );
    assert!(r.timeline.is_empty() && !r.state_loaded && r.epoch != epoch);
    assert!(r.events.contains_key(&50), "what the list shows stays");
}

/// v0.2608 catch-up sync: missed events are not delivered, so cached timelines would have a
/// gap; they are reset.
#[test]
fn a_catchup_sync_resets_timelines() {
    let mut m = seeded();
    m.apply_event("sync_complete", WITHOUT_META.as_bytes())
        .unwrap();
    let epoch = m.rooms[ROOM].epoch;
    let ch = m.apply_event("sync_complete", CATCHUP.as_bytes()).unwrap();
    assert!(ch.rooms[ROOM].reset);
    assert!(m.rooms[ROOM].timeline.is_empty());
    assert_ne!(m.rooms[ROOM].epoch, epoch);
    assert_eq!(m.rooms[ROOM].meta_i64("unread_messages"), 4);
}

#[test]
fn clear_state_drops_everything_but_the_session() {
    let mut m = seeded();
    apply(&mut m, "image_auth_token", json!("tok"));
    let ch = apply(&mut m, "sync_complete", json!({"clear_state": true}));
    assert!(ch.cleared && ch.room_list);
    assert!(m.rooms.is_empty() && m.account_data.is_empty());
    assert_eq!(m.session.image_auth_token.as_deref(), Some("tok"));
    // The initial sync starts over: init_complete is false until its event comes again.
    apply(&mut m, "init_complete", json!(null));
    let ch = apply(&mut m, "sync_complete", json!({"clear_state": true}));
    assert!(ch.session && !m.session.init_complete);
}

/// gomuks' logout sends `client_state` with `is_logged_in: false` and no `clear_state`: the
/// account's rooms go, as gomuks web clears its store. So do they when another user logs in.
#[test]
fn logging_out_or_another_account_clears_the_store() {
    let logged_in =
        |user: &str| json!({"is_logged_in": true, "is_verified": true, "user_id": user});
    let mut m = seeded();
    let ch = apply(&mut m, "client_state", logged_in("@me:example.org"));
    assert!(!ch.cleared && !m.rooms.is_empty(), "the same account");
    let ch = apply(&mut m, "client_state", logged_in("@me:example.org"));
    assert!(!ch.cleared);
    // A backend whose client is still starting (after a restart) is no logout.
    let starting = json!({"is_initialized": false, "is_logged_in": false});
    let ch = apply(&mut m, "client_state", starting);
    assert!(!ch.cleared && !m.rooms.is_empty());
    apply(&mut m, "init_complete", json!(null));
    let ch = apply(&mut m, "client_state", json!({"is_logged_in": false}));
    assert!(ch.cleared && ch.room_list && ch.session);
    assert!(m.rooms.is_empty() && m.account_data.is_empty());
    assert!(!m.session.init_complete);
    assert_eq!(
        m.session.client_state.as_ref().unwrap().get(),
        r#"{"is_logged_in":false}"#
    );

    let mut m = seeded();
    apply(&mut m, "client_state", logged_in("@me:example.org"));
    let ch = apply(&mut m, "client_state", logged_in("@other:example.org"));
    assert!(ch.cleared && m.rooms.is_empty());
}

/// A limited sync (`reset`) replaces the timeline and drops pending echoes; a pagination
/// asked before it is discarded (its rows belong to the old timeline).
#[test]
fn a_reset_makes_a_running_pagination_stale() {
    let (mut m, epoch) = with_one_row();
    let mut ch = Changes::default();
    m.apply_echo(
        ROOM,
        &serde_json::value::to_raw_value(&msg(2, "echo")).unwrap(),
        Echo::Answer,
        &mut ch,
    );
    assert_eq!(m.rooms[ROOM].pending, [2]);
    let ch = apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"reset": true, "timeline": [{"timeline_rowid": 20, "event_rowid": 3}], "events": [msg(3, "b")]}}}),
    );
    assert!(ch.rooms[ROOM].reset && ch.rooms[ROOM].pending);
    assert!(m.rooms[ROOM].pending.is_empty());
    let page = json!({"events": [{"rowid": 4, "timeline_rowid": 5, "room_id": ROOM, "event_id": "$e4"}], "has_more": false});
    let mut ch = Changes::default();
    m.apply_page(ROOM, epoch, page.to_string().as_bytes(), &mut ch);
    assert_eq!(rows(&m), [(20, 3)], "stale page discarded");
    assert!(m.rooms[ROOM].has_more);
}

/// Pagination prepends in order; rows already present are not duplicated; live rows keep
/// appending.
#[test]
fn pages_merge_in_timeline_order() {
    let (mut m, epoch) = with_one_row();
    let ev = |rowid: i64, tr: i64| {
        let mut e = msg(rowid, "h");
        e["timeline_rowid"] = tr.into();
        e
    };
    let page = json!({"events": [ev(1, 10), ev(9, 9), ev(8, 8)], "has_more": true});
    let mut ch = Changes::default();
    m.apply_page(ROOM, epoch, page.to_string().as_bytes(), &mut ch);
    assert_eq!(rows(&m), [(8, 8), (9, 9), (10, 1)]);
    assert_eq!(ch.rooms[ROOM].prepended, 2);
    assert!(ch.rooms[ROOM].appended.is_empty());
    // Into an empty timeline (the usual first page: the initial sync has no rows) it is
    // history too, not new messages.
    let mut m = seeded();
    let mut ch = Changes::default();
    let page = json!({"events": [ev(9, 9), ev(8, 8)], "has_more": true});
    let epoch = m.rooms[ROOM].epoch;
    m.apply_page(ROOM, epoch, page.to_string().as_bytes(), &mut ch);
    assert_eq!(
        (ch.rooms[ROOM].prepended, ch.rooms[ROOM].appended.len()),
        (2, 0)
    );
}

/// The last page, even an empty one, says so (`has_more_changed`), and a UI drawing "start of
/// the room" learns it from the change set its action brings, not only from the RESPONSE.
#[test]
fn an_empty_last_page_reports_has_more() {
    let (mut m, epoch) = with_one_row();
    let last_page = |m: &mut Model| {
        let mut ch = Changes::default();
        m.apply_page(
            ROOM,
            epoch,
            br#"{"events": [], "has_more": false}"#,
            &mut ch,
        );
        ch.prune();
        ch
    };
    assert!(last_page(&mut m).rooms[ROOM].has_more_changed);
    assert!(!m.rooms[ROOM].has_more);
    assert!(
        last_page(&mut m).is_empty(),
        "the same again changes nothing"
    );
}

/// docs/store.md Tolerance: one bad timeline row or state entry is skipped alone, not the
/// room's whole timeline or state.
#[test]
fn a_bad_row_or_state_entry_is_skipped_alone() {
    let (mut m, _) = with_one_row();
    let room = json!({
        "timeline": [5, {"timeline_rowid": 11, "event_rowid": 2}],
        "events": [msg(2, "b")],
        "state": {"m.room.topic": "not a map",
                  "m.room.member": {"@a:x": "not a rowid", "@b:x": 2}},
    });
    apply(&mut m, "sync_complete", json!({"rooms": {ROOM: room}}));
    assert_eq!(rows(&m), [(10, 1), (11, 2)]);
    let state = &m.rooms[ROOM].state;
    assert_eq!(state["m.room.member"].get("@b:x"), Some(&2));
    assert!(!state["m.room.member"].contains_key("@a:x"));
    assert!(!state.contains_key("m.room.topic"));
}

/// One receipt per user, as gomuks web keeps them (room.ts `applyReceipt`): a thread's
/// receipt and the main one, or a public and a private one, do not show the user twice; the
/// one further down the timeline wins, whatever the timestamps say (hicli stamps a sender's
/// implicit receipt with the event's own origin_server_ts, and servers' clocks differ).
#[test]
fn receipts_keep_one_per_user_the_furthest_in_the_timeline() {
    let mut m = seeded();
    let rows = json!({"timeline": [{"timeline_rowid": 10, "event_rowid": 1},
                                   {"timeline_rowid": 11, "event_rowid": 2}],
                      "events": [msg(1, "a"), msg(2, "b")]});
    apply(&mut m, "sync_complete", json!({"rooms": {ROOM: rows}}));
    let bob = |event: &str, thread: &str, ts: i64| {
        json!({"user_id": "@bob:example.org", "receipt_type": "m.read", "thread_id": thread,
               "event_id": event, "timestamp": ts})
    };
    let users = |m: &Model| -> Vec<String> {
        m.rooms[ROOM]
            .receipts
            .values()
            .map(|r| r.event_id.clone())
            .collect()
    };
    // The later row, stamped earlier, in a thread; then the earlier row, stamped later.
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"receipts": {"$e2": [bob("$e2", "$root", 10)]}}}}),
    );
    let ch = apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"receipts": {"$e1": [bob("$e1", "", 20)]}}}}),
    );
    assert!(
        !ch.rooms.contains_key(ROOM),
        "an earlier row changes nothing"
    );
    assert_eq!(users(&m), ["$e2"]);
    // Both in one sync: still one.
    let mut m2 = seeded();
    apply(&mut m2, "sync_complete", json!({"rooms": {ROOM: rows}}));
    apply(
        &mut m2,
        "sync_complete",
        json!({"rooms": {ROOM: {"receipts": {
        "$e1": [bob("$e1", "", 20)], "$e2": [bob("$e2", "$root", 10)]}}}}),
    );
    assert_eq!(users(&m2), ["$e2"]);
    // One on an event the timeline does not place, however new, does not replace it.
    let ch = apply(
        &mut m2,
        "sync_complete",
        json!({"rooms": {ROOM: {"receipts": {"$gone": [bob("$gone", "$root", 99)]}}}}),
    );
    assert!(!ch.rooms.contains_key(ROOM));
    assert_eq!(users(&m2), ["$e2"]);
}

/// Where the timeline does not place both events, the newer timestamp wins.
#[test]
fn receipts_keep_the_newest_per_user() {
    let mut m = seeded();
    let rc = |event: &str, ts: i64| json!({"rooms": {ROOM: {"receipts": {event: [{"user_id": "@bob:example.org", "receipt_type": "m.read", "event_id": event, "timestamp": ts}]}}}});
    apply(&mut m, "sync_complete", rc("$new", 20));
    let ch = apply(&mut m, "sync_complete", rc("$old", 10));
    assert!(
        !ch.rooms.contains_key(ROOM),
        "an older receipt changes nothing"
    );
    let r = &m.rooms[ROOM].receipts;
    assert_eq!(r.len(), 1);
    assert_eq!(r.values().next().unwrap().event_id, "$new");
}

/// A local echo's `~hicli-…` id gives way to the real one; the synced row clears pending.
#[test]
fn the_echo_becomes_the_synced_event() {
    let mut m = seeded();
    let mut echo = msg(5, "hi");
    echo["event_id"] = json!("~hicli-1");
    let mut ch = Changes::default();
    m.apply_echo(
        ROOM,
        &serde_json::value::to_raw_value(&echo).unwrap(),
        Echo::Answer,
        &mut ch,
    );
    assert!(m.rooms[ROOM].by_id.contains_key("~hicli-1"));
    let ch = apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"timeline": [{"timeline_rowid": 3, "event_rowid": 5}], "events": [msg(5, "hi")]}}}),
    );
    assert_eq!(ch.rooms[ROOM].appended, [5]);
    assert!(ch.rooms[ROOM].pending);
    assert!(
        ch.rooms[ROOM].updated.is_empty(),
        "an appended row is not also 'updated'"
    );
    let r = &m.rooms[ROOM];
    assert!(r.pending.is_empty());
    assert!(!r.by_id.contains_key("~hicli-1"));
    assert_eq!(r.by_id["$e5"], 5);
}

#[test]
fn decrypted_events_update_in_place_and_move_the_preview() {
    let mut m = seeded();
    let ch = apply(
        &mut m,
        "events_decrypted",
        json!({"room_id": ROOM, "preview_event_rowid": 61, "events": [msg(61, "secret")]}),
    );
    assert!(ch.rooms[ROOM].updated.contains(&61));
    assert!(ch.room_list);
    assert_eq!(m.rooms[ROOM].meta_i64("preview_event_rowid"), 61);
}

/// An edit decrypted late: hicli already linked it to its target (`last_edit_rowid`), and
/// reads show the target with it, so the target is reported changed with the edit (gomuks
/// web `applyDecrypted` re-renders the timeline).
#[test]
fn a_late_decrypted_edit_reports_its_target_changed() {
    let mut m = seeded();
    let mut target = msg(70, "typo");
    target["last_edit_rowid"] = json!(71);
    let encrypted = json!({"rowid": 71, "room_id": ROOM, "event_id": "$e71",
                           "type": "m.room.encrypted", "content": {}});
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"timeline": [{"timeline_rowid": 20, "event_rowid": 70},
                                             {"timeline_rowid": 21, "event_rowid": 71}],
                                "events": [target, encrypted]}}}),
    );
    let mut edit = msg(71, "* fixed");
    edit["relation_type"] = json!("m.replace");
    let ch = apply(
        &mut m,
        "events_decrypted",
        json!({"room_id": ROOM, "events": [edit]}),
    );
    let updated: Vec<i64> = ch.rooms[ROOM].updated.iter().copied().collect();
    assert_eq!(updated, [70, 71]);
}

#[test]
fn left_rooms_and_invites() {
    let mut m = seeded();
    let ch = apply(
        &mut m,
        "sync_complete",
        json!({"invited_rooms": [{"room_id": "!inv:x", "created_at": 5,
        "invite_state": [{"type": "m.room.name", "content": {"name": "Inv"}}, {"type": "m.room.member", "sender": "@bob:x", "content": {"membership": "invite", "is_direct": true}}]}]}),
    );
    assert!(ch.room_list);
    let i = &m.invites["!inv:x"];
    // A named room is no DM, even when the invite says is_direct.
    assert_eq!(
        (
            i.name.as_deref(),
            i.inviter.as_deref(),
            i.dm_user_id.as_deref()
        ),
        (Some("Inv"), Some("@bob:x"), None)
    );
    // Joining turns the invite into a room.
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {"!inv:x": {"meta": {"room_id": "!inv:x", "name": "Inv"}}}}),
    );
    assert!(!m.invites.contains_key("!inv:x") && m.rooms.contains_key("!inv:x"));
    let ch = apply(
        &mut m,
        "sync_complete",
        json!({"left_rooms": ["!inv:x", "!never:x"]}),
    );
    assert!(ch.rooms["!inv:x"].removed);
    assert!(!ch.rooms.contains_key("!never:x"));
    assert!(!m.rooms.contains_key("!inv:x"));
}

/// A room the app had open and then left (from another device) is no longer open: when it
/// is joined again it starts closed, so its timeline is evicted as any other's (the app
/// cannot close a room the store no longer knows).
#[test]
fn a_left_room_is_not_open_when_it_comes_back() {
    let mut m = seeded();
    m.open.insert(ROOM.to_owned());
    apply(&mut m, "sync_complete", json!({"left_rooms": [ROOM]}));
    assert!(!m.open.contains(ROOM));
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"meta": {"room_id": ROOM, "name": "Back"}}}}),
    );
    assert!(!m.rooms[ROOM].open);
}

/// The seeded model whose room shows a preview (event 62) edited by event 63, after event
/// 61.
fn with_edited_preview() -> Model {
    let mut m = seeded();
    let mut preview = msg(62, "p");
    preview["last_edit_rowid"] = json!(63);
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {
        "meta": {"room_id": ROOM, "name": "Known", "preview_event_rowid": 62},
        "timeline": [{"timeline_rowid": 1, "event_rowid": 61}, {"timeline_rowid": 2, "event_rowid": 62}, {"timeline_rowid": 3, "event_rowid": 63}],
        "events": [msg(61, "a"), preview, msg(63, "edit")]}}}),
    );
    m
}

/// Eviction keeps the preview, its edit and its sender's member event, and nothing else.
#[test]
fn eviction_keeps_what_the_room_list_shows() {
    let mut m = with_edited_preview();
    let r = m.rooms.get_mut(ROOM).unwrap();
    assert!(r.evict());
    let mut kept: Vec<i64> = r.events.keys().copied().collect();
    kept.sort();
    assert_eq!(kept, [50, 62, 63]);
    assert!(r.timeline.is_empty() && r.has_more);
    assert!(!r.evict(), "nothing left to evict");
}

/// What eviction keeps can be more than its own check allows for (a pending send beside the
/// preview, its edit and a member event): a second pass evicts nothing and announces no
/// reset until an event is added again.
#[test]
fn an_evicted_room_is_not_evicted_again_until_it_changes() {
    let mut m = with_edited_preview();
    let mut failed = msg(70, "not sent");
    failed["send_error"] = json!("no route");
    let mut ch = Changes::default();
    let raw = serde_json::value::to_raw_value(&failed).unwrap();
    m.apply_echo(ROOM, &raw, Echo::Outcome, &mut ch);
    let r = m.rooms.get_mut(ROOM).unwrap();
    assert!(r.evict());
    assert_eq!(
        r.events.len(),
        4,
        "preview, edit, member and the failed send"
    );
    let epoch = r.epoch;
    assert!(!r.evict(), "evicted again");
    assert_eq!(r.epoch, epoch, "a pagination running on it stays valid");
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"timeline": [{"timeline_rowid": 4, "event_rowid": 71}], "events": [msg(71, "new")]}}}),
    );
    assert!(
        m.rooms.get_mut(ROOM).unwrap().evict(),
        "a new event makes it evictable"
    );
    // A receipt does not: it is what an evicted room would otherwise gather for ever, and it
    // goes alone (evict_idle drops it), with no new reset of the timeline.
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"receipts": {"$e71": [{"user_id": "@c:example.org",
               "receipt_type": "m.read", "timestamp": 5}]}}}}),
    );
    let room = m.rooms.get_mut(ROOM).unwrap();
    assert!(!room.evict(), "a receipt alone");
    assert_eq!(room.drop_receipts(), BTreeSet::from(["$e71".to_owned()]));
}

/// Eviction keeps a room's emoji packs, as gomuks web's garbage collection does; a room it
/// has nothing else to take from (its preview only) gives up its receipts alone.
#[test]
fn eviction_keeps_emoji_packs_and_a_preview_only_room_gives_up_receipts() {
    let (mut m, _) = with_one_row();
    let mut pack = msg(90, "");
    pack["type"] = json!("m.room.image_pack");
    pack["state_key"] = json!("p");
    pack["content"] = json!({"images": {}});
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {
        "events": [pack], "state": {"m.room.image_pack": {"p": 90}},
        "receipts": {"$e71": [{"user_id": "@c:example.org", "receipt_type": "m.read", "timestamp": 5}]}}}}),
    );
    let room = m.rooms.get_mut(ROOM).unwrap();
    assert!(room.evict());
    assert!(room.receipts.is_empty());
    assert_eq!(room.state["m.room.image_pack"]["p"], 90);
    assert!(room.events.contains_key(&90));
    // Receipts that come later: nothing else to evict, they go alone.
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"receipts": {"$e71": [
        {"user_id": "@d:example.org", "receipt_type": "m.read", "timestamp": 6}]}}}}),
    );
    let room = m.rooms.get_mut(ROOM).unwrap();
    assert!(!room.evict());
    assert_eq!(room.drop_receipts(), BTreeSet::from(["$e71".to_owned()]));
    assert!(room.receipts.is_empty());
}

/// gomuks sends before it answers `send_message`, so `send_complete` can arrive first: the
/// answer's "sending" echo that comes after does not undo the outcome.
#[test]
fn a_late_send_answer_does_not_undo_send_complete() {
    let mut m = seeded();
    let mut outcome = msg(80, "hello");
    outcome["event_id"] = json!("~hicli-80");
    outcome["send_error"] = json!("encryption failed");
    let mut answer = msg(80, "hello");
    answer["event_id"] = json!("~hicli-80");
    let mut ch = Changes::default();
    let raw = |v: &Value| serde_json::value::to_raw_value(v).unwrap();
    m.apply_echo(ROOM, &raw(&outcome), Echo::Outcome, &mut ch);
    m.apply_echo(ROOM, &raw(&answer), Echo::Answer, &mut ch);
    let r = &m.rooms[ROOM];
    assert_eq!(r.pending, [80]);
    assert!(r.events[&80].raw.get().contains("encryption failed"));
    // In the usual order the outcome replaces the answer.
    let mut m = seeded();
    m.apply_echo(ROOM, &raw(&answer), Echo::Answer, &mut ch);
    m.apply_echo(ROOM, &raw(&outcome), Echo::Outcome, &mut ch);
    assert!(m.rooms[ROOM].events[&80]
        .raw
        .get()
        .contains("encryption failed"));
}

#[test]
fn unknown_commands_are_not_consumed_and_bad_ones_are_counted() {
    let mut m = seeded();
    assert!(m.apply_event("brand_new_event", b"{}").is_none());
    assert!(m.apply_event("typing", b"[\"x\"]").unwrap().is_empty());
    assert!(m.apply_event("image_auth_token", b"{}").unwrap().is_empty());
    assert_eq!(m.undecodable, 2);
}

/// A late answer or `send_complete` (after the synced copy) does not overwrite the newer
/// synced event, nor bring it back to the pending tail.
#[test]
fn a_late_echo_does_not_undo_the_synced_event() {
    let mut m = seeded();
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"timeline": [{"timeline_rowid": 3, "event_rowid": 5}], "events": [msg(5, "hi")]}}}),
    );
    let mut late = msg(5, "hi");
    late["event_id"] = json!("~hicli-1");
    late["send_error"] = json!("not sent");
    let mut ch = Changes::default();
    m.apply_echo(
        ROOM,
        &serde_json::value::to_raw_value(&late).unwrap(),
        Echo::Outcome,
        &mut ch,
    );
    ch.prune();
    assert!(ch.is_empty());
    let r = &m.rooms[ROOM];
    assert!(r.pending.is_empty());
    assert_eq!(r.events[&5].head.event_id, "$e5");
    assert_eq!(r.by_id["$e5"], 5);
}

/// A room sent afresh after `clear_state` gets a new epoch (a pagination asked before is
/// stale) and stays open if the app had it open.
#[test]
fn a_room_created_again_is_a_new_timeline_and_stays_open() {
    let mut m = seeded();
    let epoch = m.rooms[ROOM].epoch;
    m.open.insert(ROOM.to_owned());
    apply(
        &mut m,
        "sync_complete",
        json!({"clear_state": true, "rooms": {ROOM: {"meta": {"room_id": ROOM}}}}),
    );
    assert_ne!(m.rooms[ROOM].epoch, epoch);
    assert!(m.rooms[ROOM].open);
    let page =
        json!({"events": [{"rowid": 4, "timeline_rowid": 5, "room_id": ROOM}], "has_more": false});
    let mut ch = Changes::default();
    m.apply_page(ROOM, epoch, page.to_string().as_bytes(), &mut ch);
    assert!(
        m.rooms[ROOM].timeline.is_empty(),
        "the page of the old timeline is dropped"
    );
}

/// The room list changes when its preview changes in place (decrypted, or a new edit), and
/// an invite changes the spaces' unread sums.
#[test]
fn previews_changed_in_place_and_invites_are_list_changes() {
    let mut m = seeded();
    let ch = apply(
        &mut m,
        "events_decrypted",
        json!({"room_id": ROOM, "events": [msg(60, "decrypted")]}),
    );
    assert!(ch.room_list && ch.rooms[ROOM].updated.contains(&60));
    let ch = apply(
        &mut m,
        "events_decrypted",
        json!({"room_id": ROOM, "events": [msg(60, "decrypted")]}),
    );
    assert!(!ch.room_list, "the same preview again");
    let ch = apply(
        &mut m,
        "sync_complete",
        json!({"invited_rooms": [{"room_id": "!i:x", "invite_state": []}]}),
    );
    assert!(ch.room_list && ch.spaces);
}

/// Nothing changed, nothing announced: an empty decryption, the same session event twice,
/// the same receipt again.
#[test]
fn no_change_makes_no_change_set() {
    let mut m = seeded();
    let mut empty = |cmd: &str, data: Value| {
        let mut ch = apply(&mut m, cmd, data);
        ch.prune();
        ch.is_empty()
    };
    assert!(empty(
        "events_decrypted",
        json!({"room_id": ROOM, "events": []})
    ));
    assert!(!empty("sync_status", json!({"type": "ok"})));
    assert!(empty("sync_status", json!({"type": "ok"})));
    assert!(!empty("init_complete", json!({})));
    assert!(empty("init_complete", json!({})));
    let rc = json!({"rooms": {ROOM: {"receipts": {"$e60": [{"user_id": "@b:x", "receipt_type": "m.read", "timestamp": 5}]}}}});
    assert!(!empty("sync_complete", rc.clone()));
    assert!(empty("sync_complete", rc));
}

/// A page read after a live row the sync has not brought yet: that row is new to the tail
/// (appended), the older ones are history (prepended).
#[test]
fn page_rows_past_the_tail_are_appended() {
    let (mut m, epoch) = with_one_row();
    let ev = |rowid: i64, tr: i64| {
        let mut e = msg(rowid, "h");
        e["timeline_rowid"] = tr.into();
        e
    };
    let page = json!({"events": [ev(11, 11), ev(1, 10), ev(9, 9)], "has_more": true});
    let mut ch = Changes::default();
    m.apply_page(ROOM, epoch, page.to_string().as_bytes(), &mut ch);
    assert_eq!(
        (ch.rooms[ROOM].prepended, ch.rooms[ROOM].appended.clone()),
        (1, vec![11])
    );
}

/// hicli sends the targets of replies, edits and reactions in a sync's `events` on purpose:
/// a reset keeps them, though no timeline row names them.
#[test]
fn a_reset_keeps_the_events_its_sync_brought() {
    let (mut m, _) = with_one_row();
    let mut reply = msg(3, "b");
    reply["content"]["m.relates_to"] = json!({"m.in_reply_to": {"event_id": "$e2"}});
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"reset": true, "timeline": [{"timeline_rowid": 20, "event_rowid": 3}],
               "events": [msg(2, "replied to"), reply]}}}),
    );
    let r = &m.rooms[ROOM];
    assert_eq!(r.by_id.get("$e2"), Some(&2), "the reply's target");
    assert!(r.events.contains_key(&3) && !r.events.contains_key(&1));
}

/// A limited sync in an open room drops the old window's events, not the state or preview.
#[test]
fn a_reset_prunes_the_old_window() {
    let (mut m, _) = with_one_row();
    assert!(m.rooms[ROOM].events.contains_key(&1));
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"reset": true, "timeline": [{"timeline_rowid": 20, "event_rowid": 3}], "events": [msg(3, "b")]}}}),
    );
    let r = &m.rooms[ROOM];
    assert!(!r.events.contains_key(&1), "the old window's event");
    assert!(r.events.contains_key(&3) && r.events.contains_key(&50) && r.events.contains_key(&60));
}

/// Payloads recorded from the real gomuks v0.2607.0 with Synapse (interop/test_store_synapse.c,
/// `TETHER_RECORD_FIXTURES`): every one applies without a skip or an undecodable part.
mod recorded {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                "../../../tests/fixtures/gomuks/recorded_v0.2607_",
                $name,
                ".json"
            ))
        };
    }

    fn room_of(data: &str) -> String {
        let v: Value = serde_json::from_str(data).unwrap();
        let list = v.get("events").cloned().unwrap_or(v);
        list[0]["room_id"].as_str().unwrap().to_owned()
    }

    /// A room the recorded answers belong to, known to the model.
    fn known(m: &mut Model, room: &str) {
        apply(
            m,
            "sync_complete",
            json!({"rooms": {room: {"meta": {"room_id": room, "name": "r"}}}}),
        );
    }

    /// gomuks v0.2607.0's own output: a live message that notifies with sound, then the echo
    /// of our own message, which read the room.
    #[test]
    fn the_recorded_notification_and_dismissal() {
        let mut m = Model::default();
        for data in [fixture!("sync_clear_state"), fixture!("sync_room_batch")] {
            m.apply_event("sync_complete", data.as_bytes()).unwrap();
        }
        let live = fixture!("sync_live_message");
        let ch = m.apply_event("sync_complete", live.as_bytes()).unwrap();
        let notes: Vec<_> = ch.rooms.values().flat_map(|r| &r.notifications).collect();
        assert_eq!(notes.len(), 1, "{:?}", notes);
        let n = notes[0];
        assert_eq!((n.rowid, n.sound, n.highlight), (56, true, false));
        assert_eq!(n.sender, "@bob:localhost");
        assert!(n.event_id.starts_with('$'), "{n:?}");
        let echo = fixture!("sync_own_echo");
        let ch = m.apply_event("sync_complete", echo.as_bytes()).unwrap();
        assert!(ch.rooms.values().any(|r| r.dismiss_notifications));
    }

    #[test]
    fn the_recorded_syncs_and_events_apply_cleanly() {
        let mut m = Model::default();
        for (cmd, data) in [
            ("sync_complete", fixture!("sync_clear_state")),
            ("sync_complete", fixture!("sync_room_batch")),
            ("sync_complete", fixture!("sync_invite")),
            ("sync_complete", fixture!("sync_live_message")),
            ("sync_complete", fixture!("sync_own_echo")),
            ("typing", fixture!("typing")),
        ] {
            let ch = m.apply_event(cmd, data.as_bytes()).unwrap();
            assert!(!ch.is_empty(), "{cmd} changed nothing");
        }
        // Recorded after the synced copy of the same rowid: late, so it changes nothing.
        let mut ch = m
            .apply_event("send_complete", fixture!("send_complete").as_bytes())
            .unwrap();
        ch.prune();
        assert!(ch.is_empty());
        assert_eq!((m.undecodable, m.skipped_rooms), (0, 0));
        assert_eq!(m.rooms.len(), 3);
        assert!(m.account_data.contains_key("m.push_rules"));
        let v: Value = serde_json::from_str(fixture!("send_complete")).unwrap();
        let sent = v["event"]["room_id"].as_str().unwrap();
        let r = &m.rooms[sent];
        assert_eq!(r.typing, ["@bob:localhost"]);
        // The synced own echo carries the send_complete's rowid: nothing left pending.
        assert!(r.pending.is_empty());
        assert!(!r.timeline.is_empty());
    }

    #[test]
    fn recorded_pages_merge_in_order_and_end() {
        let page = fixture!("paginate");
        let room = room_of(page);
        let mut m = Model::default();
        known(&mut m, &room);
        let mut ch = Changes::default();
        let epoch = m.rooms[&room].epoch;
        m.apply_page(&room, epoch, page.as_bytes(), &mut ch);
        let r = &m.rooms[&room];
        assert_eq!(ch.rooms[&room].prepended, r.timeline.len());
        assert!(r.timeline.len() > 50);
        assert!(r
            .timeline
            .windows(2)
            .all(|w| w[0].timeline_rowid < w[1].timeline_rowid));
        assert!(r.has_more);
        let mut ch = Changes::default();
        m.apply_page(&room, epoch, fixture!("paginate_end").as_bytes(), &mut ch);
        assert!(!m.rooms[&room].has_more);
        assert_eq!(m.undecodable, 0);
    }

    #[test]
    fn recorded_room_state_fills_members() {
        let state = fixture!("get_room_state");
        let room = room_of(state);
        let mut m = Model::default();
        known(&mut m, &room);
        let mut ch = Changes::default();
        m.apply_state(&room, true, state.as_bytes(), &mut ch);
        let r = &m.rooms[&room];
        assert!(r.state_loaded && r.members_loaded);
        assert!(r.state["m.room.member"].len() >= 2);
        assert!(r.state_event("m.room.create", "").is_some());
    }
}

#[test]
fn notifications_are_resolved_and_bad_entries_dropped() {
    let mut m = seeded();
    let sync = json!({"rooms": {ROOM: {
        "timeline": [{"timeline_rowid": 10, "event_rowid": 1}],
        "events": [msg(1, "hi @me")],
        "notifications": [
            {"event_rowid": 1, "sound": "loud", "highlight": true},
            "not an object",
            {"event_rowid": 99, "sound": true},
            {},
        ],
    }}});
    let ch = apply(&mut m, "sync_complete", sync);
    let rc = &ch.rooms[ROOM];
    // A field of the wrong type reads as unset; an event the store does not hold (99, or
    // none at all) is dropped, as gomuks' own clients drop it.
    assert_eq!(
        rc.notifications,
        [Notification {
            rowid: 1,
            event_id: "$e1".into(),
            sender: "@bob:example.org".into(),
            sound: false,
            highlight: true,
        }]
    );
    assert!(!rc.dismiss_notifications);
    // Notifications concern unwatched rooms too.
    let summary = rc.summary().expect("notifications are summarised");
    assert_eq!(summary.notifications.len(), 1);
    assert!(summary.appended.is_empty());

    let ch = apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"dismiss_notifications": true, "notifications": null}}}),
    );
    let rc = &ch.rooms[ROOM];
    assert!(rc.dismiss_notifications && rc.notifications.is_empty());
    assert!(rc.summary().is_some_and(|s| s.dismiss_notifications));
}

#[test]
fn a_catch_up_that_zeroes_the_count_dismisses_too() {
    let mut m = seeded();
    let mut meta = m.rooms[ROOM].meta.clone();
    meta.insert("unread_notifications".into(), json!(2));
    let ch = apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"meta": meta}}}),
    );
    assert!(!ch.rooms[ROOM].dismiss_notifications);
    meta.insert("unread_notifications".into(), json!(0));
    // gomuks' catch-up sync carries no dismiss flag; the count going to zero is enough.
    let ch = apply(
        &mut m,
        "sync_complete",
        json!({"catchup": true, "rooms": {ROOM: {"meta": meta}}}),
    );
    assert!(ch.rooms[ROOM].dismiss_notifications);
}

/// A notification keeps its room from eviction for a minute (the app reads the notified event
/// next), but does not restart its idle time: a room that keeps notifying is still evicted
/// once it has not been open for the delay, as gomuks web's garbage collection does.
#[test]
fn a_notification_holds_off_eviction_briefly_without_restarting_the_idle_time() {
    use std::time::Duration;
    let after = Duration::from_secs(30 * 60);
    let mut m = seeded();
    let long_ago = Instant::now() - after - Duration::from_secs(1);
    m.rooms.get_mut(ROOM).unwrap().idle_since = long_ago;
    let plain =
        json!({"timeline": [{"timeline_rowid": 10, "event_rowid": 1}], "events": [msg(1, "a")]});
    apply(&mut m, "sync_complete", json!({"rooms": {ROOM: plain}}));
    assert!(m.rooms[ROOM].evictable(Instant::now(), after));
    let mention = json!({"timeline": [{"timeline_rowid": 11, "event_rowid": 2}], "events": [msg(2, "@me")],
                         "notifications": [{"event_rowid": 2, "sound": true, "highlight": true}]});
    apply(&mut m, "sync_complete", json!({"rooms": {ROOM: mention}}));
    let room = &m.rooms[ROOM];
    assert_eq!(room.idle_since, long_ago, "the idle time goes on");
    // An eviction right after would drop the event the app is about to read.
    assert!(!room.evictable(Instant::now(), after));
    let later = Instant::now() + NOTIFIED_GRACE;
    assert!(room.evictable(later, after));
    // Open, or closed within the delay: never.
    let mut r = m.rooms.remove(ROOM).unwrap();
    r.open = true;
    assert!(!r.evictable(later, after));
    r.open = false;
    r.idle_since = Instant::now();
    assert!(!r.evictable(later, after));
}

/// gomuks web `InvitedRoomStore`: a direct invite to a bare room that only invitees may join
/// is a DM with the inviter, named and pictured after the inviter's member event; the app's
/// own member event (from `client_state`) is the one that says who invited it.
#[test]
fn a_direct_invite_to_a_bare_room_is_a_dm_named_after_the_inviter() {
    let mut m = seeded();
    apply(
        &mut m,
        "client_state",
        json!({"is_logged_in": true, "is_verified": true, "user_id": "@me:x"}),
    );
    let state = |own: Value, extra: Vec<Value>| {
        let mut v = vec![
            json!({"type": "m.room.join_rules", "state_key": "", "sender": "@alice:x",
                   "content": {"join_rule": "invite"}}),
            json!({"type": "m.room.member", "state_key": "@alice:x", "sender": "@alice:x",
                   "content": {"membership": "join", "displayname": " Alice ",
                               "avatar_url": "mxc://x/alice"}}),
            // Someone else's invite, first: not the one that says who invited us.
            json!({"type": "m.room.member", "state_key": "@carol:x", "sender": "@dave:x",
                   "content": {"membership": "invite", "is_direct": true}}),
            own,
        ];
        v.extend(extra);
        v
    };
    let own = json!({"type": "m.room.member", "state_key": "@me:x", "sender": "@alice:x",
                     "content": {"membership": "invite", "is_direct": true}});
    let not_direct = json!({"type": "m.room.member", "state_key": "@me:x", "sender": "@alice:x",
                            "content": {"membership": "invite"}});
    let topic = json!({"type": "m.room.topic", "state_key": "", "content": {"topic": "t"}});
    let invites = json!({"invited_rooms": [
        {"room_id": "!dm:x", "created_at": 1, "invite_state": state(own.clone(), vec![])},
        {"room_id": "!plain:x", "created_at": 2, "invite_state": state(not_direct, vec![])},
        {"room_id": "!topic:x", "created_at": 3, "invite_state": state(own, vec![topic])},
    ]});
    apply(&mut m, "sync_complete", invites);
    let dm = &m.invites["!dm:x"];
    assert_eq!(
        (
            dm.name.as_deref(),
            dm.avatar.as_deref(),
            dm.dm_user_id.as_deref()
        ),
        (Some("Alice"), Some("mxc://x/alice"), Some("@alice:x"))
    );
    assert_eq!(dm.inviter.as_deref(), Some("@alice:x"));
    for id in ["!plain:x", "!topic:x"] {
        let i = &m.invites[id];
        assert_eq!(
            (i.name.as_deref(), i.dm_user_id.as_deref()),
            (None, None),
            "{id}"
        );
        assert_eq!(i.inviter.as_deref(), Some("@alice:x"), "{id}");
    }
    // No display name: the inviter's localpart.
    let bare = json!({"invited_rooms": [{"room_id": "!dm2:x", "invite_state": [
        {"type": "m.room.join_rules", "content": {"join_rule": "invite"}},
        {"type": "m.room.member", "state_key": "@me:x", "sender": "@bob:y",
         "content": {"membership": "invite", "is_direct": true}}]}]});
    apply(&mut m, "sync_complete", bare);
    assert_eq!(m.invites["!dm2:x"].name.as_deref(), Some("bob"));
}

/// Our own message 90 as the sync brings it, and its late `send_complete` (gomuks keeps
/// `send_error: "not sent"` on an event the homeserver took).
fn own_sent() -> (Value, Value) {
    let mut synced = msg(90, "mine");
    synced["sender"] = json!("@me:example.org");
    synced["transaction_id"] = json!("hicli-mautrix-go_90");
    let mut outcome = synced.clone();
    outcome["event_id"] = json!("~hicli-mautrix-go_90");
    outcome["send_error"] = json!("not sent");
    (synced, json!({"event": outcome, "error": null}))
}

/// The late send_complete changed nothing: the synced copy stays, out of the pending tail.
fn assert_still_synced(m: &mut Model, late: Value) {
    let mut ch = apply(m, "send_complete", late);
    ch.prune();
    assert!(ch.is_empty(), "a late outcome is no change");
    let r = &m.rooms[ROOM];
    assert!(
        r.pending.is_empty(),
        "back in the pending tail: {:?}",
        r.pending
    );
    assert_eq!(r.events[&90].head.event_id, "$e90");
}

/// gomuks web `applySendComplete` ignores an event it holds that is not pending. The synced
/// row of our message came, then eviction took the timeline (the message stays, as the
/// preview): a late `send_complete` must not put it back in the pending tail, where no row
/// would take it out again.
#[test]
fn a_late_send_complete_after_the_synced_row_was_evicted_stays_synced() {
    let mut m = seeded();
    let (synced, late) = own_sent();
    let mut echo = late["event"].clone();
    echo.as_object_mut().unwrap().remove("send_error");
    let raw = serde_json::value::to_raw_value(&echo).unwrap();
    m.apply_echo(ROOM, &raw, Echo::Answer, &mut Changes::default());
    assert_eq!(m.rooms[ROOM].pending, [90]);
    let mut meta = m.rooms[ROOM].meta.clone();
    meta.insert("preview_event_rowid".into(), json!(90));
    apply(
        &mut m,
        "sync_complete",
        json!({"rooms": {ROOM: {"meta": meta, "events": [synced],
               "timeline": [{"timeline_rowid": 30, "event_rowid": 90}]}}}),
    );
    assert!(m.rooms[ROOM].pending.is_empty());
    assert!(m.rooms.get_mut(ROOM).unwrap().evict());
    assert_still_synced(&mut m, late);
}

/// The same after `clear_state`: the rebuilt room brings our message back as its preview
/// only, with no timeline row, and the send's outcome comes after.
#[test]
fn a_late_send_complete_after_clear_state_brought_the_event_back_stays_synced() {
    let mut m = seeded();
    let (synced, late) = own_sent();
    apply(
        &mut m,
        "sync_complete",
        json!({"clear_state": true, "rooms": {ROOM: {
            "meta": {"room_id": ROOM, "preview_event_rowid": 90, "sorting_timestamp": 5},
            "events": [synced]}}}),
    );
    assert_still_synced(&mut m, late);
}
