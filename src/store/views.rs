//! Snapshot reads: each builds one JSON document from the model (docs/store.md, "Reads").

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::model::{Model, Room, Stored};
use crate::status::{Error, Status};

/// Room types shown in the room list; spaces and unknown types are not (as in the web client).
const LISTED_TYPES: &[&str] = &[
    "",
    "support.feline.policy.lists.msc.v1",
    "org.matrix.msc3417.call",
    "fi.mau.msc2545.image_pack",
];

/// Room → the request id of its running pagination.
pub(super) type Paginating = std::collections::HashMap<String, i64>;

/// The pseudo-spaces a room list can be filtered by, besides a real space's id.
pub(super) const PSEUDO_SPACES: &[&str] = &["home", "dms", "unreads", "orphans"];

fn bad(msg: impl Into<String>) -> Error {
    Error::new(Status::ErrInvalidArgument, msg)
}

/// Decodes a read's arguments; empty means `{}`.
pub(super) fn args<'a, T: Deserialize<'a> + Default>(data: &'a [u8]) -> Result<T, Error> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(data).map_err(|e| bad(format!("arguments: {e}")))
}

fn to_json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("store views serialize infallibly")
}

/// Whether a room is hidden from the list: a type the list does not show, or a tombstone
/// whose replacement the store knows and which names this room as its predecessor.
fn hidden(m: &Model, id: &str, r: &Room) -> bool {
    if !LISTED_TYPES.contains(&r.room_type()) {
        return true;
    }
    let Some(next) = r
        .meta
        .get("tombstone")
        .and_then(|t| t.get("replacement_room"))
        .and_then(Value::as_str)
    else {
        return false;
    };
    m.rooms.get(next).is_some_and(|n| {
        n.meta
            .get("creation_content")
            .and_then(|c| c.get("predecessor"))
            .and_then(|p| p.get("room_id"))
            .and_then(Value::as_str)
            == Some(id)
    })
}

#[derive(Serialize)]
struct Entry<'a> {
    room_id: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dm_user_id: Option<&'a str>,
    sorting_timestamp: i64,
    unread_messages: i64,
    unread_notifications: i64,
    unread_highlights: i64,
    marked_unread: bool,
    favourite: bool,
    /// Where a favourite goes among the favourites (its tag's `order`, lowest first).
    #[serde(skip)]
    favourite_order: f64,
    low_priority: bool,
    invite: bool,
    /// Open in the app: the `unreads` filter keeps it once read, as gomuks web keeps the
    /// room being viewed.
    #[serde(skip)]
    open: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    inviter: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<&'a RawValue>,
}

impl Entry<'_> {
    /// Unread as gomuks web counts it: messages, notifications (gomuks flags an event that
    /// is no message, a call invite or an undecryptable event, as notifying without counting
    /// it as a message), highlights, or marked unread; and, here, an invite.
    fn is_unread(&self) -> bool {
        self.unread_messages > 0
            || self.unread_notifications > 0
            || self.unread_highlights > 0
            || self.marked_unread
            || self.invite
    }
}

fn entry<'a>(id: &'a str, r: &'a Room) -> Entry<'a> {
    let preview = r.events.get(&r.meta_i64("preview_event_rowid"));
    // The preview shows the edited text when the backend linked an edit.
    let preview = preview
        .and_then(|p| p.head.last_edit_rowid)
        .and_then(|e| r.events.get(&e))
        .or(preview);
    Entry {
        room_id: id,
        name: r.meta_str("name").unwrap_or("Unnamed room"),
        avatar: r.meta_str("avatar"),
        dm_user_id: r.meta_str("dm_user_id"),
        sorting_timestamp: r.meta_i64("sorting_timestamp"),
        unread_messages: r.meta_i64("unread_messages"),
        unread_notifications: r.meta_i64("unread_notifications"),
        unread_highlights: r.meta_i64("unread_highlights"),
        marked_unread: r.meta.get("marked_unread") == Some(&Value::Bool(true)),
        favourite: r.favourite_order.is_some(),
        favourite_order: r.favourite_order.unwrap_or(0.0),
        low_priority: r.has_tag("m.lowpriority"),
        invite: false,
        open: r.open,
        inviter: None,
        preview: preview.map(|p| &*p.raw),
    }
}

/// Every room below `space`, through child spaces, with a guard against cycles.
fn descendants<'a>(m: &'a Model, space: &'a str) -> HashSet<&'a str> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut todo = vec![space];
    while let Some(s) = todo.pop() {
        for (child, _) in m.space_edges.get(s).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(child) && m.space_edges.contains_key(child.as_str()) {
                todo.push(child);
            }
        }
    }
    seen
}

/// Whether `space` (a room id or a pseudo-space) shows this entry.
struct SpaceFilter<'a> {
    kind: &'a str,
    members: HashSet<&'a str>,
}

