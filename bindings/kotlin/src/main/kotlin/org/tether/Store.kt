package org.tether

import com.sun.jna.Pointer
import com.sun.jna.ptr.LongByReference
import com.sun.jna.ptr.PointerByReference
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.withContext

/**
 * The options of the [Store] a client attaches before it connects ([TetherOptions.store]);
 * `null` keeps the library's default.
 *
 * @property evictAfterMs how long a room that is not open keeps its timeline (default 30
 *   minutes).
 * @property requestTimeoutMs the timeout of the store's actions (default the client's
 *   [TetherOptions.requestTimeoutMs]).
 */
data class StoreOptions(val evictAfterMs: Long? = null, val requestTimeoutMs: Long? = null) {
    internal fun json(): ByteArray? {
        if (evictAfterMs == null && requestTimeoutMs == null) return null
        if ((evictAfterMs ?: 0) < 0 || (requestTimeoutMs ?: 0) < 0) {
            throw InvalidArgumentException(Status.ERR_INVALID_ARGUMENT, "store options must not be negative")
        }
        return TetherNative.cstr(Json.obj("evict_after_ms" to evictAfterMs, "request_timeout_ms" to requestTimeoutMs))
    }
}

/**
 * The native gomuks store of one client: room list, timelines, state, members, receipts,
 * typing and local echo, applied by the library from the client's own events. A store must
 * see the client's first event and [TetherClient] connects in its constructor, so it is
 * attached there: `TetherClient(url, TetherOptions(store = StoreOptions()))`, then
 * [TetherClient.store].
 *
 * **Reads** return one JSON snapshot each (docs/store.md lists the shapes), as the `String`
 * the library wrote; a read made after any event was taken from [TetherClient.events], after
 * a change set arrived on [changes], or after a store action returned sees what that changed.
 * **Actions** suspend like [TetherClient.request] and return the reply's JSON; the store has
 * applied the answer, and handed its change set to every [changes] collector, before they
 * return. Every method may be called from any thread.
 *
 * **How STORE events reach the app.** Each change the store applies is one
 * [EventKind.STORE] event. The client's dispatcher hands its change set to every collector of
 * [changes] first, and then queues the event in [TetherClient.events] like a MESSAGE, right
 * after the MESSAGE (or CONNECTED, DISCONNECTED with a retry) it reflects. Nothing is diverted: [changes] is an extra view of the same
 * events, so the app still collects [TetherClient.events] (a client whose event buffer is full
 * stops taking events, for the store's collectors too).
 *
 * Errors: [InvalidArgumentException] for an unknown read, bad arguments or a room the store
 * does not know; [InUseException] for a second pagination of a room while one runs;
 * [StateException] once the store is closed (and for actions once the client is closed);
 * [ClientClosedException] for an action after [TetherClient.close]; and for actions whatever
 * [TetherClient.request] throws.
 *
 * [close] frees the store: [changes] ends and the client's stream carries no more STORE
 * events. The store may outlive its client: reads keep working, actions fail. A store that
 * becomes unreachable without [close] is freed by the client's reaper thread.
 */
