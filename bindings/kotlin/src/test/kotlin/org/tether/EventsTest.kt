package org.tether

import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.takeWhile
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** RESUMED and TOKEN_RENEWED against a real `tether-backend` (gomuks spec 7.2 and 1.2). */
class EventsTest {
    /** Connects, takes a few buffered events (so a reconnect resumes), runs [disrupt], and
     * returns the events from the resuming CONNECTED up to init_complete. */
    private fun resumeAfter(b: TestBackend, disrupt: () -> Unit): List<Event> = runBlocking {
        TetherClient(b.url, testOptions()).use { c ->
            withTimeout(20_000) {
                c.events.first { it.command == "init_complete" }
                val newest = b.push(2)
                c.events.first { it.requestId == newest }
                disrupt()
                val conn = c.events.first { it.kind == EventKind.CONNECTED }
                assertTrue(conn.resumeAttempted)
                val seen = mutableListOf<Event>()
                c.events.takeWhile { seen.lastOrNull()?.command != "init_complete" }.collect { seen.add(it) }
                seen
            }
        }
    }

    private fun outcomes(evs: List<Event>) = evs.filter { it.kind == EventKind.RESUMED }.map { it.resumeOutcome }

    @Test
    fun `a resume after a cut reports SUCCEEDED before init_complete (gomuks spec 7_2)`() {
        TestBackend.start().use { b ->
            val evs = resumeAfter(b) { b.control("/_testkit/cut?push=3") }
            assertEquals(listOf(ResumeOutcome.SUCCEEDED), outcomes(evs))
            assertEquals(EventKind.RESUMED, evs[evs.size - 2].kind)
            assertTrue(evs.filter { it.kind != EventKind.RESUMED }.all { it.resumeOutcome == null })
        }
    }

    @Test
    fun `a backend restart reports RESET before the new run_id (gomuks spec 7_2)`() {
        TestBackend.start().use { b ->
            val evs = resumeAfter(b) { b.control("/_testkit/restart") }
            assertEquals(listOf(ResumeOutcome.RESET), outcomes(evs))
            val at = evs.indexOfFirst { it.kind == EventKind.RESUMED }
            assertEquals("run_id", evs[at + 1].command)
        }
    }

    @Test
    fun `a buffer overrun reports RESET (gomuks spec 7_2)`() {
        TestBackend.start("--buffer-size", "5").use { b ->
            val evs = resumeAfter(b) {
                b.control("/_testkit/reject_upgrades?n=1000000")
                b.control("/_testkit/cut?push=20")
                Thread.sleep(300)
                b.control("/_testkit/reject_upgrades?n=0")
            }
            assertEquals(listOf(ResumeOutcome.RESET), outcomes(evs))
        }
    }

    @Test
    fun `the resume point and token read after closeAndWait are the client's last (gomuks spec 7_2)`(): Unit = runBlocking {
        TestBackend.start().use { b ->
            val c = TetherClient(b.url, testOptions())
            val token: String?
            val taken: Long
            val newest: Long
            withTimeout(20_000) {
                c.events.first { it.command == "init_complete" }
                token = c.authToken()
                taken = b.push(1)
                c.events.first { it.requestId == taken }
                val before = c.stats().eventsReceived
                newest = b.push(5)
                // Not collected: read by the library and held by the binding, never taken.
                while (c.stats().eventsReceived < before + 5) delay(5)
            }
            assertTrue(c.closeAndWait(timeoutMs = 10_000, keepResume = true), "CLOSED in time")
            val state = c.resumeState()
            assertTrue(state.runId.isNotEmpty())
            assertEquals(taken, state.lastReceivedEvent, "the point of what the app took")
            assertEquals(token, c.authToken())
            assertThrows<ClientClosedException> { runBlocking { c.request("echo", "{}") } }
            // A later client resumes from it and receives the events the app never took.
            TetherClient(b.url, testOptions().copy(resume = state)).use { d ->
                val seen = mutableListOf<Event>()
                withTimeout(20_000) {
                    d.events.takeWhile { seen.lastOrNull()?.command != "init_complete" }.collect { seen.add(it) }
                }
                assertEquals(listOf(ResumeOutcome.SUCCEEDED), outcomes(seen))
                val replayed = seen.filter { it.kind == EventKind.MESSAGE && it.requestId < 0 }.map { it.requestId }
                assertEquals((taken - 1 downTo newest).toList(), replayed)
            }
        }
    }

