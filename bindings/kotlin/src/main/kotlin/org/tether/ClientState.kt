package org.tether

import com.sun.jna.Pointer
import com.sun.jna.ptr.IntByReference
import com.sun.jna.ptr.LongByReference
import java.lang.ref.PhantomReference
import java.lang.ref.ReferenceQueue
import java.util.Collections
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.Executors
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.isActive
import kotlinx.coroutines.Job
import kotlinx.coroutines.delay
import kotlinx.coroutines.withTimeoutOrNull

/**
 * The native client and everything its callbacks touch. Kept apart from [TetherClient] (and
 * never referring to it) so that an unreachable client can be reaped by [Reaper].
 *
 * Locks: [gate] counts the calls inside the native client, so that the free waits for them
 * (the C API forbids racing it) while a call that comes after the free was asked for fails at
 * once instead of waiting; [lock] guards the request book, the event queue, the media
 * transfers' streams and the flags. No user code runs while either is held.
 */
internal class ClientState(
    private val client: Pointer,
    private val capacity: Int,
    /** The client's request timeout ([TetherOptions.requestTimeoutMs], or the library's default). */
    val requestTimeoutMs: Long,
) : Reaper.Releasable {
    private val gate = UseGate()
    private val freeing = Object()
    private val lock = Object()
    private val pending = HashMap<Long, CompletableDeferred<Event>>()
    // The TetherClient, held strongly only while a request is booked: a caller suspended in
    // `request` keeps only this state alive, and the reaper must not free the client under
    // it. Weakly otherwise, so an abandoned client is still reaped.
    private var owner: java.lang.ref.WeakReference<Any>? = null
    private var ownerHeld: Any? = null
    // Replies that came before their store action was booked: kept only while a store
    // action's native call runs outside [lock] ([storeRequest]; [unbooked] counts those).
    private val early = HashMap<Long, Event>()
    private var unbooked = 0
    // The PROGRESS and CHUNK events of the media transfers in flight, by request id.
    private val streams = HashMap<Long, Buffer>()
    // The app's events.
    private val queue = Buffer(capacity)
    // The events in collectors' hands, from their take until the handler returned or the
    // event was put back, each with its collector's job (null: a context without one); under
    // [lock]. Not yet the app's, so the resume point stays before them; and one whose
    // collector was cancelled goes back in front, so nobody takes past it meanwhile.
    private val inHand = ArrayList<Pair<Event, Job?>>()
    private var closing = false
    private var ended = false
    // The last stats of the native client, read just before it is freed.
    @Volatile private var finalStats: TetherStats? = null
    @Volatile private var finalResume: ResumeState? = null
    @Volatile private var finalToken: String? = null
    /** Completed by CLOSED, or by the free when CLOSED did not come first. */
    val closed = CompletableDeferred<Unit>()
    /** Whether the CLOSED event itself arrived (what [TetherClient.closeAndWait] reports). */
    @Volatile var closedArrived = false
        private set
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

    /**
     * A bounded FIFO from the dispatcher to one consumer, under [lock]: the app's events, or
     * the reports of one media transfer. [put] blocks the dispatcher while it is full, which
     * is the backpressure: the library's queue fills behind it and it stops reading.
     */
    private inner class Buffer(private val bound: Int) {
        val items = ArrayDeque<Event>()
        // Wakes the consumer; closed at the end so that every consumer, not just one, sees it.
        val wake = Channel<Unit>(Channel.CONFLATED)
        // No more items will come (a transfer that was answered or stopped); under [lock].
        var done = false

        /**
         * With [lock] held: appends [ev], waiting while full. A graceful close lifts the bound
         * so that CLOSED can come through; the client's end (free() or CLOSED) and [done] end
         * the wait, so that tether_client_free never waits on us. False if [ev] was dropped.
         */
        fun put(ev: Event): Boolean {
            var interrupted = false
            while (!ended && !done && !closing && items.size >= bound) {
                try {
                    lock.wait(STOPPED_CHECK_MS)
                } catch (e: InterruptedException) {
                    interrupted = true
                }
                // A client that stopped for good (a 403, a revoked key) says so with a
                // DISCONNECTED and CLOSED queued behind this very event: without this, an app
                // that stopped reading would never see CLOSED, nor its requests end.
                if (!ended && !closing && stoppedForGood()) closing = true
            }
            if (interrupted) Thread.currentThread().interrupt()
            if (ended || done) return false
            items.addLast(ev)
            return true
        }

        /**
         * With [lock] held: puts [ev], just taken, back in front for the next consumer; wake
         * [wake] after leaving the lock (a consumer it resumes at once, as
         * Dispatchers.Unconfined does, must not run the app's handler under it).
         */
        fun putBack(ev: Event) {
            items.addFirst(ev)
        }

        /**
         * The next item, suspending for it; null once [done] or the client ended, and drained.
         * With [lock] held, [mayTake] says whether to take now (else this waits for a wake-up)
         * and [claim] gets the item taken.
         */
        suspend fun take(mayTake: () -> Boolean = { true }, claim: (Event) -> Unit = {}): Event? {
            while (true) {
                var finished = false
                var held = false
                val ev = synchronized(lock) {
                    if (!mayTake()) {
                        held = true
                        null
                    } else {
                        items.removeFirstOrNull().also {
                            if (it != null) {
                                lock.notifyAll()
                                claim(it)
                            } else {
                                finished = done || ended
                            }
                        }
                    }
                }
                when {
                    ev != null -> {
                        // One wake-up may have been meant for several consumers (a held-back
                        // queue lets go): pass it on while items remain.
                        if (synchronized(lock) { items.isNotEmpty() }) wake.trySend(Unit)
                        return ev
                    }
                    finished -> return null
                    // Closed means finished: the next round drains what is left, then stops.
                    // Closed at the end it no longer waits: poll for a holder instead.
                    wake.receiveCatching().isClosed && held -> delay(HELD_POLL_MS)
                }
            }
        }
    }

    private fun deliver(ev: Event) {
        when (ev.kind) {
            EventKind.RESPONSE -> {
                // No waiter: the request was cancelled or the client is being freed; the reply
                // is not kept, so nothing accumulates per request (unless a store action may
                // be about to book it).
                val waiter = unbook(ev.requestId, early = ev)
                waiter?.complete(ev)
                return
            }
            EventKind.PROGRESS, EventKind.CHUNK -> {
                // A media transfer's reports go to its caller, never to the app's events. None
                // without a stream: the transfer was stopped (or is not ours); the library
                // sends none after the RESPONSE.
                val stream = synchronized(lock) { streams[ev.requestId]?.takeIf { it.put(ev) } }
                stream?.wake?.trySend(Unit)
                return
            }
            else -> {}
        }
        // The store's subscribers first, then the app's events like a MESSAGE: a RESPONSE that
        // follows (a store action's) completes after every subscriber has the change set.
        if (ev.kind == EventKind.STORE) storeHub?.publish(ev.text)
        val queued = synchronized(lock) {
            queue.put(ev).also { if (it && ev.kind == EventKind.CLOSED) ended = true }
        }
        if (!queued) return
        queue.wake.trySend(Unit)
        if (ev.kind == EventKind.CLOSED) {
            closedArrived = true
            wakeAll()
            storeHub?.close()
            closed.complete(Unit)
        }
    }

    /** Once ended: lets every consumer (the events' collectors, the transfers) see it. */
    private fun wakeAll() {
        val wakes = synchronized(lock) { streams.values.map { it.wake } }
        queue.wake.close()
        for (w in wakes) w.close()
    }

    private fun end() {
        synchronized(lock) {
            ended = true
            lock.notifyAll()
        }
        wakeAll()
        storeHub?.close()
    }

    /**
     * The events in order; ends after CLOSED, or once the client is freed and the rest read.
     * An event whose collector is cancelled before its handling of it returns (emit checks for
     * cancellation before it calls the collector, so this includes one the collector never
     * saw) goes back in front for the next collector: a lifecycle that stops and restarts
     * collecting loses nothing (buffering operators downstream drop what they hold; see
     * [TetherClient.events]). A collector that ends the flow itself (`first`, `take`) throws
     * a CancellationException too, but its job stays active: that event was handed over.
     */
    fun events(): Flow<Event> = flow {
        val me = currentCoroutineContext()[Job]
        while (true) {
            // Not past an event a cancelled collector still holds: it comes back in front.
            // (A cancelled handler that collects again under NonCancellable waits for itself.)
            val ev = queue.take({ inHand.none { it.second?.isActive == false } }) { inHand.add(it to me) }
                ?: return@flow
            var handed = true
            try {
                emit(ev)
            } catch (e: CancellationException) {
                handed = currentCoroutineContext().isActive
                throw e
            } finally {
                val waited = synchronized(lock) {
                    inHand.removeAt(inHand.indexOfFirst { it.first === ev })
                    if (!handed) queue.putBack(ev)
                    me?.isActive == false
                }
                // The event put back, or a collector waiting for this one to settle.
                if (!handed || waited) queue.wake.trySend(Unit)
            }
        }
    }

    /** Names the client this state belongs to (see `ownerHeld`). */
    fun setOwner(client: Any) {
        synchronized(lock) { owner = java.lang.ref.WeakReference(client) }
    }

    /** The native client's stats; after the free, the ones it had last, as CLOSED. */
    fun stats(): TetherStats =
        callOrNull { c -> TetherStats.read(c, queuedEvents()) } ?: finalStats ?: EMPTY_STATS

    /**
     * The resume point; after the free, the one the client had last (read just before the
     * native free), so an app can close, drain to CLOSED and persist it, as the C API orders.
     */
    fun resumeState(): ResumeState {
        val state = callOrNull { c -> readResumeState(c) } ?: finalResume
            ?: throw ClientClosedException(Status.ERR_CLIENT_CLOSED, "client is closed")
        return state.before(synchronized(lock) { inHand.map { it.first } + queue.items })
    }

    /** The credential of the next connection; after the free, the one the client had last. */
    fun authToken(): String? {
        callOrNull { c -> readAuthToken(c) }?.let { return it.ifEmpty { null } }
        if (finalResume == null) throw ClientClosedException(Status.ERR_CLIENT_CLOSED, "client is closed")
        return finalToken
    }

    /** Events waiting for a collector (never more than the capacity unless closing). */
    fun queuedEvents(): Int = synchronized(lock) { queue.items.size }

    /** Reports waiting for the callers of media transfers, all transfers together. */
    fun queuedReports(): Int = synchronized(lock) { streams.values.sumOf { it.items.size } }

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
        book(waiter, null) { c, out ->
            val n = TetherNative
            if (timeoutMs == null) {
                n.tether_client_request(c, n.cstr(command), data, data.size.toLong(), out)
            } else {
                n.tether_client_request_with_timeout(c, n.cstr(command), data, data.size.toLong(), timeoutMs, out)
            }
        }

    /**
     * A store action: [start] sends it (a `tether_store_*` call that writes the request id)
     * and [waiter] is booked under that id. Returns the id; 0 means nothing was sent and
     * nothing is booked. Unlike [request], the call runs outside [lock]: it waits for the
     * store, which may be applying a large batch, and the collectors and the dispatcher must
     * not wait with it. A reply that comes first is kept for it ([early]).
     */
    fun storeRequest(waiter: CompletableDeferred<Event>, start: (LongByReference) -> Int): Long = call { _ ->
        val out = LongByReference()
        synchronized(lock) { unbooked++ }
        try {
            check(start(out))
        } finally {
            val reply = synchronized(lock) {
                unbooked--
                val id = out.value
                val r = if (id != 0L) early.remove(id) else null
                if (r == null) register(id, waiter, null)
                if (unbooked == 0) early.clear()
                r
            }
            reply?.let { waiter.complete(it) }
        }
        out.value
    }

    /**
     * Sends with [start] (a native call that writes the request id) and books [waiter], and
     * [stream] for a media transfer, under that id; under [lock], so that the dispatcher
     * finds them for the first report and the reply. Returns the id (0: nothing booked).
     */
    private fun book(
        waiter: CompletableDeferred<Event>,
        stream: Buffer?,
        start: (Pointer, LongByReference) -> Int,
    ): Long = call { c ->
        val out = LongByReference()
        synchronized(lock) {
            check(start(c, out))
            register(out.value, waiter, stream)
        }
        out.value
    }

    /** With [lock] held: books [waiter] (and [stream]) under request [id]; nothing for id 0. */
    private fun register(id: Long, waiter: CompletableDeferred<Event>, stream: Buffer?) {
        if (id == 0L) return
        pending[id] = waiter
        if (stream != null) streams[id] = stream
        if (ownerHeld == null) ownerHeld = owner?.get()
    }

    /**
     * A media transfer: sends it with [start] (`tether_client_upload_media` or `_download_media`),
     * hands each of its PROGRESS or CHUNK events to [each], in order, on the caller's
     * coroutine, and returns the reply's text (or throws its error). At most
     * [TRANSFER_CAPACITY] reports wait for [each]; past that the dispatcher waits (the
     * events' backpressure). Anything thrown meanwhile (by [each], a cancellation) cancels the
     * request, keeps nothing of it and propagates.
     */
    suspend fun transfer(timeoutMs: Long, start: (Pointer, LongByReference) -> Int, each: suspend (Event) -> Unit): String {
        val waiter = CompletableDeferred<Event>()
        val stream = Buffer(TRANSFER_CAPACITY)
        val id = book(waiter, stream, start)
        val deadline = System.nanoTime() + (timeoutMs + REPLY_GRACE_MS) * 1_000_000
        try {
            while (true) {
                // The reports, like the reply, may never get past the events not taken (see
                // [awaitReply]). Only the waits count, not the app's time in [each]: once
                // the library's timeout has passed, all that is still to come is queued, so a
                // wait past the deadline means it cannot get through. A report already here
                // is taken without waiting, also past the deadline.
                val left = maxOf(1L, (deadline - System.nanoTime()) / 1_000_000)
                val next = withTimeoutOrNull(left) { listOfNotNull(stream.take()) } ?: throw stuck(timeoutMs)
                each(next.firstOrNull() ?: break)
            }
        } catch (e: Throwable) {
            cancelRequest(id)
            throw e
        }
        return awaitReply(id, waiter, timeoutMs)
    }

    /**
     * Unbooks request [id]; returns its waiter (null if none). Its stream, if any, is
     * finished: the dispatcher stops waiting on it and drops its later reports.
     */
    private fun unbook(id: Long, early: Event? = null): CompletableDeferred<Event>? {
        val (waiter, stream) = synchronized(lock) {
            val st = streams.remove(id)?.also {
                it.done = true
                lock.notifyAll()
            }
            val w = pending.remove(id)
            // [early]: a reply with no waiter yet, which a store action being booked may own.
            if (w == null && early != null && unbooked > 0) this.early[id] = early
            if (pending.isEmpty()) ownerHeld = null
            w to st
        }
        // Outside the lock: closing may resume the consumer at once (Dispatchers.Unconfined).
        stream?.wake?.close()
        return waiter
    }

    /** Forgets request [id]; true if it was still waiting (so the server should be told). */
    fun forget(id: Long): Boolean = unbook(id) != null

    /** Forgets request [id] and, if it was still waiting, tells the library to cancel it. */
    private fun cancelRequest(id: Long) {
        if (forget(id)) callOrNull { c -> TetherNative.tether_client_cancel(c, id) }
    }

    /**
     * Waits for the reply to request [id] booked with [waiter] and returns its text (or throws
     * its error); a cancelled wait cancels the request and keeps nothing of it.
     *
     * The library ends a request at its timeout ([timeoutMs]) with a reply, but that reply
     * queues behind the events no collector has taken: awaited inside a handler of [events]
     * with the buffer full, it could never arrive. So the wait ends on its own a moment after
     * the timeout, as the library's would have; also when the app merely stopped collecting
     * for that long, which cannot be told apart (the server may have answered then).
     */
    suspend fun awaitReply(id: Long, waiter: CompletableDeferred<Event>, timeoutMs: Long): String {
        val ev = try {
            withTimeoutOrNull(timeoutMs + REPLY_GRACE_MS) { waiter.await() }
        } catch (e: CancellationException) {
            cancelRequest(id)
            throw e
        } ?: if (forget(id)) {
            callOrNull { c -> TetherNative.tether_client_cancel(c, id) }
            throw stuck(timeoutMs)
        } else {
            // Answered (or freed) just as the wait ended.
            waiter.await()
        }
        return replyText(ev)
    }

    private fun stuck(timeoutMs: Long) = RequestTimeoutException(
        Status.ERR_REQUEST_TIMEOUT,
        "no reply within $timeoutMs ms: it could not get past the events not collected ahead of " +
            "it (collect them; a request awaited inside an events handler waits for itself)",
    )

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

    /** The native client's connection state; null once a free was asked for. */
    fun state(): ConnectionState? = callOrNull { c ->
        val out = IntByReference()
        check(TetherNative.tether_client_state(c, out))
        ConnectionState.of(out.value)
    }

    /** Whether the native client has stopped for good (state CLOSED); false once freed. */
    private fun stoppedForGood(): Boolean = state() == ConnectionState.CLOSED

    private fun leave() = gate.leave()

    /**
     * Frees the native client; runs once, from any thread. Inside a tether callback (of this
     * or another client) or a log handler the native free is handed to another thread:
     * tether_client_free waits for the freed client's running callback, and two callbacks
     * each waiting for the other's client is a deadlock (the log thread's too: a callback
     * replacing the log handler waits for it).
     */
    override fun free() {
        // Readable at once, also when the free itself is handed to another thread below;
        // release() takes fresher stats just before the native free. The resume point is the
        // one from here, before end(): the events delivered after it are dropped, and the
        // library counts each as the app's once its callback has returned.
        // One free at a time: a second one whose snapshot finished after the first's end()
        // would store a point that counts the events dropped since.
        synchronized(freeing) {
            callOrNull { c -> snapshotStats(c, resume = true) }
            if (!gate.close()) return
        }
        end()
        if (INSIDE_CALLBACK.get() == true || Tether.onLogThread()) CLOSERS.execute { release() } else release()
    }

    private fun snapshotStats(c: Pointer, resume: Boolean) {
        runCatching { TetherStats.read(c, 0) }.getOrNull()?.let {
            finalStats = it.copy(
                state = ConnectionState.CLOSED, requestsInFlight = 0, queuedEvents = 0, connectedMillis = null,
                unsentBytes = 0,
            )
        }
        runCatching { readAuthToken(c) }.getOrNull()?.let { finalToken = it.ifEmpty { null } }
        // Last: its being set means the token beside it was read too.
        if (resume || finalResume == null) runCatching { readResumeState(c) }.getOrNull()?.let { finalResume = it }
    }

    private fun release() {
        // Calls already inside the library are short (nothing in it blocks on the network);
        // new ones fail fast, so nobody, a callback included, can be stuck waiting to enter.
        gate.drain()
        snapshotStats(client, resume = false)
        TetherNative.tether_client_free(client)
        val waiters = synchronized(lock) {
            streams.clear()
            early.clear()
            ownerHeld = null
            pending.values.toList().also { pending.clear() }
        }
        for (w in waiters) w.completeExceptionally(ClientClosedException(Status.ERR_CLIENT_CLOSED, "client is closed"))
        closed.complete(Unit)
    }

    companion object {
        private val EMPTY_STATS = TetherStats(
            ConnectionState.CLOSED, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, null, null,
        )

        private val INSIDE_CALLBACK = ThreadLocal<Boolean>()

        /**
         * How many reports (upload progress, download chunks of up to 64 KiB with gomuks) of one
         * media transfer wait for its caller before the dispatcher waits.
         */
        const val TRANSFER_CAPACITY = 8

        /** The library's request timeout when none is set (`tether_config_new`'s documented default). */
        const val DEFAULT_REQUEST_TIMEOUT_MS = 60_000L

        /** How long past its timeout a request's wait ends on its own (see [awaitReply]). */
        const val REPLY_GRACE_MS = 2_000L

        /** How often a collector waiting behind a cancelled one looks again once the client ended. */
        private const val HELD_POLL_MS = 5L

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

/** How often a dispatcher waiting for room asks whether the client stopped for good. */
private const val STOPPED_CHECK_MS = 250L

private fun readResumeState(c: Pointer): ResumeState {
    val last = LongByReference()
    val runId = sizedString { buf, cap, len ->
        TetherNative.tether_client_resume_state(c, buf, cap, len, last)
    }
    return ResumeState(runId, last.value)
}

private fun readAuthToken(c: Pointer): String =
    sizedString { buf, cap, len -> TetherNative.tether_client_auth_token(c, buf, cap, len) }