class Store private constructor(
    private val handle: StoreHandle,
    private val core: ClientState,
    /** The timeout of the store's actions. */
    private val timeoutMs: Long,
) : AutoCloseable {
    private val hub: StoreHub = core.storeHub!!
    // Where the actions' native calls run (see [act]).
    @OptIn(kotlinx.coroutines.ExperimentalCoroutinesApi::class)
    private val calls = Dispatchers.IO.limitedParallelism(1)
    private val ref = Reaper.register(this, handle)

    /**
     * Every change set from the moment collection starts, as the JSON of its STORE event:
     * `{"gen", "cause": {"command"?, "event_id"?, "request_id"?}, "cleared"?, "room_list"?,
     * "spaces"?, "session"?, "account_data"?, "rooms"?: {id: {"meta"?, "removed"?, "reset"?,
     * "appended"?, "prepended"?, "has_more_changed"?, "updated"?, "pending"?, "state"?, "receipts"?, "typing"?,
     * "account_data"?, "notifications"?: [{"rowid", "event_id", "sender", "sound",
     * "highlight"}], "dismiss_notifications"?}}}` (docs/store.md). Each collector has its own
     * unbounded buffer (change sets are small and the client's [TetherClient.events] keeps the
     * backpressure). Ends after [close], and
     * after the client's CLOSED or free. Collection subscribes when it starts: start the
     * collector (e.g. with `CoroutineStart.UNDISPATCHED`) before the action whose change it
     * should see.
     */
    val changes: Flow<String> = flow {
        val ch = hub.subscribe() ?: return@flow
        try {
            for (change in ch) emit(change)
        } finally {
            hub.unsubscribe(ch)
        }
    }

    // -- reads ---------------------------------------------------------------------------------

    /**
     * One snapshot as JSON: [what] is one of [READS], [args] its JSON arguments (null: none).
     * The typed reads below call this.
     */
    fun read(what: String, args: String? = null): String = handle.use { s ->
        val w = TetherNative.cstr(what)
        val a = args?.let { TetherNative.cstr(it) }
        readLoop { buf, cap, len -> TetherNative.tether_store_read(s, w, a, buf, cap, len) }
    }

    /**
     * The room list: `{"gen", "total", "rooms": [entry, ...]}`, invites first, then
     * favourites (unless [favouritesFirst] is false), low priority last (unless
     * [lowPriorityLast] is false), by activity or by name ([order] `"activity"`/`"name"`).
     * [space] is a space's room id or a pseudo-space (default `"home"`); [query] filters by
     * name or id; [invites] false leaves invites out; [limit] caps the entries (`total`
     * counts them all).
     */
    fun roomList(
        space: String? = null,
        query: String? = null,
        order: String? = null,
        favouritesFirst: Boolean? = null,
        lowPriorityLast: Boolean? = null,
        invites: Boolean? = null,
        limit: Int? = null,
    ): String = read(
        "room_list",
        Json.obj(
            "space" to space, "query" to query, "order" to order, "favourites_first" to favouritesFirst,
            "low_priority_last" to lowPriorityLast, "invites" to invites, "limit" to limit,
        ),
    )

    /** The room's meta, list entry and store status; `null` for a room the store does not hold. */
    fun room(roomId: String): String? = nullable(read("room", Json.obj("room_id" to roomId)))

    /**
     * The newest [limit] (default 50) timeline rows the store holds, or those older than the
     * timeline rowid [before]: `{"room_id", "events", "pending", "oldest", "has_more",
     * "paginating"}`.
     */
    fun timeline(roomId: String, before: Long? = null, limit: Int? = null): String =
        read("timeline", Json.obj("room_id" to roomId, "before" to before, "limit" to limit))

    /** One event by id: `{"event", "edit"?}`, or `null` if the store does not hold it. */
    fun event(roomId: String, eventId: String): String? =
        nullable(read("event", Json.obj("room_id" to roomId, "event_id" to eventId)))

    /** One event by rowid: `{"event", "edit"?}`, or `null` if the store does not hold it. */
    fun event(roomId: String, rowid: Long): String? =
        nullable(read("event", Json.obj("room_id" to roomId, "rowid" to rowid)))

    /**
     * The room's state the store holds: every event, those of [type], or (with [stateKey])
     * the one event, `null` when it does not hold that one.
     */
    fun state(roomId: String, type: String? = null, stateKey: String? = null): String? =
        nullable(read("state", Json.obj("room_id" to roomId, "type" to type, "state_key" to stateKey)))

    /** The room's members the store holds. */
    fun members(roomId: String): String = read("members", Json.obj("room_id" to roomId))

    /** The room's read receipts, or those of [eventId]. */
    fun receipts(roomId: String, eventId: String? = null): String =
        read("receipts", Json.obj("room_id" to roomId, "event_id" to eventId))

    /** Who is typing in the room: `{"user_ids": [...]}`. */
    fun typing(roomId: String): String = read("typing", Json.obj("room_id" to roomId))

    /** Account data: global, or the room's with [roomId]; every type, or one [type]. */
    fun accountData(type: String? = null, roomId: String? = null): String =
        read("account_data", Json.obj("room_id" to roomId, "type" to type))

    /** The spaces and their children. */
    fun spaces(): String = read("spaces")

    /** The session: user, device, sync status, and the store's `gen`. */
    fun session(): String = read("session")

    // -- rooms shown, watch list, eviction -----------------------------------------------------

    /** The app shows this room: it keeps its timeline and is watched whatever [watch] says. */
    fun openRoom(roomId: String) = handle.use { s ->
        check(TetherNative.tether_store_set_open(s, TetherNative.cstr(roomId), 1))
    }

    /** The app no longer shows this room: after `evictAfterMs` its timeline is dropped. */
    fun closeRoom(roomId: String) = handle.use { s ->
        check(TetherNative.tether_store_set_open(s, TetherNative.cstr(roomId), 0))
    }

    /**
     * Limits the detail of change sets: `watch()` watches every room (the default),
     * `watch(on = false)` only the open rooms, `watch(roomId, on)` adds or removes one room.
     * Rooms not watched report only `meta`, `removed` and the notification fields (all a room
     * list and OS notifications need). Open rooms are always watched; a room joined later is
     * watched after `watch()`, not after `watch(on = false)`; a room left is forgotten with
     * its setting. [InvalidArgumentException] for a room the store does not know.
     */
    fun watch(roomId: String? = null, on: Boolean = true) = handle.use { s ->
        check(TetherNative.tether_store_watch(s, roomId?.let { TetherNative.cstr(it) }, if (on) 1 else 0))
    }

    /**
     * Drops a failed send from the room's pending tail (gomuks web's "undo send"; the backend
     * keeps its copy); a change set with cause `discard` reports it (a watched or open
     * room's, while the client is open). Works after the client closed.
     * [InvalidArgumentException] unless [rowid] is a failed send in the room's pending tail.
     */
    fun discard(roomId: String, rowid: Long) = handle.use { s ->
        check(TetherNative.tether_store_discard(s, TetherNative.cstr(roomId), rowid))
    }

    /**
     * Evicts now the timelines of rooms not open and idle for `evictAfterMs`; returns how many
     * rooms lost theirs (their change set, cause `gc`, is queued at once).
     */
    fun collectGarbage(): Long = handle.use { s ->
        val n = LongByReference()
        check(TetherNative.tether_store_collect_garbage(s, n))
        n.value
    }

    // -- actions -------------------------------------------------------------------------------

    /**
     * Loads older history of the room (`paginate`); returns the reply (`{"events",
     * "has_more", ...}`) once the rows are in the store. [limit] 0 picks 50 (100 once 100
     * rows are cached). [InUseException] while a pagination of the room runs.
     */
    suspend fun paginate(roomId: String, limit: Int = 0): String {
        if (limit < 0) throw InvalidArgumentException(Status.ERR_INVALID_ARGUMENT, "limit must not be negative")
        val room = TetherNative.cstr(roomId)
        return act { s, out -> TetherNative.tether_store_paginate(s, room, limit, out) }!!
    }

    /** Loads the room's whole state (`get_room_state`), with the member list if [members]. */
    suspend fun loadState(roomId: String, members: Boolean = false): String {
        val room = TetherNative.cstr(roomId)
        return act { s, out -> TetherNative.tether_store_load_state(s, room, if (members) 1 else 0, out) }!!
    }

    /**
     * Sends a message with local echo: [params] is `send_message`'s JSON (`room_id`, `text`,
     * ...). The echo joins the room's `pending` rows before this returns (the reply is the
     * echo event); `send_complete` then marks it sent or failed, and the synced event takes
     * its place in the timeline.
     */
    suspend fun sendMessage(params: String): String {
        val p = TetherNative.cstr(params)
        return act { s, out -> TetherNative.tether_store_send_message(s, p, out) }!!
    }

    /** [sendMessage] of a plain [text] to [roomId]. */
    suspend fun sendMessage(roomId: String, text: String): String =
        sendMessage(Json.obj("room_id" to roomId, "text" to text))

    /**
     * Sends a failed message again (`resend_event`; [rowid] is the failed `pending` item's
     * event's). The echo reads as `sending` before this suspends (a change set with cause
     * `resend`); its `send_complete` then updates it as after [sendMessage]. Returns the
     * reply (the echo as the backend resends it); if the backend refuses, throws
     * [RemoteException] and the echo reads failed again. [InvalidArgumentException] unless
     * [rowid] is a failed send in the room's pending tail.
     */
    suspend fun resend(roomId: String, rowid: Long): String {
        val room = TetherNative.cstr(roomId)
        return act { s, out -> TetherNative.tether_store_resend(s, room, rowid, out) }!!
    }

    /**
     * Marks the room read up to the newest event the store holds (`mark_read`; [receiptType]
     * null means `m.read`). The unread counts change with the backend's next sync.
     */
    suspend fun markRead(roomId: String, receiptType: String? = null): String {
        val room = TetherNative.cstr(roomId)
        val rt = receiptType?.let { TetherNative.cstr(it) }
        return act { s, out -> TetherNative.tether_store_mark_read(s, room, rt, out) }!!
    }

    /**
     * Fetches the member events of [userIds] the store does not hold, in one request
     * (`get_specific_room_state`); returns its reply, or `null` when none was missing
     * (nothing was sent).
     */
    suspend fun requestMembers(roomId: String, userIds: List<String>): String? {
        val room = TetherNative.cstr(roomId)
        val ids = TetherNative.cstr(Json.value(userIds))
        return act { s, out -> TetherNative.tether_store_request_members(s, room, ids, out) }
    }

    /** Sends a store action and waits for its reply as [TetherClient.request] does; null when nothing was sent. */
    private suspend fun act(start: (Pointer, LongByReference) -> Int): String? {
        val waiter = CompletableDeferred<Event>()
        // Off the caller's thread (it may be Main): the action waits for the store, which
        // can be applying a large batch. One at a time, in the order they were called, so
        // two messages sent one after the other go out in that order. Not cancellable
        // halfway: a sent action is booked, so a cancellation that came meanwhile cancels it
        // in awaitReply.
        val id = withContext(calls + NonCancellable) {
            handle.use { s -> core.storeRequest(waiter) { out -> start(s, out) } }
        }
        if (id == 0L) return null
        return core.awaitReply(id, waiter, timeoutMs)
    }

    /** Whether [close] was called. */
    val isClosed: Boolean get() = handle.isFreed

    /**
     * Frees the store: [changes] ends once its collectors read what they hold, the client's
     * stream carries no more STORE events (a few already queued may still come), and reads
     * and actions throw [StateException]. The client is not closed. Idempotent; waits only for
     * calls on the store that are running.
     */
    override fun close() {
        Reaper.forget(ref)
        hub.close()
        handle.free()
    }

    override fun toString(): String = "Store(${if (isClosed) "closed" else "open"})"

    companion object {
        /** What [read] can ask for (`tether_store_read`'s `what`). */
        val READS: List<String> = listOf(
            "room_list", "room", "timeline", "event", "state", "members", "receipts", "typing",
            "account_data", "spaces", "session",
        )

        /** Attaches a store to [client] (created, not connected yet); for [TetherClient]'s constructor. */
        internal fun attach(client: Pointer, core: ClientState, options: StoreOptions): Store {
            val out = PointerByReference()
            check(TetherNative.tether_store_new(client, options.json(), out))
            core.storeHub = StoreHub()
            return Store(StoreHandle(out.value), core, options.requestTimeoutMs ?: core.requestTimeoutMs)
        }

        private fun nullable(json: String): String? = if (json == "null") null else json

        /** A `(buf, cap, out_len)` read: a first try in a buffer of the last size, then exactly sized. */
        private fun readLoop(call: (ByteArray?, Long, LongByReference) -> Int): String {
            val len = LongByReference()
            var buf = ByteArray(4096)
            while (true) {
                val st = call(buf, buf.size.toLong(), len)
                if (st == Status.ERR_BUFFER_TOO_SMALL.code) {
                    // The store may grow between two calls: loop until it fits.
                    buf = ByteArray(len.value.toInt() + 1)
                    continue
                }
                check(st)
                return String(buf, 0, len.value.toInt(), Charsets.UTF_8)
            }
        }
    }
}

