package org.tether

import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.takeWhile
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.fail
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** A phone's network life: pause and unpause in place, and the reconnect cue. */
class NetworkLifeTest : WithBackend() {

    private fun waitFor(what: String, cond: () -> Boolean) {
        val until = System.currentTimeMillis() + 15_000
        while (!cond()) {
            if (System.currentTimeMillis() > until) fail<Unit>("timed out waiting for $what")
            Thread.sleep(10)
        }
    }

    @Test
    fun `pause closes with 1000 and no retry, unpause resumes with every missed event once`(): Unit = runBlocking {
        val connectionsBefore = backend.stat("total_connections")!!
        val resumesBefore = backend.stat("resumes")!!
        TetherClient(backend.url, testOptions()).use { c ->
            withTimeout(30_000) {
                c.events.first { it.command == "init_complete" }
                val before = backend.push(3)
                c.events.first { it.requestId == before }

                c.pause()
                val d = c.events.first { it.kind == EventKind.DISCONNECTED }
                assertEquals(Status.OK, d.status)
                assertEquals(1000, d.closeCode)
                assertNull(d.retryInMs)
                assertEquals(ConnectionState.PAUSED, c.state)
                waitFor("the backend to see code 1000") { backend.stat("last_client_close_code") == 1000L }
                val missed = backend.push(5)

                // Paused: nothing reconnects, and the events stay on the backend.
                Thread.sleep(400)
                assertEquals(ConnectionState.PAUSED, c.state)
                assertEquals(connectionsBefore + 1, backend.stat("total_connections"))

                c.unpause()
                c.unpause() // not paused any more: nothing happens
                val evs = c.events.takeWhile { it.requestId != missed }.toList()
                val kinds = evs.map { it.kind }
                assertEquals(EventKind.CONNECTING, kinds.first(), kinds.toString())
                assertTrue(evs.single { it.kind == EventKind.CONNECTED }.resumeAttempted)
                val ids = evs.filter { it.kind == EventKind.MESSAGE && it.requestId < 0 }.map { it.requestId } + missed
                // Each missed event once, in order, and none of the ones received before the pause.
                assertEquals(((missed + 4) downTo missed).toList(), ids)
                assertEquals(before - 1, missed + 4)
                c.events.first { it.command == "init_complete" }
            }
            assertEquals(resumesBefore + 1, backend.stat("resumes"))
            assertEquals(connectionsBefore + 2, backend.stat("total_connections"))
            val s = c.stats()
            assertEquals(ConnectionState.CONNECTED, s.state)
            assertEquals(listOf(2L, 1L), listOf(s.connections, s.resumesSucceeded))
        }
    }

    @Test
    fun `a request made while paused keeps its timeout`(): Unit = runBlocking {
        TetherClient(backend.url, testOptions()).use { c ->
            withTimeout(30_000) {
                c.events.first { it.command == "init_complete" }
                c.pause()
                c.events.first { it.kind == EventKind.DISCONNECTED }
                val t0 = System.nanoTime()
                assertThrows<RequestTimeoutException> { runBlocking { c.request("echo", timeoutMs = 200) } }
                assertTrue(System.nanoTime() - t0 < 5_000_000_000L)
                assertEquals(ConnectionState.PAUSED, c.state)
                c.unpause()
                assertEquals("{\"p\":1}", c.request("echo", "{\"p\":1}"))
            }
        }
    }

    @Test
    fun `a request past maxUnsentBytes while paused throws SendBufferFullException and takes nothing`(): Unit = runBlocking {
        TetherClient(backend.url, testOptions().copy(maxUnsentBytes = 4096)).use { c ->
            withTimeout(30_000) {
                c.events.first { it.command == "init_complete" }
                c.pause()
                c.events.first { it.kind == EventKind.DISCONNECTED }
                val body = "\"" + "y".repeat(3000) + "\""
                // Undispatched: the request is handed over before this coroutine goes on.
                val first = async(start = CoroutineStart.UNDISPATCHED) { c.request("echo", body) }
                val held = c.stats().unsentBytes
                assertTrue(held in 3001..4095, "$held")
                val e = assertThrows<SendBufferFullException> { runBlocking { c.request("echo", body) } }
                assertEquals(Status.ERR_SEND_BUFFER_FULL, e.status)
                assertTrue(e.message!!.contains("max_unsent_bytes"), e.message)
                assertEquals(held, c.stats().unsentBytes)
                assertThrows<SendBufferFullException> { runBlocking { c.request("echo", body) } }
                c.unpause()
                assertEquals(body, first.await())
                assertEquals(0L, c.stats().unsentBytes)
                // Refused twice, told once that room is back.
                c.events.first { it.kind == EventKind.SEND_READY }
                assertEquals(body, c.request("echo", body))
            }
        }
    }

    @Test
    fun `reconnectNow keeps a live connection and skips the backoff of a waiting one`(): Unit = runBlocking {
        backend.control("/_testkit/reject_upgrades?n=1")
        val o = testOptions().copy(reconnectBackoffMs = 10_000..10_000, pongTimeoutMs = 2_000)
        TetherClient(backend.url, o).use { c ->
            withTimeout(30_000) {
                val d = c.events.first { it.kind == EventKind.DISCONNECTED }
                assertTrue(d.retryInMs!! > 1_000, d.toString())
                waitFor("the backoff") { c.state == ConnectionState.WAITING }
                val t0 = System.nanoTime()
                c.reconnectNow()
                c.events.first { it.kind == EventKind.CONNECTED }
                assertTrue(System.nanoTime() - t0 < 5_000_000_000L, "did not wait out the 10 s backoff")
                c.events.first { it.command == "init_complete" }
                val total = backend.stat("total_connections")!!

                // Connected: the cue probes, the live link answers, nothing else happens.
                c.reconnectNow()
                c.reconnectNow()
                val pong = c.events.first { it.kind != EventKind.MESSAGE }
                assertEquals(EventKind.PONG, pong.kind, pong.toString())
                Thread.sleep(2_500) // past the pong timeout
                assertEquals(ConnectionState.CONNECTED, c.state)
                assertEquals(1L, backend.stat("connections"))
                assertEquals(total, backend.stat("total_connections"))
                assertEquals(1L, c.stats().connections)
            }
        }
    }

    @Test
    fun `pause, unpause and reconnectNow on a closed client are refused, pongTimeoutMs is checked`() {
        val c = TetherClient(backend.url, testOptions().copy(pongTimeoutMs = 500))
        c.close()
        assertThrows<ClientClosedException> { c.pause() }
        assertThrows<ClientClosedException> { c.unpause() }
        assertThrows<ClientClosedException> { c.reconnectNow() }
        assertEquals(ConnectionState.CLOSED, c.state)
        assertThrows<ConfigException> { TetherClient(backend.url, TetherOptions(pongTimeoutMs = 0)).close() }
        assertThrows<InvalidArgumentException> { TetherClient(backend.url, TetherOptions(pongTimeoutMs = -1)).close() }
    }
}
