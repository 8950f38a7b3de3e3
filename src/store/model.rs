//! The store's data and how each gomuks event changes it (docs/store.md, "What is applied").
//!
//! Plain data, no locks and no I/O: `mod.rs` holds it under its lock and feeds it events, so
//! every rule here has a unit test without a socket.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::wire::{self, EventHead, TimelineRow};

/// One event, indexed by its head and kept raw for reads.
pub(super) struct Stored {
    pub head: EventHead,
    pub raw: Box<RawValue>,
}

impl Stored {
    /// The state of an own send: `sending`, `sent` or `failed`; `None` for other events.
    /// gomuks keeps `send_error: "not sent"` on an event even once the homeserver took it
    /// (its real `$` id says so), and leaves the field out of a resent echo and its outcome
    /// (cleared, and omitted when empty); any other text is the failure. An own send without
    /// the field is told by its local `~` id or hicli's transaction id.
    pub fn send_status(&self) -> Option<&'static str> {
        let h = &self.head;
        let own = h.send_error.is_some()
            || h.event_id.starts_with('~')
            || h.transaction_id.as_deref().is_some_and(|t| !t.is_empty());
        if !own {
            return None;
        }
        let err = h.send_error.as_deref().unwrap_or("");
        Some(if !err.is_empty() && err != "not sent" {
            "failed"
        } else if h.event_id.starts_with('$') {
            "sent"
        } else {
            "sending"
        })
    }
}

/// A user's read receipt: the one furthest down the timeline, of any type and thread.
pub(super) struct Receipt {
    pub event_id: String,
    pub timestamp: i64,
    pub raw: Box<RawValue>,
}

/// How long a notification keeps its room from eviction: the app reads the notified event
/// right after the STORE event that names it.
pub(super) const NOTIFIED_GRACE: Duration = Duration::from_secs(60);

/// The sender of the events gomuks makes up to answer a slash command (`cmdspec`).
const FAKE_SENDER: &str = "@gomuks";

/// State types eviction keeps, as gomuks web does: the composer's emoji come from them.
const EMOJI_PACKS: &[&str] = &["m.room.image_pack", "im.ponies.room_emotes"];

/// Everything the store knows about one joined room.
pub(super) struct Room {
    pub meta: Map<String, Value>,
    pub events: HashMap<i64, Stored>,
    pub by_id: HashMap<String, i64>,
    /// Ascending by timeline rowid.
    pub timeline: Vec<TimelineRow>,
    /// Local echoes (and failed sends) not yet in the timeline, by event rowid.
    pub pending: Vec<i64>,
    /// gomuks's own answers to slash commands (fake events from `@gomuks`, which never
    /// reach the room), in arrival order: each with the timeline rowid of the first row
    /// appended after it came (`None` until one is), and its event rowid. Shown before that
    /// row, or at the end: where gomuks web puts it, below every row cached or paginated
    /// before it and above every row synced after it. Gone with the timeline it was shown in.
    pub notices: Vec<(Option<i64>, i64)>,
    pub state: HashMap<String, HashMap<String, i64>>,
    /// The whole state was loaded (`get_room_state`), and with members.
    pub state_loaded: bool,
    pub members_loaded: bool,
    pub account_data: HashMap<String, Box<RawValue>>,
    /// The tags of its `m.tag` account data, read once when it arrives: the room list asks
    /// for them for every room on every read.
    tags: Vec<String>,
    /// The `order` of its `m.favourite` tag (0 when the tag has none), `None` when not one.
    pub favourite_order: Option<f64>,
    /// By user.
    pub receipts: HashMap<String, Receipt>,
    pub typing: Vec<String>,
    /// The server may hold older history than the oldest cached row.
    pub has_more: bool,
    /// Bumped by every timeline reset: a pagination asked before it is stale.
    pub epoch: u64,
    /// Open in the app (drives eviction), and since when it is not.
    pub open: bool,
    pub idle_since: Instant,
    /// When its latest notification came: the app reads the notified event next, so no
    /// eviction may beat it to it (for [`NOTIFIED_GRACE`]).
    pub notified_at: Option<Instant>,
    /// Evicted, and no event added since: evicting again would only announce another reset
    /// (what eviction keeps, pending sends and the preview, may be more than it checks for).
    evicted: bool,
}

/// Which of a sent message's two reports: the answer of `send_message` (the echo as it
/// started) or `send_complete` (its outcome). They can arrive in either order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Echo {
    Answer,
    Outcome,
    /// The store's own rewrite of an echo: a resend shown before its answer, or undone when
    /// the backend refused it.
    Local,
}

