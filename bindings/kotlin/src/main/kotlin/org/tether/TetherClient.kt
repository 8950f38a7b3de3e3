package org.tether

import com.sun.jna.CallbackThreadInitializer
import com.sun.jna.Native
import com.sun.jna.Pointer
import com.sun.jna.ptr.LongByReference
import com.sun.jna.ptr.PointerByReference
import java.lang.ref.Cleaner
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.locks.ReentrantReadWriteLock
import kotlin.concurrent.read
import kotlin.concurrent.write
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.receiveAsFlow
import kotlinx.coroutines.withTimeoutOrNull

/** Which wire protocol a client speaks. */
enum class Protocol(internal val code: Int) { GOMUKS(1), RWWS(2) }

/** Where to resume: the backend's run id and the last received event id (0 or negative). */
data class ResumeState(val runId: String, val lastReceivedEvent: Long)

/**
 * A connection to one backend, kept alive and resumed across drops by the native library.
 *
 * Server events arrive on [events] (a hot [Flow]; collect it once). Replies to [request] are
 * routed to the caller instead. The library's callbacks run on one daemon dispatcher thread
 * per client and are only used to copy events out. [close] frees everything; a [Cleaner]
 * does the same if the client becomes unreachable without being closed.
 */
class TetherClient(
    url: String,
    protocol: Protocol = Protocol.GOMUKS,
    token: String? = null,
    username: String? = null,
    password: String? = null,
    compress: Boolean = true,
    pingIntervalMs: Int? = null,
    requestTimeoutMs: Int? = null,
    reconnectBackoffMs: Pair<Int, Int>? = null,
    resume: ResumeState? = null,
) : AutoCloseable {
    private val state: State
    private val cleanable: Cleaner.Cleanable

    init {
        checkLibraryVersion()
        val n = TetherNative
        val out = PointerByReference()
        check(n.tether_config_new(out))
        val cfg = out.value
        try {
            check(n.tether_config_set_url(cfg, n.cstr(url)))
            check(n.tether_config_set_protocol(cfg, protocol.code))
            token?.let { check(n.tether_config_set_token(cfg, n.cstr(it))) }
            if (username != null) {
                check(n.tether_config_set_basic_auth(cfg, n.cstr(username), n.cstr(password ?: "")))
            }
            check(n.tether_config_set_compression(cfg, if (compress) 1 else 0))
            pingIntervalMs?.let { check(n.tether_config_set_ping_interval_ms(cfg, it)) }
            requestTimeoutMs?.let { check(n.tether_config_set_request_timeout_ms(cfg, it)) }
            reconnectBackoffMs?.let {
                check(n.tether_config_set_reconnect_backoff_ms(cfg, it.first, it.second))
            }
            resume?.let {
                check(n.tether_config_set_resume_state(cfg, n.cstr(it.runId), it.lastReceivedEvent))
            }
            val c = PointerByReference()
            check(n.tether_client_new(cfg, c))
            state = State(c.value)
        } finally {
            n.tether_config_free(cfg)
        }
        cleanable = CLEANER.register(this, state)
        Native.setCallbackThreadInitializer(
            state.onEvent,
            CallbackThreadInitializer(true, false, "tether-dispatch"),
        )
        try {
            check(n.tether_client_set_event_callback(state.client, state.onEvent, null, state.onDestroy))
            check(n.tether_client_connect(state.client))
        } catch (e: TetherException) {
            cleanable.clean()
            throw e
        }
    }

    /** Every event except request replies, in order; ends after CLOSED. */
    val events: Flow<Event> = state.channel.receiveAsFlow()

    /**
     * Sends [command] with [data] (JSON) and suspends until the reply; returns the reply's raw
     * JSON data. Throws [RemoteException] (with the server's message), [RequestTimeoutException],
     * [DisconnectedException], [ClientClosedException]. Cancelling the coroutine cancels the
     * request on the server.
     */
    suspend fun request(command: String, data: String = "{}"): String {
        val waiter = CompletableDeferred<Event>()
        val id = state.call { c ->
            val bytes = data.toByteArray(Charsets.UTF_8)
            val out = LongByReference()
            synchronized(state.lock) {
                check(TetherNative.tether_client_request(c, TetherNative.cstr(command), bytes, bytes.size.toLong(), out))
                val early = state.early.remove(out.value)
                if (early != null) waiter.complete(early) else state.pending[out.value] = waiter
            }
            out.value
        }
        val ev = try {
            waiter.await()
        } catch (e: CancellationException) {
            synchronized(state.lock) { state.pending.remove(id) }
            state.callOrNull { c -> TetherNative.tether_client_cancel(c, id) }
            throw e
        }
        if (ev.status == Status.OK) return ev.text
        val message = if (ev.status == Status.ERR_REMOTE) jsonString(ev.text) else ev.text
        throw TetherException.of(ev.status.code, message)
    }

    /** rwws: sends one raw packet. */
    fun sendPacket(bytes: ByteArray) {
        state.call { c -> check(TetherNative.tether_client_send_packet(c, bytes, bytes.size.toLong())) }
    }

    /** The resume point to persist and pass to a later client. */
    fun resumeState(): ResumeState = state.call { c ->
        val last = LongByReference()
        val runId = sizedString { buf, cap, len ->
            TetherNative.tether_client_resume_state(c, buf, cap, len, last)
        }
        ResumeState(runId, last.value)
    }

    /**
     * The credential the next connection sends, to persist instead of the password (gomuks
     * spec 1.2): the `gomuks_auth` token, the configured one until a login with [username] and
     * [password] or a renewal replaces it; rwws: the configured key. `null` before the first
     * login and with auth disabled, unless a token was configured. A secret: keep it out of logs.
     */
    fun authToken(): String? = state.call { c ->
        sizedString { buf, cap, len -> TetherNative.tether_client_auth_token(c, buf, cap, len) }
            .ifEmpty { null }
    }

    /**
     * Closes gracefully and waits up to [timeoutMs] for the final CLOSED event, then frees the
     * client. gomuks: close code 1001, so the backend frees the events it kept for this
     * client; with [keepResume] the code is 1000 and a later client given [resumeState]
     * receives what it missed. rwws: 1000 either way.
     */
    suspend fun closeAndWait(timeoutMs: Long = 5000, keepResume: Boolean = false) {
        state.callOrNull { c ->
            if (keepResume) TetherNative.tether_client_close_keep_resume(c)
            else TetherNative.tether_client_close(c)
        }
        withTimeoutOrNull(timeoutMs) { state.closed.await() }
        close()
    }

    /** Frees the client at once (the connection is closed in the background). Idempotent. */
    override fun close() = cleanable.clean()

    /** Native state, kept apart from the client so the [Cleaner] can free it. */
    private class State(val client: Pointer) : Runnable {
        val lock = Any()
        val pending = HashMap<Long, CompletableDeferred<Event>>()
        val early = HashMap<Long, Event>()
        val channel = Channel<Event>(Channel.UNLIMITED)
        val closed = CompletableDeferred<Unit>()
        private val freed = AtomicBoolean(false)
        private val rw = ReentrantReadWriteLock()

        // Strongly referenced until the client is freed; JNA must not lose them before
        // destroy(ctx) has run.
        val onEvent = TetherNative.EventCallback { _, ev -> if (ev != null) deliver(Event.copy(ev)) }
        val onDestroy = TetherNative.DestroyCallback { _ -> channel.close() }

        private fun deliver(ev: Event) {
            if (ev.kind == EventKind.RESPONSE) {
                synchronized(lock) {
                    val waiter = pending.remove(ev.requestId)
                    if (waiter != null) waiter.complete(ev) else early[ev.requestId] = ev
                }
                return
            }
            channel.trySend(ev)
            if (ev.kind == EventKind.CLOSED) {
                closed.complete(Unit)
                channel.close()
            }
        }

        fun <T> call(f: (Pointer) -> T): T = rw.read {
            if (freed.get()) throw ClientClosedException(Status.ERR_CLIENT_CLOSED, "client is closed")
            f(client)
        }

        fun <T> callOrNull(f: (Pointer) -> T): T? = rw.read { if (freed.get()) null else f(client) }

        /** Frees the native client (joins the dispatcher); runs once. */
        override fun run() {
            rw.write {
                if (!freed.compareAndSet(false, true)) return
                TetherNative.tether_client_free(client)
            }
            channel.close()
            synchronized(lock) {
                for (w in pending.values) {
                    w.completeExceptionally(ClientClosedException(Status.ERR_CLIENT_CLOSED, "client is closed"))
                }
                pending.clear()
            }
            closed.complete(Unit)
        }
    }

    companion object {
        private val CLEANER: Cleaner = Cleaner.create()

        /** The version this binding was written for; MAJOR.MINOR must match (no ABI promise before 1.0). */
        const val BINDING_VERSION = "0.1.0"

        /** The native library's version string. */
        val libraryVersion: String get() = TetherNative.string(TetherNative.tether_version())

        private fun checkLibraryVersion() {
            val n = TetherNative.tether_version_number()
            val (major, minor) = BINDING_VERSION.split(".").map { it.toInt() }
            if (n shr 16 != major || (n shr 8) and 0xff != minor) {
                throw ConfigException(
                    Status.ERR_CONFIG,
                    "libtether $libraryVersion does not match this binding ($BINDING_VERSION)",
                )
            }
        }

        /** Decodes a JSON string literal (the server's error text); other text is returned as is. */
        internal fun jsonString(s: String): String {
            val t = s.trim()
            if (t.length < 2 || t[0] != '"' || t[t.length - 1] != '"') return s
            val out = StringBuilder()
            var i = 1
            while (i < t.length - 1) {
                val ch = t[i]
                if (ch != '\\' || i + 1 >= t.length - 1) {
                    out.append(ch)
                    i++
                    continue
                }
                when (val e = t[i + 1]) {
                    'n' -> out.append('\n')
                    't' -> out.append('\t')
                    'r' -> out.append('\r')
                    'b' -> out.append('\b')
                    'f' -> out.append('\u000c')
                    'u' -> if (i + 5 < t.length) {
                        out.append(t.substring(i + 2, i + 6).toInt(16).toChar())
                        i += 4
                    }
                    else -> out.append(e)
                }
                i += 2
            }
            return out.toString()
        }
    }
}

/**
 * A string from a `(buf, cap, out_len)` function of the C API: asks for the length, then
 * copies; asks again if the value grew in between (a new run_id, a renewed token).
 */
internal fun sizedString(call: (ByteArray?, Long, LongByReference) -> Int): String {
    val len = LongByReference()
    while (true) {
        val sized = call(null, 0, len)
        if (sized != Status.OK.code && sized != Status.ERR_BUFFER_TOO_SMALL.code) check(sized)
        val buf = ByteArray(len.value.toInt() + 1)
        val st = call(buf, buf.size.toLong(), len)
        if (st == Status.ERR_BUFFER_TOO_SMALL.code) continue
        check(st)
        return String(buf, 0, len.value.toInt(), Charsets.UTF_8)
    }
}