impl<'a> SpaceFilter<'a> {
    fn new(m: &'a Model, space: &'a str) -> SpaceFilter<'a> {
        let members = match space {
            "home" | "dms" | "unreads" => HashSet::new(),
            "orphans" => m
                .space_edges
                .values()
                .flatten()
                .map(|(c, _)| c.as_str())
                .collect(),
            s => descendants(m, s),
        };
        SpaceFilter {
            kind: space,
            members,
        }
    }

    fn shows(&self, e: &Entry) -> bool {
        match self.kind {
            "home" => true,
            "dms" => e.dm_user_id.is_some(),
            "unreads" => e.is_unread() || e.open,
            // As gomuks web: a DM is in `dms`, not among the other rooms.
            "orphans" => !self.members.contains(e.room_id) && e.dm_user_id.is_none(),
            _ => self.members.contains(e.room_id),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ListArgs {
    space: Option<String>,
    query: Option<String>,
    favourites_first: Option<bool>,
    low_priority_last: Option<bool>,
    order: Option<String>,
    invites: Option<bool>,
    limit: Option<usize>,
}

/// Unread counts summed over rooms.
#[derive(Serialize, Default, Clone, Copy)]
struct Unreads {
    rooms: i64,
    messages: i64,
    notifications: i64,
    highlights: i64,
    marked: i64,
}

impl Unreads {
    /// Counts come from the server: saturating, never overflowing.
    fn add(&mut self, e: &Entry) {
        self.rooms = self.rooms.saturating_add(i64::from(e.is_unread()));
        self.messages = self.messages.saturating_add(e.unread_messages);
        self.notifications = self.notifications.saturating_add(e.unread_notifications);
        self.highlights = self.highlights.saturating_add(e.unread_highlights);
        self.marked = self.marked.saturating_add(i64::from(e.marked_unread));
    }
}

/// Every listed entry: joined rooms that are not hidden, then invites.
fn entries(m: &Model) -> Vec<Entry<'_>> {
    let mut out: Vec<Entry> = m
        .rooms
        .iter()
        .filter(|(id, r)| !hidden(m, id, r))
        .map(|(id, r)| entry(id, r))
        .collect();
    out.extend(m.invites.iter().map(|(id, i)| Entry {
        room_id: id,
        name: i.name.as_deref().unwrap_or("Unnamed room"),
        avatar: i.avatar.as_deref(),
        dm_user_id: i.dm_user_id.as_deref(),
        sorting_timestamp: i.created_at,
        unread_messages: 0,
        unread_notifications: 0,
        // An invite counts as a highlight, as in the web client.
        unread_highlights: 1,
        marked_unread: true,
        favourite: false,
        favourite_order: 0.0,
        low_priority: false,
        invite: true,
        open: false,
        inviter: i.inviter.as_deref(),
        preview: None,
    }));
    out
}

pub(super) fn room_list(m: &Model, gen: u64, data: &[u8]) -> Result<Vec<u8>, Error> {
    let a: ListArgs = args(data)?;
    let space = a.space.as_deref().unwrap_or("home");
    if !PSEUDO_SPACES.contains(&space)
        && !m.space_edges.contains_key(space)
        && !m.rooms.get(space).is_some_and(Room::is_space)
    {
        return Err(bad(format!(
            "space {space:?} is neither a known space nor one of {PSEUDO_SPACES:?}"
        )));
    }
    let by_name = match a.order.as_deref() {
        None | Some("activity") => false,
        Some("name") => true,
        Some(o) => return Err(bad(format!("order {o:?}: use \"activity\" or \"name\""))),
    };
    let filter = SpaceFilter::new(m, space);
    let query = a.query.as_deref().unwrap_or("").to_lowercase();
    let mut list: Vec<Entry> = entries(m)
        .into_iter()
        .filter(|e| a.invites.unwrap_or(true) || !e.invite)
        .filter(|e| filter.shows(e))
        .filter(|e| {
            query.is_empty()
                || e.name.to_lowercase().contains(&query)
                || e.room_id.to_lowercase().contains(&query)
        })
        .collect();
    let fav = a.favourites_first.unwrap_or(true);
    let low = a.low_priority_last.unwrap_or(true);
    // Invites first (they wait for an answer; gomuks web puts pinned favourites above
    // them), then gomuks web's chain of sorts: pinned low priority outermost (a favourite
    // that is also low priority goes down with it), pinned favourites in their tags' order,
    // then activity or the name.
    list.sort_by(|x, y| {
        let pinned = |e: &Entry| fav && e.favourite;
        let group = |e: &Entry| (!e.invite, low && e.low_priority, !pinned(e));
        let by_order = if pinned(x) && pinned(y) {
            x.favourite_order.total_cmp(&y.favourite_order)
        } else {
            std::cmp::Ordering::Equal
        };
        group(x).cmp(&group(y)).then(by_order).then_with(|| {
            if by_name {
                x.name.to_lowercase().cmp(&y.name.to_lowercase())
            } else {
                Reverse(x.sorting_timestamp).cmp(&Reverse(y.sorting_timestamp))
            }
            .then_with(|| x.room_id.cmp(y.room_id))
        })
    });
    let total = list.len();
    list.truncate(a.limit.unwrap_or(usize::MAX));
    #[derive(Serialize)]
    struct Out<'a> {
        gen: u64,
        total: usize,
        rooms: Vec<Entry<'a>>,
    }
    Ok(to_json(&Out {
        gen,
        total,
        rooms: list,
    }))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RoomArgs {
    pub room_id: String,
    pub event_id: Option<String>,
    pub rowid: Option<i64>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub state_key: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<usize>,
}

/// The arguments of a read that takes none: empty, `null` or `{}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

impl RoomArgs {
    /// The room reads share this struct, so unknown names are refused by serde but a name
    /// another read takes is not: refuse each set argument that `read` does not take.
    fn only(self, read: &str, takes: &[&str]) -> Result<Self, Error> {
        let set = [
            ("event_id", self.event_id.is_some()),
            ("rowid", self.rowid.is_some()),
            ("type", self.kind.is_some()),
            ("state_key", self.state_key.is_some()),
            ("before", self.before.is_some()),
            ("limit", self.limit.is_some()),
        ];
        match set.iter().find(|(name, on)| *on && !takes.contains(name)) {
            Some((name, _)) => Err(bad(format!("{read} does not take {name:?}"))),
            None => Ok(self),
        }
    }

    pub fn room<'a>(&self, m: &'a Model) -> Result<&'a Room, Error> {
        if self.room_id.is_empty() {
            return Err(bad("room_id is missing"));
        }
        m.rooms
            .get(&self.room_id)
            .ok_or_else(|| bad(format!("unknown room {}", self.room_id)))
    }
}

pub(super) fn room(m: &Model, paginating: &Paginating, data: &[u8]) -> Result<Vec<u8>, Error> {
    let a = args::<RoomArgs>(data)?.only("room", &[])?;
    if a.room_id.is_empty() {
        return Err(bad("room_id is missing"));
    }
    let Some(r) = m.rooms.get(&a.room_id) else {
        // An invite has no room yet: its stripped state is all there is.
        return Ok(match m.invites.get(&a.room_id) {
            Some(i) => to_json(&serde_json::json!({ "room_id": a.room_id, "invite": &i.raw })),
            None => b"null".to_vec(),
        });
    };
    #[derive(Serialize)]
    struct Out<'a> {
        room_id: &'a str,
        meta: &'a serde_json::Map<String, Value>,
        entry: Option<Entry<'a>>,
        space: bool,
        timeline_rows: usize,
        events: usize,
        pending: usize,
        has_more: bool,
        paginating: bool,
        state_loaded: bool,
        members_loaded: bool,
        open: bool,
        typing: &'a [String],
    }
    Ok(to_json(&Out {
        room_id: &a.room_id,
        meta: &r.meta,
        entry: (!hidden(m, &a.room_id, r)).then(|| entry(&a.room_id, r)),
        space: r.is_space(),
        timeline_rows: r.timeline.len(),
        events: r.events.len(),
        pending: r.pending.len(),
        has_more: r.has_more,
        paginating: paginating.contains_key(&a.room_id),
        state_loaded: r.state_loaded,
        members_loaded: r.members_loaded,
        open: r.open,
        typing: &r.typing,
    }))
}

