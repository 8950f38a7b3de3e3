//! The native gomuks store: room list, timelines, state, receipts and local echo, kept from
//! the events a client receives (docs/store.md).
//!
//! A store taps its client's event queue (`queue::Tap`): on the session's thread, before an
//! event is queued, the store applies it and queues a STORE event with what changed right
//! after it. Store actions (paginate, send with local echo, ...) are requests whose answer
//! the store applies before their RESPONSE is queued, with the STORE event in front of it.
//! So whatever event the app takes, a read made after it sees that event applied.

mod model;
mod views;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use crate::client::{Client, Requester};
use crate::event::{Event, EventKind};
use crate::logging::tlog;
use crate::queue::Tap;
use crate::status::{Error, Status};

use model::{Changes, Model};

/// How long a room that is not open keeps its timeline (the web client's 30 minutes).
const DEFAULT_EVICT_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often applying events also evicts idle rooms.
const GC_EVERY: Duration = Duration::from_secs(60);

/// What a store action's answer does to the store.
enum Action {
    Paginate {
        room: String,
        epoch: u64,
    },
    LoadState {
        room: String,
        members: bool,
    },
    Send {
        room: String,
    },
    /// A failed send sent again: shown as sending when asked (`sending`); `failed`, the echo
    /// before, is put back if the backend refuses, nothing has changed the echo since and no
    /// later resend of it was made (see `State::resending`).
    Resend {
        room: String,
        rowid: i64,
        failed: Box<RawValue>,
        sending: Box<RawValue>,
    },
    Members,
    Plain,
}

/// Which rooms' STORE events carry every detail besides the open ones (always detailed);
/// the others report only meta changes, removals and notifications (what a room list and OS
/// notifications need). Kept as the app said it, so a room joined later follows the mode:
/// watched under `All`, not under `Rooms`.
enum Watch {
    /// Every room but these.
    All { except: HashSet<String> },
    /// Only these.
    Rooms(HashSet<String>),
}

impl Watch {
    fn covers(&self, room_id: &str) -> bool {
        match self {
            Watch::All { except } => !except.contains(room_id),
            Watch::Rooms(set) => set.contains(room_id),
        }
    }

    fn set(&mut self, room_id: &str, on: bool) {
        let (set, add) = match self {
            Watch::All { except } => (except, !on),
            Watch::Rooms(set) => (set, on),
        };
        if add {
            set.insert(room_id.to_owned());
        } else {
            set.remove(room_id);
        }
    }

    /// A left room is forgotten with the rest of its state: rejoined, it follows the mode.
    fn forget(&mut self, room_id: &str) {
        match self {
            Watch::All { except: set } | Watch::Rooms(set) => set.remove(room_id),
        };
    }
}

struct State {
    model: Model,
    gen: u64,
    actions: HashMap<i64, Action>,
    /// Room → the request id of its running pagination (one at a time per room).
    paginating: views::Paginating,
    watch: Watch,
    evict_after: Duration,
    last_gc: Instant,
    /// The store actions' request timeout (the client's when `None`).
    timeout: Option<Duration>,
    /// The app dropped the store: a batch the session had already started to hand over
    /// passes through unchanged, so no STORE event follows the drop.
    detached: bool,
    /// Event rowid → the request id of its latest resend, until that resend is answered: an
    /// earlier resend refused late must not put back a failure over a later one (their
    /// "sending" copies are the same bytes).
    resending: HashMap<i64, i64>,
}

struct Inner {
    state: Mutex<State>,
    req: Requester,
    /// The client's id, for its log records.
    client: u64,
    /// The app's `Store` handles (clones): the last one dropped detaches the store. Not the
    /// `Arc`'s count, which the session raises for as long as it hands a batch over.
    handles: std::sync::atomic::AtomicUsize,
}

/// The options of [`Store::attach`], as JSON (all optional).
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Options {
    /// How long a room that is not open keeps its timeline, in milliseconds.
    evict_after_ms: Option<u64>,
    /// The timeout of the store's actions, in milliseconds (the client's request timeout
    /// when absent).
    request_timeout_ms: Option<u64>,
}

/// A gomuks store attached to one client. Cheap to clone; every clone is the same store.
/// Reads and actions may come from any thread. Once the last clone is dropped the client
/// stops feeding it (no more STORE events); the store may outlive its client.
pub struct Store {
    inner: Arc<Inner>,
}

