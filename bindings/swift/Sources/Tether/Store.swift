// The gomuks store of a client (the tether_store functions of include/tether.h).
import CTether
import Foundation

/// The options of the `Store` a client attaches before it connects (`TetherOptions.store`);
/// nil keeps the library's default.
public struct StoreOptions: Sendable, Equatable {
    /// How long a room that is not open keeps its timeline (default 30 minutes).
    public var evictAfterMs: UInt64?
    /// The timeout of the store's actions (default the client's `requestTimeoutMs`).
    public var requestTimeoutMs: UInt32?

    public init(evictAfterMs: UInt64? = nil, requestTimeoutMs: UInt32? = nil) {
        self.evictAfterMs = evictAfterMs
        self.requestTimeoutMs = requestTimeoutMs
    }

    /// The options as the library takes them (nil: none).
    var json: String? {
        var fields: [String] = []
        if let v = evictAfterMs { fields.append(#""evict_after_ms":\#(v)"#) }
        if let v = requestTimeoutMs { fields.append(#""request_timeout_ms":\#(v)"#) }
        return fields.isEmpty ? nil : "{" + fields.joined(separator: ",") + "}"
    }
}

/// One change set of a store, decoded from the JSON of its STORE event (`json`): what the
/// store applied, with the ids an app needs to redraw only that. Read what changed with the
/// store's reads.
public struct StoreChange: Sendable {
    /// What caused it: a server event (`command`, `eventId`), the answer to a store action
    /// (`requestId`), an eviction (`command` "gc"), or a connection that came up or went down
    /// (`command` "connected" or "disconnected").
    public struct Cause: Sendable, Equatable {
        public let command: String?
        /// The server event's id (negative when resumable).
        public let eventId: Int64?
        /// The store action whose answer this is.
        public let requestId: Int64?
    }

    /// What changed in one room.
    public struct Room: Sendable, Equatable {
        /// The room's meta (name, counts, preview, ...): its room-list entry.
        public let meta: Bool
        public let removed: Bool
        /// The cached timeline was replaced (a limited sync, a catch-up, an eviction).
        public let reset: Bool
        /// Event rowids appended to the timeline, oldest first (live events; history never is).
        public let appended: [Int64]
        /// How many rows went before the oldest (pagination, the first page into an empty
        /// timeline included).
        public let prepended: Int
        /// The `room` and `timeline` reads' `has_more` changed (a page said no older history
        /// is left).
        public let hasMoreChanged: Bool
        /// Known events that changed (decrypted, edited, reacted to, redacted, sent).
        public let updated: [Int64]
        /// The pending tail (local echoes) changed.
        public let pending: Bool
        /// State event types that changed.
        public let state: [String]
        /// Event ids whose receipts changed.
        public let receipts: [String]
        public let typing: Bool
        public let accountData: [String]
        /// New events the user's push rules say notify (reported for unwatched rooms too).
        public let notifications: [Notification]
        /// The room's notification count went to zero (read anywhere, or a message sent
        /// there): close the ones shown.
        public let dismissNotifications: Bool
    }

    /// An event to notify the user about; the store holds it (`event(roomId:rowid:)`). In an
    /// encrypted room it may not be decrypted yet (docs/store.md).
    public struct Notification: Sendable, Equatable {
        public let rowid: Int64
        public let eventId: String
        public let sender: String
        public let sound: Bool
        public let highlight: Bool
    }

    /// Counts the change sets the store announced; a gap means a stream missed some.
    public let gen: UInt64
    public let cause: Cause
    /// Everything was dropped (a reset, a new session): read it all again.
    public let cleared: Bool
    public let roomList: Bool
    public let spaces: Bool
    public let session: Bool
    /// Global account data types that changed.
    public let accountData: [String]
    public let rooms: [String: Room]
    /// The change set as the library wrote it.
    public let json: Data

    /// Decodes a STORE event's data; fields a newer library adds are kept in `json` only.
    init(json data: Data) {
        json = data
        let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        func bool(_ d: [String: Any], _ k: String) -> Bool { d[k] as? Bool ?? false }
        func int64(_ v: Any?) -> Int64? { (v as? NSNumber)?.int64Value }
        func ints(_ d: [String: Any], _ k: String) -> [Int64] {
            (d[k] as? [Any] ?? []).compactMap { int64($0) }
        }
        func strings(_ d: [String: Any], _ k: String) -> [String] { d[k] as? [String] ?? [] }
        gen = (o["gen"] as? NSNumber)?.uint64Value ?? 0
        let c = o["cause"] as? [String: Any] ?? [:]
        cause = Cause(command: c["command"] as? String, eventId: int64(c["event_id"]),
                      requestId: int64(c["request_id"]))
        cleared = bool(o, "cleared")
        roomList = bool(o, "room_list")
        spaces = bool(o, "spaces")
        session = bool(o, "session")
        accountData = strings(o, "account_data")
        var rooms: [String: Room] = [:]
        for (id, v) in o["rooms"] as? [String: Any] ?? [:] {
            let r = v as? [String: Any] ?? [:]
            rooms[id] = Room(
                meta: bool(r, "meta"), removed: bool(r, "removed"), reset: bool(r, "reset"),
                appended: ints(r, "appended"), prepended: Int(int64(r["prepended"]) ?? 0),
                hasMoreChanged: bool(r, "has_more_changed"), updated: ints(r, "updated"), pending: bool(r, "pending"),
                state: strings(r, "state"), receipts: strings(r, "receipts"),
                typing: bool(r, "typing"), accountData: strings(r, "account_data"),
                notifications: (r["notifications"] as? [[String: Any]] ?? []).compactMap { n in
                    int64(n["rowid"]).map {
                        Notification(rowid: $0, eventId: n["event_id"] as? String ?? "",
                                     sender: n["sender"] as? String ?? "", sound: bool(n, "sound"),
                                     highlight: bool(n, "highlight"))
                    }
                },
                dismissNotifications: bool(r, "dismiss_notifications"))
        }
        self.rooms = rooms
    }
}

/// The native gomuks store of one client: room list, timelines, state, members, receipts,
/// typing and local echo, applied by the library from the client's own events. A store must
/// see the client's first event and `TetherClient` connects in its initializer, so it is
/// attached there: set `TetherOptions.store` and use `TetherClient.store`.
///
/// **Reads** return one JSON snapshot each (docs/store.md lists the shapes); a read made after
/// any event was taken from `TetherClient.events`, after a change arrived on `changes`, or after
/// a store action returned sees what that changed. **Actions** are async like
/// `TetherClient.request` and return the reply's JSON; the store has applied the answer, and
/// handed its change set to every `changes` stream, before they return. Every method may be
/// called from any thread or task.
///
/// **How STORE events reach the app.** Each change the store applies is one `.store` event.
/// The client's dispatcher hands its change set to every `changes` stream first, and then
/// queues the event in `TetherClient.events` like a MESSAGE, right after the MESSAGE it
/// reflects. Nothing is diverted: `changes` is an extra view of the same events, so the app
/// still reads `TetherClient.events` (a client whose event buffer is full stops taking events,
/// for the store's streams too).
///
/// Errors: `.invalidArgument` for an unknown read, bad arguments or a room the store does not
/// know; `.inUse` for a second pagination of a room while one runs; `.state` once the store is
/// closed (and for actions once the client is closed); and for actions whatever
/// `TetherClient.request` throws.
///
/// `close()` (or releasing the store) frees it: every `changes` stream ends and the client's
/// stream carries no more STORE events. The store may outlive its client: reads keep working,
/// actions fail.
///
/// `@unchecked Sendable`: `handle` guards the C store with its own lock, `hub` and `core` are
/// thread-safe, and `owner` is only touched with `ownerLock` held.
public final class Store: @unchecked Sendable {
    private let handle: StoreHandle
    private let core: ClientCore
    /// The timeout of the store's actions (nil: the client's).
    private let timeoutMs: UInt32?
    private let ownerLock = NSLock()
    /// The client, to cancel requests with; weak, since the client holds its store.
    private weak var owner: TetherClient?

    /// What `read(_:args:)` can ask for (`tether_store_read`'s `what`).
    public static let reads = [
        "room_list", "room", "timeline", "event", "state", "members", "receipts", "typing",
        "account_data", "spaces", "session",
    ]

    /// Attaches a store to `client` (created, not connected yet); for `TetherClient.init`.
    init(client: OpaquePointer, core: ClientCore, options: StoreOptions) throws {
        var out: OpaquePointer? = nil
        try check(tether_store_new(client, options.json, &out))
        guard let s = out else { throw TetherError.nullArgument("tether_store_new gave no store") }
        handle = StoreHandle(s)
        self.core = core
        timeoutMs = options.requestTimeoutMs
    }

    func adopt(owner client: TetherClient) {
        ownerLock.lock()
        owner = client
        ownerLock.unlock()
    }

    private var client: TetherClient? {
        ownerLock.lock()
        defer { ownerLock.unlock() }
        return owner
    }

    deinit { close() }

    /// A new stream of every change set from now on (each access subscribes a new one, which
    /// misses nothing between its creation and its first `next()`). Unbounded: change sets are
    /// small, and `TetherClient.events` keeps the backpressure. Ends after `close()`, and after
    /// the client's CLOSED or release.
    public var changes: AsyncStream<StoreChange> { core.storeHub.subscribe() }

    /// Whether `close()` was called.
    public var isClosed: Bool { handle.isFreed }

    /// Frees the store: every `changes` stream ends once read, the client's stream carries no
    /// more STORE events (a few already queued may still come), and reads and actions throw
    /// `.state`. The client is not closed. Idempotent; waits only for calls on the store that
    /// are running.
    public func close() {
        core.storeHub.finish()
        handle.free()
    }

    // MARK: reads

    /// One snapshot as JSON: `what` is one of `Store.reads`, `args` its JSON arguments (nil:
    /// none). The typed reads below call this.
    public func read(_ what: String, args: Data? = nil) throws -> Data {
        let what = try cString(what, "the read's name")
        let a = try args.map { try cString(utf8: $0, "args") }
        return try handle.use { s in
            try readJSON { buf, cap, len in tether_store_read(s, what, a, buf, cap, len) }
        }
    }

    private func read(_ what: String, _ args: [String: Any?]) throws -> Data {
        try read(what, args: try Store.object(args))
    }

    /// The room list: `{"gen", "total", "rooms": [entry, ...]}`, invites first, then
    /// favourites (unless `favouritesFirst` is false), low priority last (unless
    /// `lowPriorityLast` is false), by activity or by name (`order` "activity"/"name").
    /// `space` is a space's room id or a pseudo-space (default "home"); `query` filters by name
    /// or id; `invites` false leaves invites out; `limit` caps the entries (`total` counts all).
    public func roomList(
        space: String? = nil, query: String? = nil, order: String? = nil,
        favouritesFirst: Bool? = nil, lowPriorityLast: Bool? = nil, invites: Bool? = nil,
        limit: Int? = nil
    ) throws -> Data {
        try read("room_list", [
            "space": space, "query": query, "order": order, "favourites_first": favouritesFirst,
            "low_priority_last": lowPriorityLast, "invites": invites, "limit": limit,
        ])
    }

    /// The room's meta, list entry and store status; nil for a room the store does not hold.
    public func room(_ roomId: String) throws -> Data? {
        Store.nullable(try read("room", ["room_id": roomId]))
    }

    /// The newest `limit` (default 50) timeline rows the store holds, or those older than the
    /// timeline rowid `before`: `{"room_id", "events", "pending", "oldest", "has_more",
    /// "paginating"}`.
    public func timeline(_ roomId: String, before: Int64? = nil, limit: Int? = nil) throws -> Data {
        try read("timeline", ["room_id": roomId, "before": before, "limit": limit])
    }

    /// One event by id: `{"event", "edit"?}`, or nil if the store does not hold it.
    public func event(_ roomId: String, eventId: String) throws -> Data? {
        Store.nullable(try read("event", ["room_id": roomId, "event_id": eventId]))
    }

    /// One event by rowid: `{"event", "edit"?}`, or nil if the store does not hold it.
    public func event(_ roomId: String, rowid: Int64) throws -> Data? {
        Store.nullable(try read("event", ["room_id": roomId, "rowid": rowid]))
    }

    /// The room's state the store holds: every event, those of `type`, or (with `stateKey`)
    /// the one event, nil when it does not hold that one.
    public func state(_ roomId: String, type: String? = nil, stateKey: String? = nil) throws -> Data? {
        Store.nullable(try read("state", ["room_id": roomId, "type": type, "state_key": stateKey]))
    }

    /// The room's members the store holds.
    public func members(_ roomId: String) throws -> Data {
        try read("members", ["room_id": roomId])
    }

    /// The room's read receipts, or those of `eventId`.
    public func receipts(_ roomId: String, eventId: String? = nil) throws -> Data {
        try read("receipts", ["room_id": roomId, "event_id": eventId])
    }

    /// Who is typing in the room: `{"user_ids": [...]}`.
    public func typing(_ roomId: String) throws -> Data {
        try read("typing", ["room_id": roomId])
    }

    /// Account data: global, or the room's with `roomId`; every type, or one `type`.
    public func accountData(type: String? = nil, roomId: String? = nil) throws -> Data {
        try read("account_data", ["room_id": roomId, "type": type])
    }

    /// The spaces and their children.
    public func spaces() throws -> Data { try read("spaces") }

    /// The session: user, device, sync status, and the store's `gen`.
    public func session() throws -> Data { try read("session") }

    // MARK: rooms shown, watch list, eviction

    /// The app shows this room: it keeps its timeline and is watched whatever `watch` says.
    public func openRoom(_ roomId: String) throws {
        let roomId = try cString(roomId, "roomId")
        try handle.use { s in try check(tether_store_set_open(s, roomId, true)) }
    }

    /// The app no longer shows this room: after `evictAfterMs` its timeline is dropped.
    public func closeRoom(_ roomId: String) throws {
        let roomId = try cString(roomId, "roomId")
        try handle.use { s in try check(tether_store_set_open(s, roomId, false)) }
    }

    /// Limits the detail of change sets: `watch()` watches every room (the default),
    /// `watch(on: false)` only the open rooms, `watch(roomId, on:)` adds or removes one room.
    /// Rooms not watched report only `meta`, `removed` and the notification fields (all a
    /// room list and OS notifications need). Open rooms are always watched; a room joined
    /// later is watched after `watch()`, not after `watch(on: false)`; a room left is
    /// forgotten with its setting. `.invalidArgument` for a room the store does not know.
    public func watch(_ roomId: String? = nil, on: Bool = true) throws {
        let roomId = try roomId.map { try cString($0, "roomId") }
        try handle.use { s in try check(tether_store_watch(s, roomId, on)) }
    }

    /// Drops a failed send from the room's pending tail (gomuks web's "undo send"; the backend
    /// keeps its copy); a change set with cause "discard" reports it (a watched or open
    /// room's, while the client is open). Works after the client
    /// closed. `.invalidArgument` unless `rowid` is a failed send in the room's pending tail.
    public func discard(_ roomId: String, rowid: Int64) throws {
        let roomId = try cString(roomId, "roomId")
        try handle.use { s in try check(tether_store_discard(s, roomId, rowid)) }
    }

    /// Evicts now the timelines of rooms not open and idle for `evictAfterMs`; returns how many
    /// rooms lost theirs (their change set, cause "gc", is queued at once).
    @discardableResult
    public func collectGarbage() throws -> Int {
        try handle.use { s in
            var n = 0
            try check(tether_store_collect_garbage(s, &n))
            return n
        }
    }

    // MARK: actions

    /// Loads older history of the room (`paginate`); returns the reply (`{"events", "has_more",
    /// ...}`) once the rows are in the store. `limit` 0 picks 50 (100 once 100 rows are
    /// cached). `.inUse` while a pagination of the room runs.
    public func paginate(_ roomId: String, limit: UInt32 = 0) async throws -> Data {
        let roomId = try cString(roomId, "roomId")
        return try await act { s, id in tether_store_paginate(s, roomId, limit, id) } ?? Data()
    }

    /// Loads the room's whole state (`get_room_state`), with the member list if `members`.
    public func loadState(_ roomId: String, members: Bool = false) async throws -> Data {
        let roomId = try cString(roomId, "roomId")
        return try await act { s, id in tether_store_load_state(s, roomId, members, id) } ?? Data()
    }

    /// Sends a message with local echo: `params` is `send_message`'s JSON (`room_id`, `text`,
    /// ...). The echo joins the room's `pending` rows before this returns (the reply is the
    /// echo event); `send_complete` then marks it sent or failed, and the synced event takes
    /// its place in the timeline.
    public func sendMessage(_ params: Data) async throws -> Data {
        let p = try cString(utf8: params, "params")
        return try await act { s, id in tether_store_send_message(s, p, id) } ?? Data()
    }

    /// `sendMessage(_:)` of a plain `text` to `roomId`.
    public func sendMessage(roomId: String, text: String) async throws -> Data {
        try await sendMessage(try Store.object(["room_id": roomId, "text": text]))
    }

    /// Sends a failed message again (`resend_event`; `rowid` is the failed `pending` item's
    /// event's). The echo reads as `sending` before this suspends (a change set with cause
    /// "resend"); its `send_complete` then updates it as after `sendMessage`. Returns the reply
    /// (the echo as the backend resends it); if the backend refuses, throws `.remote` and the
    /// echo reads failed again. `.invalidArgument` unless `rowid` is a failed send in the
    /// room's pending tail.
    public func resend(_ roomId: String, rowid: Int64) async throws -> Data {
        let roomId = try cString(roomId, "roomId")
        return try await act { s, id in tether_store_resend(s, roomId, rowid, id) } ?? Data()
    }

    /// Marks the room read up to the newest event the store holds (`mark_read`; `receiptType`
    /// nil means `m.read`). The unread counts change with the backend's next sync.
    public func markRead(_ roomId: String, receiptType: String? = nil) async throws -> Data {
        let roomId = try cString(roomId, "roomId")
        let receiptType = try receiptType.map { try cString($0, "receiptType") }
        return try await act { s, id in tether_store_mark_read(s, roomId, receiptType, id) } ?? Data()
    }

    /// Fetches the member events of `userIds` the store does not hold, in one request
    /// (`get_specific_room_state`); returns its reply, or nil when none was missing (nothing
    /// was sent).
    public func requestMembers(_ roomId: String, userIds: [String]) async throws -> Data? {
        let roomId = try cString(roomId, "roomId")
        let ids = String(decoding: try JSONSerialization.data(withJSONObject: userIds), as: UTF8.self)
        return try await act { s, id in tether_store_request_members(s, roomId, ids, id) }
    }

    /// Sends a store action and waits for its reply as `TetherClient.request` does; nil when
    /// the action sent nothing.
    private func act(
        _ start: (OpaquePointer, UnsafeMutablePointer<Int64>) -> tether_status
    ) async throws -> Data? {
        try Task.checkCancellation()
        let ticket = RequestTicket()
        let sent = SentFlag()
        do {
            let data = try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (w: CheckedContinuation<Data, Error>) in
                    if ticket.cancelledBeforeSending {
                        w.resume(throwing: CancellationError())
                        return
                    }
                    var id: Int64 = 0
                    let status: tether_status
                    do {
                        status = try handle.use { s in start(s, &id) }
                    } catch {
                        w.resume(throwing: error)
                        return
                    }
                    guard status == TETHER_OK else {
                        w.resume(throwing: TetherError.last(status))
                        return
                    }
                    if id == 0 {
                        w.resume(returning: Data())
                        return
                    }
                    sent.set()
                    core.register(id, w, timeoutMs: timeoutMs) { [weak self] in self?.client?.cancelRequest($0) }
                    if ticket.sent(id) { client?.cancelRequest(id) }
                }
            } onCancel: {
                if let id = ticket.cancel() { self.client?.cancelRequest(id) }
            }
            return sent.isSet ? data : nil
        } catch TetherError.cancelled(_) where Task.isCancelled {
            throw CancellationError()
        }
    }

    /// A JSON object of the entries whose value is not nil.
    static func object(_ d: [String: Any?]) throws -> Data {
        try JSONSerialization.data(withJSONObject: d.compactMapValues { $0 })
    }

    static func nullable(_ d: Data) -> Data? { d == Data("null".utf8) ? nil : d }
}

/// Whether a store action sent a request (`act` returns nil when it did not).
///
/// `@unchecked Sendable`: `value` is only touched with `lock` held.
private final class SentFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() {
        lock.lock()
        value = true
        lock.unlock()
    }
    var isSet: Bool {
        lock.lock()
        defer { lock.unlock() }
        return value
    }
}

/// A `tether_store *` and the calls inside it: `free` waits for those (the C API forbids
/// racing `tether_store_free`), and a call after the free was asked for fails at once.
///
/// `@unchecked Sendable`: `users` and `freed` are only touched with `cond` locked.
final class StoreHandle: @unchecked Sendable {
    private let ptr: OpaquePointer
    private let cond = NSCondition()
    private var users = 0
    private var freed = false

