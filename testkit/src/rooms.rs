//! A small, deterministic model of Matrix rooms as gomuks v0.2607.0's hicli presents them, so
//! the library's store can be tested over a real socket (`gomuks.rs` wires it in).
//!
//! Shapes follow upstream `pkg/hicli/database` (`Room`, `Event`, `Receipt`, `SpaceEdge`,
//! `InvitedRoom`, `AccountData`, `TimelineRowTuple`) and `pkg/hicli/jsoncmd` (`SyncComplete`,
//! `SyncRoom`, `PaginationResponse`, `SendComplete`, `Typing`), including their quirks: Go's
//! nil slices and maps are `null`, `timeline_rowid` is always present (0 outside pagination),
//! receipts in syncs carry no `room_id`, a successful `send_complete` keeps the local echo's
//! `send_error: "not sent"`.
//!
//! Everything is deterministic: fixed ids and names, and a clock that starts at [`BASE_TS`] and
//! advances [`TICK_MS`] per created event or receipt, so tests can assert order. Room `i` is
//! seeded after room `i-1`, so `Room {n-1}` is the most recently active.
//!
//! Simplifications: only messages get timeline rows (state events live in the state map only);
//! there is no server-side history beyond the seeded rows (`from_server` is always false); no
//! encryption, edits, reactions or replies. The push rules are reduced to one: a live message
//! whose body names [`ME`] notifies with sound and highlight (a `notifications` entry); every
//! other message only counts as unread.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

/// The logged-in user.
pub const ME: &str = "@me:example.org";
/// First seeded remote user (room creator, admin).
pub const ALICE: &str = "@alice:example.org";
/// Second seeded remote user.
pub const BOB: &str = "@bob:example.org";
/// The seeded space.
pub const SPACE_ID: &str = "!space:example.org";
/// The seeded invite.
pub const INVITE_ID: &str = "!invite:example.org";
/// Timestamp of the first seeded event, ms since the epoch.
pub const BASE_TS: i64 = 1_700_000_000_000;
/// How far the model clock moves per event or receipt, ms.
pub const TICK_MS: i64 = 1_000;
/// gomuks' initial-sync batch size (`GetInitialSync(ctx, 100)` in `pkg/gomuks/websocket.go`).
pub const INITIAL_SYNC_BATCH: usize = 100;

/// The id of seeded room `i`.
pub fn room_id(i: usize) -> String {
    format!("!r{i}:example.org")
}