impl Clone for Store {
    fn clone(&self) -> Store {
        self.inner
            .handles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Store {
            inner: self.inner.clone(),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("gen", &self.lock().gen)
            .finish()
    }
}

/// What a read can ask for: each returns one JSON document.
pub const READS: &[&str] = &[
    "room_list",
    "room",
    "timeline",
    "event",
    "state",
    "members",
    "receipts",
    "typing",
    "account_data",
    "spaces",
    "session",
];

impl Store {
    /// Attaches a store to a gomuks client that has not connected yet, so it sees every event
    /// from the first. `options` is JSON (`{"evict_after_ms": N, "request_timeout_ms": N}`,
    /// docs/store.md) or empty.
    /// `ErrState` once `connect` was called, `ErrInUse` if a store was attached before (one
    /// per client, also once dropped), `ErrUnsupported` for an rwws client,
    /// `ErrConfig` for a websocket client with `last_server_ts` (the store starts empty, and
    /// that first sync would hold only the rooms changed since then),
    /// `ErrInvalidArgument` for bad options. Dropping the store detaches it: no STORE event
    /// follows the drop.
    pub fn attach(client: &Client, options: &[u8]) -> Result<Store, Error> {
        let opts: Options = views::args(options)?;
        if opts
            .request_timeout_ms
            .is_some_and(|t| t == 0 || Duration::from_millis(t) > crate::config::MAX_DURATION)
        {
            // A request's timeout must be positive (every action would time out at once) and
            // within what a request takes.
            return Err(Error::new(
                Status::ErrInvalidArgument,
                "request_timeout_ms must be 1 to u32::MAX (about 49 days)",
            ));
        }
        let store = Store {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    model: Model::default(),
                    gen: 0,
                    actions: HashMap::new(),
                    paginating: HashMap::new(),
                    watch: Watch::All {
                        except: HashSet::new(),
                    },
                    evict_after: opts
                        .evict_after_ms
                        .map_or(DEFAULT_EVICT_AFTER, Duration::from_millis),
                    last_gc: Instant::now(),
                    timeout: opts.request_timeout_ms.map(Duration::from_millis),
                    detached: false,
                    resending: HashMap::new(),
                }),
                req: client.requester().clone(),
                client: client.id(),
                handles: std::sync::atomic::AtomicUsize::new(1),
            }),
        };
        let weak: std::sync::Weak<Inner> = Arc::downgrade(&store.inner);
        client.attach_tap(weak)?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The model is plain data: a panic while applying leaves it usable.
        crate::lock(&self.inner.state)
    }

    /// One snapshot as JSON: `what` is one of [`READS`], `args` its JSON arguments (empty
    /// means none). docs/store.md lists the arguments and the shape of each.
    pub fn read(&self, what: &str, args: &[u8]) -> Result<Vec<u8>, Error> {
        let st = self.lock();
        let m = &st.model;
        match what {
            "room_list" => views::room_list(m, st.gen, args),
            "room" => views::room(m, &st.paginating, args),
            "timeline" => views::timeline(m, &st.paginating, args),
            "event" => views::event(m, args),
            "state" => views::state(m, args),
            "members" => views::members(m, args),
            "receipts" => views::receipts(m, args),
            "typing" => views::typing(m, args),
            "account_data" => views::account_data(m, args),
            "spaces" => views::spaces(m, args),
            "session" => views::session(m, st.gen, args),
            other => Err(Error::new(
                Status::ErrInvalidArgument,
                format!("unknown read {other:?}; one of {READS:?}"),
            )),
        }
    }

    /// The generation: how many change sets the store has announced.
    pub fn generation(&self) -> u64 {
        self.lock().gen
    }

    /// Sends `command` and registers what its answer does, under the store's lock so the
    /// answer cannot be applied before it is registered.
    fn act(
        &self,
        st: &mut State,
        command: &str,
        params: &[u8],
        action: Action,
    ) -> Result<i64, Error> {
        let id = self.inner.req.request(command, params, st.timeout)?;
        st.actions.insert(id, action);
        Ok(id)
    }

    /// Loads older history of `room_id` (`paginate`); its RESPONSE follows the STORE event
    /// with the prepended rows. `limit` 0 picks the web client's (50, or 100 once 100 rows
    /// are cached). One pagination per room at a time: `ErrInUse` while one runs.
    pub fn paginate(&self, room_id: &str, limit: u32) -> Result<i64, Error> {
        let mut st = self.lock();
        let room = known_room(&st.model, room_id)?;
        if let Some(id) = st.paginating.get(room_id) {
            return Err(Error::new(
                Status::ErrInUse,
                format!("a pagination of {room_id} is running (request {id})"),
            ));
        }
        let limit = match limit {
            0 if room.timeline.len() >= 100 => 100,
            0 => 50,
            n => n,
        };
        let params = json!({
            "room_id": room_id,
            "max_timeline_id": room.timeline.first().map_or(0, |r| r.timeline_rowid),
            "limit": limit,
            "reset": false,
        });
        let epoch = room.epoch;
        let action = Action::Paginate {
            room: room_id.to_owned(),
            epoch,
        };
        let id = self.act(&mut st, "paginate", params.to_string().as_bytes(), action)?;
        st.paginating.insert(room_id.to_owned(), id);
        Ok(id)
    }

    /// Loads the room's whole state (`get_room_state`), with the member list when `members`
    /// (fetched from the server if the backend does not have it yet).
    pub fn load_state(&self, room_id: &str, members: bool) -> Result<i64, Error> {
        let mut st = self.lock();
        let room = known_room(&st.model, room_id)?;
        let have_members = room.meta.get("has_member_list") == Some(&serde_json::Value::Bool(true));
        let params = json!({
            "room_id": room_id,
            "refetch": false,
            "include_members": members,
            "fetch_members": members && !have_members,
        });
        let action = Action::LoadState {
            room: room_id.to_owned(),
            members,
        };
        self.act(
            &mut st,
            "get_room_state",
            params.to_string().as_bytes(),
            action,
        )
    }

    /// Sends a message (`send_message`, `params` as the command takes them: `room_id`, `text`,
    /// ...). Its answer, the local echo, joins the room's pending tail before the RESPONSE;
    /// `send_complete` then marks it sent (or failed, with the server's reason in
    /// `send_error`), and the synced event takes its place in the timeline.
    pub fn send_message(&self, params: &[u8]) -> Result<i64, Error> {
        #[derive(Deserialize)]
        struct P {
            room_id: String,
        }
        let p: P = serde_json::from_slice(params).map_err(|e| {
            Error::new(
                Status::ErrInvalidArgument,
                format!("send_message params need a room_id: {e}"),
            )
        })?;
        let mut st = self.lock();
        known_room(&st.model, &p.room_id)?;
        self.act(
            &mut st,
            "send_message",
            params,
            Action::Send { room: p.room_id },
        )
    }

    /// Sends a failed message again (`resend_event` with its transaction id). The echo shows
    /// as sending at once, as gomuks answers it (`send_error` cleared), in a STORE event (cause
    /// `resend`) queued before the RESPONSE: a `send_complete` that beats the answer is then
    /// not undone by it. If the backend refuses, the echo is failed again (the answer's
    /// STORE event). `ErrInvalidArgument` unless `rowid` is a failed send in the room's
    /// pending tail.
    pub fn resend(&self, room_id: &str, rowid: i64) -> Result<i64, Error> {
        let mut st = self.lock();
        let ev = failed_send(&st.model, room_id, rowid)?;
        let txn = ev.head.transaction_id.clone().unwrap_or_default();
        if txn.is_empty() {
            return Err(Error::new(
                Status::ErrInvalidArgument,
                format!("event {rowid} of {room_id} has no transaction id to resend by"),
            ));
        }
        let failed = ev.raw.clone();
        let sending = without_send_error(&failed);
        let params = json!({ "transaction_id": txn });
        let action = Action::Resend {
            room: room_id.to_owned(),
            rowid,
            failed,
            sending: sending.clone(),
        };
        let id = self.act(
            &mut st,
            "resend_event",
            params.to_string().as_bytes(),
            action,
        )?;
        st.resending.insert(rowid, id);
        let mut ch = Changes::default();
        st.model
            .apply_echo(room_id, &sending, model::Echo::Local, &mut ch);
        self.announce_local(&mut st, ch, "resend");
        Ok(id)
    }

    /// Drops a failed send from the room's pending tail (gomuks web's "undo send"; the backend
    /// keeps its copy), and queues the STORE event that reports it (cause `discard`; as every
    /// change set, none for a room neither watched nor open, and none after CLOSED).
    /// `ErrInvalidArgument` unless `rowid` is a failed send in the room's pending tail.
    pub fn discard(&self, room_id: &str, rowid: i64) -> Result<(), Error> {
        let mut st = self.lock();
        failed_send(&st.model, room_id, rowid)?;
        known_room_mut(&mut st.model, room_id)?.discard_echo(rowid);
        // A resend of it still unanswered must not put it back.
        st.resending.remove(&rowid);
        let mut ch = Changes::default();
        ch.room(room_id).pending = true;
        self.announce_local(&mut st, ch, "discard");
        Ok(())
    }

    /// Marks the room read up to its newest event (`mark_read`; `receipt_type` empty means
    /// `m.read`). The unread counts change when the backend's next sync says so.
    /// `ErrInvalidArgument` when the store holds no event of the room to mark.
    pub fn mark_read(&self, room_id: &str, receipt_type: &str) -> Result<i64, Error> {
        let mut st = self.lock();
        let room = known_room(&st.model, room_id)?;
        let newest = room
            .timeline
            .iter()
            .rev()
            .filter_map(|r| room.events.get(&r.event_rowid))
            .chain(room.events.get(&room.meta_i64("preview_event_rowid")))
            .find(|e| e.head.event_id.starts_with('$'))
            .map(|e| e.head.event_id.clone())
            .ok_or_else(|| {
                Error::new(
                    Status::ErrInvalidArgument,
                    format!("no event of {room_id} to mark read"),
                )
            })?;
        let params = json!({
            "room_id": room_id,
            "event_id": newest,
            "receipt_type": if receipt_type.is_empty() { "m.read" } else { receipt_type },
        });
        self.act(
            &mut st,
            "mark_read",
            params.to_string().as_bytes(),
            Action::Plain,
        )
    }

    /// Fetches the member events of these users in one request
    /// (`get_specific_room_state`), skipping those the store has. `Ok(0)` when none is
    /// missing: nothing is sent and no RESPONSE follows.
    pub fn request_members(&self, room_id: &str, user_ids: &[&str]) -> Result<i64, Error> {
        let mut st = self.lock();
        let room = known_room(&st.model, room_id)?;
        let have = room.state.get("m.room.member");
        let keys: Vec<_> = user_ids
            .iter()
            .filter(|u| have.map_or(true, |m| !m.contains_key(**u)))
            .map(|u| json!({"room_id": room_id, "type": "m.room.member", "state_key": u}))
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let params = json!({ "keys": keys });
        self.act(
            &mut st,
            "get_specific_room_state",
            params.to_string().as_bytes(),
            Action::Members,
        )
    }

    /// The app shows this room: it keeps its timeline, and its STORE events carry every
    /// detail whatever the watch list says. `ErrInvalidArgument` for an unknown room.
    pub fn open_room(&self, room_id: &str) -> Result<(), Error> {
        let mut st = self.lock();
        let room = known_room_mut(&mut st.model, room_id)?;
        room.open = true;
        st.model.open.insert(room_id.to_owned());
        Ok(())
    }

    /// The app no longer shows this room: after the eviction delay its timeline is dropped.
    /// A room still open from before a `clear_state` (or a new session) closes too, though
    /// the backend has not sent it again yet; `ErrInvalidArgument` for a room the store
    /// neither knows nor has open.
    pub fn close_room(&self, room_id: &str) -> Result<(), Error> {
        let mut st = self.lock();
        // The open set first: it outlives the rooms (`Model::clear`), and a room it still
        // names would come back open for good (never evicted, always in `unreads`).
        let was_open = st.model.open.remove(room_id);
        match st.model.rooms.get_mut(room_id) {
            Some(room) => {
                room.open = false;
                room.idle_since = Instant::now();
                Ok(())
            }
            None if was_open => Ok(()),
            None => Err(unknown_room(room_id)),
        }
    }

    /// Limits the detail of STORE events: `None` with `true` watches every room (the
    /// default); `None` with `false` watches none but the open ones; a room id adds or
    /// removes that room (`ErrInvalidArgument` for a room the store does not know). An open
    /// room is always watched; a room joined later is watched after `None` with `true`, not
    /// after `None` with `false`; a room left is forgotten.
    pub fn watch(&self, room_id: Option<&str>, on: bool) -> Result<(), Error> {
        let mut st = self.lock();
        match room_id {
            Some(id) => {
                known_room(&st.model, id)?;
                st.watch.set(id, on);
            }
            None if on => {
                st.watch = Watch::All {
                    except: HashSet::new(),
                }
            }
            None => st.watch = Watch::Rooms(HashSet::new()),
        }
        Ok(())
    }

    /// Evicts now the timelines of rooms that are not open and were idle for the eviction
    /// delay, and queues the STORE event that reports it (cause `gc`). Returns how many rooms
    /// were evicted.
    pub fn collect_garbage(&self) -> usize {
        let mut st = self.lock();
        let mut ch = Changes::default();
        let n = evict_idle(&mut st, &mut ch);
        self.announce_local(&mut st, ch, "gc");
        n
    }

    /// Queues the STORE event of a change the app's call made, if anything changed. Under the
    /// store's lock, past the tap, as the tap queues: generations stay in order.
    fn announce_local(&self, st: &mut State, ch: Changes, cause: &'static str) {
        if let Some(ev) = st.announce(ch, Cause::local(cause)) {
            self.inner.req.queue().push_untapped([ev]);
        }
    }
}

