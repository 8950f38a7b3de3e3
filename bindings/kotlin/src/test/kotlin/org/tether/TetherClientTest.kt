package org.tether

import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.takeWhile
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows

/** Against a real `tether-backend` process (gomuks and rwws on one port). */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class TetherClientTest {
    private lateinit var backend: Process
    private lateinit var url: String
    private val http = HttpClient.newHttpClient()

    @BeforeAll
    fun start() {
        val bin = System.getProperty("tether.backend")
        backend = ProcessBuilder(bin, "--conn-queue-limit", "0").redirectErrorStream(false).start()
        val line = BufferedReader(InputStreamReader(backend.inputStream)).readLine()
        val addr = Regex("127\\.0\\.0\\.1:\\d+").find(line ?: "")?.value ?: error("backend said: $line")
        url = "http://$addr"
    }

    @AfterAll
    fun stop() {
        backend.destroyForcibly()
    }

    private fun control(path: String, method: String = "POST"): String {
        val req = HttpRequest.newBuilder(URI("$url$path")).method(method, HttpRequest.BodyPublishers.noBody()).build()
        val r = http.send(req, HttpResponse.BodyHandlers.ofString())
        assertEquals(200, r.statusCode(), r.body())
        return r.body()
    }

    private fun push(n: Int): Long =
        Regex("-?\\d+").find(control("/_testkit/push?n=$n").substringAfter("newest_id"))!!.value.toLong()

    private fun gomuks(pingMs: Int? = null, resume: ResumeState? = null) = TetherClient(
        url,
        TetherOptions(
            username = "tether", password = "tether-password", pingIntervalMs = pingMs,
            reconnectBackoffMs = 20..200, resume = resume,
        ),
    )

    @Test
    fun `a server error text with a malformed unicode escape is kept as it came`() {
        assertEquals("nope \u00e9", TetherClient.jsonString("\"nope \\u00e9\""))
        assertEquals("bad \\u12", TetherClient.jsonString("\"bad \\u12\""))
        assertEquals("bad \\uzzzz!", TetherClient.jsonString("\"bad \\uzzzz!\""))
        assertEquals("bad \\u-041", TetherClient.jsonString("\"bad \\u-041\""))
    }

    @Test
    fun `a string with a lone surrogate is refused, not sent with a question mark`() {
        val e = assertThrows<InvalidArgumentException> { TetherNative.cstr("room\ud800") }
        assertEquals(Status.ERR_INVALID_UTF8, e.status)
        assertThrows<InvalidArgumentException> { TetherNative.cstr("\udc00x") }
        // A pair is one character, and passes.
        assertEquals("a\ud83d\ude00\u0000", String(TetherNative.cstr("a\ud83d\ude00"), Charsets.UTF_8))
    }

    @Test
    fun `request and response, errors map to typed exceptions`(): Unit = runBlocking {
        gomuks().use { c ->
            withTimeout(20_000) {
                assertEquals("{\"a\":1}", c.request("echo", "{\"a\":1}"))
                val e = assertThrows<RemoteException> { runBlocking { c.request("fail", "{\"message\":\"nope\"}") } }
                assertEquals("nope", e.message)
                // The library's own reason comes as a JSON string too, and reads as text.
                val t = assertThrows<RequestTimeoutException> {
                    runBlocking { c.request("sleep", "{\"ms\":5000}", timeoutMs = 200) }
                }
                assertTrue(t.message.orEmpty().let { it.isNotEmpty() && !it.startsWith("\"") }, t.message)
                assertThrows<InvalidArgumentException> { runBlocking { c.request("echo", "{not json") } }
                // A NUL would cut the command short in the library: refused, nothing sent.
                assertThrows<InvalidArgumentException> { runBlocking { c.request("echo\u0000fail", "{}") } }
            }
        }
    }

    @Test
    fun `pings acknowledge the newest event (gomuks spec 7_4)`(): Unit = runBlocking {
        gomuks(pingMs = 100).use { c ->
            withTimeout(20_000) {
                c.events.first { it.command == "init_complete" }
                val newest = push(5)
                val pong = c.events.first { it.kind == EventKind.PONG && it.ackedId == newest }
                assertTrue(pong.rttMicros!! >= 0)
                assertTrue(control("/_testkit/stats", "GET").contains("\"last_ack\":$newest"))
            }
        }
    }

    @Test
    fun `resume after a cut delivers every event once and in order (spec 16)`(): Unit = runBlocking {
        gomuks().use { c ->
            withTimeout(20_000) {
                c.events.first { it.command == "init_complete" }
                val first = push(10)
                val collected = async {
                    val ids = mutableListOf<Long>()
                    var reconnects = 0
                    c.events.takeWhile { ids.lastOrNull() != first - 20 }.collect {
                        if (it.kind == EventKind.MESSAGE && it.requestId < 0) ids.add(it.requestId)
                        if (it.kind == EventKind.CONNECTED && it.resumeAttempted) reconnects++
                    }
                    ids to reconnects
                }
                control("/_testkit/cut")
                push(20)
                val (ids, resumed) = collected.await()
                // The 10 events before the cut and the 20 after it, each once, in order.
                assertEquals(((first + 9) downTo (first - 20)).toList(), ids)
                assertEquals(1, resumed)
            }
            // The resume point can be carried to a new client.
            val state = c.resumeState()
            assertTrue(state.runId.isNotEmpty() && state.lastReceivedEvent < 0)
        }
    }

    @Test
    fun `the token from the login authorizes a later client (gomuks spec 1_2)`(): Unit = runBlocking {
        val token = gomuks().use { c ->
            withTimeout(20_000) { c.events.first { it.kind == EventKind.CONNECTED } }
            c.authToken()
        }
        assertTrue(!token.isNullOrEmpty())
        TetherClient(url, TetherOptions(token = token)).use { c ->
            assertEquals(token, c.authToken())
            withTimeout(20_000) { assertEquals("{\"t\":1}", c.request("echo", "{\"t\":1}")) }
        }
    }

    @Test
    fun `rwws handshake and pong with server time`(): Unit = runBlocking {
        TetherClient(url, TetherOptions(protocol = Protocol.RWWS, token = "dGV0aGVyLXRlc3Qta2V5")).use { c ->
            withTimeout(20_000) {
                c.events.first { it.kind == EventKind.CONNECTED }
                val pong = c.events.first { it.kind == EventKind.PONG }
                assertTrue(pong.serverTimeMs > 1_700_000_000_000)
                assertThrows<StateException> { runBlocking { c.request("echo") } }
            }
        }
    }

    /** rwws-binary.md §2.8: a Settings packet is `01`, the (id, value) pairs, then `ff`. */
    @Test
    fun `rwws packets and settings reach the server as the spec encodes them`(): Unit = runBlocking {
        TetherClient(url, TetherOptions(protocol = Protocol.RWWS, token = "dGV0aGVyLXRlc3Qta2V5")).use { c ->
            withTimeout(20_000) { c.events.first { it.kind == EventKind.CONNECTED } }
            c.sendPacket(byteArrayOf(0x42, 1, 2))
            c.sendSettings(listOf(1 to byteArrayOf(5, 6), 7 to ByteArray(0)))
            val until = System.nanoTime() + 10_000_000_000
            var stats = ""
            while (System.nanoTime() < until) {
                stats = control("/_testkit/rwws/stats", "GET")
                if ("420102" in stats && "0101050607ff" in stats) break
                Thread.sleep(20)
            }
            assertTrue("420102" in stats && "0101050607ff" in stats, stats)
            for (bad in listOf(0xFF, 0, 0x101, -1)) {
                assertThrows<InvalidArgumentException> { c.sendSettings(listOf(bad to ByteArray(0))) }
            }
        }
        gomuks().use { g -> assertThrows<StateException> { g.sendSettings(listOf(1 to ByteArray(0))) } }
    }

    /** rwws-binary.md §2.8: packets waiting while paused come back as UNSENT on close, in order, before CLOSED. */
    @Test
    fun `a close hands back the rwws packets never written`(): Unit = runBlocking {
        TetherClient(url, TetherOptions(protocol = Protocol.RWWS, token = "dGV0aGVyLXRlc3Qta2V5")).use { c ->
            withTimeout(20_000) {
                c.events.first { it.kind == EventKind.CONNECTED }
                c.pause()
                c.events.first { it.kind == EventKind.DISCONNECTED }
                c.sendPacket(byteArrayOf(0x42, 1))
                c.sendSettings(listOf(5 to byteArrayOf(7)))
                assertTrue(c.closeAndWait())
                val evs = c.events.toList()
                val unsent = evs.filter { it.kind == EventKind.UNSENT }
                assertEquals(listOf("4201", "010507ff"), unsent.map { e -> e.data.joinToString("") { "%02x".format(it) } })
                assertTrue(unsent.all { it.status == Status.ERR_CLIENT_CLOSED })
                assertEquals(EventKind.CLOSED, evs.last().kind)
            }
        }
    }

    @Test
    fun `a rejected rwws key stops with an auth status and closes`(): Unit = runBlocking {
        TetherClient(url, TetherOptions(protocol = Protocol.RWWS, token = "d3Jvbmc=")).use { c ->
            withTimeout(20_000) {
                val evs = c.events.toList()
                val d = evs.first { it.kind == EventKind.DISCONNECTED }
                assertEquals(Status.ERR_UNAUTHORIZED, d.status)
                assertEquals(3001, d.closeCode)
                assertEquals(null, d.retryInMs)
                assertEquals(EventKind.CLOSED, evs.last().kind)
            }
        }
    }

    @Test
    fun `config errors and use after close`() {
        assertThrows<ConfigException> { TetherClient("ftp://nope") }
        val c = gomuks()
        c.close()
        c.close()
        assertThrows<ClientClosedException> { runBlocking { c.request("echo") } }
    }

    @Test
    fun `every header status has a Kotlin status`() {
        val header = File(System.getProperty("tether.header")).readText()
        val defs = Regex("#define TETHER_(\\w+) \\(?(-?\\d+)\\)?").findAll(header)
            .map { it.groupValues[1] to it.groupValues[2].toInt() }
            .filter { (name, _) -> listOf("EVENT_", "RESUME_", "PROTOCOL_", "VERSION_", "STATE_", "LOG_").none { name.startsWith(it) } }
            .toList()
        assertEquals(Status.entries.size - 1, defs.size, "statuses: $defs")
        for ((name, code) in defs) {
            assertEquals(Status.valueOf(name).code, code, name)
            assertEquals(Status.valueOf(name), TetherException.of(code, "x").status)
        }
    }

    @Test
    fun `a status this binding does not know keeps its code`() {
        // A newer library's code: UNKNOWN, but the number survives, in the text too.
        val e = TetherException.of(-99, "")
        assertEquals(Status.UNKNOWN, e.status)
        assertEquals(-99, e.code)
        assertEquals("unknown status -99", e.message)
        assertEquals(Status.ERR_REMOTE.code, TetherException.of(Status.ERR_REMOTE.code, "x").code)
        // A failed reply with such a status throws with its code, not UNKNOWN's placeholder.
        val ev = Event(
            kind = EventKind.RESPONSE, requestId = 7, status = Status.of(-99), command = "",
            data = "why".toByteArray(), closeCode = 0, retryInMs = null, rttMicros = null,
            ackedId = 0, serverTimeMs = 0, resumeAttempted = false, statusCode = -99,
        )
        val thrown = assertThrows<TetherException> { replyText(ev) }
        assertEquals(-99, thrown.code)
        assertEquals("why", thrown.message)
    }

    @Test
    fun `the example runs against a cutting backend that restarts once`() {
        val p = ProcessBuilder(System.getProperty("tether.backend"), "--event-rate", "20", "--cut-after-events", "40").start()
        try {
            val addr = Regex("127\\.0\\.0\\.1:\\d+").find(BufferedReader(InputStreamReader(p.inputStream)).readLine())!!.value
            val lines = mutableListOf<String>()
            // 2 s in, the backend restarts: the example must report RESUMED RESET, no gap.
            val restarted = java.util.concurrent.atomic.AtomicInteger()
            val restart = Thread {
                Thread.sleep(2_000)
                val c = java.net.URL("http://$addr/_testkit/restart").openConnection() as java.net.HttpURLConnection
                c.requestMethod = "POST"
                restarted.set(c.responseCode)
            }.apply { start() }
            val code = org.tether.examples.pingAckResume("http://$addr", 5) { synchronized(lines) { lines.add(it) } }
            restart.join()
            assertEquals(200, restarted.get())
            assertEquals(0, code, lines.joinToString("\n"))
            assertTrue(lines.any { it.contains("RESUMED RESET") }, lines.joinToString("\n"))
            assertTrue(lines.any { it.startsWith("pong:") && !it.endsWith("event 0") }, lines.joinToString("\n"))
            assertTrue(lines.any { it.contains("replayed") }, lines.joinToString("\n"))
            assertTrue(lines.any { it.startsWith("log: INFO") && it.contains("resume succeeded") }, lines.joinToString("\n"))
            assertTrue(lines.any { Regex("stats: \\d+ connections, [1-9]\\d* resumed").containsMatchIn(it) }, lines.joinToString("\n"))
        } finally {
            p.destroyForcibly()
        }
    }
}
