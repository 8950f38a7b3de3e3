package org.tether

import com.sun.jna.CallbackThreadInitializer
import com.sun.jna.Native
import com.sun.jna.ptr.LongByReference
import com.sun.jna.ptr.PointerByReference
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.withTimeoutOrNull

/**
 * A connection to one backend, kept alive and resumed across drops by the native library.
 *
 * Server events arrive on [events] (collect it once, on a coroutine of its own). Replies to
 * [request] are routed to the caller instead, and so are the progress reports and chunks of
 * in-process media transfers ([uploadMedia], [downloadMedia]). The library's callbacks run on one daemon
 * dispatcher thread per client and only copy events out. [close] frees everything; a client
 * that becomes unreachable without being closed is freed by a background reaper thread.
 *
 * @param url `ws://`/`wss://` websocket endpoint, or the backend's `http://`/`https://` base.
 *   Ignored with [TetherOptions.inProcess], where `""` will do:
 *   `TetherClient("", TetherOptions(inProcess = InProcess(library, dataRoot)))`.
 * @param options everything else; see [TetherOptions].
 * @throws ConfigException when the library refuses the URL or an option.
 * @throws InUseException in-process, when the data root or the process's one in-process
 *   backend is held by another client.
 */
class TetherClient(val url: String, val options: TetherOptions = TetherOptions()) : AutoCloseable {
    private val core: ClientState
    private val ref: Reaper.Ref

    /**
     * The library's id of this client, unique in the process and never 0: the
     * [LogRecord.clientId] of the records about it.
     */
    val id: Long

    /**
     * The client's gomuks store, attached before the client connected when
     * [TetherOptions.store] is set; `null` otherwise. It stays usable after the client is
     * closed (reads work, actions fail); close it with [Store.close].
     */
    val store: Store?

    init {
        checkLibraryVersion()
        val n = TetherNative
        val out = PointerByReference()
        check(n.tether_config_new(out))
        val cfg = out.value
        val client = try {
            check(n.tether_config_set_url(cfg, n.cstr(url)))
            options.applyTo(cfg)
            val c = PointerByReference()
            check(n.tether_client_new(cfg, c))
            c.value
        } finally {
            n.tether_config_free(cfg)
        }
        id = n.tether_client_id(client)
        core = ClientState(
            client,
            options.eventBufferCapacity,
            options.requestTimeoutMs?.toLong() ?: ClientState.DEFAULT_REQUEST_TIMEOUT_MS,
        )
        core.setOwner(this)
        ref = Reaper.register(this, core)
        Native.setCallbackThreadInitializer(
            core.onEvent,
            CallbackThreadInitializer(true, false, "tether-dispatch"),
        )
        Reaper.keep.add(core)
        var attached: Store? = null
        try {
            // A refused call has already run onDestroy, which let go of core.
            check(n.tether_client_set_event_callback(client, core.onEvent, null, core.onDestroy))
            // Before connect, so that the store sees the first event.
            attached = options.store?.let { Store.attach(client, core, it) }
            check(n.tether_client_connect(client))
        } catch (e: TetherException) {
            attached?.close()
            close()
            throw e
        }
        store = attached
    }

    /**
     * Every event except request replies, in order; ends after CLOSED (or once the client is
     * freed and the buffered events are read). At most [TetherOptions.eventBufferCapacity]
     * events wait here: past that the library stops reading the socket until the collector
     * catches up. Replies share that path, so a [request] also waits while nothing collects:
     * launch requests from a collector in a coroutine of their own rather than awaiting them
     * in its handler, where a reply behind more than that many events cannot arrive: a
     * request whose reply is stuck that way (or behind a collector that stopped for that
     * long) ends with [RequestTimeoutException] two seconds after its timeout.
     * A collector cancelled before its handling of an event returns (a lifecycle that stops
     * collecting, a timeout around `collect`) leaves that event in front for the next
     * collector, which sees it again, in order, rather than never (a collector started while
     * the cancelled one still unwinds waits for it); `first` and `take` keep what they took.
     * Operators that buffer (`buffer`, `flowOn`, `conflate`) take events ahead of the
     * collector, and `collectLatest`/`mapLatest` hand each one to a handler of its own and
     * return: what they hold, or a handler cancelled with them, is dropped, so collect this
     * flow without them when every event matters (it never blocks a thread while it waits).
     */
    val events: Flow<Event> = core.events()