/// The failed send `rowid` in the room's pending tail: what can be resent or discarded.
fn failed_send<'a>(m: &'a Model, room_id: &str, rowid: i64) -> Result<&'a model::Stored, Error> {
    let room = known_room(m, room_id)?;
    room.pending
        .contains(&rowid)
        .then(|| room.events.get(&rowid))
        .flatten()
        .filter(|e| e.send_status() == Some("failed"))
        .ok_or_else(|| {
            Error::new(
                Status::ErrInvalidArgument,
                format!("event {rowid} is not a failed send in the pending tail of {room_id}"),
            )
        })
}

/// The echo as gomuks answers a resend: `send_error` cleared, which its JSON omits.
fn without_send_error(raw: &RawValue) -> Box<RawValue> {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw.get()).unwrap_or_default();
    v.remove("send_error");
    RawValue::from_string(serde_json::Value::Object(v).to_string())
        .expect("a JSON object serializes to valid JSON")
}

fn unknown_room(room_id: &str) -> Error {
    Error::new(
        Status::ErrInvalidArgument,
        format!("unknown room {room_id:?}"),
    )
}

fn known_room<'a>(m: &'a Model, room_id: &str) -> Result<&'a model::Room, Error> {
    m.rooms.get(room_id).ok_or_else(|| unknown_room(room_id))
}