    @Test
    fun `the resume point leaves out the events held for the app (gomuks spec 7_2)`() {
        fun ev(kind: EventKind, id: Long = 0, command: String = "x", resumed: Boolean = false, outcome: ResumeOutcome? = null) =
            Event(kind, id, Status.OK, command, ByteArray(0), 0, null, null, 0, 0, resumed, 0, outcome)
        fun msg(id: Long, command: String = "x") = ev(EventKind.MESSAGE, id, command)
        val s = ResumeState("r", -9)
        assertEquals(s, s.before(emptyList()))
        assertEquals(ResumeState("r", -6), s.before(listOf(msg(-7), msg(-8), msg(-9))))
        assertEquals(ResumeState("r", 0), ResumeState("r", 0).before(listOf(msg(-1))))
        // A resume that succeeded continues what the app saw.
        val resumed = listOf(
            msg(-7), ev(EventKind.CONNECTED, resumed = true), msg(0, "run_id"), msg(-8),
            ev(EventKind.RESUMED, outcome = ResumeOutcome.SUCCEEDED), msg(0, "init_complete"), msg(-9),
        )
        assertEquals(ResumeState("r", -6), s.before(resumed))
        // Anything else starts afresh.
        assertEquals(ResumeState("r", 0), s.before(listOf(msg(-7), ev(EventKind.CONNECTED))))
        val reset = ev(EventKind.RESUMED, outcome = ResumeOutcome.RESET)
        assertEquals(ResumeState("r", 0), s.before(listOf(msg(-7), reset, msg(-9))))
        // The state of a start (or a catchup, or the room list after a login) is never replayed.
        assertEquals(ResumeState("r", 0), s.before(listOf(msg(0, "sync_complete"), msg(0, "init_complete"), msg(-9))))
        // Once the app has it, the rest is replayed.
        assertEquals(ResumeState("r", -7), s.before(listOf(msg(-8), msg(0, "init_complete"), msg(-9))))
    }

    @Test
    fun `a short-lived token is renewed while connected and announced (gomuks spec 1_2)`(): Unit = runBlocking {
        TestBackend.start("--token-lifetime-ms", "2000").use { b ->
            TetherClient(b.url, testOptions()).use { c ->
                withTimeout(20_000) {
                    c.events.first { it.command == "init_complete" }
                    val before = c.authToken()
                    val renewed = c.events.first { it.kind == EventKind.TOKEN_RENEWED }
                    assertEquals(0, renewed.data.size)
                    assertNull(renewed.resumeOutcome)
                    assertNotEquals(before, c.authToken())
                    assertEquals(1L, b.stat("total_connections"))
                    assertTrue((b.stat("token_renewals") ?: 0) >= 1)
                }
            }
        }
    }

    /** Runs [body] on a client that has taken init_complete, after three events were pushed
     * behind it ([body] gets the newest id: the three are newest + 2, newest + 1, newest). */
    private fun afterThreeEvents(body: suspend kotlinx.coroutines.CoroutineScope.(TetherClient, Long) -> Unit): Unit = runBlocking {
        TestBackend.start().use { b ->
            TetherClient(b.url, testOptions()).use { c ->
                withTimeout(20_000) {
                    c.events.first { it.command == "init_complete" }
                    body(c, b.push(3))
                }
            }
        }
    }

    @Test
    fun `an event whose collector is cancelled while handling it goes to the next collector, once (gomuks spec 7_1)`() =
        afterThreeEvents { c, newest ->
            val got = CompletableDeferred<Event>()
            // A lifecycle-bound collector, stopped while it handles an event.
            val job = launch { c.events.collect { got.complete(it); awaitCancellation() } }
            val held = got.await()
            job.cancelAndJoin()
            assertEquals(newest + 2, held.requestId)
            // first() ends the flow with a CancellationException of its own, its job
            // still active: the event it took is handed over, not put back.
            assertEquals(newest + 2, c.events.first().requestId)
            assertEquals(newest + 1, c.events.first().requestId)
            val rest = c.events.first { it.kind == EventKind.MESSAGE }
            assertEquals(newest, rest.requestId)
            assertEquals(0L, c.stats().queuedEvents)
        }