    /**
     * Sends [command] with [data] (JSON) and suspends until the reply; returns the reply's raw
     * JSON data. [timeoutMs] overrides [TetherOptions.requestTimeoutMs] for this request.
     * Throws [RemoteException] (with the server's message), [RequestTimeoutException],
     * [DisconnectedException], [ClientClosedException] (after close), [StateException] (once
     * the server ended the client, an rwws client, or a command that needs the account while
     * the backend says it is not logged in), [InvalidArgumentException] (data is not
     * JSON, is `null`, or over the websocket makes a request over the backend's 1 MiB limit for
     * one message, which would close the connection). Cancelling the coroutine cancels the
     * request on the server and keeps nothing of it.
     */
    suspend fun request(command: String, data: String = "{}", timeoutMs: Int? = null): String {
        checkTimeout(timeoutMs)
        val waiter = CompletableDeferred<Event>()
        val id = core.request(command, data.toByteArray(Charsets.UTF_8), timeoutMs, waiter)
        return core.awaitReply(id, waiter, timeoutMs?.toLong() ?: core.requestTimeoutMs)
    }

    /**
     * In-process ([TetherOptions.inProcess]): uploads media with gomuks's `upload_media` and
     * suspends until the backend's reply; returns it, the `m.room.message` content to send
     * (JSON: `msgtype`, `url`, `info`, ...).
     *
     * What to upload is exactly one of [bytes] (copied before the upload starts; an empty
     * array is an empty file) and [path], a file the backend reads, which is set as the
     * `"path"` of [params] (or give `"path"` in [params] yourself). [params] is the command's
     * other JSON (`filename`, `encrypt`, `voice_message`, resize options, ...). [timeoutMs]
     * overrides [TetherOptions.requestTimeoutMs] and covers the whole upload.
     *
     * [onProgress] gets each progress report in order, as the backend reports it (gomuks
     * v0.2607.0: a fraction from 0 to 1), on the calling coroutine; none of them reaches
     * [events]. While it runs, at most a few reports wait, then the dispatcher (and with it
     * [events] and every reply of this client) waits for it: keep it short, and do not wait
     * for another request of this client inside it.
     *
     * Anything [onProgress] throws, and cancelling the coroutine, cancels the upload and
     * propagates (the backend's call itself cannot be stopped; its result is dropped).
     *
     * @throws UnsupportedException a websocket client (use the backend's HTTP upload).
     * @throws InvalidArgumentException both or neither of [bytes] and a path, [params] not a
     *   JSON object, or [timeoutMs] not positive.
     * @throws RemoteException the backend failed the upload (its message, e.g. a missing
     *   file); also what [request] throws ([RequestTimeoutException], [ClientClosedException], ...).
     */
    suspend fun uploadMedia(
        params: String = "{}",
        bytes: ByteArray? = null,
        path: String? = null,
        timeoutMs: Int? = null,
        onProgress: suspend (Double) -> Unit = {},
    ): String {
        val ms = Media.timeoutArg(timeoutMs)
        val p = Media.uploadParams(params, bytes, path)
        // NULL means "the params' path", so an empty upload still passes an array (length 0).
        val body = bytes?.let { if (it.isEmpty()) ByteArray(1) else it }
        val len = bytes?.size?.toLong() ?: 0L
        return core.transfer(Media.timeoutOf(ms, core), { c, out ->
            TetherNative.tether_client_upload_media(c, p, p.size.toLong(), body, len, ms, out)
        }) { onProgress(it.progress) }
    }