/**
 * A `tether_store*` and the calls inside it: [free] waits for those (the C API forbids
 * racing `tether_store_free`), and a call after the free was asked for fails at once.
 */
internal class StoreHandle(private val ptr: Pointer) : Reaper.Releasable {
    private val gate = UseGate()

    val isFreed: Boolean get() = gate.isClosed

    fun <T> use(f: (Pointer) -> T): T {
        if (!gate.enter()) throw StateException(Status.ERR_STATE, "the store is closed")
        try {
            return f(ptr)
        } finally {
            gate.leave()
        }
    }

    override fun free() {
        if (!gate.close()) return
        gate.drain()
        TetherNative.tether_store_free(ptr)
    }
}

/**
 * The collectors of a store's [Store.changes]. The client's dispatcher thread calls [publish]
 * with each STORE event's data before it queues the event for [TetherClient.events].
 */
internal class StoreHub {
    private val lock = Any()
    // Copy on write: publish reads it without the lock.
    @Volatile private var subscribers: List<Channel<String>> = emptyList()
    private var closed = false

    /** A new subscriber's channel, or null once closed. */
    fun subscribe(): Channel<String>? = synchronized(lock) {
        if (closed) return null
        Channel<String>(Channel.UNLIMITED).also { subscribers = subscribers + it }
    }

