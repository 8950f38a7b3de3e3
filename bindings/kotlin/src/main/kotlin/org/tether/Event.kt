package org.tether

/**
 * What an [Event] reports (`TETHER_EVENT_*`).
 *
 * [RESUMED] (gomuks): what became of the resume a connection asked for, in
 * [Event.resumeOutcome]; once per such connection, before the message that decided it (so
 * before the fresh state of a reset, and before `init_complete`).
 * [TOKEN_RENEWED] (gomuks): a new token replaced the one the client held (renewed before it
 * expires or after a 401, or a new login); read it with [TetherClient.authToken] and persist
 * it. It carries no secret. The first token of a password login is not announced.
 */
enum class EventKind(val code: Int) {
    CONNECTING(1), CONNECTED(2), DISCONNECTED(3), MESSAGE(4), RESPONSE(5), PONG(6), PACKET(7),
    CLOSED(8), RESUMED(9), TOKEN_RENEWED(10),

    /** In-process: progress of a media upload (the data is the backend's figure as JSON; gomuks v0.2607.0: a fraction from 0 to 1). */
    PROGRESS(11),

    /** In-process: the next bytes of a streamed media download (the data). */
    CHUNK(12),

    /**
     * The client's [Store] ([TetherOptions.store]) applied an event or the answer to a store
     * action: the data is the JSON change set (`gen`, `cause`, what changed). It follows the
     * MESSAGE (or CONNECTED, DISCONNECTED with a retry) it reflects and precedes the RESPONSE of a store action. It stays in
     * [TetherClient.events] like a MESSAGE, and its change set is handed to [Store.changes]
     * first.
     */
    STORE(13),

    /**
     * A call threw [SendBufferFullException], and enough has been written (or has ended) since
     * that the largest message refused would fit with at most half of
     * [TetherOptions.maxUnsentBytes] waiting: send again. One per run of refusals, however many
     * calls were refused; an app that is never refused never sees one. Carries nothing.
     */
    SEND_READY(14),

    /**
     * rwws: a packet the client took ([TetherClient.sendPacket], [TetherClient.sendSettings])
     * but never wrote, handed back as the client ends ([TetherClient.closeAndWait], or a stop
     * for good) so nothing is lost without a word: the data is its bytes, ready to send on
     * another client. One per packet, in the order sent, after the DISCONNECTED of a stop for
     * good and before CLOSED; the status is CLIENT_CLOSED (PANIC after an internal panic,
     * before its DISCONNECTED). Written means handed to the connection: what its buffers
     * (the websocket writer's, about 128 KiB, and the kernel's) hold when it is cut, or when
     * a close runs out of time against a peer that stopped reading, is lost with it; the
     * protocol has no acknowledgement. [TetherClient.close] frees at once, so use
     * [TetherClient.closeAndWait] to get them.
     */
    UNSENT(15);

    companion object {
        fun of(code: Int): EventKind =
            ofOrNull(code) ?: error("unknown event kind $code")

        /** null for a kind this binding does not know (a newer library). */
        fun ofOrNull(code: Int): EventKind? = entries.firstOrNull { it.code == code }
    }
}

/** A RESUMED event's [Event.resumeOutcome] (`TETHER_RESUME_*`). */
enum class ResumeOutcome(val code: Int) {
    /** Every missed event is delivered exactly once: keep the cached state. */
    SUCCEEDED(1),

    /**
     * The backend restarted or no longer held the resume point: drop the cached state (the
     * fresh state follows, `sync_complete` with `clear_state`).
     */
    RESET(2),

    /**
     * The resume point was gone, but with `lastServerTs` configured the changes since then
     * follow as one `sync_complete` with `catchup`: keep the cached state and apply it (the
     * missed events themselves are not delivered).
     */
    CAUGHT_UP(3);

    companion object {
        /** null for 0 (no outcome: every kind but RESUMED). */
        fun of(code: Int): ResumeOutcome? = entries.firstOrNull { it.code == code }
    }
}

