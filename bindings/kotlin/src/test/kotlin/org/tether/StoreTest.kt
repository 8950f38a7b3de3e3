package org.tether

import java.net.URLEncoder
import java.util.Collections
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Job
import kotlinx.coroutines.async
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/**
 * The gomuks store ([Store]) against a real `tether-backend` with its room model
 * (`--rooms 4 --history 30`): !r0 a DM with alice, !r1 and !r2 in the space, !r2 with 3
 * unread, !r3 favourite, and an invite. Each test has a backend of its own.
 */
class StoreTest {
    private val r1 = "!r1:example.org"
    private val r2 = "!r2:example.org"

    /** A client with a store, its events collected into [events] from the start. */
    private class Session(b: TestBackend, scope: CoroutineScope, opts: StoreOptions = StoreOptions()) : AutoCloseable {
        val client = TetherClient(b.url, testOptions().copy(store = opts))
        val store: Store = client.store!!
        val events: MutableList<Event> = Collections.synchronizedList(mutableListOf())
        val initComplete = CompletableDeferred<Unit>()
        private val job: Job = scope.launch {
            client.events.collect {
                events.add(it)
                if (it.command == "init_complete") initComplete.complete(Unit)
            }
        }

        /** Collects [Store.changes] from now on (subscribed before this returns). */
        fun changes(scope: CoroutineScope): Pair<MutableList<String>, Job> {
            val seen: MutableList<String> = Collections.synchronizedList(mutableListOf())
            val j = scope.launch(start = CoroutineStart.UNDISPATCHED) { store.changes.collect { seen.add(it) } }
            return seen to j
        }

        fun snapshot(): List<Event> = synchronized(events) { events.toList() }

        override fun close() {
            store.close()
            client.close()
            job.cancel()
        }
    }

    private fun withSession(opts: StoreOptions = StoreOptions(), f: suspend CoroutineScope.(TestBackend, Session) -> Unit) =
        runBlocking {
            TestBackend.start("--rooms", "4", "--history", "30").use { b ->
                Session(b, this, opts).use { s ->
                    withTimeout(30_000) {
                        s.initComplete.await()
                        f(b, s)
                    }
                }
            }
        }

    private fun remoteMessage(b: TestBackend, room: String, body: String) {
        val q = listOf("room" to room, "sender" to "@bob:example.org", "body" to body)
            .joinToString("&") { (k, v) -> k + "=" + URLEncoder.encode(v, "UTF-8") }
        b.control("/_testkit/rooms/message?$q")
    }

    /** Waits (polling the store) until [cond] holds. */
    private suspend fun until(what: String, cond: () -> Boolean) {
        val deadline = System.nanoTime() + 10_000_000_000L
        while (!cond()) {
            check(System.nanoTime() < deadline) { "timed out waiting for $what" }
            delay(5)
        }
    }

    private fun ids(list: String): List<String> =
        TestJson.parse(list).at<List<Any?>>("rooms").map { it.at<String>("room_id") }

    private fun bodies(items: List<Any?>): List<String?> = items.map { it.at<String?>("event", "content", "body") }

    @Test
    fun `after the initial sync the room list has the invite on top, then the favourite Room 3`() = withSession { _, s ->
        val list = TestJson.parse(s.store.roomList())
        val rooms = list.at<List<Any?>>("rooms")
        assertEquals(listOf("!invite:example.org", "!r3:example.org", r2, r1, "!r0:example.org"), rooms.map { it.at<String>("room_id") })
        assertEquals(true, rooms[0].at<Boolean>("invite"))
        assertEquals("Room 3", rooms[1].at<String>("name"))
        assertEquals(true, rooms[1].at<Boolean>("favourite"))
        assertEquals(3L, rooms[2].at<Long>("unread_messages"))
        assertEquals("@alice:example.org", rooms[4].at<String>("dm_user_id"))
        assertEquals(5L, list.at<Long>("total"))
        // Arguments reach the library: the space's children, a name query, no invites, a limit.
        assertEquals(listOf(r2, r1), ids(s.store.roomList(space = "!space:example.org")))
        assertEquals(listOf("!r3:example.org"), ids(s.store.roomList(query = "room 3")))
        assertEquals(listOf("!r3:example.org", r2), ids(s.store.roomList(invites = false, limit = 2)))
        assertEquals(listOf("!r0:example.org", r1, r2, "!r3:example.org"),
            ids(s.store.roomList(order = "name", favouritesFirst = false, invites = false)))
        // The other reads answer with their documents.
        assertEquals("Room 2", TestJson.parse(s.store.room(r2)!!).at<String>("meta", "name"))
        assertNull(s.store.room("!nope:example.org"))
        assertTrue(TestJson.parse(s.store.spaces()) != null)
        assertTrue(TestJson.parse(s.store.session()).at<Long>("gen") > 0)
        TestJson.parse(s.store.accountData())
        TestJson.parse(s.store.typing(r2))
        TestJson.parse(s.store.receipts(r2))
        TestJson.parse(s.store.state(r2)!!)
        TestJson.parse(s.store.members(r2))
        // The initial sync carried STORE events in the client's stream.
        assertTrue(s.snapshot().any { it.kind == EventKind.STORE })
    }

