package org.tether

import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** A client's [TetherClient.stats], [TetherClient.state] and [TetherClient.id]. */
class StatsTest : WithBackend() {

    @Test
    fun `stats count a connection, pushed events and one request`(): Unit = runBlocking {
        TetherClient(backend.url, testOptions()).use { c ->
            withTimeout(20_000) {
                c.events.first { it.command == "init_complete" }
                val newest = backend.push(50)
                c.events.first { it.requestId == newest }
                assertEquals("{\"a\":1}", c.request("echo", "{\"a\":1}"))
            }
            val s = c.stats()
            assertEquals(ConnectionState.CONNECTED, s.state)
            assertEquals(1L, s.connectAttempts)
            assertEquals(1L, s.connections)
            assertEquals(1L, s.requestsSent)
            assertEquals(0L, s.requestsInFlight)
            assertEquals(0L, s.requestsTimedOut)
            assertEquals(0L, s.resumesSucceeded + s.resumesReset)
            assertTrue(s.eventsReceived >= 50, s.toString())
            // One websocket message may carry several events.
            assertTrue(s.messagesReceived > 0, s.toString())
            assertTrue(s.wireBytesIn > 0 && s.wireBytesOut > 0, s.toString())
            // Compressed: the wire carries less than the payload.
            assertTrue(s.wireBytesIn < s.payloadBytesIn, s.toString())
            assertTrue(s.connectedMillis!! >= 0, s.toString())
            assertNotEquals(0L, c.id)
            c.close()
            val last = c.stats()
            assertEquals(ConnectionState.CLOSED, last.state)
            assertEquals(listOf(1L, 1L, 0L), listOf(last.connections, last.requestsSent, last.requestsInFlight))
            assertTrue(last.eventsReceived >= 50 && last.connectedMillis == null, last.toString())
        }
    }

    @Test
    fun `state goes from connecting to connected to closed, and ids differ`(): Unit = runBlocking {
        // Frozen, the backend accepts the connection but never answers: still connecting.
        backend.freeze()
        val c = try {
            TetherClient(backend.url, testOptions()).also { c ->
                assertTrue(c.state in listOf(ConnectionState.IDLE, ConnectionState.CONNECTING), c.state.toString())
                Thread.sleep(100)
                assertEquals(ConnectionState.CONNECTING, c.state)
            }
        } finally {
            backend.thaw()
        }
        c.use {
            withTimeout(20_000) { c.events.first { it.kind == EventKind.CONNECTED } }
            assertEquals(ConnectionState.CONNECTED, c.state)
            TetherClient(backend.url, testOptions()).use { other -> assertNotEquals(c.id, other.id) }
            withTimeout(20_000) { c.request("echo") }
            c.closeAndWait()
            assertEquals(ConnectionState.CLOSED, c.state)
            // After the free the last counters stay readable.
            val s = c.stats()
            assertEquals(ConnectionState.CLOSED, s.state)
            assertEquals(1L, s.connections)
            assertEquals(1L, s.requestsSent)
            assertNull(s.connectedMillis)
            assertThrows<ClientClosedException> { c.reconnectNow() }
        }
    }
}
