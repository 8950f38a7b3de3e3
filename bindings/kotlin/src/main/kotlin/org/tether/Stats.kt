package org.tether

/** Where a client's connection is (`TETHER_STATE_*`). */
enum class ConnectionState(val code: Int) {
    /** Created; not connecting yet. */
    IDLE(0),
    /** A connection attempt runs (TCP, TLS, upgrade, handshake). */
    CONNECTING(1),
    /** Connected. */
    CONNECTED(2),
    /** Between attempts, waiting out the backoff delay. */
    WAITING(3),
    /** Closed for good: by the app, or the server refused the client for good. */
    CLOSED(4),
    /** Paused by the app ([TetherClient.pause]): no connection, no attempt until unpaused. */
    PAUSED(5);

    companion object {
        /**
         * The state for a C value. A state a newer library added maps to [CONNECTING]: the
         * client is alive but not known to be connected.
         */
        fun of(code: Int): ConnectionState = entries.firstOrNull { it.code == code } ?: CONNECTING
    }
}

/**
 * A snapshot of a client's statistics (`tether_client_stats`). The counters count from the
 * client's creation, over every connection it made.
 */
data class TetherStats(
    /** The connection state when the snapshot was taken. */
    val state: ConnectionState,
    /** Connection attempts started. */
    val connectAttempts: Long,
    /** Attempts that ended connected (rwws: authenticated). */
    val connections: Long,
    /** gomuks: connections that asked to resume and got every missed event. */
    val resumesSucceeded: Long,
    /** gomuks: connections that asked to resume and got a fresh state (or a catch-up) instead. */
    val resumesReset: Long,
    /**
     * Bytes read from the network by the websocket's connections (a proxy's handshake, TLS,
     * the upgrade and the framing included; the gomuks login request is not counted).
     */
    val wireBytesIn: Long,
    /**
     * Bytes written to the network by the websocket's connections (a proxy's handshake, TLS,
     * the upgrade and the framing included; the gomuks login request is not counted).
     */
    val wireBytesOut: Long,
    /**
     * Bytes of the received messages after decompression: compression saved
     * `1 - wireBytesIn / payloadBytesIn`.
     */
    val payloadBytesIn: Long,
    /** Websocket data messages received (0 in-process, as the byte counts: only [eventsReceived] counts the backend's events). */
    val messagesReceived: Long,
    /** Server events received (gomuks: not replies or pongs; rwws: packets). */
    val eventsReceived: Long,
    /** Requests written to a connection (in-process: handed to the backend). */
    val requestsSent: Long,
    /** Requests without an outcome yet. */
    val requestsInFlight: Long,
    /** Requests that ended with [RequestTimeoutException]. */
    val requestsTimedOut: Long,
    /**
     * Events received but not collected yet: the library's queue plus what
     * [TetherClient.events] buffers.
     */
    val queuedEvents: Long,
    /** Round-trip time of the last ping with a measured round trip ([Event.rttMicros]) in µs; null before the first. */
    val lastRttMicros: Long?,
    /** How long the current connection has been up, in milliseconds; null while not connected. */
    val connectedMillis: Long?,
    /**
     * Bytes of requests and packets waiting to be written (made while disconnected, or faster
     * than the uplink carries); a call that would pass [TetherOptions.maxUnsentBytes] throws
     * [SendBufferFullException].
     */
    val unsentBytes: Long = 0,
) {
    // Written out: the generated one calls java.lang.Long.hashCode(long), which Android
    // only has from API 24.
    override fun hashCode(): Int = arrayOf<Any?>(
        state, connectAttempts, connections, resumesSucceeded, resumesReset, wireBytesIn,
        wireBytesOut, payloadBytesIn, messagesReceived, eventsReceived, requestsSent,
        requestsInFlight, requestsTimedOut, queuedEvents, lastRttMicros, connectedMillis,
        unsentBytes,
    ).contentHashCode()

    internal companion object {
        /** Reads the stats of a live native client; [queuedHere] is what the binding buffers. */
        fun read(c: com.sun.jna.Pointer, queuedHere: Int): TetherStats {
            val s = StatsStruct()
            check(TetherNative.tether_client_stats(c, s))
            return TetherStats(
                state = ConnectionState.of(s.state),
                connectAttempts = s.connect_attempts,
                connections = s.connections,
                resumesSucceeded = s.resumes_succeeded,
                resumesReset = s.resumes_reset,
                wireBytesIn = s.wire_bytes_in,
                wireBytesOut = s.wire_bytes_out,
                payloadBytesIn = s.payload_bytes_in,
                messagesReceived = s.messages_received,
                eventsReceived = s.events_received,
                requestsSent = s.requests_sent,
                requestsInFlight = s.requests_in_flight,
                requestsTimedOut = s.requests_timed_out,
                queuedEvents = s.queued_events + queuedHere,
                lastRttMicros = s.last_rtt_us.takeIf { it >= 0 },
                connectedMillis = s.connected_ms.takeIf { it >= 0 },
                unsentBytes = s.unsent_bytes,
            )
        }
    }
}