    @Test
    fun `STORE events reach the changes collectors and stay in the event stream, right after their MESSAGE`() =
        withSession { b, s ->
            val (seen, job) = s.changes(this)
            val from = s.snapshot().size
            remoteMessage(b, r1, "hello from bob")
            fun at(evs: List<Event>) = evs.indexOfFirst { it.kind == EventKind.MESSAGE && it.text.contains("hello from bob") }
            until("the message and its STORE event") { s.snapshot().drop(from).let { at(it) in 0 until it.size - 1 } }
            until("the message's change set") { seen.any { it.contains(r1) } }
            val evs = s.snapshot().drop(from)
            val store = evs[at(evs) + 1]
            assertEquals(EventKind.STORE, store.kind)
            assertEquals("", store.command)
            assertEquals(0L, store.requestId)
            val change = TestJson.parse(store.text)
            assertEquals("sync_complete", change.at<String>("cause", "command"))
            assertEquals(true, change.at<Map<String, Any?>>("rooms").containsKey(r1))
            // The same change sets, in the same order, in both (the event stream may also hold
            // one or two from before the collector subscribed).
            val inStream = evs.filter { it.kind == EventKind.STORE }.map { it.text }
            assertEquals(inStream.takeLast(seen.size), seen.toList())
            assertEquals(store.text, seen.last())
            // The read after the event sees it.
            assertEquals("hello from bob", TestJson.parse(s.store.room(r1)!!).at<String>("entry", "preview", "content", "body"))
            job.cancel()
        }

    @Test
    fun `paginate fills the timeline and its reply comes after its change set`() = withSession { _, s ->
        assertEquals(0, TestJson.parse(s.store.timeline(r2)).at<List<Any?>>("events").size)
        val (seen, job) = s.changes(this)
        // The first page fills the empty timeline, the second goes before it.
        assertEquals(10, TestJson.parse(s.store.paginate(r2, 10)).at<List<Any?>>("events").size)
        assertEquals(10, TestJson.parse(s.store.timeline(r2)).at<List<Any?>>("events").size)
        val reply = TestJson.parse(s.store.paginate(r2))
        assertEquals(20, reply.at<List<Any?>>("events").size)
        // Applied before the reply: the read right after sees every row.
        val tl = TestJson.parse(s.store.timeline(r2, limit = 100))
        val events = tl.at<List<Any?>>("events")
        assertEquals(30, events.size)
        assertEquals("Message 0 in Room 2", bodies(events).first())
        assertEquals("Message 29 in Room 2", bodies(events).last())
        assertEquals(false, tl.at<Boolean>("has_more"))
        // An older page by `before`.
        val older = TestJson.parse(s.store.timeline(r2, before = events[10].at<Long>("timeline_rowid"), limit = 5))
        assertEquals((5..9).map { "Message $it in Room 2" }, bodies(older.at("events")))
        // Closing the store right away ends the changes: the pagination's change set was
        // handed over before the reply, or it would not be there.
        s.store.close()
        job.join()
        val pages = seen.map { TestJson.parse(it) }.filter { it.at<Long?>("cause", "request_id") != null }
        assertEquals(2, pages.size, seen.toString())
        // History is never `appended`: the first page into an empty timeline is `prepended` too.
        assertEquals(10L, pages[0].at<Long?>("rooms", r2, "prepended"), seen.toString())
        assertEquals(20L, pages[1].at<Long?>("rooms", r2, "prepended"), seen.toString())
    }

    @Test
    fun `a second pagination of a room while one runs is refused`() = withSession { b, s ->
        b.freeze()
        val first = try {
            val first = async(start = CoroutineStart.UNDISPATCHED) { s.store.paginate(r2, 5) }
            assertThrows<InUseException> { runBlocking { s.store.paginate(r2, 5) } }
            assertTrue(TestJson.parse(s.store.timeline(r2)).at<Boolean>("paginating"))
            first
        } finally {
            b.thaw()
        }
        assertEquals(5, TestJson.parse(first.await()).at<List<Any?>>("events").size)
        assertEquals(5, TestJson.parse(s.store.paginate(r2, 5)).at<List<Any?>>("events").size)
        assertEquals(10, TestJson.parse(s.store.timeline(r2)).at<List<Any?>>("events").size)
    }

