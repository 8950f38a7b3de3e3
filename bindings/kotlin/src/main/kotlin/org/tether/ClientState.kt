package org.tether

import com.sun.jna.Pointer
import com.sun.jna.ptr.LongByReference
import java.lang.ref.PhantomReference
import java.lang.ref.ReferenceQueue
import java.util.Collections
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.Executors
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow

/**
 * The native client and everything its callbacks touch. Kept apart from [TetherClient] (and
 * never referring to it) so that an unreachable client can be reaped by [Reaper].
 *
 * Locks: [gate] counts the calls inside the native client, so that the free waits for them
 * (the C API forbids racing it) while a call that comes after the free was asked for fails at
 * once instead of waiting; [lock] guards the request book, the event queue and the flags. No
 * user code runs while either is held.
 */
internal class ClientState(private val client: Pointer, private val capacity: Int) : Reaper.Releasable {
    private val gate = UseGate()
    private val lock = Object()
    private val pending = HashMap<Long, CompletableDeferred<Event>>()
    private val queue = ArrayDeque<Event>()
    // Wakes collectors; closed at the end so that every collector, not just one, sees it.
    private val wake = Channel<Unit>(Channel.CONFLATED)
    private var closing = false
    private var ended = false
    // The last stats of the native client, read just before it is freed.
    @Volatile private var finalStats: TetherStats? = null
    val closed = CompletableDeferred<Unit>()
    /** The subscribers of the client's [Store], if it has one (set before connect). */
    @Volatile var storeHub: StoreHub? = null

    // Strongly referenced until destroy(ctx) has run (see Reaper.keep): JNA keeps callbacks
    // only weakly, and a collected callback called from C crashes the process.
    val onEvent = TetherNative.EventCallback { _, ev ->
        INSIDE_CALLBACK.set(true)
        try {
            if (ev != null) Event.copy(ev)?.let { deliver(it) }
        } finally {
            INSIDE_CALLBACK.set(false)
        }
    }
    val onDestroy = TetherNative.DestroyCallback { _ ->
        INSIDE_CALLBACK.set(true)
        try {
            end()
            Reaper.keep.remove(this)
        } finally {
            INSIDE_CALLBACK.set(false)
        }
    }

    private fun deliver(ev: Event) {
        if (ev.kind == EventKind.RESPONSE) {
            // No waiter: the request was cancelled or the client is being freed; the reply is
            // not kept, so nothing accumulates per request.
            val waiter = synchronized(lock) { pending.remove(ev.requestId) }
            waiter?.complete(ev)
            return
        }
        // The store's subscribers first, then the app's events like a MESSAGE: a RESPONSE that
        // follows (a store action's) completes after every subscriber has the change set.
        if (ev.kind == EventKind.STORE) storeHub?.publish(ev.text)
        var interrupted = false
        synchronized(lock) {
            // Blocking here is the backpressure: the library's queue fills behind us and it
            // stops reading the socket. A graceful close lifts the bound so that CLOSED can
            // come through; free() ends the wait so that tether_client_free never waits on us.
            while (!ended && !closing && queue.size >= capacity) {
                try {
                    lock.wait()
                } catch (e: InterruptedException) {
                    interrupted = true
                }
            }
            if (ended) return
            queue.addLast(ev)
            if (ev.kind == EventKind.CLOSED) ended = true
        }
        if (interrupted) Thread.currentThread().interrupt()
        wake.trySend(Unit)
        if (ev.kind == EventKind.CLOSED) {
            wake.close()
            storeHub?.close()
            closed.complete(Unit)
        }
    }

    private fun end() {
        synchronized(lock) {
            ended = true
            lock.notifyAll()
        }
        wake.close()
        storeHub?.close()
    }

    /** The events in order; ends after CLOSED, or once the client is freed and the rest read. */
    fun events(): Flow<Event> = flow {
        while (true) {
            var done = false
            val ev = synchronized(lock) {
                queue.removeFirstOrNull().also {
                    if (it != null) lock.notifyAll() else done = ended
                }
            }
            when {
                ev != null -> emit(ev)
                done -> return@flow
                // Closed means ended: the next round drains what is left, then stops.
                else -> wake.receiveCatching()
            }
        }
    }

    /** The native client's stats; after the free, the ones it had last, as CLOSED. */
    fun stats(): TetherStats =
        callOrNull { c -> TetherStats.read(c, queuedEvents()) } ?: finalStats ?: EMPTY_STATS

    /** Events waiting for a collector (never more than the capacity unless closing). */
    fun queuedEvents(): Int = synchronized(lock) { queue.size }

    /** Requests waiting for their reply. */
    fun pendingRequests(): Int = synchronized(lock) { pending.size }

    /** Lets the dispatcher pass a full buffer so that a graceful close can finish. */
    fun beginClosing() {
        synchronized(lock) {
            closing = true
            lock.notifyAll()
        }
    }

    /**
     * Sends a request and books [waiter] under the returned id. The booking is atomic with
     * the native call, so the reply cannot be delivered before its waiter is known.
     */
    fun request(command: String, data: ByteArray, timeoutMs: Int?, waiter: CompletableDeferred<Event>): Long =
        call { c ->
            val out = LongByReference()
            val n = TetherNative
            synchronized(lock) {
                check(
                    if (timeoutMs == null) {
                        n.tether_client_request(c, n.cstr(command), data, data.size.toLong(), out)
                    } else {
                        n.tether_client_request_with_timeout(c, n.cstr(command), data, data.size.toLong(), timeoutMs, out)
                    },
                )
                pending[out.value] = waiter
            }
            out.value
        }