    init(_ p: OpaquePointer) { ptr = p }

    var isFreed: Bool {
        cond.lock()
        defer { cond.unlock() }
        return freed
    }

    func use<T>(_ f: (OpaquePointer) throws -> T) throws -> T {
        cond.lock()
        if freed {
            cond.unlock()
            throw TetherError.state("the store is closed")
        }
        users += 1
        cond.unlock()
        defer {
            cond.lock()
            users -= 1
            if users == 0 { cond.broadcast() }
            cond.unlock()
        }
        return try f(ptr)
    }

    func free() {
        cond.lock()
        if freed {
            cond.unlock()
            return
        }
        freed = true
        while users > 0 { cond.wait() }
        cond.unlock()
        tether_store_free(ptr)
    }
}

/// The `changes` streams of a client's store. The client's dispatcher thread calls `publish`
/// with each STORE event's data before it queues the event for `TetherClient.events`.
///
/// `@unchecked Sendable`: the mutable properties are only touched with `lock` held.
final class StoreHub: @unchecked Sendable {
    private let lock = NSLock()
    private var streams: [UInt64: AsyncStream<StoreChange>.Continuation] = [:]
    private var nextId: UInt64 = 0
    private var finished = false

    func subscribe() -> AsyncStream<StoreChange> {
        let (stream, cont) = AsyncStream<StoreChange>.makeStream(bufferingPolicy: .unbounded)
        lock.lock()
        if finished {
            lock.unlock()
            cont.finish()
            return stream
        }
        nextId += 1
        let id = nextId
        streams[id] = cont
        lock.unlock()
        cont.onTermination = { [weak self] _ in self?.remove(id) }
        return stream
    }

    private func remove(_ id: UInt64) {
        lock.lock()
        streams.removeValue(forKey: id)
        lock.unlock()
    }

    func publish(_ data: Data) {
        lock.lock()
        let conts = Array(streams.values)
        lock.unlock()
        if conts.isEmpty { return }
        let change = StoreChange(json: data)
        for c in conts { c.yield(change) }
    }

    /// No more changes: every stream ends after what it holds.
    func finish() {
        lock.lock()
        finished = true
        let conts = Array(streams.values)
        streams.removeAll()
        lock.unlock()
        for c in conts { c.finish() }
    }
}

/// A JSON document from a `(buf, cap, out_len)` function of the C API: a first try in a 4 KiB
/// buffer, then one of the size it asked for, again while the value grows in between.
func readJSON(
    _ call: (UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>) -> tether_status
) throws -> Data {
    var cap = 4096
    var len = 0
    while true {
        var buf = Data(count: cap)
        let status = buf.withUnsafeMutableBytes { raw in
            call(raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count, &len)
        }
        if status == TETHER_ERR_BUFFER_TOO_SMALL {
            cap = len + 1
            continue
        }
        try check(status)
        buf.count = len
        return buf
    }
}