    @Test
    fun `the store's own request timeout bounds its actions`() =
        withSession(StoreOptions(requestTimeoutMs = 300)) { b, s ->
            b.freeze()
            try {
                val t0 = System.nanoTime()
                assertThrows<RequestTimeoutException> { runBlocking { s.store.paginate(r2, 5) } }
                assertTrue(System.nanoTime() - t0 < 5_000_000_000L)
            } finally {
                b.thaw()
            }
            // The timed-out pagination no longer holds the room.
            assertEquals(5, TestJson.parse(s.store.paginate(r2, 5)).at<List<Any?>>("events").size)
        }

    @Test
    fun `sendMessage shows a pending echo, then the synced event`() = withSession { _, s ->
        val (seen, job) = s.changes(this)
        val echo = TestJson.parse(s.store.sendMessage(r1, "hello store"))
        val echoId = echo.at<String>("event_id")
        assertTrue(echoId.startsWith("~"), echoId)
        // The send's change set (cause.request_id) reported the pending tail, before the reply.
        // It is in the collector's channel by then, but the collector runs on this test's
        // thread: a reply that came before sendMessage suspended did not let it run yet.
        fun sends() = seen.map { TestJson.parse(it) }.filter { it.at<Long?>("cause", "request_id") != null }
        until("the send's change set") { sends().isNotEmpty() }
        val sent = sends().single()
        assertEquals(true, sent.at<Boolean>("rooms", r1, "pending"))
        // The echo is pending in the timeline as long as nothing else was applied since.
        val gen = sent.at<Long>("gen")
        val tl = TestJson.parse(s.store.timeline(r1))
        if (TestJson.parse(s.store.session()).at<Long>("gen") == gen) {
            assertEquals(listOf("hello store"), bodies(tl.at("pending")))
            assertTrue(bodies(tl.at("events")).none { it == "hello store" })
        }
        // Then send_complete and the sync: the event joins the timeline, the pending tail empties.
        until("the synced event") {
            val t = TestJson.parse(s.store.timeline(r1))
            t.at<List<Any?>>("pending").isEmpty() && bodies(t.at("events")).contains("hello store")
        }
        val synced = TestJson.parse(s.store.timeline(r1)).at<List<Any?>>("events").last()
        assertTrue(synced.at<String>("event", "event_id").startsWith("$"))
        until("the append's change set") {
            seen.any { TestJson.parse(it).at<List<Any?>?>("rooms", r1, "appended") != null }
        }
        job.cancel()
    }

    /** Sends [text] (one the testkit's homeserver refuses); its rowid once it reads failed. */
    private suspend fun failedSend(s: Session, text: String): Long {
        val rowid = TestJson.parse(s.store.sendMessage(r1, text)).at<Long>("rowid")
        until("the send failed") { pendingStatus(s) == "failed" }
        return rowid
    }

    private fun pendingStatus(s: Session): String? =
        TestJson.parse(s.store.timeline(r1)).at<List<Any?>>("pending").firstOrNull()?.at<String>("send_status")

    @Test
    fun `a failed send is resent until synced, or discarded`() = withSession { _, s ->
        val (seen, job) = s.changes(this)
        val rowid = failedSend(s, "fail once")
        // Shown as sending in a change set of its own (cause resend) before the reply.
        val reply = TestJson.parse(s.store.resend(r1, rowid))
        assertEquals(rowid, reply.at<Long>("rowid"))
        // (Handed to the collector before the reply; it runs once this test's thread lets it.)
        until("the resend's change set") { seen.any { TestJson.parse(it).at<String?>("cause", "command") == "resend" } }
        until("the resent event synced, sent") {
            val last = TestJson.parse(s.store.timeline(r1)).at<List<Any?>>("events").lastOrNull()
            pendingStatus(s) == null && last?.at<Long>("event", "rowid") == rowid &&
                last.at<String>("send_status") == "sent"
        }
        // Refused by the backend: RemoteException, and the echo reads failed again.
        val forgotten = failedSend(s, "fail, forget")
        assertThrows<RemoteException> { runBlocking { s.store.resend(r1, forgotten) } }
        assertEquals("failed", pendingStatus(s))
        s.store.discard(r1, forgotten)
        assertNull(pendingStatus(s))
        until("the discard's change set") {
            seen.any { TestJson.parse(it).at<String?>("cause", "command") == "discard" }
        }
        assertThrows<InvalidArgumentException> { s.store.discard(r1, forgotten) }
        assertThrows<InvalidArgumentException> { runBlocking { s.store.resend(r1, forgotten) } }
        assertThrows<InvalidArgumentException> { s.store.discard("!nope:example.org", forgotten) }
        job.cancel()
    }