/// A buffered server event: `(command, data)`.
pub type Emit = (&'static str, Value);

#[derive(Clone, Debug)]
struct Room {
    id: String,
    creation_content: Value,
    name: Option<String>,
    dm_user_id: Option<String>,
    is_space: bool,
    preview_event_rowid: i64,
    sorting_timestamp: i64,
    unread_highlights: i64,
    unread_notifications: i64,
    unread_messages: i64,
    /// Current state in insertion order: `(type, state_key, event rowid)`.
    state: Vec<(String, String, i64)>,
    /// `(timeline_rowid, event_rowid)`, ascending.
    timeline: Vec<(i64, i64)>,
    /// Room account data by type: content.
    account_data: BTreeMap<String, Value>,
}

impl Room {
    fn meta(&self) -> Value {
        let mut m = json!({
            "room_id": self.id,
            "creation_content": self.creation_content,
            "name_quality": if self.name.is_some() { 3 } else { 0 },
            "explicit_avatar": false,
            "has_member_list": false,
            "preview_event_rowid": self.preview_event_rowid,
            "sorting_timestamp": self.sorting_timestamp,
            "unread_highlights": self.unread_highlights,
            "unread_notifications": self.unread_notifications,
            "unread_messages": self.unread_messages,
            "marked_unread": false,
            "prev_batch": "",
        });
        if let Some(n) = &self.name {
            m["name"] = json!(n);
        }
        if let Some(d) = &self.dm_user_id {
            m["dm_user_id"] = json!(d);
        }
        m
    }

    fn state_rowid(&self, ty: &str, key: &str) -> Option<i64> {
        self.state
            .iter()
            .find(|(t, k, _)| t == ty && k == key)
            .map(|s| s.2)
    }

    fn account_data_json(&self) -> Value {
        let m: Map<String, Value> = self
            .account_data
            .iter()
            .map(|(ty, content)| {
                (
                    ty.clone(),
                    json!({"user_id": ME, "room_id": self.id, "type": ty, "content": content}),
                )
            })
            .collect();
        Value::Object(m)
    }
}

/// A local echo waiting for its (simulated) homeserver round trip.
#[derive(Clone, Debug)]
pub struct PendingSend {
    room_id: String,
    rowid: i64,
    fail: bool,
}

impl PendingSend {
    /// Whether the simulated homeserver refuses this send.
    pub fn fails(&self) -> bool {
        self.fail
    }
}

/// The room model. Empty by default; [`Rooms::seeded`] builds the fixture.
#[derive(Clone, Debug, Default)]
pub struct Rooms {
    rooms: Vec<Room>,
    index: HashMap<String, usize>,
    /// Every event by rowid, as `database.Event` JSON with `timeline_rowid: 0`.
    events: BTreeMap<i64, Value>,
    invited: Vec<Value>,
    space_edges: Vec<(String, String, i64)>,
    global_account_data: BTreeMap<String, Value>,
    next_rowid: i64,
    next_timeline_rowid: i64,
    next_txn: u64,
    next_since: u64,
    clock: i64,
}

impl Rooms {
    /// An empty model (the backend then keeps its old single-room initial sync).
    pub fn new() -> Rooms {
        Rooms {
            next_rowid: 1,
            next_timeline_rowid: 1,
            next_txn: 1,
            next_since: 1,
            clock: BASE_TS,
            ..Rooms::default()
        }
    }

    /// Whether no room is modelled.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.invited.is_empty()
    }

    /// Number of joined rooms, the space included.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// The fixture: `!space:example.org`, rooms `!r0..!r{n-1}` with `history` messages each, and
    /// `!invite:example.org`. See the crate docs of the backend (`Backend::seed_rooms`).
    pub fn seeded(n: usize, history: usize) -> Rooms {
        let mut r = Rooms::new();
        r.global_account_data
            .insert("m.push_rules".into(), json!({}));
        // The space first, so every ordinary room is more recent.
        r.add_room(
            SPACE_ID,
            "Space",
            json!({"room_version": "10", "type": "m.space"}),
        );
        for i in 0..n {
            let id = room_id(i);
            r.add_room(&id, &format!("Room {i}"), json!({"room_version": "10"}));
            for j in 0..history {
                let sender = if j % 2 == 0 { ALICE } else { BOB };
                let body = format!("Message {j} in Room {i}");
                r.append_message(&id, sender, &body, None);
            }
            let ix = r.index[&id];
            if i == 0 {
                r.rooms[ix].dm_user_id = Some(ALICE.into());
            }
            if i == 2 {
                r.rooms[ix].unread_messages = 3;
                r.rooms[ix].unread_notifications = 1;
                // unread_type as hicli sets it: 1 = counted, 2 = notifies.
                let rows: Vec<i64> = r.rooms[ix]
                    .timeline
                    .iter()
                    .rev()
                    .take(3)
                    .map(|t| t.1)
                    .collect();
                for (k, rowid) in rows.iter().enumerate() {
                    let ty = if k == 0 { 3 } else { 1 };
                    r.events.get_mut(rowid).expect("seeded")["unread_type"] = json!(ty);
                }
            }
            if i == 3 {
                r.rooms[ix]
                    .account_data
                    .insert("m.tag".into(), json!({"tags": {"m.favourite": {}}}));
            }
        }
        for child in [1, 2].into_iter().filter(|c| *c < n) {
            let child = room_id(child);
            let rowid = r.add_state(
                SPACE_ID,
                ALICE,
                "m.space.child",
                &child,
                json!({"via": ["example.org"]}),
            );
            r.space_edges.push((SPACE_ID.into(), child, rowid));
        }
        let created_at = r.tick();
        r.invited.push(json!({
            "room_id": INVITE_ID,
            "created_at": created_at,
            "invite_state": [
                {"type": "m.room.name", "state_key": "", "sender": BOB,
                 "content": {"name": "Invite room"}},
                {"type": "m.room.member", "state_key": ME, "sender": BOB,
                 "content": {"membership": "invite"}},
            ],
        }));
        r
    }

    fn tick(&mut self) -> i64 {
        let t = self.clock;
        self.clock += TICK_MS;
        t
    }

    fn add_room(&mut self, id: &str, name: &str, create: Value) {
        self.index.insert(id.into(), self.rooms.len());
        self.rooms.push(Room {
            id: id.into(),
            creation_content: create.clone(),
            name: Some(name.into()),
            dm_user_id: None,
            is_space: create["type"] == "m.space",
            preview_event_rowid: 0,
            sorting_timestamp: 0,
            unread_highlights: 0,
            unread_notifications: 0,
            unread_messages: 0,
            state: Vec::new(),
            timeline: Vec::new(),
            account_data: BTreeMap::new(),
        });
        self.add_state(id, ALICE, "m.room.create", "", create);
        self.add_state(id, ALICE, "m.room.name", "", json!({"name": name}));
        self.add_state(
            id,
            ALICE,
            "m.room.power_levels",
            "",
            json!({"users": {ALICE: 100, ME: 50}, "users_default": 0}),
        );
        for (user, display) in [(ME, "Me"), (ALICE, "Alice"), (BOB, "Bob")] {
            self.add_state(
                id,
                user,
                "m.room.member",
                user,
                json!({"membership": "join", "displayname": display}),
            );
        }
    }

    /// A new event row (not in any timeline yet); returns its rowid.
    fn new_event(
        &mut self,
        room: &str,
        sender: &str,
        ty: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> i64 {
        let rowid = self.next_rowid;
        self.next_rowid += 1;
        let ts = self.tick();
        let mut e = json!({
            "rowid": rowid,
            "timeline_rowid": 0,
            "room_id": room,
            "event_id": format!("$tk{rowid:08}"),
            "sender": sender,
            "type": ty,
            "timestamp": ts,
            "content": content,
            "unsigned": {},
        });
        if let Some(k) = state_key {
            e["state_key"] = json!(k);
        }
        self.events.insert(rowid, e);
        rowid
    }

    fn add_state(&mut self, room: &str, sender: &str, ty: &str, key: &str, content: Value) -> i64 {
        let rowid = self.new_event(room, sender, ty, Some(key), content);
        let ts = self.events[&rowid]["timestamp"].as_i64().unwrap_or(0);
        let r = &mut self.rooms[self.index[room]];
        match r.state.iter_mut().find(|(t, k, _)| t == ty && k == key) {
            Some(s) => s.2 = rowid,
            None => r.state.push((ty.into(), key.into(), rowid)),
        }
        r.sorting_timestamp = r.sorting_timestamp.max(ts);
        rowid
    }

    /// Gives an existing event a new timeline row and makes it the room's preview.
    fn append_to_timeline(&mut self, room: &str, rowid: i64) -> i64 {
        let tl = self.next_timeline_rowid;
        self.next_timeline_rowid += 1;
        let ts = self.events[&rowid]["timestamp"].as_i64().unwrap_or(0);
        let r = &mut self.rooms[self.index[room]];
        r.timeline.push((tl, rowid));
        r.preview_event_rowid = rowid;
        r.sorting_timestamp = r.sorting_timestamp.max(ts);
        tl
    }

    fn append_message(
        &mut self,
        room: &str,
        sender: &str,
        body: &str,
        unread_type: Option<i64>,
    ) -> (i64, i64) {
        let rowid = self.new_event(
            room,
            sender,
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": body}),
        );
        if let Some(u) = unread_type {
            self.events.get_mut(&rowid).expect("just added")["unread_type"] = json!(u);
        }
        (rowid, self.append_to_timeline(room, rowid))
    }

    fn room(&self, id: &str) -> Option<&Room> {
        self.index.get(id).map(|&i| &self.rooms[i])
    }

    /// The ids of the ordinary (non-space) rooms, in seeding order.
    pub fn room_ids(&self) -> Vec<String> {
        self.rooms
            .iter()
            .filter(|r| r.id != SPACE_ID)
            .map(|r| r.id.clone())
            .collect()
    }

    /// An event by rowid.
    pub fn event(&self, rowid: i64) -> Option<&Value> {
        self.events.get(&rowid)
    }

    /// A room's meta (`database.Room` JSON).
    pub fn meta(&self, room: &str) -> Option<Value> {
        self.room(room).map(Room::meta)
    }

    /// A room's timeline as `(timeline_rowid, event_rowid)`, oldest first.
    pub fn timeline(&self, room: &str) -> Option<Vec<(i64, i64)>> {
        self.room(room).map(|r| r.timeline.clone())
    }

    // ---- initial sync ----

    /// `SyncRoom` as `getInitialSyncRoom` builds it: meta, room account data, the preview
    /// sender's member event then the preview event, that member in `state`, no timeline.
    fn initial_sync_room(&self, r: &Room) -> Value {
        let mut events = Vec::new();
        let mut state = Map::new();
        if let Some(preview) = self.events.get(&r.preview_event_rowid) {
            let sender = preview["sender"].as_str().unwrap_or_default();
            if let Some(m) = r.state_rowid("m.room.member", sender) {
                events.push(self.events[&m].clone());
                state.insert("m.room.member".into(), json!({ sender: m }));
            }
            events.push(preview.clone());
        }
        json!({
            "meta": r.meta(),
            "timeline": null,
            "reset": false,
            "state": state,
            "account_data": r.account_data_json(),
            "events": events,
            "receipts": null,
            "dismiss_notifications": false,
            "notifications": null,
        })
    }

    fn global_account_data_json(&self, keep: impl Fn(&str) -> bool) -> Value {
        let m: Map<String, Value> = self
            .global_account_data
            .iter()
            .filter(|(ty, _)| keep(ty))
            .map(|(ty, content)| {
                (
                    ty.clone(),
                    json!({"user_id": ME, "type": ty, "content": content}),
                )
            })
            .collect();
        Value::Object(m)
    }

    /// The `sync_complete` payloads of `GetInitialSync`, in order (`init_complete` is not
    /// included): spaces, edges, invites and global account data with `clear_state`; then the
    /// other rooms by `sorting_timestamp` descending in batches; then the deferred emote-room
    /// account data. `server_timestamp` is added to each when given.
    pub fn initial_sync(&self, server_timestamp: Option<i64>) -> Vec<Value> {
        const DEFERRED: [&str; 2] = ["im.ponies.emote_rooms", "m.image_pack.rooms"];
        let mut out = Vec::new();
        let mut rooms = Map::new();
        let mut edges = Map::new();
        for (space, child, rowid) in &self.space_edges {
            let list = edges
                .entry(space.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(l) = list {
                l.push(json!({"space_id": space, "child_id": child, "child_event_rowid": rowid}));
            }
        }
        let mut top_level = Vec::new();
        for r in self.rooms.iter().filter(|r| r.is_space) {
            rooms.insert(r.id.clone(), self.initial_sync_room(r));
            edges.entry(r.id.clone()).or_insert_with(|| json!([]));
            // No nested spaces in the model: every space is top level.
            top_level.push(json!(r.id));
        }
        top_level.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        out.push(json!({
            "clear_state": true,
            "account_data": self.global_account_data_json(|t| !DEFERRED.contains(&t)),
            "rooms": rooms,
            "left_rooms": null,
            "invited_rooms": if self.invited.is_empty() { Value::Null } else { json!(self.invited) },
            "space_edges": edges,
            "top_level_spaces": top_level,
        }));
        // GetBySortTS: sorting_timestamp < maxTS AND > 0, no spaces, newest first.
        let mut sorted: Vec<&Room> = self
            .rooms
            .iter()
            .filter(|r| !r.is_space && r.sorting_timestamp > 0)
            .collect();
        sorted.sort_by_key(|r| std::cmp::Reverse(r.sorting_timestamp));
        let mut max_ts = i64::MAX;
        let mut batch = INITIAL_SYNC_BATCH;
        loop {
            let fetched: Vec<&Room> = sorted
                .iter()
                .filter(|r| r.sorting_timestamp < max_ts)
                .take(batch)
                .copied()
                .collect();
            let mut payload = Map::new();
            let fetched_full = fetched.len() >= batch;
            for (i, r) in fetched.iter().enumerate() {
                // Upstream stops before the rows sharing the last row's timestamp (they come in
                // the next batch), so a full batch carries at most batch-1 rooms.
                if fetched_full
                    && Some(r.sorting_timestamp) == fetched.last().map(|l| l.sorting_timestamp)
                {
                    if i == 0 {
                        batch *= 2;
                    }
                    break;
                }
                max_ts = r.sorting_timestamp;
                payload.insert(r.id.clone(), self.initial_sync_room(r));
            }
            out.push(json!({
                "account_data": null,
                "rooms": payload,
                "left_rooms": null,
                "invited_rooms": null,
                "space_edges": null,
                "top_level_spaces": null,
            }));
            if fetched.len() < batch {
                break;
            }
        }
        out.push(json!({
            "account_data": self.global_account_data_json(|t| DEFERRED.contains(&t)),
            "rooms": null,
            "left_rooms": null,
            "invited_rooms": null,
            "space_edges": null,
            "top_level_spaces": null,
        }));
        if let Some(ts) = server_timestamp {
            for p in &mut out {
                p["server_timestamp"] = json!(ts);
            }
        }
        out
    }

    // ---- live syncs ----

    fn live_sync(&mut self, room: &str, sync_room: Value) -> Value {
        let since = format!("tk_since_{}", self.next_since);
        self.next_since += 1;
        json!({
            "since": since,
            "account_data": {},
            "rooms": { room: sync_room },
            "left_rooms": [],
            "invited_rooms": [],
            "space_edges": null,
            "top_level_spaces": null,
        })
    }

    fn sync_room(
        meta: Value,
        timeline: Value,
        events: Vec<Value>,
        receipts: Value,
        dismiss: bool,
        notifications: Vec<Value>,
    ) -> Value {
        json!({
            "meta": meta,
            "timeline": timeline,
            "reset": false,
            "state": {},
            "account_data": {},
            "events": events,
            "receipts": receipts,
            "dismiss_notifications": dismiss,
            "notifications": notifications,
        })
    }

    // ---- commands ----

    /// `paginate` {room_id, max_timeline_id, limit, reset}: timeline rows older than
    /// `max_timeline_id` (0 or `reset`: from the newest), newest first, with `timeline_rowid`.
    pub fn paginate(&self, params: &Value) -> Result<Value, String> {
        let room_id = params["room_id"].as_str().unwrap_or_default();
        let Some(r) = self.room(room_id) else {
            return Err(format!("not in room {room_id}"));
        };
        let max = if params["reset"] == true {
            0
        } else {
            params["max_timeline_id"].as_i64().unwrap_or(0)
        };
        let limit = params["limit"].as_i64().unwrap_or(0).max(0) as usize;
        let older: Vec<&(i64, i64)> = r
            .timeline
            .iter()
            .rev()
            .filter(|(tl, _)| max == 0 || *tl < max)
            .collect();
        let events: Vec<Value> = older
            .iter()
            .take(limit)
            .map(|(tl, rowid)| {
                let mut e = self.events[rowid].clone();
                e["timeline_rowid"] = json!(tl);
                e
            })
            .collect();
        Ok(json!({
            "events": events,
            // Upstream never lists the user's own receipts here, and the model has no others.
            "receipts": {},
            "related_events": [],
            "has_more": older.len() > limit,
            "from_server": false,
        }))
    }

    /// `get_room_state` {room_id, include_members, fetch_members, refetch}: the current state
    /// events, members only with `include_members`. Unknown room: `null` (upstream's nil slice).
    pub fn get_room_state(&self, params: &Value) -> Value {
        let room_id = params["room_id"].as_str().unwrap_or_default();
        let Some(r) = self.room(room_id) else {
            return Value::Null;
        };
        let members = params["include_members"] == true;
        let evs: Vec<Value> = r
            .state
            .iter()
            .filter(|(t, _, _)| members || t != "m.room.member")
            .map(|(_, _, rowid)| self.events[rowid].clone())
            .collect();
        json!(evs)
    }

    /// `get_specific_room_state` {keys: [{room_id, type, state_key}]}: the events found.
    pub fn get_specific_room_state(&self, params: &Value) -> Value {
        let mut out = Vec::new();
        for k in params["keys"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let room = k["room_id"].as_str().unwrap_or_default();
            let ty = k["type"].as_str().unwrap_or_default();
            let key = k["state_key"].as_str().unwrap_or_default();
            if let Some(rowid) = self.room(room).and_then(|r| r.state_rowid(ty, key)) {
                out.push(self.events[&rowid].clone());
            }
        }
        json!(out)
    }

    /// `send_message` {room_id, text}: the local echo, and what [`Rooms::complete_send`] needs.
    /// The texts "fail", "fail once" and "fail, forget" make the simulated send fail (see
    /// [`Rooms::resend_event`] for how each resends).
    pub fn send_message(&mut self, params: &Value) -> Result<(Value, PendingSend), String> {
        let room_id = params["room_id"].as_str().unwrap_or_default().to_owned();
        if self.room(&room_id).is_none() {
            return Err("unknown room".into());
        }
        let text = params["text"].as_str().unwrap_or_default();
        let txn = format!("hicli-mautrix-go_{}", self.next_txn);
        self.next_txn += 1;
        let rowid = self.new_event(
            &room_id,
            ME,
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": text}),
        );
        let e = self.events.get_mut(&rowid).expect("just added");
        e["event_id"] = json!(format!("~{txn}"));
        e["transaction_id"] = json!(txn);
        e["send_error"] = json!("not sent");
        e["reactions"] = json!({});
        e["last_edit_rowid"] = json!(0);
        let echo = e.clone();
        Ok((
            echo,
            PendingSend {
                room_id,
                rowid,
                fail: text.starts_with("fail"),
            },
        ))
    }

    /// `resend_event` {transaction_id}, as hicli's `Resend`: the echo with its `send_error`
    /// cleared (and so left out), and what [`Rooms::complete_send`] needs. A message "fail"
    /// fails again, "fail once" goes through, "fail, forget" was lost by the backend (gomuks's
    /// "unknown transaction ID").
    pub fn resend_event(&mut self, params: &Value) -> Result<(Value, PendingSend), String> {
        let txn = params["transaction_id"].as_str().unwrap_or_default();
        let found = self
            .events
            .iter_mut()
            .find(|(_, e)| e["transaction_id"] == txn && e["content"]["body"] != "fail, forget");
        let Some((&rowid, e)) = found else {
            return Err("unknown transaction ID".into());
        };
        if !e["event_id"].as_str().unwrap_or_default().starts_with('~') {
            return Err("event was already sent successfully".into());
        }
        if let Some(obj) = e.as_object_mut() {
            obj.remove("send_error");
        }
        let pending = PendingSend {
            room_id: e["room_id"].as_str().unwrap_or_default().to_owned(),
            rowid,
            fail: e["content"]["body"] == "fail",
        };
        Ok((e.clone(), pending))
    }

    /// The simulated homeserver answer to a `send_message`: `send_complete` and, on success, a
    /// `sync_complete` with the event in the timeline.
    pub fn complete_send(&mut self, p: &PendingSend) -> Vec<Emit> {
        if p.fail {
            let e = self.events.get_mut(&p.rowid).expect("pending event");
            e["send_error"] = json!("M_FORBIDDEN: you are not allowed to send");
            let ev = e.clone();
            return vec![("send_complete", json!({"event": ev, "error": {}}))];
        }
        let event_id = format!("$tk{:08}", p.rowid);
        let e = self.events.get_mut(&p.rowid).expect("pending event");
        e["event_id"] = json!(event_id);
        // hicli keeps the echo's send_error on success (send.go actuallySend only sets it on
        // failure), in send_complete and in the synced copy alike (recorded from gomuks
        // v0.2607.0: interop/FINDINGS.md); the frontends ignore "not sent".
        let completed = e.clone();
        let synced = e.clone();
        let tl = self.append_to_timeline(&p.room_id, p.rowid);
        let meta = self.room(&p.room_id).expect("known room").meta();
        let sr = Self::sync_room(
            meta,
            json!([{"timeline_rowid": tl, "event_rowid": p.rowid}]),
            vec![synced],
            json!({}),
            false,
            Vec::new(),
        );
        let sync = self.live_sync(&p.room_id.clone(), sr);
        vec![
            ("send_complete", json!({"event": completed, "error": null})),
            ("sync_complete", sync),
        ]
    }

    /// `mark_read` {room_id, event_id, receipt_type}: the `sync_complete` the homeserver's echo
    /// of the receipt produces: counts zeroed, and no receipt (hicli leaves the user's own
    /// receipts out of a sync's `receipts`, sync.go).
    /// The event id is not checked, as the homeserver does not.
    pub fn mark_read(&mut self, params: &Value) -> Result<Value, String> {
        let room_id = params["room_id"].as_str().unwrap_or_default().to_owned();
        if self.room(&room_id).is_none() {
            return Err("unknown room".into());
        }
        let receipt_type = params["receipt_type"].as_str().unwrap_or_default();
        if receipt_type != "m.read" && receipt_type != "m.read.private" {
            return Err(format!("invalid receipt type: {receipt_type}"));
        }
        let r = &mut self.rooms[self.index[&room_id]];
        let dismiss = r.unread_notifications > 0;
        r.unread_messages = 0;
        r.unread_notifications = 0;
        r.unread_highlights = 0;
        let meta = r.meta();
        let sr = Self::sync_room(
            meta,
            Value::Null,
            Vec::new(),
            json!({}),
            dismiss,
            Vec::new(),
        );
        Ok(self.live_sync(&room_id, sr))
    }

    /// A message from someone else: a new event and timeline row, `unread_messages + 1`; one
    /// that names [`ME`] also notifies (unread type normal, notify, highlight and sound, as
    /// hicli marks a mention; the counts and a `notifications` entry follow).
    /// Returns `(rowid, timeline_rowid, sync_complete)`.
    pub fn remote_message(
        &mut self,
        room: &str,
        sender: &str,
        body: &str,
    ) -> Result<(i64, i64, Value), String> {
        if self.room(room).is_none() {
            return Err(format!("unknown room {room}"));
        }
        let mention = body.contains(ME);
        let (rowid, tl) =
            self.append_message(room, sender, body, Some(if mention { 15 } else { 1 }));
        let r = &mut self.rooms[self.index[room]];
        r.unread_messages += 1;
        let mut notifications = Vec::new();
        if mention {
            r.unread_notifications += 1;
            r.unread_highlights += 1;
            notifications.push(json!({"event_rowid": rowid, "sound": true, "highlight": true}));
        }
        let meta = r.meta();
        let ev = self.events[&rowid].clone();
        let sr = Self::sync_room(
            meta,
            json!([{"timeline_rowid": tl, "event_rowid": rowid}]),
            vec![ev],
            json!({}),
            false,
            notifications,
        );
        Ok((rowid, tl, self.live_sync(room, sr)))
    }
}

/// The `typing` event data.
pub fn typing(room: &str, users: &[String]) -> Value {
    json!({"room_id": room, "user_ids": users})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(r: &Rooms, room: &str, max: i64, limit: i64) -> Value {
        r.paginate(&json!({"room_id": room, "max_timeline_id": max, "limit": limit}))
            .unwrap()
    }

    #[test]
    fn pagination_pages_are_disjoint_ordered_and_end() {
        let r = Rooms::seeded(4, 23);
        let mut seen = Vec::new();
        let mut max = 0;
        let mut pages = 0;
        loop {
            let p = page(&r, "!r1:example.org", max, 10);
            let evs = p["events"].as_array().unwrap();
            assert!(evs.len() <= 10);
            for e in evs {
                let tl = e["timeline_rowid"].as_i64().unwrap();
                assert!(tl > 0);
                if let Some(&prev) = seen.last() {
                    assert!(tl < prev, "newest to oldest, disjoint");
                }
                seen.push(tl);
                assert_eq!(e["room_id"], "!r1:example.org");
                assert_eq!(e["type"], "m.room.message");
            }
            pages += 1;
            max = *seen.last().unwrap();
            if p["has_more"] == false {
                break;
            }
            assert!(pages < 10);
        }
        assert_eq!(pages, 3);
        assert_eq!(seen.len(), 23);
        // Past the end: nothing, has_more false.
        let p = page(&r, "!r1:example.org", max, 10);
        assert_eq!(p["events"], json!([]));
        assert_eq!(p["has_more"], false);
        assert_eq!(p["from_server"], false);
        // Oldest message first in the room, alternating senders.
        let oldest = &page(&r, "!r1:example.org", 0, 100)["events"][22];
        assert_eq!(oldest["content"]["body"], "Message 0 in Room 1");
        assert_eq!(oldest["sender"], ALICE);
        assert!(r
            .paginate(&json!({"room_id": "!nope:example.org", "limit": 5}))
            .is_err());
    }

    #[test]
    fn rowids_unique_and_activity_ordered() {
        let r = Rooms::seeded(5, 3);
        let mut ts = Vec::new();
        for i in 0..5 {
            let m = r.meta(&room_id(i)).unwrap();
            ts.push(m["sorting_timestamp"].as_i64().unwrap());
            let preview = m["preview_event_rowid"].as_i64().unwrap();
            assert_eq!(
                r.event(preview).unwrap()["content"]["body"],
                format!("Message 2 in Room {i}")
            );
        }
        assert!(ts.windows(2).all(|w| w[0] < w[1]));
        let ids: std::collections::HashSet<&Value> =
            r.events.values().map(|e| &e["event_id"]).collect();
        assert_eq!(ids.len(), r.events.len());
        assert_eq!(r.meta("!r0:example.org").unwrap()["dm_user_id"], ALICE);
        assert_eq!(r.meta("!r2:example.org").unwrap()["unread_messages"], 3);
    }

    #[test]
    fn initial_sync_batches() {
        let r = Rooms::seeded(250, 1);
        let payloads = r.initial_sync(Some(5));
        let first = &payloads[0];
        assert_eq!(first["clear_state"], true);
        assert_eq!(first["rooms"].as_object().unwrap().len(), 1);
        assert!(first["rooms"][SPACE_ID].is_object());
        assert_eq!(first["top_level_spaces"], json!([SPACE_ID]));
        assert_eq!(
            first["space_edges"][SPACE_ID][1]["child_id"],
            "!r2:example.org"
        );
        assert_eq!(first["invited_rooms"][0]["room_id"], INVITE_ID);
        assert!(first["account_data"]["m.push_rules"].is_object());
        let mut all = Vec::new();
        let mut prev_min = i64::MAX;
        for p in &payloads[1..payloads.len() - 1] {
            let rooms = p["rooms"].as_object().unwrap();
            assert!(rooms.len() <= 100);
            assert!(p.get("clear_state").is_none());
            let mut ts: Vec<i64> = rooms
                .values()
                .map(|sr| sr["meta"]["sorting_timestamp"].as_i64().unwrap())
                .collect();
            ts.sort();
            assert!(*ts.last().unwrap() < prev_min, "batches descend");
            prev_min = ts[0];
            for (id, sr) in rooms {
                assert_ne!(id, SPACE_ID);
                assert!(sr["timeline"].is_null());
                let evs = sr["events"].as_array().unwrap();
                assert_eq!(evs.len(), 2);
                let member = &evs[0];
                assert_eq!(member["type"], "m.room.member");
                assert_eq!(
                    sr["state"]["m.room.member"][member["state_key"].as_str().unwrap()],
                    member["rowid"]
                );
                assert_eq!(evs[1]["rowid"], sr["meta"]["preview_event_rowid"]);
                all.push(id.clone());
            }
        }
        assert_eq!(all.len(), 250);
        assert!(payloads[1]["rooms"]["!r249:example.org"].is_object());
        assert_eq!(payloads.last().unwrap()["rooms"], Value::Null);
        assert!(payloads.iter().all(|p| p["server_timestamp"] == 5));
        let fav = &payloads[3]["rooms"]["!r3:example.org"]["account_data"]["m.tag"];
        assert_eq!(fav["content"]["tags"]["m.favourite"], json!({}));
    }

    #[test]
    fn send_and_mark_read() {
        let mut r = Rooms::seeded(3, 2);
        let before = r.meta("!r1:example.org").unwrap();
        let (echo, pending) = r
            .send_message(&json!({"room_id": "!r1:example.org", "text": "hi"}))
            .unwrap();
        assert_eq!(echo["event_id"], "~hicli-mautrix-go_1");
        assert_eq!(echo["transaction_id"], "hicli-mautrix-go_1");
        assert_eq!(echo["send_error"], "not sent");
        assert_eq!(echo["sender"], ME);
        let out = r.complete_send(&pending);
        assert_eq!(out[0].0, "send_complete");
        assert_eq!(out[0].1["event"]["rowid"], echo["rowid"]);
        assert_eq!(out[0].1["error"], Value::Null);
        assert!(out[0].1["event"]["event_id"]
            .as_str()
            .unwrap()
            .starts_with('$'));
        assert_eq!(out[1].0, "sync_complete");
        let sr = &out[1].1["rooms"]["!r1:example.org"];
        assert_eq!(sr["timeline"][0]["event_rowid"], echo["rowid"]);
        assert_eq!(sr["events"][0]["send_error"], "not sent");
        assert_eq!(sr["meta"]["preview_event_rowid"], echo["rowid"]);
        assert!(sr["meta"]["sorting_timestamp"].as_i64() > before["sorting_timestamp"].as_i64());
        // The sent message is the newest timeline row.
        let p = r
            .paginate(&json!({"room_id": "!r1:example.org", "limit": 1}))
            .unwrap();
        assert_eq!(p["events"][0]["rowid"], echo["rowid"]);

        let (_, fail) = r
            .send_message(&json!({"room_id": "!r1:example.org", "text": "fail"}))
            .unwrap();
        let out = r.complete_send(&fail);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1["error"], json!({}));
        assert!(out[0].1["event"]["send_error"]
            .as_str()
            .unwrap()
            .starts_with("M_FORBIDDEN"));

        let sync = r
            .mark_read(
                &json!({"room_id": "!r2:example.org", "event_id": "$x", "receipt_type": "m.read"}),
            )
            .unwrap();
        let sr = &sync["rooms"]["!r2:example.org"];
        assert_eq!(sr["meta"]["unread_messages"], 0);
        assert_eq!(sr["meta"]["unread_notifications"], 0);
        assert_eq!(sr["dismiss_notifications"], true);
        assert_eq!(sr["receipts"], json!({}), "hicli sends no own receipts");
        assert_eq!(r.meta("!r2:example.org").unwrap()["unread_messages"], 0);
    }
}