    /**
     * In-process ([TetherOptions.inProcess]): downloads media with gomuks's `download_media`,
     * handing the file's bytes to [onChunk] in order as they arrive, and suspends until the
     * backend's reply; returns it, the cached file's row and path (JSON).
     *
     * [params] is the command's JSON (`{"mxc": "mxc://…", "encrypted": …}`) or an `mxc://`
     * URI alone. Chunks come for uncached, unencrypted media (up to 64 KiB each with gomuks);
     * otherwise read the file at the reply's path. [timeoutMs] overrides
     * [TetherOptions.requestTimeoutMs] and covers the whole download.
     *
     * [onChunk] runs on the calling coroutine, one chunk at a time (each array is the
     * caller's to keep); none of them reaches [events]. It applies backpressure: while it
     * runs, at most a few chunks wait, then the dispatcher waits for it (so [events] and
     * every reply of this client wait too): do not wait for another request of this client
     * inside it.
     *
     * Anything [onChunk] throws, and cancelling the coroutine, cancels the download and
     * propagates (later chunks are dropped; the backend's call itself cannot be stopped).
     *
     * @throws UnsupportedException a websocket client; or, as the reply, a backend library
     *   without streaming download (gomuks v0.2607.0).
     * @throws InvalidArgumentException [timeoutMs] not positive, or [params] not JSON.
     * @throws RemoteException the backend failed the download (its message, e.g. an invalid
     *   mxc URI); also what [request] throws ([RequestTimeoutException], [ClientClosedException], ...).
     */
    suspend fun downloadMedia(params: String, timeoutMs: Int? = null, onChunk: suspend (ByteArray) -> Unit): String {
        val ms = Media.timeoutArg(timeoutMs)
        val p = Media.downloadParams(params)
        return core.transfer(Media.timeoutOf(ms, core), { c, out ->
            TetherNative.tether_client_download_media(c, p, p.size.toLong(), ms, out)
        }) { onChunk(it.data) }
    }

    /**
     * Where the connection is now, as the library sees it; reading it takes no event.
     * [ConnectionState.CLOSED] once the client is closed or freed.
     */
    val state: ConnectionState
        get() = core.state() ?: ConnectionState.CLOSED

    /**
     * A snapshot of the client's statistics; cheap (a few atomic loads). After [close] it
     * keeps the counters of the client's last moment, in state [ConnectionState.CLOSED].
     */
    fun stats(): TetherStats = core.stats()

    /**
     * Pauses in place, for an app going to the background or a network the OS took away:
     * the connection closes keeping the backend's resume entry (gomuks close code 1000)
     * with a DISCONNECTED event (status OK, no retry), and nothing reconnects until
     * [unpause]. Requests made meanwhile wait for the connection (their timeouts still
     * run). Paused while not connected, the attempts stop; paused while waiting to
     * reconnect there is no connection to close and no event, the state reads PAUSED.
     *
     * @throws ClientClosedException after [close]; [StateException] once the client ended.
     *   In-process ([TetherOptions.inProcess]): [UnsupportedException].
     */
    fun pause() {
        core.call { c -> check(TetherNative.tether_client_pause(c)) }
    }

    /**
     * Ends a [pause]: connects at once and resumes where the paused connection stopped, so
     * the events missed meanwhile arrive on [events] exactly once. Does nothing when not
     * paused.
     *
     * @throws ClientClosedException after [close]; [StateException] once the client ended.
     *   In-process ([TetherOptions.inProcess]): [UnsupportedException].
     */
    fun unpause() {
        core.call { c -> check(TetherNative.tether_client_unpause(c)) }
    }