fn known_room_mut<'a>(m: &'a mut Model, room_id: &str) -> Result<&'a mut model::Room, Error> {
    m.rooms
        .get_mut(room_id)
        .ok_or_else(|| unknown_room(room_id))
}

/// Evicts the timelines of rooms not open and idle for the eviction delay.
fn evict_idle(st: &mut State, ch: &mut Changes) -> usize {
    let now = Instant::now();
    let after = st.evict_after;
    let mut n = 0;
    for (id, room) in &mut st.model.rooms {
        if !room.evictable(now, after) {
            continue;
        }
        if room.evict() {
            ch.room(id).reset = true;
            n += 1;
        } else if !room.receipts.is_empty() {
            // Evicted before (or never with more than its preview): only the receipts that
            // came since are left to drop, which is no reset of its timeline.
            let gone = room.drop_receipts();
            ch.room(id).receipts.extend(gone);
        }
    }
    st.last_gc = now;
    n
}

/// What caused a change set.
#[derive(Serialize)]
struct Cause<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    command: &'a str,
    /// The server event's id (negative when resumable, 0 otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<i64>,
    /// The store action whose answer this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<i64>,
}

impl Cause<'_> {
    /// The store's own doing, or the connection's: `gc`, `connected`, `disconnected`.
    fn local(command: &'static str) -> Cause<'static> {
        Cause {
            command,
            event_id: None,
            request_id: None,
        }
    }
}