    @Test
    fun `a collector started while a cancelled one unwinds gets the events in order (gomuks spec 7_1)`() =
        afterThreeEvents { c, newest ->
            val got = CompletableDeferred<Event>()
            val release = java.util.concurrent.CountDownLatch(1)
            val old = launch {
                c.events.collect {
                    got.complete(it)
                    // Blocking work that does not see the cancellation until it is done: it
                    // lasts until the test has cancelled and read, however slow the machine.
                    kotlinx.coroutines.withContext(kotlinx.coroutines.Dispatchers.IO) {
                        release.await(30, java.util.concurrent.TimeUnit.SECONDS)
                    }
                }
            }
            val held = got.await()
            while (c.queuedEvents() < 2) delay(5)
            // The lifecycle's stop and start, without waiting for the old collector.
            old.cancel()
            // Read before the old collector has put its event back: the point stays before it.
            val point = c.resumeState()
            // Started (up to its first wait) before the old collector lets go.
            val taking = async(start = kotlinx.coroutines.CoroutineStart.UNDISPATCHED) {
                c.events.take(3).toList().map { it.requestId }
            }
            release.countDown()
            val seen = taking.await()
            assertEquals(listOf(newest + 2, newest + 1, newest), seen)
            assertEquals(newest + 2, held.requestId)
            assertTrue(point.lastReceivedEvent > held.requestId, "$point counts ${held.requestId}")
        }

    @Test
    fun `a collector inside another's handler takes the next events`() = afterThreeEvents { c, newest ->
        val seen = c.events.take(1).map { outer ->
            // Another coroutine, as withContext makes one: it must not wait for the outer one.
            outer.requestId to kotlinx.coroutines.withContext(kotlinx.coroutines.Dispatchers.IO) {
                c.events.first { it.requestId == newest }.requestId
            }
        }.toList()
        assertEquals(listOf(newest + 2 to newest), seen)
    }

    @Test
    fun `a request awaited inside the collector behind a full buffer ends after its timeout (gomuks spec 3)`(): Unit = runBlocking {
        TestBackend.start().use { b ->
            TetherClient(b.url, testOptions(eventBufferCapacity = 2)).use { c ->
                withTimeout(20_000) {
                    var took = -1L
                    var newest = 0L
                    val e = assertThrows<RequestTimeoutException> {
                        c.events.collect { ev ->
                            if (ev.command == "init_complete") {
                                val before = c.stats().eventsReceived
                                newest = b.push(20)
                                while (c.stats().eventsReceived < before + 3) delay(5)
                                val t0 = System.nanoTime()
                                try {
                                    c.request("echo", "{}", timeoutMs = 500)
                                } finally {
                                    took = (System.nanoTime() - t0) / 1_000_000
                                }
                            }
                        }
                    }
                    assertTrue(took in 500..(500 + ClientState.REPLY_GRACE_MS + 1000), "ended after $took ms: ${e.message}")
                    assertEquals(0, c.pendingRequests())
                    // The client goes on: the events behind come, then a request is answered.
                    c.events.first { it.requestId == newest }
                    assertEquals("{}", c.request("echo", "{}"))
                }
            }
        }
    }

    @Test
    fun `event kinds and resume outcomes match the header`() {
        val header = java.io.File(System.getProperty("tether.header")).readText()
        fun defs(prefix: String) = Regex("#define TETHER_$prefix(\\w+) (\\d+)").findAll(header)
            .associate { it.groupValues[1] to it.groupValues[2].toInt() }
        assertEquals(defs("EVENT_"), EventKind.entries.associate { it.name to it.code })
        assertEquals(defs("RESUME_"), ResumeOutcome.entries.associate { it.name to it.code })
    }
}
