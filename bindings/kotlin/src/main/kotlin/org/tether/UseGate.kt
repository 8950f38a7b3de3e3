package org.tether

/**
 * Counts the calls inside a native handle, so that its free waits for them (the C API
 * forbids racing a `tether_*_free`) while a call that comes after the free was asked for fails
 * at once instead of waiting. Shared by [ClientState] and [StoreHandle].
 */
internal class UseGate {
    private val lock = Object()
    private var users = 0
    private var closed = false

    /** Whether [close] was called. */
    val isClosed: Boolean get() = synchronized(lock) { closed }

    /** Counts a call in; false once [close] was called (the call must not go in). */
    fun enter(): Boolean = synchronized(lock) {
        if (closed) return false
        users++
        true
    }

    /** Counts a call out. */
    fun leave() = synchronized(lock) {
        if (--users == 0) lock.notifyAll()
    }

    /** Refuses every later call; false if that was already asked for. */
    fun close(): Boolean = synchronized(lock) {
        if (closed) return false
        closed = true
        true
    }

    /** Waits until no call is inside; an interrupt meanwhile is kept for the caller. */
    fun drain() {
        var interrupted = false
        synchronized(lock) {
            while (users > 0) {
                try {
                    lock.wait()
                } catch (e: InterruptedException) {
                    interrupted = true
                }
            }
        }
        if (interrupted) Thread.currentThread().interrupt()
    }
}
