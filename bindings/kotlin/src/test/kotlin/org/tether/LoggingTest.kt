package org.tether

import java.net.ServerSocket
import java.util.Base64
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.fail
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** The library's log records through [Tether.setLogHandler]: levels, client ids, no secret, removal. */
class LoggingTest : WithBackend() {

    // The handler is process-wide: no test may leave one behind for the other classes.
    @AfterEach
    fun removeHandler() = Tether.removeLogHandler()

    /** Keeps every record it gets. */
    class Capture : LogHandler {
        private val records = ArrayList<LogRecord>()

        override fun log(record: LogRecord) {
            synchronized(records) { records.add(record) }
        }

        fun all(): List<LogRecord> = synchronized(records) { records.toList() }

        fun of(clientId: Long): List<LogRecord> = all().filter { it.clientId == clientId }

        /** [clientId]'s records once one contains [text]: they come on the log thread, a little after the events. */
        fun waitFor(clientId: Long, text: String, timeoutMs: Long = 15_000): List<LogRecord> {
            val until = System.currentTimeMillis() + timeoutMs
            while (true) {
                val recs = of(clientId)
                if (recs.any { text in it.message }) return recs
                if (System.currentTimeMillis() > until) fail<Unit>("no record with \"$text\": ${recs.map { it.message }}")
                Thread.sleep(10)
            }
        }
    }

    private fun List<LogRecord>.with(text: String): LogRecord =
        firstOrNull { text in it.message } ?: fail("no record with \"$text\": ${map { it.message }}")

    private fun waitState(c: TetherClient, vararg want: ConnectionState) {
        val until = System.currentTimeMillis() + 15_000
        while (c.state !in want) {
            if (System.currentTimeMillis() > until) fail<Unit>("state ${c.state}, wanted ${want.toList()}")
            Thread.sleep(5)
        }
    }

    @Test
    fun `a log handler that closes a client whose collector removes the handler does not deadlock`(): Unit = runBlocking {
        // The header forbids a log callback to free a client whose event callback waits in
        // tether_set_log_callback: the binding hands that free to another thread.
        val x = TetherClient(backend.url, testOptions(pingIntervalMs = 50))
        val armed = java.util.concurrent.atomic.AtomicBoolean(false)
        val handlerRunning = java.util.concurrent.CountDownLatch(1)
        val signal = java.util.concurrent.CountDownLatch(1)
        val closedFromLog = java.util.concurrent.CountDownLatch(1)
        Tether.setLogHandler(LogLevel.TRACE, object : LogHandler {
            override fun log(record: LogRecord) {
                if (!armed.compareAndSet(true, false)) return
                handlerRunning.countDown()
                signal.await(5, java.util.concurrent.TimeUnit.SECONDS)
                Thread.sleep(200) // the collector is inside removeLogHandler by now
                x.close()
                closedFromLog.countDown()
            }
        })
        val removed = java.util.concurrent.CompletableFuture<Unit>()
        val scope = kotlinx.coroutines.CoroutineScope(kotlinx.coroutines.SupervisorJob())
        scope.launch(kotlinx.coroutines.Dispatchers.Unconfined) {
            x.events.first { ClientState.insideCallback() }
            armed.set(true)
            // Any record will do: another client's connection logs.
            TetherClient(backend.url, testOptions()).use { other ->
                assertTrue(handlerRunning.await(10, java.util.concurrent.TimeUnit.SECONDS), "no record came")
                signal.countDown()
                Tether.removeLogHandler()
                removed.complete(Unit)
                other.close()
            }
        }
        try {
            removed.get(10, java.util.concurrent.TimeUnit.SECONDS)
            assertTrue(closedFromLog.await(10, java.util.concurrent.TimeUnit.SECONDS))
            withTimeout(10_000) { x.closedSignal.await() }
        } catch (e: java.util.concurrent.TimeoutException) {
            fail<Unit>("the log thread and the dispatcher waited for each other")
        } finally {
            scope.cancel()
        }
    }

    @Test
    fun `a wrong password logs the refused login and the end at ERROR`() {
        val logs = Capture()
        Tether.setLogHandler(LogLevel.TRACE, logs)
        val password = "wrong-pw-5151"
        TetherClient(backend.url, TetherOptions(username = "tether", password = password)).use { c ->
            val recs = logs.waitFor(c.id, "connection ended for good")
            val auth = recs.with("POST /_gomuks/auth to log in")
            assertTrue("failed" in auth.message && "401" in auth.message, auth.message)
            assertEquals(LogLevel.WARN, auth.level)
            assertEquals(LogLevel.ERROR, recs.with("connection ended for good").level)
            assertTrue(recs.all { it.target.startsWith("tether") }, recs.map { it.target }.toString())
            assertTrue(recs.none { password in it.message })
            // Each record carries the library's time of writing, in order.
            val now = System.currentTimeMillis()
            assertTrue(recs.all { Math.abs(it.timeMillis - now) < 60_000 })
            assertEquals(recs.map { it.timeMillis }.sorted(), recs.map { it.timeMillis })
            waitState(c, ConnectionState.CLOSED)
            // Ended for good: nothing could connect it again.
            assertThrows<StateException> { c.unpause() }
            assertThrows<StateException> { c.reconnectNow() }
        }
    }