/// A fresh timeline epoch, unique in the process: a room created again (after `clear_state`,
/// or a leave and rejoin) must not reuse the epoch a running pagination remembers.
fn next_epoch() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Room {
    fn new(meta: Map<String, Value>) -> Room {
        Room {
            meta,
            events: HashMap::new(),
            by_id: HashMap::new(),
            timeline: Vec::new(),
            pending: Vec::new(),
            notices: Vec::new(),
            state: HashMap::new(),
            state_loaded: false,
            members_loaded: false,
            account_data: HashMap::new(),
            tags: Vec::new(),
            favourite_order: None,
            receipts: HashMap::new(),
            typing: Vec::new(),
            has_more: true,
            epoch: next_epoch(),
            open: false,
            idle_since: Instant::now(),
            notified_at: None,
            evicted: false,
        }
    }

    pub fn meta_i64(&self, key: &str) -> i64 {
        self.meta.get(key).and_then(Value::as_i64).unwrap_or(0)
    }

    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `creation_content.type`: "" for a plain room, `m.space` for a space.
    pub fn room_type(&self) -> &str {
        self.meta
            .get("creation_content")
            .and_then(|c| c.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn is_space(&self) -> bool {
        self.room_type() == "m.space"
    }

    /// Whether the room's `m.tag` account data has this tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Stores room account data of one type (keeping the tags current).
    fn put_account_data(&mut self, kind: &str, raw: &RawValue) {
        if kind == "m.tag" {
            let v = serde_json::from_str::<Value>(raw.get()).ok();
            let tags = v.as_ref().and_then(|v| v["content"]["tags"].as_object());
            self.tags = tags
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            // As gomuks web reads it: a number, or a string holding one; anything else is 0.
            self.favourite_order = tags.and_then(|t| t.get("m.favourite")).map(|f| {
                let order = match &f["order"] {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                order.filter(|o: &f64| o.is_finite()).unwrap_or(0.0)
            });
        }
        self.account_data.insert(kind.to_owned(), raw.to_owned());
    }

    pub fn state_event(&self, kind: &str, key: &str) -> Option<&Stored> {
        let rowid = self.state.get(kind)?.get(key)?;
        self.events.get(rowid)
    }

    /// Inserts or replaces an event; whether it was known before.
    fn upsert(&mut self, raw: &RawValue) -> Option<(i64, bool)> {
        let head: EventHead = wire::object(raw.get().as_bytes())?;
        if head.rowid == 0 {
            return None;
        }
        let rowid = head.rowid;
        self.evicted = false;
        if !head.event_id.is_empty() {
            self.by_id.insert(head.event_id.clone(), rowid);
        }
        let old = self.events.insert(
            rowid,
            Stored {
                head,
                raw: raw.to_owned(),
            },
        );
        if let Some(old) = &old {
            // A local echo's `~hicli-…` id gives way to the real one.
            let new_id = &self.events[&rowid].head.event_id;
            if &old.head.event_id != new_id && self.by_id.get(&old.head.event_id) == Some(&rowid) {
                self.by_id.remove(&old.head.event_id);
            }
        }
        Some((rowid, old.is_some()))
    }

    /// Forgets a discarded echo: the pending tail, the event and its `~` id.
    pub fn discard_echo(&mut self, rowid: i64) {
        self.pending.retain(|&p| p != rowid);
        if let Some(e) = self.events.remove(&rowid) {
            if self.by_id.get(&e.head.event_id) == Some(&rowid) {
                self.by_id.remove(&e.head.event_id);
            }
        }
    }

    /// Puts rows in timeline order; rows already there are left alone. Returns the rows
    /// added at the end and how many went before the previous oldest.
    /// `live`: the rows of a sync, new messages (not a page of older history): the first one
    /// appended goes after the command answers shown so far.
    fn merge_rows(&mut self, rows: &[TimelineRow], live: bool) -> (Vec<i64>, usize) {
        let mut appended = Vec::new();
        let mut prepended = 0;
        // The timeline rowid of the first row appended.
        let mut first = None;
        for row in rows {
            if row.timeline_rowid == 0 || row.event_rowid == 0 {
                continue;
            }
            let past_tail = self
                .timeline
                .last()
                .map_or(true, |last| row.timeline_rowid > last.timeline_rowid);
            if past_tail {
                self.timeline.push(*row);
                appended.push(row.event_rowid);
                first.get_or_insert(row.timeline_rowid);
            } else {
                let at = self
                    .timeline
                    .partition_point(|r| r.timeline_rowid < row.timeline_rowid);
                if self.timeline.get(at).map(|r| r.timeline_rowid) != Some(row.timeline_rowid) {
                    self.timeline.insert(at, *row);
                    prepended += 1;
                }
            }
            self.pending.retain(|&p| p != row.event_rowid);
        }
        if let (true, Some(at)) = (live, first) {
            for n in self.notices.iter_mut().filter(|n| n.0.is_none()) {
                n.0 = Some(at);
            }
        }
        (appended, prepended)
    }

    fn apply_receipts(&mut self, receipts: Option<&RawValue>, ch: &mut RoomChanges) {
        for (event_id, list) in wire::raw_map(receipts) {
            for raw in wire::raw_list(Some(list)) {
                let Some(head) = wire::object::<wire::ReceiptHead>(raw.get().as_bytes()) else {
                    continue;
                };
                if head.user_id.is_empty() {
                    continue;
                }
                if let Some(old) = self.receipts.get(&head.user_id) {
                    // One per user, as gomuks web keeps them: the one further down the
                    // timeline, whatever its type or thread. One on an event the timeline
                    // places beats one on an event it does not (gomuks web drops those);
                    // between two it does not place, the newer. The same event again (a page
                    // re-sends them) is no change.
                    if old.event_id == event_id {
                        continue;
                    }
                    let later = match (self.position(&event_id), self.position(&old.event_id)) {
                        (Some(new), Some(was)) => new > was,
                        (Some(_), None) => true,
                        (None, Some(_)) => false,
                        (None, None) => head.timestamp >= old.timestamp,
                    };
                    if !later {
                        continue;
                    }
                    ch.receipts.insert(old.event_id.clone());
                }
                ch.receipts.insert(event_id.clone());
                self.receipts.insert(
                    head.user_id,
                    Receipt {
                        event_id: event_id.clone(),
                        timestamp: head.timestamp,
                        raw: raw.to_owned(),
                    },
                );
            }
        }
    }

    /// Drops the receipts: all an evicted room gathers until an event comes (eviction then
    /// has nothing else to take, so a receipt is no reason to reset its timeline again); the
    /// event ids whose receipts went.
    pub fn drop_receipts(&mut self) -> BTreeSet<String> {
        let gone = self.receipts.drain().map(|(_, r)| r.event_id).collect();
        self.receipts.shrink_to_fit();
        gone
    }

    /// The timeline rowid of the row showing `event_id`, if the cached timeline has one.
    fn position(&self, event_id: &str) -> Option<i64> {
        let rowid = *self.by_id.get(event_id)?;
        // Receipts point near the end.
        self.timeline
            .iter()
            .rev()
            .find(|r| r.event_rowid == rowid)
            .map(|r| r.timeline_rowid)
    }

    /// Whether eviction may take it at `now`: not open, idle (not open) for `after`, as the
    /// web client's garbage collection asks, and not notified within [`NOTIFIED_GRACE`].
    pub fn evictable(&self, now: Instant, after: Duration) -> bool {
        let recent = |t: Instant, d: Duration| now.saturating_duration_since(t) < d;
        !self.open
            && !recent(self.idle_since, after)
            && !self.notified_at.is_some_and(|t| recent(t, NOTIFIED_GRACE))
    }

    /// Drops the timeline and every event but the preview (and its edit), the preview
    /// sender's member event and the room's emoji packs, as the web client's garbage
    /// collection does.
    pub fn evict(&mut self) -> bool {
        if self.evicted || (self.timeline.is_empty() && self.events.len() <= 3) {
            return false;
        }
        self.evicted = true;
        let mut keep = BTreeSet::new();
        let preview = self.meta_i64("preview_event_rowid");
        let mut sender = None;
        if let Some(ev) = self.events.get(&preview) {
            keep.insert(preview);
            keep.extend(ev.head.last_edit_rowid);
            sender = Some(ev.head.sender.clone());
        }
        let member = sender.and_then(|s| {
            let rowid = *self.state.get("m.room.member")?.get(&s)?;
            Some((s, rowid))
        });
        keep.extend(member.as_ref().map(|m| m.1));
        keep.extend(self.pending.iter().copied());
        self.state
            .retain(|kind, _| EMOJI_PACKS.contains(&kind.as_str()));
        keep.extend(self.state.values().flat_map(|keys| keys.values().copied()));
        self.events.retain(|rowid, _| keep.contains(rowid));
        self.by_id.retain(|_, rowid| keep.contains(rowid));
        self.timeline.clear();
        self.notices.clear();
        if let Some((s, rowid)) = member {
            self.state
                .entry("m.room.member".into())
                .or_default()
                .insert(s, rowid);
        }
        self.receipts.clear();
        // Retain and clear keep the capacity, which is most of what a busy room held.
        self.events.shrink_to_fit();
        self.by_id.shrink_to_fit();
        self.timeline.shrink_to_fit();
        self.state.shrink_to_fit();
        self.receipts.shrink_to_fit();
        self.state_loaded = false;
        self.members_loaded = false;
        self.has_more = true;
        self.epoch = next_epoch();
        true
    }

    /// Drops events nothing refers to any more (after the timeline was replaced): those of
    /// the timeline, the state, the pending tail, the preview, the edits they link, and
    /// `also` (the events the same sync brought: hicli sends the targets of replies, edits
    /// and reactions with them on purpose).
    fn prune(&mut self, also: &[i64]) {
        let mut keep: std::collections::HashSet<i64> = self
            .timeline
            .iter()
            .map(|r| r.event_rowid)
            .chain(also.iter().copied())
            .chain(self.pending.iter().copied())
            .chain(self.state.values().flat_map(|m| m.values().copied()))
            .chain(Some(self.meta_i64("preview_event_rowid")))
            .collect();
        let edits: Vec<i64> = keep
            .iter()
            .filter_map(|r| self.events.get(r)?.head.last_edit_rowid)
            .collect();
        keep.extend(edits);
        self.events.retain(|rowid, _| keep.contains(rowid));
        self.by_id.retain(|_, rowid| keep.contains(rowid));
    }
}

/// An invited room's entry.
pub(super) struct Invite {
    pub created_at: i64,
    pub name: Option<String>,
    pub avatar: Option<String>,
    pub inviter: Option<String>,
    /// The inviter, when the invite is a DM as the web client tells one.
    pub dm_user_id: Option<String>,
    pub raw: Box<RawValue>,
}

/// What the backend said about the session.
#[derive(Default)]
pub(super) struct Session {
    pub client_state: Option<Box<RawValue>>,
    pub sync_status: Option<Box<RawValue>>,
    pub image_auth_token: Option<String>,
    pub run_id: Option<Box<RawValue>>,
    pub init_complete: bool,
}

/// The whole store.
#[derive(Default)]
pub(super) struct Model {
    pub rooms: HashMap<String, Room>,
    pub invites: HashMap<String, Invite>,
    pub account_data: HashMap<String, Box<RawValue>>,
    /// Space → (child, edge).
    pub space_edges: HashMap<String, Vec<(String, Box<RawValue>)>>,
    pub top_level_spaces: Vec<String>,
    pub session: Session,
    /// Events and answers the store could not read (each is skipped whole).
    pub undecodable: u64,
    /// Rooms of a sync without meta that the store did not know (v0.2608 omits unchanged
    /// meta; such an entry for an unknown room has nothing to show).
    pub skipped_rooms: u64,
    /// Rooms the app has open, kept across `clear_state`: the room on screen stays open when
    /// the backend sends it afresh.
    pub open: std::collections::HashSet<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What one applied event changed, with the ids an app needs to redraw only that.
#[derive(Default, Serialize)]
pub(super) struct Changes {
    /// Everything was dropped (`clear_state`, or a new session): read it all again.
    #[serde(skip_serializing_if = "is_false")]
    pub cleared: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_list: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub spaces: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub session: bool,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub account_data: BTreeSet<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rooms: BTreeMap<String, RoomChanges>,
}

impl Changes {
    /// Drops rooms whose entry holds nothing (an event that touched a room but changed
    /// nothing in it).
    pub fn prune(&mut self) {
        self.rooms.retain(|_, rc| rc != &RoomChanges::default());
    }

    pub fn is_empty(&self) -> bool {
        !self.cleared
            && !self.room_list
            && !self.spaces
            && !self.session
            && self.account_data.is_empty()
            && self.rooms.is_empty()
    }

    pub fn room(&mut self, id: &str) -> &mut RoomChanges {
        self.rooms.entry(id.to_owned()).or_default()
    }
}

/// What changed in one room.
#[derive(Default, Serialize, PartialEq)]
pub(super) struct RoomChanges {
    /// Its meta or its room-list entry changed (the preview decrypted or edited, a
    /// favourite or low-priority tag): what a room list redraws, so summaries keep it.
    #[serde(skip_serializing_if = "is_false")]
    pub meta: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub removed: bool,
    /// The cached timeline was replaced (a limited sync, a catch-up or an eviction).
    #[serde(skip_serializing_if = "is_false")]
    pub reset: bool,
    /// Event rowids appended to the timeline, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub appended: Vec<i64>,
    /// How many rows went before the oldest (pagination).
    #[serde(skip_serializing_if = "is_zero")]
    pub prepended: usize,
    /// The room read's `has_more` changed (a page said no older history is left).
    #[serde(skip_serializing_if = "is_false")]
    pub has_more_changed: bool,
    /// Known events that changed (decrypted, edited, reacted to, redacted, sent).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub updated: BTreeSet<i64>,
    /// The pending tail (local echoes) changed.
    #[serde(skip_serializing_if = "is_false")]
    pub pending: bool,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub state: BTreeSet<String>,
    /// Event ids whose receipts changed.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub receipts: BTreeSet<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub typing: bool,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub account_data: BTreeSet<String>,
    /// New events the user's push rules say notify, in the order gomuks listed them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notification>,
    /// The room's notification count went to zero (read on any device, or a message sent
    /// there): close the ones shown.
    #[serde(skip_serializing_if = "is_false")]
    pub dismiss_notifications: bool,
}

/// An event to notify the user about, resolved from the sync's `notifications`. The event
/// itself is in the store by then (`event` read with the rowid).
#[derive(Serialize, Default, PartialEq, Debug, Clone)]
pub(super) struct Notification {
    pub rowid: i64,
    pub event_id: String,
    pub sender: String,
    /// The push rule asks for a sound.
    pub sound: bool,
    /// The push rule highlights it (a mention, a keyword).
    pub highlight: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl RoomChanges {
    /// Only what a room list needs, for rooms the app does not watch, and the notifications,
    /// which concern every room.
    pub fn summary(&self) -> Option<RoomChanges> {
        let notifies = !self.notifications.is_empty() || self.dismiss_notifications;
        (self.meta || self.removed || notifies).then(|| RoomChanges {
            meta: self.meta,
            removed: self.removed,
            notifications: self.notifications.clone(),
            dismiss_notifications: self.dismiss_notifications,
            ..RoomChanges::default()
        })
    }
}

/// The fields of a room's list entry: a change to any of them moves or redraws the entry.
#[derive(PartialEq)]
pub(super) struct ListKey(Vec<Value>, Vec<Option<String>>, Option<f64>, bool);

impl Model {
    /// The list-relevant facts of a room, to tell whether an event changed the list.
    fn list_key(&self, id: &str) -> Option<ListKey> {
        let r = self.rooms.get(id)?;
        let fields = [
            "sorting_timestamp",
            "name",
            "avatar",
            "dm_user_id",
            "unread_messages",
            "unread_notifications",
            "unread_highlights",
            "marked_unread",
            "preview_event_rowid",
            "tombstone",
        ]
        .iter()
        .map(|k| r.meta.get(*k).cloned().unwrap_or(Value::Null))
        .collect();
        // The preview as shown: its event and the edit it links, changed in place by a
        // decryption or an edit.
        let preview = r.events.get(&r.meta_i64("preview_event_rowid"));
        let edit = preview
            .and_then(|p| p.head.last_edit_rowid)
            .and_then(|e| r.events.get(&e));
        let shown = [preview, edit]
            .iter()
            .map(|e| e.map(|e| e.raw.get().to_owned()))
            .collect();
        Some(ListKey(
            fields,
            shown,
            r.favourite_order,
            r.has_tag("m.lowpriority"),
        ))
    }

    /// Applies one server event; `None` when the store does not consume this command.
    pub fn apply_event(&mut self, command: &str, data: &[u8]) -> Option<Changes> {
        let mut ch = Changes::default();
        let ok = match command {
            "sync_complete" => self.apply_sync(data, &mut ch),
            "events_decrypted" => self.apply_decrypted(data, &mut ch),
            "send_complete" => self.apply_send_complete(data, &mut ch),
            "typing" => self.apply_typing(data, &mut ch),
            "client_state" | "sync_status" | "run_id" => {
                let raw = serde_json::from_slice::<Box<RawValue>>(data).ok();
                match raw {
                    Some(raw) => {
                        // Logged out, or another account: gomuks sends no clear_state (its
                        // web client clears its own store), and the old account's rooms must
                        // not stay readable.
                        if command == "client_state" && self.account_gone(&raw) {
                            self.clear(&mut ch);
                        }
                        let slot = match command {
                            "client_state" => &mut self.session.client_state,
                            "sync_status" => &mut self.session.sync_status,
                            _ => &mut self.session.run_id,
                        };
                        ch.session = slot.as_ref().map(|o| o.get()) != Some(raw.get());
                        *slot = Some(raw);
                        true
                    }
                    None => false,
                }
            }
            "image_auth_token" => match serde_json::from_slice::<String>(data) {
                Ok(t) => {
                    ch.session = self.session.image_auth_token.as_deref() != Some(&t);
                    self.session.image_auth_token = Some(t);
                    true
                }
                Err(_) => false,
            },
            "init_complete" => {
                ch.session = !self.session.init_complete;
                self.session.init_complete = true;
                true
            }
            _ => return None,
        };
        if !ok {
            self.undecodable += 1;
        }
        Some(ch)
    }

    /// The connection came up or went down (gomuks web does the same on both): the backend
    /// sends typing only as it changes, so lists from before may never be cleared otherwise,
    /// and the startup is complete again only at this connection's own `init_complete`.
    pub fn connection_changed(&mut self) -> Changes {
        let mut ch = Changes {
            session: std::mem::take(&mut self.session.init_complete),
            ..Changes::default()
        };
        for (id, room) in self.rooms.iter_mut().filter(|(_, r)| !r.typing.is_empty()) {
            room.typing.clear();
            ch.room(id).typing = true;
        }
        ch
    }

    /// The logged-in user's id, from the backend's `client_state`.
    fn own_user_id(&self) -> Option<String> {
        let raw = self.session.client_state.as_ref()?;
        let state = wire::object::<wire::ClientState>(raw.get().as_bytes())?;
        (!state.user_id.is_empty()).then_some(state.user_id)
    }

    /// Whether the `client_state` `new` ends the account the store holds: logged out, or a
    /// different user than the one before. Nothing to drop when the store is empty.
    fn account_gone(&self, new: &RawValue) -> bool {
        let holds = !(self.rooms.is_empty()
            && self.invites.is_empty()
            && self.account_data.is_empty()
            && self.space_edges.is_empty());
        let Some(now) = wire::object::<wire::ClientState>(new.get().as_bytes()) else {
            return false;
        };
        let before = self
            .session
            .client_state
            .as_ref()
            .and_then(|r| wire::object::<wire::ClientState>(r.get().as_bytes()));
        let switched = before.is_some_and(|b| {
            !b.user_id.is_empty() && !now.user_id.is_empty() && b.user_id != now.user_id
        });
        // A backend whose client is still starting says "not logged in" too.
        let logged_out = !now.is_logged_in && now.is_initialized != Some(false);
        holds && (logged_out || switched)
    }

    fn apply_sync(&mut self, data: &[u8], ch: &mut Changes) -> bool {
        let Some(s) = wire::object::<wire::SyncComplete>(data) else {
            return false;
        };
        if s.clear_state {
            self.clear(ch);
        }
        let own_user = self.own_user_id();
        for (id, raw) in wire::raw_list(s.invited_rooms)
            .into_iter()
            .filter_map(|raw| {
                let head = wire::object::<wire::InvitedHead>(raw.get().as_bytes())?;
                (!head.room_id.is_empty()).then(|| (head.room_id.clone(), (head, raw)))
            })
        {
            self.invites
                .insert(id, invite(raw.0, raw.1, own_user.as_deref()));
            // An invite counts as a highlight in the unread sums.
            ch.room_list = true;
            ch.spaces = true;
        }
        if s.catchup && !s.clear_state {
            self.collect_for_catchup(ch);
        }
        for (id, raw) in wire::raw_map(s.rooms) {
            let Some(room) = wire::object::<wire::SyncRoom>(raw.get().as_bytes()) else {
                self.undecodable += 1;
                continue;
            };
            self.apply_room(&id, room, s.catchup, ch);
        }
        for (kind, raw) in wire::raw_map(s.account_data) {
            self.account_data.insert(kind.clone(), raw.to_owned());
            ch.account_data.insert(kind);
        }
        for id in s.left_rooms {
            // Left: no longer open either (a rejoined room starts closed, so it is evicted).
            self.open.remove(&id);
            // A left space's children are no longer its own (gomuks sends no empty edges),
            // and it is no longer at the top (gomuks sends that list only when edges change).
            let top = self.top_level_spaces.len();
            self.top_level_spaces.retain(|s| *s != id);
            let known = self.rooms.remove(&id).is_some()
                | self.invites.remove(&id).is_some()
                | self.space_edges.remove(&id).is_some()
                | (self.top_level_spaces.len() != top);
            if known {
                ch.room(&id).removed = true;
                ch.room_list = true;
                ch.spaces = true;
            }
        }
        for (space, raw) in wire::raw_map(s.space_edges) {
            let edges = wire::raw_list(Some(raw))
                .into_iter()
                .filter_map(|e| {
                    let head = wire::object::<wire::EdgeHead>(e.get().as_bytes())?;
                    (!head.child_id.is_empty()).then(|| (head.child_id, e.to_owned()))
                })
                .collect();
            self.space_edges.insert(space, edges);
            ch.spaces = true;
            ch.room_list = true;
        }
        if let Some(top) = s.top_level_spaces {
            self.top_level_spaces = top;
            ch.spaces = true;
        }
        true
    }

    /// A catch-up (spec §6.1) names only the rooms whose row changed during the gap: a room
    /// that got only reactions, edits, redactions or state is left out. So every room's
    /// timeline, receipts and state may be stale: all are collected, open ones too, as gomuks
    /// web does on a catch-up, and the app reloads what it shows.
    fn collect_for_catchup(&mut self, ch: &mut Changes) {
        for (id, room) in &mut self.rooms {
            let loaded = room.state_loaded || room.members_loaded;
            room.evicted = false;
            let evicted = room.evict();
            room.state_loaded = false;
            room.members_loaded = false;
            if evicted || loaded {
                ch.room(id).reset = true;
            }
        }
    }

    fn apply_room(&mut self, id: &str, sync: wire::SyncRoom, catchup: bool, ch: &mut Changes) {
        let before = self.list_key(id);
        let notified_before = self
            .rooms
            .get(id)
            .map_or(0, |r| r.meta_i64("unread_notifications"));
        let room = match (self.rooms.contains_key(id), sync.meta) {
            (true, meta) => {
                let r = self.rooms.get_mut(id).expect("checked");
                if let Some(meta) = meta {
                    if r.meta != meta {
                        r.meta = meta;
                        ch.room(id).meta = true;
                    }
                }
                r
            }
            (false, Some(meta)) => {
                // A room that was an invite is joined now.
                self.invites.remove(id);
                ch.room(id).meta = true;
                ch.room_list = true;
                let mut room = Room::new(meta);
                room.open = self.open.contains(id);
                self.rooms.entry(id.to_owned()).or_insert(room)
            }
            (false, None) => {
                self.skipped_rooms += 1;
                return;
            }
        };
        let rc = ch.room(id);
        for (kind, raw) in wire::raw_map(sync.account_data) {
            room.put_account_data(&kind, raw);
            rc.account_data.insert(kind);
        }
        let mut existed = BTreeSet::new();
        let mut brought = Vec::new();
        for raw in wire::raw_list(sync.events) {
            if let Some((rowid, known)) = room.upsert(raw) {
                brought.push(rowid);
                if known {
                    existed.insert(rowid);
                }
            }
        }
        for (kind, keys) in sync.state {
            let slot = room.state.entry(kind.clone()).or_default();
            slot.extend(keys);
            rc.state.insert(kind);
        }
        if sync.reset || catchup {
            room.timeline.clear();
            room.notices.clear();
            if !room.pending.is_empty() {
                rc.pending = true;
            }
            room.pending.clear();
            room.has_more = true;
            room.epoch = next_epoch();
            rc.reset = true;
        }
        let pending_before = room.pending.len();
        let (appended, prepended) = room.merge_rows(&sync.timeline, true);
        if rc.reset {
            room.prune(&brought);
        }
        rc.prepended += prepended;
        rc.pending |= room.pending.len() != pending_before;
        let new_rows: std::collections::HashSet<i64> = appended.iter().copied().collect();
        existed.retain(|rowid| !new_rows.contains(rowid));
        rc.appended.extend(appended);
        rc.updated.extend(existed);
        room.apply_receipts(sync.receipts, rc);
        // hicli flags only a live sync; a catch-up that brings the count to zero closes the
        // room's notifications as well.
        let read_elsewhere = notified_before > 0 && room.meta_i64("unread_notifications") == 0;
        rc.dismiss_notifications |= sync.dismiss_notifications || read_elsewhere;
        for raw in wire::raw_list(sync.notifications) {
            let Some(n) = wire::object::<wire::NotificationHead>(raw.get().as_bytes()) else {
                continue;
            };
            // As gomuks' own clients do, a notification whose event is unknown is dropped.
            let Some(head) = room.events.get(&n.event_rowid).map(|e| &e.head) else {
                continue;
            };
            rc.notifications.push(Notification {
                rowid: n.event_rowid,
                event_id: head.event_id.clone(),
                sender: head.sender.clone(),
                sound: n.sound,
                highlight: n.highlight,
            });
        }
        if !rc.notifications.is_empty() {
            // Not the idle time: a room that keeps notifying (a busy DM) would never be
            // evicted, and its timeline would grow for good.
            room.notified_at = Some(Instant::now());
        }
        if self.list_key(id) != before {
            ch.room_list = true;
            ch.spaces = true;
            // Its entry changed, maybe without its meta (a tag, the preview edited): the
            // summary of a room not watched names it all the same.
            ch.room(id).meta = true;
        }
        if ch
            .rooms
            .get(id)
            .is_some_and(|rc| rc == &RoomChanges::default())
        {
            ch.rooms.remove(id);
        }
    }

    fn apply_decrypted(&mut self, data: &[u8], ch: &mut Changes) -> bool {
        let Some(d) = wire::object::<wire::EventsDecrypted>(data) else {
            return false;
        };
        let before = self.list_key(&d.room_id);
        let Some(room) = self.rooms.get_mut(&d.room_id) else {
            return true;
        };
        let rc = ch.room(&d.room_id);
        let mut decrypted = BTreeSet::new();
        for raw in wire::raw_list(d.events) {
            if let Some((rowid, _)) = room.upsert(raw) {
                decrypted.insert(rowid);
            }
        }
        // An edit decrypted late changes how its target reads (a read shows the target's
        // newest edit): the target changed too, as gomuks web re-renders it.
        let targets = room.events.iter().filter_map(|(&rowid, e)| {
            e.head
                .last_edit_rowid
                .filter(|edit| decrypted.contains(edit))
                .map(|_| rowid)
        });
        rc.updated.extend(targets);
        rc.updated.extend(decrypted);
        if let Some(p) = d.preview_event_rowid {
            room.meta.insert("preview_event_rowid".into(), p.into());
        }
        if self.list_key(&d.room_id) != before {
            ch.room_list = true;
            // The preview decrypted or moved: as in `apply_room`, named even when not watched.
            ch.room(&d.room_id).meta = true;
        }
        true
    }

    fn apply_send_complete(&mut self, data: &[u8], ch: &mut Changes) -> bool {
        let Some(s) = wire::object::<wire::SendComplete>(data) else {
            return false;
        };
        let Some(raw) = s.event else { return false };
        let Some(head) = wire::object::<EventHead>(raw.get().as_bytes()) else {
            return false;
        };
        self.apply_echo(&head.room_id, raw, Echo::Outcome, ch);
        true
    }

    /// A local echo or its outcome: kept in the pending tail until the timeline shows it.
    pub fn apply_echo(&mut self, room_id: &str, raw: &RawValue, echo: Echo, ch: &mut Changes) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(head) = wire::object::<EventHead>(raw.get().as_bytes()) else {
            return;
        };
        // The synced copy came first (the answer or send_complete is late): it is the newer
        // state of the event, as in the web client (`applySendComplete` ignores an event it
        // holds that is not pending). Its row may have left the cached timeline since (an
        // eviction, a reset, a `clear_state` that brought it back as the preview alone): held
        // outside the pending tail, it is synced all the same, and back in the tail no row
        // would ever take it out again.
        let synced = room.timeline.iter().any(|r| r.event_rowid == head.rowid)
            || (room.events.contains_key(&head.rowid)
                && !room.pending.contains(&head.rowid)
                && !room.notices.iter().any(|n| n.1 == head.rowid));
        if synced {
            return;
        }
        // gomuks sends before it answers, so send_complete can come first: the answer's
        // "sending" echo must not undo the outcome (a failed send would read as sending).
        if echo == Echo::Answer && room.events.contains_key(&head.rowid) {
            return;
        }
        let Some((rowid, _)) = room.upsert(raw) else {
            return;
        };
        let rc = ch.room(room_id);
        if head.sender == FAKE_SENDER {
            // A command's answer, never sent: a row of its own at the end of the timeline
            // (gomuks web `handleOutgoingEvent`), not a send that waits in the pending tail
            // for good.
            if !room.notices.iter().any(|n| n.1 == rowid) {
                room.notices.push((None, rowid));
                rc.appended.push(rowid);
            }
            return;
        }
        rc.updated.insert(rowid);
        rc.pending = true;
        if !room.pending.contains(&rowid) {
            room.pending.push(rowid);
        }
    }

    fn apply_typing(&mut self, data: &[u8], ch: &mut Changes) -> bool {
        let Some(t) = wire::object::<wire::Typing>(data) else {
            return false;
        };
        if let Some(room) = self.rooms.get_mut(&t.room_id) {
            if room.typing != t.user_ids {
                room.typing = t.user_ids;
                ch.room(&t.room_id).typing = true;
            }
        }
        true
    }

    /// A `paginate` answer for the room at `epoch`: older rows and their events, the
    /// receipts that came with them, and whether more history is left.
    pub fn apply_page(&mut self, room_id: &str, epoch: u64, data: &[u8], ch: &mut Changes) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        // The timeline was reset meanwhile: these rows belong to the old one.
        if room.epoch != epoch {
            return;
        }
        let Some(p) = wire::object::<wire::Paginated>(data) else {
            self.undecodable += 1;
            return;
        };
        let rc = ch.room(room_id);
        let mut rows = Vec::new();
        for raw in wire::raw_list(p.events) {
            if let Some((rowid, _)) = room.upsert(raw) {
                let tr = room.events[&rowid].head.timeline_rowid;
                rows.push(TimelineRow {
                    timeline_rowid: tr,
                    event_rowid: rowid,
                });
            }
        }
        for raw in wire::raw_list(p.related_events) {
            room.upsert(raw);
        }
        // Newest first on the wire; oldest first in the timeline.
        rows.sort_by_key(|r| r.timeline_rowid);
        // History, even into an empty timeline; but rows past a tail the store already had
        // are new to it (the page was read after a live row the sync has not brought yet).
        let was_empty = room.timeline.is_empty();
        // Rows past a tail the store had are newer than anything shown, as a sync's are.
        let (appended, prepended) = room.merge_rows(&rows, !was_empty);
        if was_empty {
            rc.prepended += prepended + appended.len();
        } else {
            rc.prepended += prepended;
            rc.appended.extend(appended);
        }
        room.apply_receipts(p.receipts, rc);
        rc.has_more_changed |= room.has_more != p.has_more;
        room.has_more = p.has_more;
    }

    /// A `get_room_state` answer: the whole state replaces the cached one (members kept when
    /// the answer has none).
    pub fn apply_state(&mut self, room_id: &str, members: bool, data: &[u8], ch: &mut Changes) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Ok(list) = serde_json::from_slice::<Vec<&RawValue>>(data) else {
            self.undecodable += 1;
            return;
        };
        let rc = ch.room(room_id);
        let old_members = (!members)
            .then(|| room.state.remove("m.room.member"))
            .flatten();
        rc.state.extend(room.state.drain().map(|(k, _)| k));
        if let Some(m) = old_members {
            room.state.insert("m.room.member".into(), m);
        }
        Self::put_state_events(room, list, rc);
        room.state_loaded = true;
        room.members_loaded |= members;
    }

    /// State events (`get_specific_room_state`), one by one.
    pub fn apply_state_events(&mut self, data: &[u8], ch: &mut Changes) {
        let Ok(list) = serde_json::from_slice::<Vec<&RawValue>>(data) else {
            self.undecodable += 1;
            return;
        };
        for raw in list {
            let Some(head) = wire::object::<EventHead>(raw.get().as_bytes()) else {
                continue;
            };
            if let Some(room) = self.rooms.get_mut(&head.room_id) {
                Self::put_state_events(room, vec![raw], ch.room(&head.room_id));
            }
        }
    }

    fn put_state_events(room: &mut Room, list: Vec<&RawValue>, rc: &mut RoomChanges) {
        for raw in list {
            let Some((rowid, _)) = room.upsert(raw) else {
                continue;
            };
            let head = &room.events[&rowid].head;
            let Some(key) = head.state_key.clone() else {
                continue;
            };
            let kind = head.kind.clone();
            room.state
                .entry(kind.clone())
                .or_default()
                .insert(key, rowid);
            rc.state.insert(kind);
        }
    }

    /// Drops every room, invite, space and account data, keeping the session fields (but
    /// `init_complete`: the initial sync starts over, and its own `init_complete` follows)
    /// and the open rooms; the change says `cleared`.
    fn clear(&mut self, ch: &mut Changes) {
        ch.session |= std::mem::take(&mut self.session.init_complete);
        ch.cleared = true;
        ch.room_list = true;
        ch.spaces = true;
        let session = std::mem::take(&mut self.session);
        let open = std::mem::take(&mut self.open);
        *self = Model {
            session,
            open,
            undecodable: self.undecodable,
            skipped_rooms: self.skipped_rooms,
            ..Model::default()
        };
    }
}

/// An invite's list entry from its stripped state, as the web client builds it
/// (`InvitedRoomStore`): a direct invite to a room with no name, avatar, topic or alias that
/// only invitees may join is a DM with the inviter, and shows the inviter's name and avatar.
/// `own_user` picks the app's own member event; without it (no `client_state` yet) the first
/// member event that is an invite stands in.
fn invite(head: wire::InvitedHead, raw: &RawValue, own_user: Option<&str>) -> Invite {
    let text = |e: &Value, field: &str| {
        e["content"][field]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    let find = |kind: &str, field: &str| {
        head.invite_state
            .iter()
            .filter(|e| e["type"] == kind)
            .find_map(|e| text(e, field))
    };
    let member = |user: &str| {
        head.invite_state
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == user)
    };
    let own_member = match own_user {
        Some(me) => member(me),
        None => head
            .invite_state
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "invite"),
    };
    let inviter = own_member.and_then(|e| e["sender"].as_str().map(str::to_owned));
    let is_direct = own_member.is_some_and(|e| e["content"]["is_direct"] == true);
    let (mut name, mut avatar) = (find("m.room.name", "name"), find("m.room.avatar", "url"));
    let bare = name.is_none()
        && avatar.is_none()
        && find("m.room.topic", "topic").is_none()
        && find("m.room.canonical_alias", "alias").is_none()
        && find("m.room.join_rules", "join_rule").as_deref() == Some("invite");
    let dm_user_id = inviter.clone().filter(|_| is_direct && bare);
    if let Some(who) = &dm_user_id {
        let profile = member(who);
        name = profile
            .and_then(|p| p["content"]["displayname"].as_str())
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .or_else(|| Some(localpart(who).to_owned()));
        avatar = profile.and_then(|p| text(p, "avatar_url"));
    }
    Invite {
        created_at: head.created_at,
        name,
        avatar,
        inviter,
        dm_user_id,
        raw: raw.to_owned(),
    }
}

/// A user id's localpart (`@alice:example.org` → `alice`), or the id when it has none.
fn localpart(user_id: &str) -> &str {
    let bare = user_id.strip_prefix('@').unwrap_or(user_id);
    let local = bare.split_once(':').map_or(bare, |(l, _)| l);
    if local.is_empty() {
        user_id
    } else {
        local
    }
}

#[cfg(test)]
mod tests;