impl State {
    /// The STORE event for `ch`, or `None` when nothing changed.
    fn announce(&mut self, mut ch: Changes, cause: Cause) -> Option<Event> {
        for (id, _) in ch.rooms.iter().filter(|(_, rc)| rc.removed) {
            self.watch.forget(id);
        }
        ch.rooms = std::mem::take(&mut ch.rooms)
            .into_iter()
            .filter_map(|(id, rc)| {
                let rc = if self.model.open.contains(&id) || self.watch.covers(&id) {
                    Some(rc)
                } else {
                    rc.summary()
                };
                rc.map(|rc| (id, rc))
            })
            .collect();
        ch.prune();
        if ch.is_empty() {
            return None;
        }
        self.gen += 1;
        #[derive(Serialize)]
        struct Out<'a> {
            gen: u64,
            cause: Cause<'a>,
            #[serde(flatten)]
            changes: &'a Changes,
        }
        let data = serde_json::to_vec(&Out {
            gen: self.gen,
            cause,
            changes: &ch,
        })
        .expect("change sets serialize infallibly");
        let mut ev = Event::new(EventKind::Store);
        ev.data = Bytes::from(data);
        Some(ev)
    }

    /// Applies a store action's answer.
    fn answer(&mut self, id: i64, action: Action, ok: bool, data: &[u8], ch: &mut Changes) {
        match action {
            Action::Paginate { room, epoch } => {
                self.paginating.remove(&room);
                if ok {
                    self.model.apply_page(&room, epoch, data, ch);
                }
            }
            Action::LoadState { room, members } if ok => {
                self.model.apply_state(&room, members, data, ch);
            }
            Action::Send { room } if ok => {
                if let Ok(raw) = serde_json::from_slice::<&RawValue>(data) {
                    self.model.apply_echo(&room, raw, model::Echo::Answer, ch);
                }
            }
            Action::Resend {
                room,
                rowid,
                failed,
                sending,
            } => {
                let latest = self.resending.get(&rowid) == Some(&id);
                if latest {
                    self.resending.remove(&rowid);
                }
                // Put back only what this resend itself showed: an outcome that came since (a
                // timed-out request the backend did carry out) or a later resend is newer.
                let unchanged = self.model.rooms.get(&room).is_some_and(|r| {
                    r.pending.contains(&rowid)
                        && r.events.get(&rowid).map(|e| e.raw.get()) == Some(sending.get())
                });
                if !ok && latest && unchanged {
                    self.model
                        .apply_echo(&room, &failed, model::Echo::Local, ch);
                }
            }
            Action::Members if ok => self.model.apply_state_events(data, ch),
            _ => {}
        }
    }
}

