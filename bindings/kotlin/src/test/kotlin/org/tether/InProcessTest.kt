package org.tether

import java.io.File
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/**
 * The in-process transport ([TetherOptions.inProcess]) against `tests/inproc`'s double of
 * `libgomuksffi` (see [fakeGomuks]), each test on a fresh data root.
 *
 * A process runs one in-process backend at a time, and Surefire runs every test class in one
 * JVM, one test after another: each test therefore closes its clients with [closeAndWait],
 * which returns once CLOSED came, when the backend has stopped and the slot is free.
 */
class InProcessTest {
    private fun client(root: File, options: TetherOptions = inProcessOptions(root)) = TetherClient("", options)

    /** The rest of [c]'s events once it is closed: DISCONNECTED (OK, no retry), then CLOSED. */
    private suspend fun closeAndCheck(c: TetherClient) {
        c.closeAndWait(10_000)
        val rest = c.events.toList()
        assertEquals(listOf(EventKind.DISCONNECTED, EventKind.CLOSED), rest.map { it.kind }, rest.toString())
        assertEquals(Status.OK, rest[0].status)
        assertNull(rest[0].retryInMs)
    }

    @Test
    fun `startup events, a request round trip, a remote error, then DISCONNECTED and CLOSED`(): Unit = runBlocking {
        withDataRoot { root ->
            val c = client(root)
            try {
                withTimeout(15_000) {
                    val start = c.events.take(4).toList()
                    assertEquals(
                        listOf(EventKind.CONNECTING, EventKind.CONNECTED, EventKind.MESSAGE, EventKind.MESSAGE),
                        start.map { it.kind }, start.toString(),
                    )
                    assertFalse(start[1].resumeAttempted)
                    // The backend's own startup events, with id 0 (no resume in-process).
                    assertEquals(listOf("client_state", "sync_status"), start.drop(2).map { it.command })
                    assertEquals(listOf(0L, 0L), start.drop(2).map { it.requestId })
                    assertTrue(start[2].text.contains("\"is_logged_in\":true"), start[2].text)
                    assertTrue(start[3].text.contains("\"waiting\""), start[3].text)

                    assertEquals("{\"a\":[1,2]}", c.request("echo", "{\"a\":[1,2]}"))
                    assertTrue(c.request("get_account_info").contains("@fake:localhost"))
                    val e = assertThrows<RemoteException> { runBlocking { c.request("no_such") } }
                    assertEquals(Status.ERR_REMOTE, e.status)
                    assertEquals("unknown command \"no_such\"", e.message)
                    assertEquals(ConnectionState.CONNECTED, c.state)
                }
                closeAndCheck(c)
            } finally {
                c.close()
            }
        }
    }

    @Test
    fun `pause, unpause and reconnectNow are unsupported and leave the client working`(): Unit = runBlocking {
        withDataRoot { root ->
            val c = client(root)
            try {
                withTimeout(15_000) {
                    c.events.first { it.command == "sync_status" }
                    assertEquals(Status.ERR_UNSUPPORTED, assertThrows<UnsupportedException> { c.pause() }.status)
                    assertThrows<UnsupportedException> { c.unpause() }
                    assertThrows<UnsupportedException> { c.reconnectNow() }
                    assertEquals(ConnectionState.CONNECTED, c.state)
                    assertEquals("{\"still\":1}", c.request("echo", "{\"still\":1}"))
                }
                closeAndCheck(c)
            } finally {
                c.close()
            }
        }
    }

    @Test
    fun `a second client is refused with InUseException at connect until the first closed`(): Unit = runBlocking {
        withDataRoot { root ->
            val first = client(root)
            try {
                withTimeout(15_000) { first.events.first { it.command == "sync_status" } }
                // The same data root (its lock file), and any other root: one backend per process.
                val same = assertThrows<InUseException> { client(root) }
                assertEquals(Status.ERR_IN_USE, same.status)
                withDataRoot { other -> assertThrows<InUseException> { client(other) } }
                withTimeout(15_000) { assertEquals("{}", first.request("echo")) }
                closeAndCheck(first)
            } finally {
                first.close()
            }
            // Closed, the first leaves the root and the process's backend free again.
            val again = client(root)
            try {
                withTimeout(15_000) {
                    again.events.first { it.command == "sync_status" }
                    assertEquals("{\"again\":true}", again.request("echo", "{\"again\":true}"))
                }
                closeAndCheck(again)
            } finally {
                again.close()
            }
        }
    }

    @Test
    fun `a failed start ends the client with the backend's status and no retry`(): Unit = runBlocking {
        withDataRoot { root ->
            // The double's GomuksStart returns the code in this file (11: account lookup failed).
            File(root, "fake_start_code").writeText("11")
            val c = client(root)
            try {
                val evs = withTimeout(15_000) { c.events.toList() }
                assertEquals(
                    listOf(EventKind.CONNECTING, EventKind.DISCONNECTED, EventKind.CLOSED),
                    evs.map { it.kind }, evs.toString(),
                )
                assertEquals(Status.ERR_BACKEND_ACCOUNT, evs[1].status)
                assertNull(evs[1].retryInMs)
                assertTrue(evs[1].text.contains("GomuksStart returned 11"), evs[1].text)
            } finally {
                c.close()
            }
        }
    }

    @Test
    fun `the library refuses an rwws client and a library that does not load`() {
        withDataRoot { root ->
            assertThrows<ConfigException> { client(root, inProcessOptions(root).copy(protocol = Protocol.RWWS)) }
            val missing = File(root, "no-such-libgomuksffi.so").path
            assertThrows<ConfigException> { client(root, TetherOptions(inProcess = InProcess(missing, root.path))) }
        }
    }

    @Test
    fun `toString shows the transport`() {
        val o = TetherOptions(inProcess = InProcess("/lib/libgomuksffi.so", "/data/gomuks"))
        assertTrue("inProcess=InProcess(library=/lib/libgomuksffi.so, dataRoot=/data/gomuks)" in o.toString(), o.toString())
        assertEquals(o, o.copy())
        assertEquals(o.hashCode(), o.copy().hashCode())
    }
}