#[derive(Serialize)]
struct Item<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline_rowid: Option<i64>,
    event: &'a RawValue,
    /// The newest edit the backend linked (`last_edit_rowid`), when the store holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    edit: Option<&'a RawValue>,
    /// Own sends only: `sending`, `sent` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    send_status: Option<&'static str>,
}

fn item<'a>(r: &'a Room, ev: &'a Stored, timeline_rowid: Option<i64>) -> Item<'a> {
    Item {
        timeline_rowid,
        send_status: ev.send_status(),
        event: &ev.raw,
        edit: ev
            .head
            .last_edit_rowid
            .and_then(|e| r.events.get(&e))
            .map(|e| &*e.raw),
    }
}

pub(super) fn timeline(m: &Model, paginating: &Paginating, data: &[u8]) -> Result<Vec<u8>, Error> {
    let a = args::<RoomArgs>(data)?.only("timeline", &["before", "limit"])?;
    let r = a.room(m)?;
    let limit = a.limit.unwrap_or(50).max(1);
    let end = match a.before {
        None | Some(0) => r.timeline.len(),
        Some(b) => r.timeline.partition_point(|row| row.timeline_rowid < b),
    };
    let start = end.saturating_sub(limit);
    // A command's answer (model `notices`) goes before the first row synced after it, or at
    // the end; each lands on exactly one page.
    let notices = |before: Option<i64>| {
        r.notices
            .iter()
            .filter(move |(at, _)| *at == before)
            .filter_map(|(_, rowid)| r.events.get(rowid))
            .map(|ev| item(r, ev, Some(0)))
    };
    let mut events: Vec<Item> = Vec::with_capacity(end - start);
    for row in &r.timeline[start..end] {
        if !r.notices.is_empty() {
            events.extend(notices(Some(row.timeline_rowid)));
        }
        events.extend(
            r.events
                .get(&row.event_rowid)
                .map(|ev| item(r, ev, Some(row.timeline_rowid))),
        );
    }
    if end == r.timeline.len() {
        events.extend(notices(None));
    }
    let mut pending: Vec<&Stored> = if end == r.timeline.len() {
        r.pending.iter().filter_map(|p| r.events.get(p)).collect()
    } else {
        Vec::new()
    };
    pending.sort_by_key(|e| e.head.timestamp);
    #[derive(Serialize)]
    struct Out<'a> {
        room_id: &'a str,
        events: Vec<Item<'a>>,
        pending: Vec<Item<'a>>,
        /// The timeline rowid to pass as `before` for the next older page.
        oldest: Option<i64>,
        has_more: bool,
        paginating: bool,
    }
    Ok(to_json(&Out {
        room_id: &a.room_id,
        events,
        pending: pending.into_iter().map(|e| item(r, e, None)).collect(),
        // None for an empty page: no row of it to page back from.
        oldest: r.timeline[start..end].first().map(|row| row.timeline_rowid),
        has_more: start > 0 || r.has_more,
        paginating: paginating.contains_key(&a.room_id),
    }))
}

pub(super) fn event(m: &Model, data: &[u8]) -> Result<Vec<u8>, Error> {
    let a = args::<RoomArgs>(data)?.only("event", &["event_id", "rowid"])?;
    let r = a.room(m)?;
    let rowid = match (&a.event_id, a.rowid) {
        (Some(id), None) => r.by_id.get(id).copied(),
        (None, Some(rowid)) => Some(rowid),
        _ => return Err(bad("give either event_id or rowid")),
    };
    Ok(match rowid.and_then(|id| r.events.get(&id)) {
        Some(ev) => to_json(&item(r, ev, None)),
        None => b"null".to_vec(),
    })
}

pub(super) fn state(m: &Model, data: &[u8]) -> Result<Vec<u8>, Error> {
    let a = args::<RoomArgs>(data)?.only("state", &["type", "state_key"])?;
    let r = a.room(m)?;
    let Some(kind) = &a.kind else {
        if a.state_key.is_some() {
            return Err(bad("a state_key needs a type"));
        }
        // Every type: type → state_key → event.
        let all: BTreeMap<&str, BTreeMap<&str, &RawValue>> = r
            .state
            .iter()
            .map(|(k, keys)| {
                let evs = keys
                    .iter()
                    .filter_map(|(sk, rowid)| Some((sk.as_str(), &*r.events.get(rowid)?.raw)))
                    .collect();
                (k.as_str(), evs)
            })
            .collect();
        return Ok(to_json(&all));
    };
    if let Some(key) = &a.state_key {
        return Ok(match r.state_event(kind, key) {
            Some(ev) => to_json(&ev.raw),
            None => b"null".to_vec(),
        });
    }
    let evs: BTreeMap<&str, &RawValue> = r
        .state
        .get(kind)
        .into_iter()
        .flatten()
        .filter_map(|(sk, rowid)| Some((sk.as_str(), &*r.events.get(rowid)?.raw)))
        .collect();
    Ok(to_json(&evs))
}