impl State {
    /// Queues a CONNECTED or DISCONNECTED event, then the change set its reset of typing and
    /// `init_complete` caused, if any.
    fn connection_changed(&mut self, ev: &Event, cause: &'static str, out: &mut Vec<Event>) {
        let ch = self.model.connection_changed();
        out.push(ev.clone());
        out.extend(self.announce(ch, Cause::local(cause)));
    }

    /// The batch to queue for `events`: each with the change set it caused.
    fn apply_batch(&mut self, events: &[Event]) -> Vec<Event> {
        let mut out = Vec::with_capacity(events.len() + 1);
        for ev in events {
            match ev.kind {
                EventKind::Message => {
                    let applied = self.model.apply_event(ev.command(), ev.data());
                    let cause = Cause {
                        command: ev.command(),
                        event_id: Some(ev.request_id),
                        request_id: None,
                    };
                    let note = applied.and_then(|ch| self.announce(ch, cause));
                    out.push(ev.clone());
                    out.extend(note);
                }
                EventKind::Response => {
                    if let Some(action) = self.actions.remove(&ev.request_id) {
                        let mut ch = Changes::default();
                        let ok = ev.status == Status::Ok;
                        self.answer(ev.request_id, action, ok, ev.data(), &mut ch);
                        let cause = Cause {
                            command: "",
                            event_id: None,
                            request_id: Some(ev.request_id),
                        };
                        out.extend(self.announce(ch, cause));
                    }
                    out.push(ev.clone());
                }
                EventKind::Connected => self.connection_changed(ev, "connected", &mut out),
                // Not the last DISCONNECTED (no retry: CLOSED, a pause or giving up follows):
                // a closed client's store keeps its last state, and an app shutting down is
                // not handed one more change set.
                EventKind::Disconnected if ev.retry_in.is_some() => {
                    self.connection_changed(ev, "disconnected", &mut out)
                }
                _ => out.push(ev.clone()),
            }
        }
        if self.last_gc.elapsed() >= GC_EVERY {
            let mut ch = Changes::default();
            evict_idle(self, &mut ch);
            if let Some(note) = self.announce(ch, Cause::local("gc")) {
                // CLOSED stays last.
                let at = out
                    .iter()
                    .position(|e| e.kind == EventKind::Closed)
                    .unwrap_or(out.len());
                out.insert(at, note);
            }
        }
        out
    }
}

impl Drop for Store {
    /// The last handle detaches, under the store's lock: a batch being applied right now is
    /// queued first (with its change set), and one the session took hold of just before
    /// passes through.
    fn drop(&mut self) {
        let was = self
            .inner
            .handles
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        if was == 1 {
            self.lock().detached = true;
        }
    }
}

impl Tap for Inner {
    fn deliver(&self, events: Vec<Event>, queue: &dyn Fn(Vec<Event>)) {
        let mut st = crate::lock(&self.state);
        if st.detached {
            queue(events);
            return;
        }
        // A bug in the store must not cost the app its events: the batch then goes out as
        // it came (the answers in it were already retired from the request book).
        let out =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| st.apply_batch(&events)))
                .unwrap_or_else(|p| {
                    tlog!(
                        self.client,
                        Error,
                        "store",
                        "the store failed to apply a batch of {} events (internal panic: {}); \
                         they are queued without it",
                        events.len(),
                        crate::panic_text(&*p)
                    );
                    events
                });
        // Under the store's lock, so change sets are queued in generation order.
        queue(out);
    }
}

/// Drives the model without a client, for tether's fuzz target: not part of the API.
#[doc(hidden)]
#[derive(Default)]
pub struct Harness {
    model: Model,
}

#[doc(hidden)]
impl Harness {
    /// Applies a server event; whether the store consumes that command.
    pub fn apply(&mut self, command: &str, data: &[u8]) -> bool {
        self.model.apply_event(command, data).is_some()
    }

    /// Applies `data` as the answer of each store action for the first known room.
    pub fn answer(&mut self, data: &[u8]) {
        let Some(room) = self.model.rooms.keys().next().cloned() else {
            return;
        };
        let mut ch = Changes::default();
        let epoch = self.model.rooms[&room].epoch;
        self.model.apply_page(&room, epoch, data, &mut ch);
        self.model.apply_state(&room, true, data, &mut ch);
        self.model.apply_state_events(data, &mut ch);
        if let Ok(raw) = serde_json::from_slice::<&RawValue>(data) {
            self.model
                .apply_echo(&room, raw, model::Echo::Answer, &mut ch);
        }
        for room in self.model.rooms.values_mut() {
            room.evict();
        }
    }