    @Test
    fun `a refused port logs each attempt and the backoff`() {
        val logs = Capture()
        Tether.setLogHandler(LogLevel.TRACE, logs)
        val port = ServerSocket(0).use { it.localPort }
        TetherClient("http://127.0.0.1:$port", TetherOptions(reconnectBackoffMs = 50..50)).use { c ->
            val recs = logs.waitFor(c.id, "attempt 2 failed")
            val first = recs.with("attempt 1 failed")
            assertEquals(LogLevel.WARN, first.level)
            assertTrue("127.0.0.1:$port" in first.message, first.message)
            assertTrue(recs.with("reconnecting in").level in listOf(LogLevel.INFO, LogLevel.WARN))
            assertTrue(c.state in listOf(ConnectionState.CONNECTING, ConnectionState.WAITING), c.state.toString())
            val s = c.stats()
            assertTrue(s.connectAttempts >= 2, s.toString())
            assertEquals(0L, s.connections)
            assertNull(s.connectedMillis)
            assertNull(s.lastRttMicros)
        }
    }

    @Test
    fun `a cut and its resume are logged and counted`(): Unit = runBlocking {
        val logs = Capture()
        Tether.setLogHandler(LogLevel.DEBUG, logs)
        TetherClient(backend.url, testOptions()).use { c ->
            withTimeout(20_000) {
                c.events.first { it.command == "init_complete" }
                // A received event id is what a resume asks from.
                val newest = backend.push(3)
                c.events.first { it.requestId == newest }
                backend.control("/_testkit/cut")
                c.events.first { it.kind == EventKind.CONNECTED && it.resumeAttempted }
            }
            val recs = logs.waitFor(c.id, "resume succeeded")
            assertEquals(LogLevel.INFO, recs.with("reconnecting in").level)
            assertEquals(LogLevel.INFO, recs.with("asking to resume").level)
            assertEquals(LogLevel.INFO, recs.with("resume succeeded").level)
            // Another client's records never carry this one's id.
            assertTrue(logs.all().filter { "asking to resume" in it.message }.all { it.clientId == c.id })
            val s = c.stats()
            assertEquals(listOf(2L, 1L, 0L), listOf(s.connections, s.resumesSucceeded, s.resumesReset), s.toString())
            assertEquals(ConnectionState.CONNECTED, s.state)
            assertEquals(ConnectionState.CONNECTED, c.state)
        }
    }

    @Test
    fun `no secret reaches any record`(): Unit = runBlocking {
        val logs = Capture()
        Tether.setLogHandler(LogLevel.TRACE, logs)
        val ids = mutableListOf<Long>()
        val o = testOptions()
        val token = TetherClient(backend.url, o).use { c ->
            withTimeout(20_000) { c.request("echo", "{\"x\":1}") }
            ids.add(c.id)
            c.authToken()
        }
        assertTrue(!token.isNullOrEmpty())
        TetherClient(backend.url, TetherOptions(token = token, pingIntervalMs = 50)).use { c ->
            withTimeout(20_000) { c.events.first { it.kind == EventKind.PONG } }
            ids.add(c.id)
        }
        val key = "dGV0aGVyLXRlc3Qta2V5"
        TetherClient(backend.url, TetherOptions(protocol = Protocol.RWWS, token = key)).use { c ->
            withTimeout(20_000) { c.events.first { it.kind == EventKind.PONG && it.rttMicros != null } }
            ids.add(c.id)
        }
        // The log thread delivered everything up to each close.
        for (id in ids) logs.waitFor(id, "client closed")
        val text = logs.all().joinToString("\n") { "${it.level} ${it.target} ${it.clientId} ${it.message}" }
        assertTrue("POST /_gomuks/auth to log in" in text && "connected in" in text, text)
        val raw = Base64.getDecoder().decode(key)
        val secrets = listOf(
            o.password!!, token!!.take(24), key, String(raw, Charsets.UTF_8),
            raw.joinToString("") { "%02x".format(it) }, raw.joinToString(", ") { (it.toInt() and 0xff).toString() },
            Base64.getEncoder().encodeToString("${o.username}:${o.password}".toByteArray()),
        )
        for (secret in secrets) assertTrue(secret !in text, "secret \"$secret\" in the records")
    }

    @Test
    fun `the level filters, a replaced or removed handler gets nothing more, a failing one costs its record`(): Unit = runBlocking {
        val first = Capture()
        val changeInside = mutableListOf<Throwable>()
        Tether.setLogHandler(LogLevel.INFO) { r ->
            first.log(r)
            // From inside a handler: refused, not a deadlock.
            if (changeInside.isEmpty()) changeInside.add(runCatching { Tether.removeLogHandler() }.exceptionOrNull() ?: Error("accepted"))
            if ("connecting to" in r.message) throw IllegalStateException("a broken handler")
        }
        val id = TetherClient(backend.url, testOptions()).use { c ->
            withTimeout(20_000) { c.request("echo") }
            first.waitFor(c.id, "connected in")
            c.id
        }
        first.waitFor(id, "client closed")
        assertTrue(first.of(id).all { it.level <= LogLevel.INFO }, first.of(id).toString())
        assertTrue(changeInside.single() is StateException, changeInside.toString())

        // Replaced: once the call returns the first handler gets nothing.
        val second = Capture()
        Tether.setLogHandler(LogLevel.TRACE, second)
        val before = first.all().size
        val id2 = TetherClient(backend.url, testOptions()).use { c ->
            withTimeout(20_000) { c.request("echo") }
            c.id
        }
        second.waitFor(id2, "client closed")
        assertEquals(before, first.all().size)
        assertTrue(second.of(id2).any { it.level == LogLevel.DEBUG || it.level == LogLevel.TRACE })

        // Removed: nobody gets anything.
        Tether.removeLogHandler()
        val after = second.all().size
        TetherClient(backend.url, testOptions()).use { c -> withTimeout(20_000) { c.request("echo") } }
        Thread.sleep(200)
        assertEquals(after, second.all().size)
        assertEquals(before, first.all().size)
    }
}
