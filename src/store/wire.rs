//! The gomuks shapes the store reads, decoded tolerantly.
//!
//! The protocol has no version field and its types change monthly (docs/store.md,
//! "Tolerance"), so every field is optional, a field of the wrong type reads as absent instead
//! of failing the whole message, unknown fields are ignored, and what the store only hands
//! back (`content`, `unsigned`, whole events) stays raw JSON.

use std::collections::HashMap;

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A field that reads as its default when present with the wrong type (or `null`).
pub(super) fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<T, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(T::deserialize(v).unwrap_or_default())
}

/// Decodes a JSON object as `T`; anything else (serde would read an array positionally)
/// is `None`.
pub(super) fn object<'a, T: Deserialize<'a>>(data: &'a [u8]) -> Option<T> {
    let first = data.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(data).ok()
}

/// A map whose values are decoded one by one: one bad entry is dropped, not the map.
pub(super) fn raw_map(v: Option<&RawValue>) -> Vec<(String, &RawValue)> {
    v.and_then(|v| serde_json::from_str::<HashMap<String, &RawValue>>(v.get()).ok())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

/// A list whose items are decoded one by one, as a field: an item of the wrong shape is
/// skipped alone, and anything but a list reads as empty.
pub(super) fn lenient_items<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(lenient_list(d)?.unwrap_or_default())
}

/// [`lenient_items`] for a list whose absence means something (keep what is known):
/// anything but a list reads as absent.
pub(super) fn lenient_list<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => Some(
            items
                .into_iter()
                .filter_map(|i| T::deserialize(i).ok())
                .collect(),
        ),
        _ => None,
    })
}

/// A room's state map (type → state key → event rowid), as a field: an entry of the wrong
/// shape is skipped alone, and anything but an object reads as empty.
pub(super) fn lenient_state<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<HashMap<String, HashMap<String, i64>>, D::Error> {
    let Value::Object(types) = Value::deserialize(d)? else {
        return Ok(HashMap::new());
    };
    Ok(types
        .into_iter()
        .filter_map(|(kind, keys)| match keys {
            Value::Object(keys) => Some((
                kind,
                keys.into_iter()
                    .filter_map(|(key, rowid)| Some((key, rowid.as_i64()?)))
                    .collect(),
            )),
            _ => None,
        })
        .collect())
}

/// A list whose items are decoded one by one.
pub(super) fn raw_list(v: Option<&RawValue>) -> Vec<&RawValue> {
    v.and_then(|v| serde_json::from_str::<Vec<&RawValue>>(v.get()).ok())
        .unwrap_or_default()
}

/// `sync_complete` (gomuks-rpc.md §4.2; hicli `SyncComplete`).
#[derive(Deserialize, Default)]
pub(super) struct SyncComplete<'a> {
    #[serde(default, deserialize_with = "lenient")]
    pub clear_state: bool,
    /// v0.2608+: a catch-up sync replaces missed events; timelines may have gaps.
    #[serde(default, deserialize_with = "lenient")]
    pub catchup: bool,
    #[serde(default, borrow)]
    pub account_data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub rooms: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "lenient_items")]
    pub left_rooms: Vec<String>,
    #[serde(default, borrow)]
    pub invited_rooms: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub space_edges: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "lenient_list")]
    pub top_level_spaces: Option<Vec<String>>,
}

/// One room of a `sync_complete`.
#[derive(Deserialize, Default)]
pub(super) struct SyncRoom<'a> {
    /// Replaces the meta; v0.2608 omits it when unchanged.
    #[serde(default, deserialize_with = "lenient")]
    pub meta: Option<serde_json::Map<String, Value>>,
    #[serde(default, deserialize_with = "lenient_items")]
    pub timeline: Vec<TimelineRow>,
    #[serde(default, deserialize_with = "lenient")]
    pub reset: bool,
    /// type → state_key → event rowid, deep-merged.
    #[serde(default, deserialize_with = "lenient_state")]
    pub state: HashMap<String, HashMap<String, i64>>,
    #[serde(default, borrow)]
    pub account_data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub events: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub receipts: Option<&'a RawValue>,
    /// hicli `SyncNotification`s: new events the push rules say notify (live syncs only).
    #[serde(default, borrow)]
    pub notifications: Option<&'a RawValue>,
    /// The room's notification count went to zero elsewhere: shown notifications can close.
    #[serde(default, deserialize_with = "lenient")]
    pub dismiss_notifications: bool,
}

/// One entry of a room's `notifications`.
#[derive(Deserialize, Default)]
pub(super) struct NotificationHead {
    #[serde(default, deserialize_with = "lenient")]
    pub event_rowid: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub sound: bool,
    #[serde(default, deserialize_with = "lenient")]
    pub highlight: bool,
}

/// A timeline tuple: the row's position and the event it shows.
#[derive(Deserialize, Default, Clone, Copy)]
pub(super) struct TimelineRow {
    #[serde(default, deserialize_with = "lenient")]
    pub timeline_rowid: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub event_rowid: i64,
}