/// Room versions whose creators hold only their power level; in every later one (12, and any
/// version string gomuks web does not know as older) they outrank every level.
const PRE_V12: &[&str] = &["", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"];

/// Power levels with creators above everyone from room version 12 on (`None` is a creator).
struct Power {
    users: serde_json::Map<String, Value>,
    default: i64,
    creators: HashSet<String>,
}

impl Power {
    fn of(r: &Room) -> Power {
        let content = |kind: &str| {
            r.state_event(kind, "")
                .and_then(|e| serde_json::from_str::<Value>(e.raw.get()).ok())
                .map(|v| v["content"].clone())
                .unwrap_or(Value::Null)
        };
        let pl = content("m.room.power_levels");
        let create = content("m.room.create");
        let mut creators = HashSet::new();
        // A create event without a version is a version 1 room.
        let version = create["room_version"].as_str().unwrap_or("");
        if r.state_event("m.room.create", "").is_some() && !PRE_V12.contains(&version) {
            if let Some(c) = r.state_event("m.room.create", "") {
                creators.insert(c.head.sender.clone());
            }
            for c in create["additional_creators"]
                .as_array()
                .into_iter()
                .flatten()
            {
                creators.extend(c.as_str().map(str::to_owned));
            }
        }
        Power {
            users: pl["users"].as_object().cloned().unwrap_or_default(),
            default: pl["users_default"].as_i64().unwrap_or(0),
            creators,
        }
    }

    fn level(&self, user: &str) -> Option<i64> {
        if self.creators.contains(user) {
            return None;
        }
        Some(
            self.users
                .get(user)
                .and_then(Value::as_i64)
                .unwrap_or(self.default),
        )
    }
}

pub(super) fn members(m: &Model, data: &[u8]) -> Result<Vec<u8>, Error> {
    let a = args::<RoomArgs>(data)?.only("members", &[])?;
    let r = a.room(m)?;
    let power = Power::of(r);
    #[derive(Serialize)]
    struct Member {
        user_id: String,
        membership: String,
        displayname: Option<String>,
        avatar_url: Option<String>,
        /// `null` for a room creator (room version 12 on), who outranks every level.
        power_level: Option<i64>,
    }
    let mut list: Vec<Member> = r
        .state
        .get("m.room.member")
        .into_iter()
        .flatten()
        .filter_map(|(user, rowid)| {
            let ev: Value = serde_json::from_str(r.events.get(rowid)?.raw.get()).ok()?;
            let c = &ev["content"];
            let membership = c["membership"].as_str()?;
            matches!(membership, "join" | "invite" | "knock").then(|| Member {
                user_id: user.clone(),
                membership: membership.to_owned(),
                displayname: c["displayname"].as_str().map(str::to_owned),
                avatar_url: c["avatar_url"].as_str().map(str::to_owned),
                power_level: power.level(user),
            })
        })
        .collect();
    list.sort_by(|x, y| {
        // As gomuks web: knocks after everyone, whatever their level.
        let knocks = |mm: &Member| mm.membership == "knock";
        let rank = |p: Option<i64>| Reverse(p.unwrap_or(i64::MAX));
        let name = |mm: &Member| {
            mm.displayname
                .as_deref()
                .unwrap_or(&mm.user_id)
                .to_lowercase()
        };
        knocks(x)
            .cmp(&knocks(y))
            .then_with(|| rank(x.power_level).cmp(&rank(y.power_level)))
            .then_with(|| name(x).cmp(&name(y)))
            .then_with(|| x.user_id.cmp(&y.user_id))
    });
    #[derive(Serialize)]
    struct Out {
        members: Vec<Member>,
        complete: bool,
    }
    Ok(to_json(&Out {
        members: list,
        complete: r.members_loaded,
    }))
}

pub(super) fn receipts(m: &Model, data: &[u8]) -> Result<Vec<u8>, Error> {
    let a = args::<RoomArgs>(data)?.only("receipts", &["event_id"])?;
    let r = a.room(m)?;
    let mut by_event: BTreeMap<&str, Vec<&RawValue>> = BTreeMap::new();
    for rc in r.receipts.values() {
        if a.event_id.as_deref().map_or(true, |e| e == rc.event_id) {
            by_event.entry(&rc.event_id).or_default().push(&rc.raw);
        }
    }
    Ok(to_json(&by_event))
}

pub(super) fn typing(m: &Model, data: &[u8]) -> Result<Vec<u8>, Error> {
    let a = args::<RoomArgs>(data)?.only("typing", &[])?;
    let r = a.room(m)?;
    Ok(to_json(&serde_json::json!({ "user_ids": r.typing })))
}

pub(super) fn account_data(m: &Model, data: &[u8]) -> Result<Vec<u8>, Error> {
    let a = args::<RoomArgs>(data)?.only("account_data", &["type"])?;
    let map = if a.room_id.is_empty() {
        &m.account_data
    } else {
        &a.room(m)?.account_data
    };
    Ok(match &a.kind {
        Some(k) => map.get(k).map_or(b"null".to_vec(), to_json),
        None => to_json(&map.iter().collect::<BTreeMap<_, _>>()),
    })
}

pub(super) fn spaces(m: &Model, data: &[u8]) -> Result<Vec<u8>, Error> {
    let NoArgs {} = args(data)?;
    let all = entries(m);
    #[derive(Serialize)]
    struct Space<'a> {
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        avatar: Option<&'a str>,
        children: Vec<&'a str>,
        unread: Unreads,
    }
    let mut spaces = BTreeMap::new();
    for (id, edges) in &m.space_edges {
        let f = SpaceFilter::new(m, id);
        let mut unread = Unreads::default();
        all.iter()
            .filter(|e| f.shows(e))
            .for_each(|e| unread.add(e));
        let r = m.rooms.get(id);
        spaces.insert(
            id.as_str(),
            Space {
                name: r
                    .and_then(|r| r.meta_str("name"))
                    .unwrap_or("Unnamed space"),
                avatar: r.and_then(|r| r.meta_str("avatar")),
                children: edges.iter().map(|(c, _)| c.as_str()).collect(),
                unread,
            },
        );
    }
    let mut pseudo = BTreeMap::new();
    for p in PSEUDO_SPACES {
        let f = SpaceFilter::new(m, p);
        let mut unread = Unreads::default();
        all.iter()
            .filter(|e| f.shows(e))
            .for_each(|e| unread.add(e));
        pseudo.insert(*p, unread);
    }
    #[derive(Serialize)]
    struct Out<'a> {
        top_level: &'a [String],
        spaces: BTreeMap<&'a str, Space<'a>>,
        pseudo: BTreeMap<&'a str, Unreads>,
    }
    Ok(to_json(&Out {
        top_level: &m.top_level_spaces,
        spaces,
        pseudo,
    }))
}