    /**
     * The cue to give on a network change or when the app comes back to the foreground.
     * Waiting to reconnect: connects now instead of at the end of the backoff. Connected:
     * probes the link with a ping and reconnects at once if nothing arrives within
     * [TetherOptions.pongTimeoutMs]; a live connection is kept. Never opens a second
     * connection; does nothing while connecting or paused.
     *
     * @throws ClientClosedException after [close]; [StateException] once the client ended.
     *   In-process ([TetherOptions.inProcess]): [UnsupportedException].
     */
    fun reconnectNow() {
        core.call { c -> check(TetherNative.tether_client_reconnect_now(c)) }
    }

    /**
     * rwws: sends one raw packet (queued while disconnected). If the client ends before
     * writing it, it comes back in an [EventKind.UNSENT] event (with [closeAndWait]).
     *
     * @throws ClientClosedException after [close]; [StateException] once the client ended
     *   (nothing taken); [SendBufferFullException] past [TetherOptions.maxUnsentBytes].
     */
    fun sendPacket(bytes: ByteArray) {
        core.call { c -> check(TetherNative.tether_client_send_packet(c, bytes, bytes.size.toLong())) }
    }

    /**
     * rwws: sends one Settings packet with these `(id, value)` pairs, in order (queued while
     * disconnected). The server must know each id and its value's layout.
     *
     * @throws InvalidArgumentException for an id that is not a byte (0..255), or is 0x00 or
     *   0xFF (reserved, and the list's end); [StateException] for a gomuks client or once the
     *   client ended; [ClientClosedException] after [close].
     */
    fun sendSettings(settings: List<Pair<Int, ByteArray>>) {
        for ((id, _) in settings) {
            if (id !in 0..255) {
                throw InvalidArgumentException(Status.ERR_INVALID_ARGUMENT, "setting id $id is not a byte")
            }
        }
        val out = PointerByReference()
        check(TetherNative.tether_settings_new(out))
        val s = out.value
        try {
            for ((id, value) in settings) {
                check(TetherNative.tether_settings_add(s, id.toByte(), value, value.size.toLong()))
            }
            core.call { c -> check(TetherNative.tether_client_send_settings(c, s)) }
        } finally {
            TetherNative.tether_settings_free(s)
        }
    }

    /**
     * The resume point to persist and pass to a later client: just after the newest event
     * collected from [events] whose handler has returned, so a later client is replayed what
     * was read but never collected, and the event a handler is still on (or a cancelled
     * collector puts back). Also after [close] and [closeAndWait]: the point the client had when it was
     * freed, less the events still waiting in [events]. An event counts once the library's
     * delivery of it into [events] has returned, which can be a moment after a collector got
     * it: a state read in that moment is one event behind, so the later client gets that
     * event again (never misses one). After [closeAndWait] the state is exact.
     */
    fun resumeState(): ResumeState = core.resumeState()

    /**
     * The credential the next connection sends, to persist instead of the password (gomuks
     * spec 1.2): the `gomuks_auth` token, the configured one until a login with
     * [TetherOptions.username] and [TetherOptions.password] or a renewal replaces it (each
     * replacement comes with a [EventKind.TOKEN_RENEWED] event; renewals happen while
     * connected, before the token expires); rwws: the configured key. `null` before the first login and with auth disabled, unless a token was
     * configured. Also after [close], as the client had it when it was freed. A secret: keep
     * it out of logs.
     */
    fun authToken(): String? = core.authToken()

    /**
     * Closes gracefully and waits up to [timeoutMs] for the final CLOSED event, then frees the
     * client; returns within [timeoutMs] also when the server does not answer. gomuks: close
     * code 1001 if connected, so the backend frees the events it kept for this client (paused
     * or waiting to reconnect there is no connection, and it keeps them until its own
     * expiry); with [keepResume]
     * the code is 1000 and a later client given [resumeState] receives what it missed. rwws:
     * 1000 either way. While closing, [events] takes what the library still delivers without
     * a bound (at most the library's queue), so that CLOSED is not stuck behind a collector
     * that stopped reading. Returns whether CLOSED arrived in time; [resumeState] afterwards
     * is the point to persist.
     */
    suspend fun closeAndWait(timeoutMs: Long = 5000, keepResume: Boolean = false): Boolean {
        try {
            core.beginClosing()
            core.callOrNull { c ->
                if (keepResume) TetherNative.tether_client_close_keep_resume(c)
                else TetherNative.tether_client_close(c)
            }
            // A free (a close() racing this one) also ends the wait, without CLOSED.
            withTimeoutOrNull(timeoutMs) { core.closed.await() }
            return core.closedArrived
        } finally {
            close()
        }
    }