    fun unsubscribe(ch: Channel<String>) {
        synchronized(lock) { subscribers = subscribers - ch }
        ch.close()
    }

    fun publish(change: String) {
        for (ch in subscribers) ch.trySend(change)
    }

    /** No more change sets: every collector ends after what it holds. */
    fun close() {
        val subs = synchronized(lock) {
            closed = true
            subscribers.also { subscribers = emptyList() }
        }
        for (ch in subs) ch.close()
    }
}

/** The few JSON texts the binding writes (arguments of store reads and actions). */
internal object Json {
    /** An object of the pairs whose value is not null. */
    fun obj(vararg pairs: Pair<String, Any?>): String =
        pairs.filter { it.second != null }.joinToString(",", "{", "}") { (k, v) -> quote(k) + ":" + value(v) }

    fun value(v: Any?): String = when (v) {
        null -> "null"
        is String -> quote(v)
        is Boolean, is Int, is Long -> v.toString()
        is Iterable<*> -> v.joinToString(",", "[", "]") { value(it) }
        else -> throw IllegalArgumentException("no JSON for ${v::class.java.name}")
    }

    /**
     * The keys of the JSON object [text], its top level only; null when [text] is not an
     * object. Not a validator: the library checks the JSON itself.
     */
    fun objectKeys(text: String): Set<String>? {
        val t = text.trim()
        if (t.length < 2 || t[0] != '{' || t[t.length - 1] != '}') return null
        val keys = HashSet<String>()
        var depth = 0
        var expectKey = false
        var i = 0
        while (i < t.length) {
            when (t[i]) {
                '{', '[' -> expectKey = ++depth == 1
                '}', ']' -> depth--
                ',' -> expectKey = depth == 1
                '"' -> {
                    var end = i + 1
                    while (end < t.length && t[end] != '"') end += if (t[end] == '\\') 2 else 1
                    if (end >= t.length) return null
                    if (expectKey) keys.add(TetherClient.jsonString(t.substring(i, end + 1)))
                    expectKey = false
                    i = end
                }
            }
            i++
        }
        return keys
    }

    fun quote(s: String): String {
        val out = StringBuilder(s.length + 2).append('"')
        for (ch in s) {
            when {
                ch == '"' -> out.append("\\\"")
                ch == '\\' -> out.append("\\\\")
                ch == '\n' -> out.append("\\n")
                ch == '\r' -> out.append("\\r")
                ch == '\t' -> out.append("\\t")
                ch < ' ' -> out.append(String.format("\\u%04x", ch.code))
                else -> out.append(ch)
            }
        }
        return out.append('"').toString()
    }
}
