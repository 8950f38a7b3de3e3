package org.tether

import java.util.Random
import java.util.concurrent.CountDownLatch
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.TimeoutCancellationException
import kotlinx.coroutines.async
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.joinAll
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import kotlinx.coroutines.yield
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.fail
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows

/** Every request ends, close never hangs, nothing is left behind, events are bounded. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class LifecycleTest {
    private lateinit var backend: TestBackend
    private val pool = Executors.newFixedThreadPool(4).asCoroutineDispatcher()

    // Not children of the test's runBlocking: a coroutine stuck in a broken binding then fails
    // the test at its withTimeout instead of keeping runBlocking from returning.
    private val detached = CoroutineScope(SupervisorJob())

    @BeforeAll
    fun start() {
        backend = TestBackend.start()
    }

    @AfterAll
    fun stop() {
        backend.close()
        detached.cancel()
        pool.close()
    }

    @Test
    fun `close racing requests from several coroutines - every request ends, nothing is left`(): Unit = runBlocking {
        val seed = System.nanoTime()
        val rnd = Random(seed)
        val rounds = 400
        val ok = AtomicInteger()
        val typed = AtomicInteger()
        val started = System.nanoTime()
        repeat(rounds) { round ->
            val c = TetherClient(backend.url, testOptions())
            val (collector, connected) = drain(detached, c)
            // Half the rounds close while connecting, half once connected.
            if (round % 2 == 1) withTimeout(10_000) { connected.await() }
            val plans = List(4) { List(3) { rnd.nextInt(25) } }
            val callers = plans.map { plan ->
                detached.async(pool) {
                    for (sleepMs in plan) {
                        try {
                            c.request("sleep", "{\"ms\":$sleepMs}")
                            ok.incrementAndGet()
                        } catch (e: TetherException) {
                            typed.incrementAndGet()
                        }
                    }
                }
            }
            val pause = rnd.nextInt(if (round % 2 == 1) 30 else 6)
            if (pause > 0) delay(pause.toLong()) else yield()
            if (rnd.nextBoolean()) c.close() else c.closeAndWait(timeoutMs = 300)
            try {
                withTimeout(5_000) { callers.awaitAll() }
            } catch (e: TimeoutCancellationException) {
                fail<Unit>("round $round (seed $seed): a request did not end within 5 s after close")
            }
            assertEquals(0, c.pendingRequests(), "round $round (seed $seed): request entries left")
            withTimeout(5_000) { collector.join() }
            assertEquals(0, c.queuedEvents())
        }
        val secs = (System.nanoTime() - started) / 1e9
        println("close race: $rounds rounds in %.1f s, %d replies, %d typed failures (seed %d)".format(secs, ok.get(), typed.get(), seed))
        assertTrue(ok.get() > 0 && typed.get() > 0, "both outcomes should occur: ok=$ok typed=$typed")
    }

    @Test
    fun `collectors that close each other's client, or their own, do not deadlock`(): Unit = runBlocking {
        repeat(10) { round ->
            val a = TetherClient(backend.url, testOptions(pingIntervalMs = 50))
            val b = TetherClient(backend.url, testOptions(pingIntervalMs = 50))
            val own = TetherClient(backend.url, testOptions(pingIntervalMs = 50))
            val inCallback = CountDownLatch(2)
            val onDispatcher = AtomicInteger()
            // Unconfined: the collector runs on the client's dispatcher thread, inside the
            // library's callback, which is where closing another client used to deadlock.
            fun closeFrom(me: TetherClient, target: TetherClient, wait: Boolean) = detached.launch(Dispatchers.Unconfined) {
                me.events.first { ClientState.insideCallback() }
                onDispatcher.incrementAndGet()
                if (wait) {
                    inCallback.countDown()
                    // Both dispatchers are now inside a callback at the same time.
                    inCallback.await(5, TimeUnit.SECONDS)
                }
                target.close()
                // Still inside the callback, call into this client until the other side's close
                // lands: the free waiting for this callback must not also block these calls.
                // (A gomuks client refuses packets with StateException until it is freed.)
                val until = System.nanoTime() + 5_000_000_000
                while (System.nanoTime() < until &&
                    runCatching { me.sendPacket(byteArrayOf(0)) }.exceptionOrNull() !is ClientClosedException
                ) Thread.yield()
            }
            val jobs = listOf(closeFrom(a, b, true), closeFrom(b, a, true), closeFrom(own, own, false))
            try {
                withTimeout(10_000) {
                    jobs.joinAll()
                    for (c in listOf(a, b, own)) c.closedSignal.await()
                }
            } catch (e: TimeoutCancellationException) {
                fail<Unit>("round $round: cross-close did not finish (on dispatcher: ${onDispatcher.get()})")
            }
            assertEquals(3, onDispatcher.get())
            for (c in listOf(a, b, own)) {
                assertThrows<ClientClosedException> { c.sendPacket(byteArrayOf(0)) }
                c.close()
            }
        }
    }

    @Test
    fun `close and closeAndWait return within their timeout when the server does not answer`(): Unit = runBlocking {
        TestBackend.start().use { frozen ->
            val c = TetherClient(frozen.url, testOptions())
            val (_, connected) = drain(detached, c)
            withTimeout(10_000) { connected.await() }
            assertEquals("{}", c.request("echo"))
            frozen.freeze()
            val stuck = detached.async { runCatching { c.request("echo") } }
            // Connecting while the server is stopped: TCP is accepted, the upgrade never answered.
            val connecting = TetherClient(frozen.url, testOptions())
            val (connectingEvents, _) = drain(detached, connecting)
            val stuck2 = detached.async { runCatching { connecting.request("echo") } }
            val dropped = TetherClient(frozen.url, testOptions())
            for ((client, req) in listOf(c to stuck, connecting to stuck2)) {
                withTimeoutOrNull(5_000) { while (client.pendingRequests() < 1) delay(5) }
                    ?: fail<Unit>("request not booked; completed=${req.isCompleted} ${if (req.isCompleted) req.await() else ""}")
            }
            delay(100)

            var t = System.nanoTime()
            c.closeAndWait(timeoutMs = 700)
            var ms = (System.nanoTime() - t) / 1_000_000
            assertTrue(ms < 700 + 1_000, "closeAndWait(700) took $ms ms")
            val failure = withTimeout(2_000) { stuck.await() }.exceptionOrNull()
            assertTrue(failure is ClientClosedException, "request ended with $failure")

            t = System.nanoTime()
            connecting.closeAndWait(timeoutMs = 300)
            ms = (System.nanoTime() - t) / 1_000_000
            assertTrue(ms < 300 + 1_000, "closeAndWait(300) while connecting took $ms ms")
            val failure2 = withTimeout(2_000) { stuck2.await() }.exceptionOrNull()
            assertTrue(failure2 is ClientClosedException, "request ended with $failure2")
            withTimeout(2_000) { connectingEvents.join() }

            t = System.nanoTime()
            dropped.close()
            ms = (System.nanoTime() - t) / 1_000_000
            assertTrue(ms < 1_000, "close() took $ms ms")
            frozen.thaw()
        }
    }

    @Test
    fun `events carry their attempt, and closeAndWait after close says CLOSED did not arrive`(): Unit = runBlocking {
        TestBackend.start().use { b ->
            val c = TetherClient(b.url, testOptions())
            val connected = withTimeout(10_000) { c.events.first { it.kind == EventKind.CONNECTED } }
            assertEquals(1L, connected.attempt)
            c.close()
            // The free ended the wait, not CLOSED.
            assertEquals(false, c.closeAndWait(100))
        }
    }

    @Test
    fun `a client dropped without close is freed by the reaper`(): Unit = runBlocking {
        fun dropped(): Pair<kotlinx.coroutines.Deferred<Unit>, kotlinx.coroutines.flow.Flow<Event>> {
            val c = TetherClient(backend.url, testOptions())
            return c.closedSignal to c.events
        }
        val (freed, events) = dropped()
        withTimeout(20_000) {
            while (!freed.isCompleted) {
                System.gc()
                delay(50)
            }
            // Its flow ends too, after what was buffered.
            events.collect {}
        }
    }

    @Test
    fun `a request keeps its client from the reaper until the reply`(): Unit = runBlocking {
        // Nothing but the suspended request refers to the client (request ends in a tail call,
        // so not even its own frame does): collections during the wait must not free it.
        val reply = async(pool) { TetherClient(backend.url, testOptions()).request("sleep", "{\"ms\":1500}") }
        withTimeout(20_000) {
            while (!reply.isCompleted) {
                System.gc()
                delay(20)
            }
            reply.await() // throws ClientClosedException if the reaper freed the client
        }
    }

    @Test
    fun `a cancelled request leaves nothing behind`(): Unit = runBlocking {
        TetherClient(backend.url, testOptions()).use { c ->
            val (collector, connected) = drain(detached, c)
            withTimeout(10_000) { connected.await() }
            repeat(3) {
                val jobs = List(50) { launch(pool) { c.request("sleep", "{\"ms\":10000}") } }
                withTimeout(5_000) { while (c.pendingRequests() < 50) delay(5) }
                jobs.forEach { it.cancel() }
                jobs.joinAll()
                assertEquals(0, c.pendingRequests())
                // The cancelled replies are queued before this one's, so they have been seen.
                assertEquals("{\"n\":$it}", withTimeout(5_000) { c.request("echo", "{\"n\":$it}") })
                assertEquals(0, c.pendingRequests())
            }
            collector.cancel()
        }
    }

    @Test
    fun `a collector that stops reading holds at most the buffer, then gets every event in order`(): Unit = runBlocking {
        val capacity = 16
        val c = TetherClient(backend.url, testOptions(eventBufferCapacity = capacity, queueCapacity = 32))
        withTimeout(10_000) { c.events.first { it.command == "init_complete" } }
        // Nothing reads now; the backend keeps sending (no per-connection limit).
        val n = 3_000
        val newest = backend.push(n)
        var maxQueued = 0
        val until = System.nanoTime() + 1_500_000_000
        while (System.nanoTime() < until) {
            maxQueued = maxOf(maxQueued, c.queuedEvents())
            delay(10)
        }
        assertTrue(maxQueued <= capacity, "buffer held $maxQueued > $capacity events")
        assertEquals(capacity, maxQueued, "the buffer should have filled up")
        val ids = ArrayList<Long>()
        withTimeout(20_000) {
            c.events.first {
                if (it.kind == EventKind.MESSAGE && it.requestId < 0) ids.add(it.requestId)
                maxQueued = maxOf(maxQueued, c.queuedEvents())
                ids.size == n
            }
        }
        assertEquals(((newest + n - 1) downTo newest).toList(), ids)
        assertTrue(maxQueued <= capacity, "buffer held $maxQueued > $capacity events")

        // Not reading again, then closing: CLOSED still gets through and arrives last.
        backend.push(500)
        delay(300)
        val t = System.nanoTime()
        c.closeAndWait(timeoutMs = 5_000)
        val ms = (System.nanoTime() - t) / 1_000_000
        assertTrue(ms < 4_000, "closeAndWait waited $ms ms behind a collector that does not read")
        val rest = withTimeout(5_000) { c.events.first { it.kind == EventKind.CLOSED }; c.queuedEvents() }
        assertEquals(0, rest)
    }

    @Test
    fun `a client that stops for good behind a full buffer still closes`(): Unit = runBlocking {
        val c = TetherClient(backend.url, testOptions(eventBufferCapacity = 8, queueCapacity = 16))
        withTimeout(10_000) { c.events.first { it.command == "init_complete" } }
        val newest = backend.push(12)
        withTimeout(5_000) { while (c.queuedEvents() < 8) delay(5) }
        // A 403 at the next upgrade ends the client for good; nobody reads meanwhile.
        backend.control("/_testkit/reject_upgrades?n=100&code=403")
        backend.control("/_testkit/cut")
        val closed = try {
            withTimeoutOrNull(10_000) { c.closedSignal.await() }
        } finally {
            backend.control("/_testkit/reject_upgrades?n=0") // the backend is the class's
        }
        assertNotNull(closed, "no CLOSED within 10 s behind a full buffer")
        val rest = withTimeout(5_000) { c.events.toList() }
        assertEquals(EventKind.CLOSED, rest.last().kind)
        assertTrue(rest.any { it.kind == EventKind.MESSAGE && it.requestId == newest }, "an event was dropped")
        assertEquals(Status.ERR_FORBIDDEN, rest.last { it.kind == EventKind.DISCONNECTED }.status)
        c.close()
    }

    @Test
    fun `close works while the collector is not reading`(): Unit = runBlocking {
        val c = TetherClient(backend.url, testOptions(eventBufferCapacity = 4, queueCapacity = 8))
        withTimeout(10_000) { c.events.first { it.command == "init_complete" } }
        backend.push(1_000)
        withTimeout(5_000) { while (c.queuedEvents() < 4) delay(5) }
        val req = detached.async(pool) { runCatching { c.request("echo") } }
        delay(100)
        val t = System.nanoTime()
        c.close()
        val ms = (System.nanoTime() - t) / 1_000_000
        assertTrue(ms < 1_000, "close() took $ms ms with the dispatcher waiting for room")
        assertTrue(withTimeout(2_000) { req.await() }.exceptionOrNull() is ClientClosedException)
        // What was buffered is still readable, then the flow ends.
        var left = 0
        withTimeout(2_000) { c.events.collect { left++ } }
        assertEquals(4, left)
    }
}