    /**
     * Frees the client at once (the connection is closed in the background, keeping the
     * resume state usable). Pending requests fail with [ClientClosedException], [events] ends
     * after what it buffered. Idempotent; never waits on the network, and may be called from
     * anywhere, an event collector of this or another client included.
     */
    override fun close() {
        Reaper.forget(ref)
        core.free()
    }

    /** Events buffered for the collector; for tests of the bound. */
    internal fun queuedEvents(): Int = core.queuedEvents()

    /** Media transfer reports waiting for their callers; for tests of the bound. */
    internal fun queuedReports(): Int = core.queuedReports()

    /** Requests booked and waiting for a reply; for tests that nothing is left behind. */
    internal fun pendingRequests(): Int = core.pendingRequests()

    /** Completes once CLOSED was delivered or the client was freed. */
    internal val closedSignal: CompletableDeferred<Unit> get() = core.closed

    companion object {
        /** The version this binding was written for (see [compatible] for the library it takes). */
        const val BINDING_VERSION = "0.1.0"

        /** The native library's version string. */
        val libraryVersion: String get() = TetherNative.string(TetherNative.tether_version())

        /**
         * Whether a library of [major].[minor] serves a binding written for
         * [wantMajor].[wantMinor]: before 1.0 a minor release may change the ABI, so both must
         * match; from 1.0 on a newer minor release only adds, so the library's may be higher.
         */
        internal fun compatible(major: Int, minor: Int, wantMajor: Int, wantMinor: Int): Boolean =
            major == wantMajor && if (wantMajor == 0) minor == wantMinor else minor >= wantMinor

        internal fun checkLibraryVersion() {
            // Every size_t of the native mapping is a Long: on a 32-bit process each call
            // would pass shifted arguments and read corrupt results, so refuse it here.
            if (Native.SIZE_T_SIZE != 8) {
                throw ConfigException(
                    Status.ERR_CONFIG,
                    "this binding needs a 64-bit process (size_t of ${Native.SIZE_T_SIZE} bytes here)",
                )
            }
            val n = TetherNative.tether_version_number()
            val (major, minor) = BINDING_VERSION.split(".").map { it.toInt() }
            if (!compatible(n shr 16, (n shr 8) and 0xff, major, minor)) {
                // Found by name because the jar's own copy did not load: say why.
                val why = TetherNative.bundledFailure?.let { "; the jar's own copy did not load: ${it.message}" } ?: ""
                throw ConfigException(
                    Status.ERR_CONFIG,
                    "libtether $libraryVersion does not match this binding ($BINDING_VERSION)$why",
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
                    // Four hex digits before the closing quote; anything else is kept as it came
                    // (a malformed escape must not turn into a NumberFormatException).
                    'u' -> {
                        val hex = if (i + 5 < t.length - 1) t.substring(i + 2, i + 6) else ""
                        if (hex.length == 4 && hex.all { it in '0'..'9' || it.lowercaseChar() in 'a'..'f' }) {
                            out.append(hex.toInt(16).toChar())
                            i += 4
                        } else {
                            out.append("\\u")
                        }
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
 * A reply's JSON, or the typed exception of a failed request: its message is the reason the
 * RESPONSE carries as a JSON string (the server's text for a remote error, the library's for
 * a timeout, a cancel or a close), decoded.
 */
internal fun replyText(ev: Event): String {
    if (ev.status == Status.OK) return ev.text
    throw TetherException.of(ev.statusCode, TetherClient.jsonString(ev.text))
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