/**
 * One event, copied out of the library. [data] is the raw payload: JSON for MESSAGE, RESPONSE
 * and STORE, packet bytes for PACKET and UNSENT, the reason text for DISCONNECTED ([text] decodes it).
 */
class Event internal constructor(
    val kind: EventKind,
    /** RESPONSE/PONG: the request id; MESSAGE: the server's event id (negative when buffered). */
    val requestId: Long,
    /**
     * RESPONSE: the outcome; DISCONNECTED: why the connection ended; UNSENT: ERR_CLIENT_CLOSED,
     * or ERR_PANIC after an internal panic; OK otherwise.
     */
    val status: Status,
    /** gomuks command name of a MESSAGE, "" otherwise. */
    val command: String,
    val data: ByteArray,
    /** DISCONNECTED: close code, or HTTP status of a refused upgrade. */
    val closeCode: Int,
    /** DISCONNECTED: ms until the next attempt, null when no retry follows. */
    val retryInMs: Long?,
    /**
     * PONG: round-trip time in µs; null for the rwws auth answer (it answers no ping of ours)
     * and for a pong that may have waited unread while the app let the queue fill.
     */
    val rttMicros: Long?,
    /** PONG (gomuks): the event id this ping acknowledged, 0 for none. */
    val ackedId: Long,
    /** PONG (rwws): the server's unix millis, 0 if unknown. */
    val serverTimeMs: Long,
    /** CONNECTING/CONNECTED/DISCONNECTED: whether this connection asked the server to resume. */
    val resumeAttempted: Boolean,
    /** CONNECTING/CONNECTED/DISCONNECTED: the connection attempt number, from 1; 0 otherwise. */
    val attempt: Long = 0,
    /** RESUMED: whether the resume succeeded, was caught up, or the server's state was reset; null otherwise. */
    val resumeOutcome: ResumeOutcome? = null,
    /** PROGRESS: how much of the upload is done, as the backend reports it; -1 otherwise. */
    internal val progress: Double = -1.0,
    /** The C value of [status], which says which status it was when that is [Status.UNKNOWN]. */
    val statusCode: Int = status.code,
) {
    /** The payload as UTF-8 text. */
    val text: String get() = data.toString(Charsets.UTF_8)

    override fun toString(): String =
        "Event($kind id=$requestId status=$status command=$command ${data.size} bytes" +
            (resumeOutcome?.let { " outcome=$it)" } ?: ")")

    internal companion object {
        /**
         * Copies a borrowed `tether_event*`; null for a kind this binding does not know (a
         * newer library), which is skipped rather than passed on as something it is not.
         */
        fun copy(ev: com.sun.jna.Pointer): Event? {
            val n = TetherNative
            val kind = EventKind.ofOrNull(n.tether_event_kind(ev)) ?: return null
            val ptr = com.sun.jna.ptr.PointerByReference()
            val len = com.sun.jna.ptr.LongByReference()
            val data = if (n.tether_event_data(ev, ptr, len) == 0 && len.value > 0) {
                ptr.value.getByteArray(0, len.value.toInt())
            } else {
                ByteArray(0)
            }
            val status = n.tether_event_status(ev)
            val retry = n.tether_event_retry_in_ms(ev)
            val rtt = n.tether_event_rtt_us(ev)
            return Event(
                kind = kind,
                requestId = n.tether_event_request_id(ev),
                status = Status.of(status),
                command = n.string(n.tether_event_command(ev)),
                data = data,
                closeCode = n.tether_event_close_code(ev).toInt() and 0xffff,
                retryInMs = if (retry < 0) null else retry,
                rttMicros = if (rtt < 0) null else rtt,
                ackedId = n.tether_event_acked_id(ev),
                serverTimeMs = n.tether_event_server_time_ms(ev),
                resumeAttempted = n.tether_event_resume_attempted(ev).toInt() != 0,
                attempt = n.tether_event_attempt(ev).toLong() and 0xffffffffL,
                resumeOutcome = ResumeOutcome.of(n.tether_event_resume_outcome(ev)),
                progress = n.tether_event_progress(ev),
                statusCode = status,
            )
        }
    }
}