pub(super) fn session(m: &Model, gen: u64, data: &[u8]) -> Result<Vec<u8>, Error> {
    let NoArgs {} = args(data)?;
    let s = &m.session;
    #[derive(Serialize)]
    struct Out<'a> {
        gen: u64,
        client_state: Option<&'a RawValue>,
        sync_status: Option<&'a RawValue>,
        image_auth_token: Option<&'a str>,
        run_id: Option<&'a RawValue>,
        init_complete: bool,
        rooms: usize,
        invites: usize,
        undecodable: u64,
        skipped_rooms: u64,
    }
    Ok(to_json(&Out {
        gen,
        client_state: s.client_state.as_deref(),
        sync_status: s.sync_status.as_deref(),
        image_auth_token: s.image_auth_token.as_deref(),
        run_id: s.run_id.as_deref(),
        init_complete: s.init_complete,
        rooms: m.rooms.len(),
        invites: m.invites.len(),
        undecodable: m.undecodable,
        skipped_rooms: m.skipped_rooms,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn model(sync: Value) -> Model {
        let mut m = Model::default();
        m.apply_event("sync_complete", sync.to_string().as_bytes())
            .unwrap();
        m
    }

    fn read(f: impl Fn(&Model, &[u8]) -> Result<Vec<u8>, Error>, m: &Model, args: Value) -> Value {
        serde_json::from_slice(&f(m, args.to_string().as_bytes()).unwrap()).unwrap()
    }

    fn list(m: &Model, args: Value) -> Vec<String> {
        let v = read(|m, a| room_list(m, 0, a), m, args);
        v["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// docs/store.md: arguments a read does not take are refused, also those another read
    /// takes (the room reads share one argument struct), and the reads without arguments take
    /// none.
    #[test]
    fn a_read_refuses_arguments_it_does_not_take() {
        const ROOM: &str = "!r:x";
        let m = model(json!({"rooms": {ROOM: {"meta": {"room_id": ROOM, "name": "R"}}}}));
        let p = Paginating::default();
        let room = |extra: &str| format!(r#"{{"room_id": "{ROOM}"{extra}}}"#);
        for (what, args) in [
            ("timeline", room(r#", "type": "x""#)),
            ("timeline", room(r#", "event_id": "$e""#)),
            ("room", room(r#", "limit": 3"#)),
            ("typing", room(r#", "before": 1"#)),
            ("members", room(r#", "state_key": "x""#)),
            ("event", room(r#", "rowid": 1, "limit": 1"#)),
        ] {
            let r = match what {
                "timeline" => timeline(&m, &p, args.as_bytes()),
                "room" => super::room(&m, &p, args.as_bytes()),
                "typing" => typing(&m, args.as_bytes()),
                "members" => members(&m, args.as_bytes()),
                _ => event(&m, args.as_bytes()),
            };
            let e = r.expect_err(&args);
            assert!(e.message().contains("does not take"), "{what} {args}: {e}");
        }
        assert!(timeline(&m, &p, room(r#", "limit": 2"#).as_bytes()).is_ok());
        for bad in [&b"not json"[..], br#"{"x": 1}"#] {
            assert!(session(&m, 0, bad).is_err());
            assert!(spaces(&m, bad).is_err());
        }
        assert!(session(&m, 0, b"").is_ok() && spaces(&m, b"{}").is_ok());
    }

    /// A tombstoned room is hidden once its replacement, naming it as predecessor, is known.
    #[test]
    fn tombstoned_rooms_hide_behind_their_replacement() {
        let old = json!({"room_id": "!old:x", "name": "Old", "sorting_timestamp": 1,
                         "tombstone": {"replacement_room": "!new:x", "body": "moved"}});
        let mut m = model(json!({"rooms": {"!old:x": {"meta": old}}}));
        assert_eq!(list(&m, json!({})), ["!old:x"], "replacement not known yet");
        m.apply_event(
            "sync_complete",
            json!({"rooms": {"!new:x": {"meta": {"room_id": "!new:x", "sorting_timestamp": 2,
            "creation_content": {"predecessor": {"room_id": "!old:x"}}}}}})
            .to_string()
            .as_bytes(),
        );
        assert_eq!(list(&m, json!({})), ["!new:x"]);
    }

    /// Spaces nest; a cycle between spaces ends; orphans are rooms in no space; low-priority
    /// rooms sink unless asked otherwise.
    #[test]
    fn spaces_nest_without_looping_and_priorities_order() {
        let room = |id: &str, ts: i64| json!({"meta": {"room_id": id, "sorting_timestamp": ts}});
        let space =
            |id: &str| json!({"meta": {"room_id": id, "creation_content": {"type": "m.space"}}});
        let edge = |p: &str, c: &str| json!({"space_id": p, "child_id": c});
        let mut m = model(json!({
            "rooms": {"!a:x": room("!a:x", 3), "!b:x": room("!b:x", 2), "!c:x": room("!c:x", 1),
                      "!s1:x": space("!s1:x"), "!s2:x": space("!s2:x")},
            "space_edges": {"!s1:x": [edge("!s1:x", "!s2:x"), edge("!s1:x", "!a:x")],
                            "!s2:x": [edge("!s2:x", "!s1:x"), edge("!s2:x", "!b:x")]},
            "top_level_spaces": ["!s1:x"]}));
        assert_eq!(list(&m, json!({"space": "!s1:x"})), ["!a:x", "!b:x"]);
        assert_eq!(list(&m, json!({"space": "!s2:x"})), ["!a:x", "!b:x"]);
        assert_eq!(list(&m, json!({"space": "orphans"})), ["!c:x"]);
        m.apply_event(
            "sync_complete",
            json!({"rooms": {"!a:x": {"account_data": {"m.tag": {"type": "m.tag",
            "content": {"tags": {"m.lowpriority": {}}}}}}}})
            .to_string()
            .as_bytes(),
        );
        assert_eq!(list(&m, json!({})), ["!b:x", "!c:x", "!a:x"]);
        assert_eq!(
            list(&m, json!({"low_priority_last": false})),
            ["!a:x", "!b:x", "!c:x"]
        );
        let spaces = read(spaces, &m, json!({}));
        assert_eq!(
            spaces["spaces"]["!s1:x"]["children"],
            json!(["!s2:x", "!a:x"])
        );
    }

    /// gomuks web's pseudo-spaces: `unreads` holds a room that notifies without an unread
    /// message (gomuks flags a call invite or an undecryptable event so), and its sums count
    /// it; `orphans` ("other rooms") leaves out DMs, which `dms` shows; a left space's
    /// children are orphans again.
    #[test]
    fn unreads_count_notifications_and_orphans_leave_out_dms() {
        let room = |id: &str, extra: Value| {
            let mut meta = json!({"room_id": id, "sorting_timestamp": 1});
            meta.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"meta": meta})
        };
        let space =
            |id: &str| json!({"meta": {"room_id": id, "creation_content": {"type": "m.space"}}});
        let mut m = model(json!({"rooms": {
            "!call:x": room("!call:x", json!({"unread_notifications": 1})),
            "!hl:x": room("!hl:x", json!({"unread_highlights": 1})),
            "!read:x": room("!read:x", json!({})),
            "!dm:x": room("!dm:x", json!({"dm_user_id": "@bob:x"})),
            "!in:x": room("!in:x", json!({})),
            "!s:x": space("!s:x")},
            "space_edges": {"!s:x": [{"space_id": "!s:x", "child_id": "!in:x"}]},
            "top_level_spaces": ["!s:x"]}));
        let mut unread = list(&m, json!({"space": "unreads"}));
        unread.sort();
        assert_eq!(unread, ["!call:x", "!hl:x"]);
        let sums = read(spaces, &m, json!({}));
        assert_eq!(sums["pseudo"]["unreads"]["rooms"], 2, "{sums}");
        let mut orphans = list(&m, json!({"space": "orphans"}));
        orphans.sort();
        assert_eq!(orphans, ["!call:x", "!hl:x", "!read:x"]);
        m.apply_event(
            "sync_complete",
            json!({"left_rooms": ["!s:x"]}).to_string().as_bytes(),
        );
        assert!(list(&m, json!({"space": "orphans"})).contains(&"!in:x".to_owned()));
        assert!(read(spaces, &m, json!({}))["spaces"].get("!s:x").is_none());
    }

    /// A page before the oldest row is empty, and names no `oldest` row to page back from.
    #[test]
    fn an_empty_page_has_no_oldest_row() {
        let m = model(json!({"rooms": {"!r:x": {"meta": {"room_id": "!r:x"},
            "timeline": [{"timeline_rowid": 10, "event_rowid": 1}],
            "events": [{"rowid": 1, "room_id": "!r:x", "event_id": "$a", "type": "m.room.message"}]}}}));
        let p = Paginating::default();
        let page = |args: Value| read(|m, a| timeline(m, &p, a), &m, args);
        assert_eq!(page(json!({"room_id": "!r:x"}))["oldest"], 10);
        let empty = page(json!({"room_id": "!r:x", "before": 10}));
        assert_eq!(empty["events"], json!([]));
        assert_eq!(empty["oldest"], Value::Null, "{empty}");
    }

    /// Room version 12 and later: creators outrank every power level (gomuks web
    /// `getUserLevel`); knocks come last whatever their level (`room.ts` members sort).
    #[test]
    fn creators_of_v12_rooms_come_first() {
        let ev = |rowid: i64, kind: &str, key: &str, sender: &str, content: Value| json!({"rowid": rowid, "room_id": "!r:x", "type": kind, "state_key": key, "sender": sender, "content": content});
        let order = |create: Value| {
            let m = model(json!({"rooms": {"!r:x": {
                "meta": {"room_id": "!r:x"},
                "state": {"m.room.create": {"": 1}, "m.room.power_levels": {"": 2},
                          "m.room.member": {"@c:x": 3, "@admin:x": 4, "@z:x": 5, "@gone:x": 6, "@k:x": 7}},
                "events": [ev(1, "m.room.create", "", "@c:x", create),
                           ev(2, "m.room.power_levels", "", "@c:x", json!({"users": {"@admin:x": 100, "@k:x": 100}})),
                           ev(3, "m.room.member", "@c:x", "@c:x", json!({"membership": "join", "displayname": "Creator"})),
                           ev(4, "m.room.member", "@admin:x", "@admin:x", json!({"membership": "join"})),
                           ev(5, "m.room.member", "@z:x", "@z:x", json!({"membership": "invite", "displayname": "Alice"})),
                           ev(6, "m.room.member", "@gone:x", "@gone:x", json!({"membership": "leave"})),
                           ev(7, "m.room.member", "@k:x", "@k:x", json!({"membership": "knock"}))]}}}));
            let v = read(members, &m, json!({"room_id": "!r:x"}));
            let ids: Vec<String> = v["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["user_id"].as_str().unwrap().to_owned())
                .collect();
            (ids, v["members"][0]["power_level"].clone())
        };
        for version in ["12", "13", "org.example.v12"] {
            let (ids, top) = order(json!({"room_version": version}));
            assert_eq!(ids, ["@c:x", "@admin:x", "@z:x", "@k:x"], "{version}");
            assert!(top.is_null(), "{version}");
        }
        // Before version 12 (no version is version 1) a creator holds its level only.
        for create in [json!({"room_version": "11"}), json!({})] {
            let (ids, top) = order(create.clone());
            assert_eq!(ids, ["@admin:x", "@z:x", "@c:x", "@k:x"], "{create}");
            assert_eq!(top, 100, "{create}");
        }
    }

    /// gomuks web `handleOutgoingEvent`: the answer to a slash command (a fake event from
    /// `@gomuks`) is a row at the end of the timeline, which later messages follow, and not a
    /// send stuck in the pending tail; it goes with the timeline it was shown in.
    #[test]
    fn a_command_answer_is_a_row_after_the_newest_not_a_pending_send() {
        use super::super::model::{Changes, Echo};
        const R: &str = "!r:x";
        let msg = |rowid: i64| {
            json!({"rowid": rowid, "room_id": R, "event_id": format!("$e{rowid}"),
                   "sender": "@me:x", "type": "m.room.message"})
        };
        let row = |t: i64, e: i64| json!({"timeline_rowid": t, "event_rowid": e});
        let mut m = model(json!({"rooms": {R: {"meta": {"room_id": R},
            "timeline": [row(1, 10), row(2, 11)], "events": [msg(10), msg(11)]}}}));
        let fake = json!({"rowid": -1_764_000_000_000_i64, "timeline_rowid": 0, "room_id": R,
            "event_id": "$gomuks-internal-abc", "sender": "@gomuks", "type": "m.room.message",
            "content": {"msgtype": "m.text"}, "local_content": {"sanitized_html": "Use two slashes"}});
        let raw = serde_json::value::RawValue::from_string(fake.to_string()).unwrap();
        let answer = |m: &mut Model| m.apply_echo(R, &raw, Echo::Answer, &mut Changes::default());
        let sync = |m: &mut Model, rooms: Value| {
            let data = json!({ "rooms": rooms }).to_string();
            m.apply_event("sync_complete", data.as_bytes()).unwrap();
        };
        let mut ch = Changes::default();
        m.apply_echo(R, &raw, Echo::Answer, &mut ch);
        let rc = &ch.rooms[R];
        assert_eq!(rc.appended, [-1_764_000_000_000_i64]);
        assert!(!rc.pending && m.rooms[R].pending.is_empty());
        // The same answer again (a resent reply) is not a second row.
        answer(&mut m);
        sync(
            &mut m,
            json!({R: {"timeline": [row(3, 12)],
            "events": [msg(12)]}}),
        );
        let p = Paginating::default();
        let ids = |v: &Value| -> Vec<String> {
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event"]["event_id"].as_str().unwrap().to_owned())
                .collect()
        };
        let page = |m: &Model, args: Value| read(|m, a| timeline(m, &p, a), m, args);
        let all = page(&m, json!({"room_id": R}));
        assert_eq!(
            ids(&all),
            ["$e10", "$e11", "$gomuks-internal-abc", "$e12"],
            "{all}"
        );
        assert_eq!(all["pending"], json!([]));
        assert_eq!(all["events"][2]["timeline_rowid"], 0);
        // On exactly one page: the one holding the row that follows it.
        let newest = page(&m, json!({"room_id": R, "limit": 1}));
        let older = page(&m, json!({"room_id": R, "before": 3}));
        assert_eq!(ids(&newest), ["$gomuks-internal-abc", "$e12"]);
        assert_eq!(ids(&older), ["$e10", "$e11"]);
        // A limited sync replaces the timeline: the answer goes with it.
        sync(
            &mut m,
            json!({R: {"reset": true,
            "timeline": [row(9, 13)], "events": [msg(13)]}}),
        );
        assert_eq!(ids(&page(&m, json!({"room_id": R}))), ["$e13"]);
        assert!(m.rooms[R].notices.is_empty());
        assert!(!m.rooms[R].events.contains_key(&-1_764_000_000_000_i64));
        // Into an empty timeline: before every row that comes later.
        let mut m = model(json!({"rooms": {R: {"meta": {"room_id": R}}}}));
        answer(&mut m);
        sync(
            &mut m,
            json!({R: {"timeline": [row(1, 10)],
            "events": [msg(10)]}}),
        );
        assert_eq!(
            ids(&page(&m, json!({"room_id": R}))),
            ["$gomuks-internal-abc", "$e10"]
        );
        // Into an empty timeline (an evicted room) that a page of older history fills next:
        // below that history, as gomuks web splices history in before it.
        let mut m = model(json!({"rooms": {R: {"meta": {"room_id": R}}}}));
        answer(&mut m);
        let epoch = m.rooms[R].epoch;
        let mut older = msg(5);
        older["timeline_rowid"] = json!(5);
        let history = json!({"events": [older], "has_more": true});
        m.apply_page(
            R,
            epoch,
            history.to_string().as_bytes(),
            &mut Changes::default(),
        );
        assert_eq!(
            ids(&page(&m, json!({"room_id": R}))),
            ["$e5", "$gomuks-internal-abc"]
        );
        // A page that also brings a row newer than the tail (read after a live row the sync
        // has not brought yet): that row is new, and follows the answer.
        let mut newer = msg(7);
        newer["timeline_rowid"] = json!(7);
        let mut older = msg(4);
        older["timeline_rowid"] = json!(4);
        let both = json!({"events": [newer, older], "has_more": true});
        let mut ch = Changes::default();
        m.apply_page(R, epoch, both.to_string().as_bytes(), &mut ch);
        assert_eq!(ch.rooms[R].appended, [7]);
        assert_eq!(
            ids(&page(&m, json!({"room_id": R}))),
            ["$e4", "$e5", "$gomuks-internal-abc", "$e7"]
        );
    }

    /// A timeline item carries the edit the backend linked; `before` pages backwards.
    #[test]
    fn timeline_items_carry_their_edit() {
        let msg = |rowid: i64, edit: Option<i64>| {
            json!({"rowid": rowid, "room_id": "!r:x", "event_id": format!("$e{rowid}"),
            "type": "m.room.message", "last_edit_rowid": edit})
        };
        let m = model(json!({"rooms": {"!r:x": {"meta": {"room_id": "!r:x"},
            "timeline": [{"timeline_rowid": 1, "event_rowid": 10}, {"timeline_rowid": 2, "event_rowid": 11}],
            "events": [msg(10, Some(11)), msg(11, None)]}}}));
        let v = read(
            |m, a| timeline(m, &Paginating::new(), a),
            &m,
            json!({"room_id": "!r:x", "before": 2}),
        );
        assert_eq!(v["events"].as_array().unwrap().len(), 1);
        assert_eq!(v["events"][0]["edit"]["rowid"], 11);
        assert_eq!(v["oldest"], 1);
        let e = read(event, &m, json!({"room_id": "!r:x", "event_id": "$e10"}));
        assert_eq!(e["edit"]["event_id"], "$e11");
        assert!(e.get("send_status").is_none(), "not an own send");
    }

    /// gomuks keeps "not sent" on a sent event (interop/FINDINGS.md): the real id decides.
    #[test]
    fn send_status_reads_not_sent_as_sending_or_sent() {
        let own = |id: &str, err: &str| {
            let raw = json!({"rowid": 1, "event_id": id, "send_error": err}).to_string();
            let head = serde_json::from_str(&raw).unwrap();
            Stored {
                head,
                raw: serde_json::value::RawValue::from_string(raw).unwrap(),
            }
            .send_status()
        };
        assert_eq!(own("~hicli-1", "not sent"), Some("sending"));
        assert_eq!(own("$real", "not sent"), Some("sent"));
        assert_eq!(own("~hicli-1", "M_FORBIDDEN: no"), Some("failed"));
        assert_eq!(own("$real", ""), Some("sent"));
        // A resent echo and its outcome carry no send_error at all (gomuks clears it and the
        // field is omitempty): the local id or the transaction id still marks an own send.
        let bare = |raw: Value| {
            let raw = raw.to_string();
            Stored {
                head: serde_json::from_str(&raw).unwrap(),
                raw: serde_json::value::RawValue::from_string(raw).unwrap(),
            }
            .send_status()
        };
        assert_eq!(
            bare(json!({"rowid": 1, "event_id": "~hicli-1"})),
            Some("sending")
        );
        let txn = "hicli-mautrix-go_1";
        assert_eq!(
            bare(json!({"rowid": 1, "event_id": "$real", "transaction_id": txn})),
            Some("sent")
        );
        assert_eq!(bare(json!({"rowid": 1, "event_id": "$theirs"})), None);
    }

    /// The `unreads` filter keeps a room that is open once it is read, as gomuks web keeps the
    /// room being viewed, and only while it is open.
    #[test]
    fn the_unreads_filter_keeps_the_open_room() {
        let room = "!r:x";
        let meta = json!({"room_id": room, "name": "r", "sorting_timestamp": 1});
        let mut m = model(json!({"rooms": {room: {"meta": meta}}}));
        let unreads = |m: &Model| list(m, json!({"space": "unreads"}));
        assert!(unreads(&m).is_empty());
        m.rooms.get_mut(room).unwrap().open = true;
        assert_eq!(unreads(&m), [room]);
        m.rooms.get_mut(room).unwrap().open = false;
        assert!(unreads(&m).is_empty());
    }

    /// Invites first, then gomuks web's chain of sorts (`main.ts`): pinned low priority
    /// outermost, so a favourite that is also low priority goes to the bottom, then pinned
    /// favourites, then activity or the name.
    #[test]
    fn the_room_list_orders_as_gomuks_web_chains_its_sorts() {
        let room = |id: &str, name: &str, ts: i64, tags: Value| {
            let tag = json!({"type": "m.tag", "content": {"tags": tags}});
            let meta = json!({"room_id": id, "name": name, "sorting_timestamp": ts});
            (
                id.to_owned(),
                json!({"meta": meta, "account_data": {"m.tag": tag}}),
            )
        };
        let fav = json!({"m.favourite": {"order": 0.5}});
        let low = json!({"m.lowpriority": {}});
        let both = json!({"m.favourite": {"order": 0.1}, "m.lowpriority": {}});
        let rooms: serde_json::Map<String, Value> = [
            room("!fav:x", "d", 100, fav),
            room("!low:x", "a", 500, low),
            room("!both:x", "b", 400, both),
            room("!busy:x", "e", 300, json!({})),
            room("!quiet:x", "f", 200, json!({})),
        ]
        .into_iter()
        .collect();
        let invite = json!({"room_id": "!inv:x", "created_at": 1, "invite_state": [
            {"type": "m.room.name", "content": {"name": "c"}}]});
        let m = model(json!({"rooms": rooms, "invited_rooms": [invite]}));
        assert_eq!(
            list(&m, json!({})),
            ["!inv:x", "!fav:x", "!busy:x", "!quiet:x", "!both:x", "!low:x"]
        );
        assert_eq!(
            list(&m, json!({"order": "name"})),
            ["!inv:x", "!fav:x", "!busy:x", "!quiet:x", "!both:x", "!low:x"]
        );
        let unpinned =
            json!({"order": "name", "favourites_first": false, "low_priority_last": false});
        assert_eq!(
            list(&m, unpinned),
            ["!inv:x", "!low:x", "!both:x", "!fav:x", "!busy:x", "!quiet:x"]
        );
        let unpinned = json!({"favourites_first": false, "low_priority_last": false});
        assert_eq!(
            list(&m, unpinned),
            ["!inv:x", "!low:x", "!both:x", "!busy:x", "!quiet:x", "!fav:x"]
        );
    }

    /// Favourites are pinned in their `m.favourite` tag's order, lowest first, whatever their
    /// activity (gomuks web's `favoriteSort`); a change of order changes the room list.
    #[test]
    fn favourites_keep_their_tag_order() {
        let room = |id: &str, ts: i64, order: Value| {
            let tags = if order.is_null() {
                json!({})
            } else {
                json!({"m.favourite": {"order": order}})
            };
            let tag = json!({"type": "m.tag", "content": {"tags": tags}});
            let meta = json!({"room_id": id, "name": id, "sorting_timestamp": ts});
            (
                id.to_owned(),
                json!({"meta": meta, "account_data": {"m.tag": tag}}),
            )
        };
        let rooms: serde_json::Map<String, Value> = [
            room("!new:x", 300, json!(0.9)),
            room("!old:x", 100, json!("0.1")),
            room("!plain:x", 400, Value::Null),
            room("!bad:x", 200, json!("not a number")),
        ]
        .into_iter()
        .collect();
        let mut m = model(json!({"rooms": rooms}));
        assert_eq!(
            list(&m, json!({})),
            ["!bad:x", "!old:x", "!new:x", "!plain:x"]
        );
        let tag = json!({"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.05}}}});
        let reordered = json!({"rooms": {"!new:x": {"account_data": {"m.tag": tag}}}});
        let ch = m
            .apply_event("sync_complete", reordered.to_string().as_bytes())
            .unwrap();
        assert!(ch.room_list);
        assert_eq!(
            list(&m, json!({})),
            ["!bad:x", "!new:x", "!old:x", "!plain:x"]
        );
    }
}