    /**
     * A store action: [start] sends it (a `tether_store_*` call that writes the request id)
     * and [waiter] is booked under that id, atomically as in [request]. Returns the id; 0
     * means nothing was sent and nothing is booked.
     */
    fun storeRequest(waiter: CompletableDeferred<Event>, start: (LongByReference) -> Int): Long =
        call { _ ->
            val out = LongByReference()
            synchronized(lock) {
                check(start(out))
                if (out.value != 0L) pending[out.value] = waiter
            }
            out.value
        }

    /** Forgets request [id]; true if it was still waiting (so the server should be told). */
    fun forget(id: Long): Boolean = synchronized(lock) { pending.remove(id) != null }

    /**
     * Waits for the reply to request [id] booked with [waiter] and returns its text (or throws
     * its error); a cancelled wait cancels the request and keeps nothing of it.
     */
    suspend fun awaitReply(id: Long, waiter: CompletableDeferred<Event>): String {
        val ev = try {
            waiter.await()
        } catch (e: CancellationException) {
            if (forget(id)) callOrNull { c -> TetherNative.tether_client_cancel(c, id) }
            throw e
        }
        return replyText(ev)
    }

    /** Runs [f] on the native client unless a free was asked for (then [ClientClosedException]). */
    fun <T> call(f: (Pointer) -> T): T {
        if (!enter()) throw ClientClosedException(Status.ERR_CLIENT_CLOSED, "client is closed")
        try {
            return f(client)
        } finally {
            leave()
        }
    }

    /** Runs [f] on the native client; null once a free was asked for. */
    fun <T> callOrNull(f: (Pointer) -> T): T? {
        if (!enter()) return null
        try {
            return f(client)
        } finally {
            leave()
        }
    }

    private fun enter(): Boolean = gate.enter()

    private fun leave() = gate.leave()

    /**
     * Frees the native client; runs once, from any thread. Inside a tether callback (of this
     * or another client) the native free is handed to another thread: tether_client_free
     * waits for the freed client's running callback, and two callbacks each waiting for the
     * other's client is a deadlock.
     */
    override fun free() {
        // Readable at once, also when the free itself is handed to another thread below;
        // release() takes a fresher one just before the native free.
        callOrNull { c -> snapshotStats(c) }
        if (!gate.close()) return
        end()
        if (INSIDE_CALLBACK.get() == true) CLOSERS.execute { release() } else release()
    }

    private fun snapshotStats(c: Pointer) {
        runCatching { TetherStats.read(c, 0) }.getOrNull()?.let {
            finalStats = it.copy(
                state = ConnectionState.CLOSED, requestsInFlight = 0, queuedEvents = 0, connectedMillis = null,
            )
        }
    }

    private fun release() {
        // Calls already inside the library are short (nothing in it blocks on the network);
        // new ones fail fast, so nobody, a callback included, can be stuck waiting to enter.
        gate.drain()
        snapshotStats(client)
        TetherNative.tether_client_free(client)
        val waiters = synchronized(lock) { pending.values.toList().also { pending.clear() } }
        for (w in waiters) w.completeExceptionally(ClientClosedException(Status.ERR_CLIENT_CLOSED, "client is closed"))
        closed.complete(Unit)
    }

    companion object {
        private val EMPTY_STATS = TetherStats(
            ConnectionState.CLOSED, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, null, null,
        )

        private val INSIDE_CALLBACK = ThreadLocal<Boolean>()

        private val CLOSERS = Executors.newCachedThreadPool { r ->
            Thread(r, "tether-close").apply { isDaemon = true }
        }

        /** True on a dispatcher thread while it runs a tether callback (and user code resumed by it). */
        fun insideCallback(): Boolean = INSIDE_CALLBACK.get() == true
    }
}

/**
 * Frees clients (and stores) that became unreachable without [TetherClient.close] ([Store.close]), with a
 * [PhantomReference] queue and one daemon thread (java.lang.ref.Cleaner needs Android API 33).
 */
internal object Reaper {
    private val queue = ReferenceQueue<Any>()
    private val live: MutableSet<Ref> = Collections.newSetFromMap(ConcurrentHashMap())

    /** States whose destroy callback has not run yet; their callbacks must stay reachable. */
    val keep: MutableSet<ClientState> = Collections.newSetFromMap(ConcurrentHashMap())

    /** What an owner leaves to free (a client's [ClientState], a store's native handle). */
    interface Releasable {
        fun free()
    }

    class Ref(owner: Any, val state: Releasable) : PhantomReference<Any>(owner, queue)

    private val thread: Thread by lazy {
        Thread({
            while (true) {
                val r = try {
                    queue.remove() as Ref
                } catch (e: InterruptedException) {
                    continue
                }
                if (live.remove(r)) r.state.free()
            }
        }, "tether-reaper").apply {
            isDaemon = true
            start()
        }
    }

    fun register(owner: Any, state: Releasable): Ref {
        thread
        return Ref(owner, state).also { live.add(it) }
    }

    /** The owner was closed explicitly: nothing left to reap. */
    fun forget(r: Ref) {
        live.remove(r)
        r.clear()
    }
}