    /// Panics if the model breaks a rule every read relies on: timelines ascending without
    /// duplicates, pending echoes not in the timeline, every index pointing at a held event.
    pub fn check(&self) {
        for (id, r) in &self.model.rooms {
            assert!(
                r.timeline
                    .windows(2)
                    .all(|w| w[0].timeline_rowid < w[1].timeline_rowid),
                "{id}: timeline out of order"
            );
            for p in &r.pending {
                assert!(
                    !r.timeline.iter().any(|t| t.event_rowid == *p),
                    "{id}: pending {p} also in the timeline"
                );
            }
            for (eid, rowid) in &r.by_id {
                assert!(
                    r.events.contains_key(rowid),
                    "{id}: {eid} -> {rowid} not held"
                );
            }
        }
    }

    /// Every read, for up to three known rooms (and an unknown one); each result as JSON text
    /// or the error.
    pub fn read_all(&self) -> Vec<Result<Vec<u8>, Error>> {
        let mut rooms: Vec<&String> = self.model.rooms.keys().take(3).collect();
        let unknown = "!unknown:fuzz".to_owned();
        rooms.push(&unknown);
        let m = &self.model;
        let mut out = vec![
            views::room_list(m, 0, b""),
            views::room_list(m, 0, br#"{"space":"unreads","order":"name","query":"a"}"#),
            views::spaces(m, b""),
            views::session(m, 0, b""),
            views::account_data(m, b""),
        ];
        for r in rooms {
            let a = json!({"room_id": r, "limit": 5}).to_string();
            let a = a.as_bytes();
            out.push(views::room(m, &views::Paginating::new(), a));
            out.push(views::timeline(m, &views::Paginating::new(), a));
            out.push(views::state(m, a));
            out.push(views::members(m, a));
            out.push(views::receipts(m, a));
            out.push(views::typing(m, a));
            let e = json!({"room_id": r, "rowid": 1}).to_string();
            out.push(views::event(m, e.as_bytes()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The race of a drop with a delivery: the session upgraded its weak handle to the store
    /// just before the app dropped its last clone, then hands a batch over. The batch is
    /// queued as it came, with no STORE event after the drop (tether.h, `tether_store_free`);
    /// dropping one clone of several detaches nothing.
    #[test]
    fn a_batch_handed_over_after_the_drop_carries_no_change_set() {
        let client = Client::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
        let sync = || {
            let mut ev = Event::new(EventKind::Message);
            ev.command = crate::event::command_name("sync_complete");
            ev.data = bytes::Bytes::from_static(include_bytes!(
                "../../tests/fixtures/gomuks/v0.2607_initial.json"
            ));
            ev
        };
        let kinds = |inner: &Inner| {
            let out = std::sync::Mutex::new(Vec::new());
            inner.deliver(vec![sync()], &|v| out.lock().unwrap().extend(v));
            let out = out.into_inner().unwrap();
            out.iter().map(Event::kind).collect::<Vec<_>>()
        };
        let store = Store::attach(&client, b"").unwrap();
        // Attached, the batch brings its change set; a clone let go changes nothing.
        assert!(kinds(&store.inner).contains(&EventKind::Store));
        drop(store.clone());
        assert!(kinds(&store.inner).contains(&EventKind::Store));
        let held = store.inner.clone();
        drop(store);
        assert_eq!(kinds(&held), [EventKind::Message]);
    }

    /// A resend refused late (timed out) after a later resend of the same send was made puts
    /// no failure back over that later one: both show the same "sending" bytes.
    #[test]
    fn a_late_refusal_of_an_earlier_resend_leaves_the_later_one_sending() {
        let client = Client::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
        let store = Store::attach(&client, b"").unwrap();
        let message = |command: &str, data: String| {
            let mut ev = Event::new(EventKind::Message);
            ev.command = crate::event::command_name(command);
            ev.data = bytes::Bytes::from(data);
            ev
        };
        let deliver = |ev: Event| store.inner.deliver(vec![ev], &|_| {});
        let initial = include_str!("../../tests/fixtures/gomuks/v0.2607_initial.json");
        deliver(message("sync_complete", initial.to_owned()));
        let room = "!known:example.org";
        let failed = |why: &str| {
            let ev = json!({"rowid": 9001, "room_id": room, "event_id": "~hicli-mautrix-go_1",
                "transaction_id": "hicli-mautrix-go_1", "sender": "@me:example.org",
                "type": "m.room.message", "timestamp": 1, "send_error": why});
            message(
                "send_complete",
                json!({"event": ev, "error": {}}).to_string(),
            )
        };
        let status = || {
            let tl = store.read("timeline", json!({"room_id": room}).to_string().as_bytes());
            let tl: serde_json::Value = serde_json::from_slice(&tl.unwrap()).unwrap();
            tl["pending"][0]["send_status"].clone()
        };
        deliver(failed("M_FORBIDDEN: first"));
        assert_eq!(status(), "failed");
        let first = store.resend(room, 9001).unwrap();
        deliver(failed("M_FORBIDDEN: second"));
        store.resend(room, 9001).unwrap();
        assert_eq!(status(), "sending");
        let mut refused = Event::new(EventKind::Response);
        refused.request_id = first;
        refused.status = Status::ErrRequestTimeout;
        deliver(refused);
        assert_eq!(status(), "sending", "the later resend is still out");
        // Discarded, the echo is gone from every read, not only the pending tail.
        deliver(failed("M_FORBIDDEN: third"));
        store.discard(room, 9001).unwrap();
        let ev = store.read(
            "event",
            json!({"room_id": room, "rowid": 9001})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(ev.unwrap(), b"null");
    }

    fn message(command: &str, data: String) -> Event {
        let mut ev = Event::new(EventKind::Message);
        ev.command = crate::event::command_name(command);
        ev.data = bytes::Bytes::from(data);
        ev
    }

    const INITIAL: &str = include_str!("../../tests/fixtures/gomuks/v0.2607_initial.json");
    const ROOM: &str = "!known:example.org";

    /// gomuks web closes a room by forgetting the active one (`activeRoomID = null`),
    /// whatever its store holds. The open set outlives `clear_state` so the room on screen
    /// comes back open; closed before it comes back, it comes back closed: evicted as any
    /// other and out of the `unreads` list, which lists open rooms.
    #[test]
    fn a_room_closed_before_clear_state_sends_it_again_comes_back_closed() {
        let client = Client::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
        let store = Store::attach(&client, b"").unwrap();
        let deliver = |ev: Event| store.inner.deliver(vec![ev], &|_| {});
        deliver(message("sync_complete", INITIAL.to_owned()));
        store.open_room(ROOM).unwrap();
        deliver(message(
            "sync_complete",
            json!({"clear_state": true}).to_string(),
        ));
        store.close_room(ROOM).unwrap();
        let meta = json!({"room_id": ROOM, "name": "Known", "sorting_timestamp": 1});
        deliver(message(
            "sync_complete",
            json!({"rooms": {ROOM: {"meta": meta}}}).to_string(),
        ));
        let room = store.read("room", json!({"room_id": ROOM}).to_string().as_bytes());
        let room: serde_json::Value = serde_json::from_slice(&room.unwrap()).unwrap();
        assert_eq!(room["open"], false);
        let unreads = store.read("room_list", br#"{"space":"unreads"}"#).unwrap();
        let unreads: serde_json::Value = serde_json::from_slice(&unreads).unwrap();
        assert_eq!(unreads["total"], 0, "{unreads}");
        // Neither known nor open: still the documented refusal.
        assert_eq!(
            store.close_room("!never:example.org").unwrap_err().status(),
            Status::ErrInvalidArgument
        );
    }

    /// gomuks web redraws a room's list entry when its preview is decrypted or its tags
    /// change, with no meta from the backend. The change set of a room not watched keeps
    /// only what a room list needs, and that must name the room, not only say `room_list`.
    #[test]
    fn a_list_entry_change_names_a_room_not_watched() {
        let client = Client::new(Config::builder("ws://127.0.0.1:9/").build().unwrap());
        let store = Store::attach(&client, b"").unwrap();
        let out = std::sync::Mutex::new(Vec::new());
        let changes = |ev: Event| {
            out.lock().unwrap().clear();
            store
                .inner
                .deliver(vec![ev], &|v| out.lock().unwrap().extend(v));
            let out = out.lock().unwrap();
            let set = out.iter().find(|e| e.kind() == EventKind::Store).unwrap();
            serde_json::from_slice::<serde_json::Value>(set.data()).unwrap()
        };
        changes(message("sync_complete", INITIAL.to_owned()));
        store.watch(None, false).unwrap();
        let decrypted = json!({"rowid": 60, "room_id": ROOM, "event_id": "$e60",
            "sender": "@bob:example.org", "type": "m.room.message", "timestamp": 1,
            "content": {"body": "now decrypted"}});
        let set = changes(message(
            "events_decrypted",
            json!({"room_id": ROOM, "events": [decrypted]}).to_string(),
        ));
        assert_eq!(set["room_list"], true);
        assert_eq!(set["rooms"][ROOM], json!({"meta": true}), "{set}");
        let tag = json!({"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.5}}}});
        let set = changes(message(
            "sync_complete",
            json!({"rooms": {ROOM: {"account_data": {"m.tag": tag}}}}).to_string(),
        ));
        assert_eq!(set["room_list"], true);
        assert_eq!(set["rooms"][ROOM], json!({"meta": true}), "{set}");
    }
}
