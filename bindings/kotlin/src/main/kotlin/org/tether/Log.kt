package org.tether

import com.sun.jna.CallbackThreadInitializer
import com.sun.jna.Native

/** How important a [LogRecord] is (`TETHER_LOG_*`); a handler set at a level gets that and the ones above. */
enum class LogLevel(val code: Int) {
    /** The client gave up, or a call failed in a way the app must handle. */
    ERROR(1),
    /**
     * An attempt to connect failed (refused, timed out) and will be retried, or the library
     * closed a connection over a server's bad message. A connection that dropped and will be
     * resumed is [INFO].
     */
    WARN(2),
    /** The connection's life: attempts, connections, closes, resumes, backoff. */
    INFO(3),
    /** Details: timings of each step, requests that timed out, ignored messages. */
    DEBUG(4),
    /** Everything else the library notices. */
    TRACE(5);

    companion object {
        /** The level for a C value; anything past TRACE is TRACE. */
        fun of(code: Int): LogLevel = entries.firstOrNull { it.code == code } ?: TRACE
    }
}

/**
 * One record of the native library's log. Never holds a token, password, cookie or key.
 *
 * @property target the part of the library that wrote it (`tether::session`, `tether::gomuks`, ...).
 * @property clientId the [TetherClient.id] it belongs to; 0 for none.
 * @property timeMillis when the library wrote it, in Unix milliseconds (the handler runs a little later).
 */
data class LogRecord(
    val level: LogLevel,
    val target: String,
    val clientId: Long,
    val message: String,
    val timeMillis: Long,
) {
    // Written out: the generated one calls java.lang.Long.hashCode(long), which Android
    // only has from API 24.
    override fun hashCode(): Int = arrayOf<Any?>(level, target, clientId, message, timeMillis).contentHashCode()
}

/** Receives the library's [LogRecord]s; see [Tether.setLogHandler]. */
fun interface LogHandler {
    /** Called on the library's `tether-log` thread, one record at a time, in order. */
    fun log(record: LogRecord)
}

/** Process-wide settings of the native library. */
object Tether {
    private val lock = Object()

    // The installed callbacks. JNA holds callbacks only weakly, and a collected callback
    // called from C crashes the process: these stay referenced until the library has
    // returned from replacing them, which it does only after their destroy ran.
    private var installed: Installed? = null

    private val ON_LOG_THREAD = ThreadLocal<Boolean>()

    /** Whether this thread is running a log handler right now. */
    internal fun onLogThread(): Boolean = ON_LOG_THREAD.get() == true

    private class Installed(handler: LogHandler) {
        val onLog = TetherNative.LogCallback { _, p ->
            ON_LOG_THREAD.set(true)
            try {
                if (p != null) handler.log(record(LogRecordStruct(p)))
            } catch (t: Throwable) {
                // A failing handler costs its own record only; an exception must not
                // cross into the library's thread.
            } finally {
                ON_LOG_THREAD.set(false)
            }
        }
        val onDestroy = TetherNative.DestroyCallback { _ -> }
    }

    /**
     * Sends the library's log records at [level] or more important to [handler], replacing
     * the handler set before; the replaced one gets no record once this returns. The records
     * of every client of the process arrive on the library's own `tether-log` thread, never
     * on a network thread: a slow handler costs dropped records (the next record says how
     * many), never a stalled connection. Records tell connect attempts with address and
     * timing, the HTTP status of a refused upgrade or login, TLS failures, close codes,
     * resumes, the backoff chosen, request timeouts and decoding errors.
     *
     * Waits for a record the old handler is handling to finish: do not call it while holding
     * a lock that handler takes.
     *
     * @throws StateException when called from inside a log handler.
     */
    fun setLogHandler(level: LogLevel = LogLevel.INFO, handler: LogHandler) {
        val next = Installed(handler)
        Native.setCallbackThreadInitializer(next.onLog, CallbackThreadInitializer(true, false, "tether-log"))
        replace(next, level.code)
    }

    /**
     * Removes the log handler; once this returns it is never called again. Logging then
     * costs the library next to nothing. Waits like [setLogHandler] for a record being handled.
     *
     * @throws StateException when called from inside a log handler.
     */
    fun removeLogHandler() = replace(null, 0)

    private fun replace(next: Installed?, level: Int) {
        // The library refuses it too, but the lock below would deadlock first: the caller
        // holding it waits for this thread's handler to return.
        if (ON_LOG_THREAD.get() == true) {
            throw StateException(Status.ERR_STATE, "the log handler cannot be changed from inside a log handler")
        }
        TetherClient.checkLibraryVersion()
        synchronized(lock) {
            check(TetherNative.tether_set_log_callback(next?.onLog, null, next?.onDestroy, level))
            installed = next
        }
    }

    private fun record(r: LogRecordStruct) = LogRecord(
        level = LogLevel.of(r.level),
        target = r.target?.let { TetherNative.string(it) } ?: "",
        clientId = r.client_id,
        message = r.message?.let { TetherNative.string(it) } ?: "",
        timeMillis = r.unix_time_us / 1000,
    )
}