    @Test
    fun `loadState, requestMembers, markRead, open, watch and collectGarbage`() =
        withSession(StoreOptions(evictAfterMs = 0)) { _, s ->
            TestJson.parse(s.store.loadState(r2, members = true))
            assertTrue(TestJson.parse(s.store.room(r2)!!).at<Boolean>("members_loaded"))
            assertTrue(s.store.members(r2).contains("@alice:example.org"))
            assertNull(s.store.requestMembers(r2, listOf("@alice:example.org")))
            assertNotNull(s.store.state(r2, "m.room.member", "@alice:example.org"))
            assertNull(s.store.state(r2, "m.room.member", "@nobody:example.org"))
            // Read up to the newest event: the backend's echo of the receipt zeroes the count.
            s.store.markRead(r2)
            until("r2 read") {
                TestJson.parse(s.store.room(r2)!!).at<Long>("entry", "unread_messages") == 0L
            }
            // An open room keeps its timeline; a closed one loses it (eviction delay 0).
            s.store.paginate(r1, 5)
            s.store.paginate(r2, 5)
            s.store.openRoom(r2)
            s.store.closeRoom(r1)
            s.store.watch(on = false)
            s.store.watch(r1, true)
            s.store.watch()
            assertEquals(1L, s.store.collectGarbage())
            assertEquals(0, TestJson.parse(s.store.timeline(r1)).at<List<Any?>>("events").size)
            assertEquals(5, TestJson.parse(s.store.timeline(r2)).at<List<Any?>>("events").size)
            assertTrue(TestJson.parse(s.store.room(r2)!!).at<Boolean>("open"))
        }

    @Test
    fun `misuse throws the binding's exceptions`() = withSession { b, s ->
        assertThrows<InvalidArgumentException> { s.store.read("nope") }
        assertThrows<InvalidArgumentException> { s.store.read("timeline", "not json") }
        assertThrows<InvalidArgumentException> { s.store.timeline("!nope:example.org") }
        assertThrows<InvalidArgumentException> { s.store.roomList(space = "!nope:example.org") }
        assertThrows<InvalidArgumentException> { s.store.openRoom("!nope:example.org") }
        assertThrows<InvalidArgumentException> { s.store.watch("!nope:example.org", true) }
        assertThrows<InvalidArgumentException> { runBlocking { s.store.paginate("!nope:example.org") } }
        assertThrows<InvalidArgumentException> { runBlocking { s.store.sendMessage("{\"text\":\"no room\"}") } }
        assertThrows<InvalidArgumentException> { runBlocking { s.store.paginate(r1, -1) } }
        assertThrows<InvalidArgumentException> {
            TetherClient(b.url, testOptions().copy(store = StoreOptions(evictAfterMs = -1)))
        }
        // rwws has no store.
        assertThrows<UnsupportedException> {
            TetherClient(b.url, TetherOptions(protocol = Protocol.RWWS, token = "dGV0aGVyLXRlc3Qta2V5", store = StoreOptions()))
        }
        // The server's refusal of a store action is a RemoteException (a receipt type it refuses).
        assertThrows<RemoteException> { runBlocking { s.store.markRead(r2, "m.bogus") } }
    }

    @Test
    fun `closing the store ends changes and the STORE events, and the client goes on`() = withSession { b, s ->
        val (seen, job) = s.changes(this)
        assertFalse(s.store.isClosed)
        s.store.close()
        s.store.close()
        assertTrue(s.store.isClosed)
        withTimeout(5_000) { job.join() }
        // A collector that starts now ends at once.
        assertEquals(null, withTimeout(5_000) { runCatching { s.store.changes.first() }.getOrNull() })
        val from = s.snapshot().size
        remoteMessage(b, r1, "after close")
        until("the message") { s.snapshot().drop(from).any { it.text.contains("after close") } }
        delay(200)
        val after = s.snapshot().drop(from)
        val at = after.indexOfFirst { it.text.contains("after close") }
        assertTrue(after.drop(at).none { it.kind == EventKind.STORE }, after.toString())
        assertTrue(seen.none { it.contains("after close") })
        assertThrows<StateException> { s.store.roomList() }
        assertThrows<StateException> { runBlocking { s.store.paginate(r1) } }
        assertEquals("{\"x\":1}", s.client.request("echo", "{\"x\":1}"))
    }

    @Test
    fun `the store outlives its client, and changes end with the client`() = withSession { _, s ->
        val (_, job) = s.changes(this)
        s.store.paginate(r2, 5)
        s.client.closeAndWait()
        withTimeout(5_000) { job.join() }
        assertEquals(5, TestJson.parse(s.store.timeline(r2)).at<List<Any?>>("events").size)
        assertThrows<TetherException> { runBlocking { s.store.paginate(r1) } }
    }
}