/// The fields of a `database.Event` the store orders and indexes by; the event itself is
/// kept raw.
#[derive(Deserialize, Default)]
pub(super) struct EventHead {
    #[serde(default, deserialize_with = "lenient")]
    pub rowid: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub timeline_rowid: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub room_id: String,
    #[serde(default, deserialize_with = "lenient")]
    pub event_id: String,
    #[serde(default, deserialize_with = "lenient")]
    pub sender: String,
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    pub kind: String,
    #[serde(default, deserialize_with = "lenient")]
    pub state_key: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub timestamp: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub last_edit_rowid: Option<i64>,
    /// Own sends: "not sent" until the homeserver took it (kept even after, by gomuks
    /// v0.2607.0), another text when it failed.
    #[serde(default, deserialize_with = "lenient")]
    pub send_error: Option<String>,
    /// hicli's own sends (`hicli-mautrix-go_…`; others are dropped by gomuks): what
    /// `resend_event` names the send by.
    #[serde(default, deserialize_with = "lenient")]
    pub transaction_id: Option<String>,
}

/// A read receipt (`database.Receipt`).
#[derive(Deserialize, Default)]
pub(super) struct ReceiptHead {
    #[serde(default, deserialize_with = "lenient")]
    pub user_id: String,
    #[serde(default, deserialize_with = "lenient")]
    pub timestamp: i64,
}

/// An invited room (`database.InvitedRoom`): its list entry comes from the stripped state.
#[derive(Deserialize, Default)]
pub(super) struct InvitedHead {
    #[serde(default, deserialize_with = "lenient")]
    pub room_id: String,
    #[serde(default, deserialize_with = "lenient")]
    pub created_at: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub invite_state: Vec<Value>,
}

/// A `client_state` event: who is logged in.
#[derive(Deserialize, Default)]
pub(super) struct ClientState {
    /// Absent in older gomuks; `false` while the backend's client is still starting, when
    /// `is_logged_in` says nothing yet.
    #[serde(default, deserialize_with = "lenient")]
    pub is_initialized: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub is_logged_in: bool,
    #[serde(default, deserialize_with = "lenient")]
    pub user_id: String,
}

/// `database.SpaceEdge`.
#[derive(Deserialize, Default)]
pub(super) struct EdgeHead {
    #[serde(default, deserialize_with = "lenient")]
    pub child_id: String,
}

/// An `events_decrypted` event.
#[derive(Deserialize, Default)]
pub(super) struct EventsDecrypted<'a> {
    #[serde(default, deserialize_with = "lenient")]
    pub room_id: String,
    #[serde(default, deserialize_with = "lenient")]
    pub preview_event_rowid: Option<i64>,
    #[serde(default, borrow)]
    pub events: Option<&'a RawValue>,
}

/// A `typing` event.
#[derive(Deserialize, Default)]
pub(super) struct Typing {
    #[serde(default, deserialize_with = "lenient")]
    pub room_id: String,
    #[serde(default, deserialize_with = "lenient_items")]
    pub user_ids: Vec<String>,
}

/// A `send_complete` event. Its `error` is a Go error without a marshaller (`{}`), so the
/// failure is read from the event's `send_error`.
#[derive(Deserialize, Default)]
pub(super) struct SendComplete<'a> {
    #[serde(default, borrow)]
    pub event: Option<&'a RawValue>,
}

/// The answer to `paginate`.
#[derive(Deserialize, Default)]
pub(super) struct Paginated<'a> {
    #[serde(default, borrow)]
    pub events: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub related_events: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub receipts: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "lenient")]
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_read_as_absent_and_unknown_fields_are_ignored() {
        let s: SyncComplete = serde_json::from_str(
            r#"{"clear_state":"yes","left_rooms":[1,2],"top_level_spaces":null,"new":{"x":1}}"#,
        )
        .unwrap();
        assert!(!s.clear_state);
        assert!(s.left_rooms.is_empty());
        assert!(s.top_level_spaces.is_none());
        // docs/store.md "Tolerance": one bad item of a list is skipped alone.
        let s: SyncComplete =
            serde_json::from_str(r#"{"left_rooms":["!a:x",1],"top_level_spaces":[{},"!s:x"]}"#)
                .unwrap();
        assert_eq!(s.left_rooms, ["!a:x"]);
        assert_eq!(
            s.top_level_spaces.as_deref(),
            Some(&["!s:x".to_owned()][..])
        );
        let s: SyncComplete = serde_json::from_str(r#"{"top_level_spaces":"x"}"#).unwrap();
        assert!(
            s.top_level_spaces.is_none(),
            "not a list: the known list stays"
        );
        let t: Typing =
            serde_json::from_str(r#"{"room_id":"!r:x","user_ids":["@a:x",null,"@b:x"]}"#).unwrap();
        assert_eq!(t.user_ids, ["@a:x", "@b:x"]);
        let e: EventHead =
            serde_json::from_str(r#"{"rowid":"7","type":"m.room.message","timestamp":5}"#).unwrap();
        assert_eq!(
            (e.rowid, e.kind.as_str(), e.timestamp),
            (0, "m.room.message", 5)
        );
    }

    #[test]
    fn one_bad_map_entry_is_dropped_alone() {
        let raw: &RawValue = serde_json::from_str(r#"{"a":{"x":1},"b":[]}"#).unwrap();
        assert_eq!(raw_map(Some(raw)).len(), 2);
        let bad: &RawValue = serde_json::from_str("[1]").unwrap();
        assert!(raw_map(Some(bad)).is_empty());
        assert!(raw_list(Some(bad)).len() == 1);
    }
}
