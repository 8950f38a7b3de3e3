package org.tether

import java.io.ByteArrayOutputStream
import java.io.File
import java.util.Collections
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertSame
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/**
 * In-process media upload and download ([TetherClient.uploadMedia], [TetherClient.downloadMedia])
 * against `tests/inproc`'s double of `libgomuksffi` (its rules are at the top of
 * `tests/inproc/fake_gomuksffi.c`), and their refusal over the websocket. Like
 * [InProcessTest], each test closes its client with `closeAndWait` so that the process's one
 * in-process backend is free for the next.
 */
class MediaTest {
    /**
     * Runs [body] on a fresh in-process client whose events are collected meanwhile; then
     * closes it and checks that its events ended with DISCONNECTED and CLOSED and that no
     * PROGRESS or CHUNK event ever reached them.
     */
    private fun inProcess(body: suspend CoroutineScope.(TetherClient) -> Unit): Unit = runBlocking {
        withDataRoot { root ->
            val c = TetherClient("", inProcessOptions(root))
            try {
                val seen = Collections.synchronizedList(ArrayList<Event>())
                val started = CompletableDeferred<Unit>()
                val collector = launch {
                    c.events.collect {
                        seen.add(it)
                        if (it.command == "sync_status") started.complete(Unit)
                    }
                }
                withTimeout(30_000) {
                    started.await()
                    body(c)
                }
                c.closeAndWait(10_000)
                withTimeout(10_000) { collector.join() }
                val kinds = synchronized(seen) { seen.map { it.kind } }
                assertEquals(listOf(EventKind.DISCONNECTED, EventKind.CLOSED), kinds.takeLast(2), kinds.toString())
                assertTrue(kinds.none { it == EventKind.PROGRESS || it == EventKind.CHUNK }, kinds.toString())
                assertEquals(0, c.pendingRequests())
            } finally {
                c.close()
            }
        }
    }

    /** The double's file of [n] bytes: byte k is k % 251. */
    private fun fakeFile(n: Int) = ByteArray(n) { (it % 251).toByte() }

    /** Downloads [params] into memory; returns the reply and the bytes. */
    private suspend fun download(c: TetherClient, params: String, chunks: MutableList<Int>? = null): Pair<String, ByteArray> {
        val out = ByteArrayOutputStream()
        val reply = c.downloadMedia(params) {
            chunks?.add(it.size)
            out.write(it)
        }
        return reply to out.toByteArray()
    }

    @Test
    fun `an upload of bytes reports its progress in order, then returns the content`() = inProcess { c ->
        val progress = ArrayList<Double>()
        val reply = c.uploadMedia("{\"filename\":\"a.bin\"}", bytes = ByteArray(12345) { 7 }) { progress.add(it) }
        assertEquals(listOf(0.0, 50.0, 100.0), progress)
        assertEquals("{\"msgtype\":\"m.file\",\"url\":\"mxc://fake/12345\",\"info\":{\"size\":12345}}", reply)
        // An empty array is an empty file, not "no bytes"; onProgress is optional.
        assertTrue(c.uploadMedia(bytes = ByteArray(0)).contains("\"url\":\"mxc://fake/0\""))
        assertEquals(0, c.queuedReports())
    }

    @Test
    fun `an upload from a path sends the file the path names, merged into the params`() = inProcess { c ->
        val dir = java.nio.file.Files.createTempDirectory("tether kt \"media\"").toFile()
        try {
            val file = File(dir, "photo.bin").apply { writeBytes(ByteArray(4321)) }
            val progress = ArrayList<Double>()
            val reply = c.uploadMedia("{\"filename\":\"photo.bin\",\"encrypt\":false}", path = file.path) { progress.add(it) }
            assertEquals("{\"msgtype\":\"m.file\",\"url\":\"mxc://fake/4321\",\"info\":{\"size\":4321}}", reply)
            assertEquals(listOf(0.0, 50.0, 100.0), progress)
            // The same with "path" in the params themselves, and with the default params.
            val inParams = c.uploadMedia("{\"path\":${Json.quote(file.path)}}")
            assertTrue(inParams.contains("mxc://fake/4321"), inParams)
            assertTrue(c.uploadMedia(path = file.path).contains("mxc://fake/4321"))
            // A missing file: the backend's error names it.
            val missing = File(dir, "missing.bin").path
            val e = assertThrows<RemoteException> { runBlocking { c.uploadMedia(path = missing) } }
            assertEquals(Status.ERR_REMOTE, e.status)
            assertEquals("open $missing: no such file or directory", e.message)
        } finally {
            dir.deleteRecursively()
        }
    }

    @Test
    fun `a failed upload throws the backend's error after its progress`() = inProcess { c ->
        val progress = ArrayList<Double>()
        val e = assertThrows<RemoteException> {
            runBlocking { c.uploadMedia("{\"fail\":true}", bytes = ByteArray(10)) { progress.add(it) } }
        }
        assertEquals(Status.ERR_REMOTE, e.status)
        assertEquals("upload failed", e.message)
        assertEquals(listOf(0.0), progress)
        assertEquals("{\"after\":1}", c.request("echo", "{\"after\":1}"))
    }

    @Test
    fun `both or neither of bytes and a path, and bad arguments, are refused before sending`() = inProcess { c ->
        fun refused(f: suspend () -> String): String =
            assertThrows<InvalidArgumentException> { runBlocking { f() } }.message!!
        assertTrue("not bytes and path" in refused { c.uploadMedia(bytes = ByteArray(1), path = "/tmp/x") })
        assertTrue("needs bytes or a path" in refused { c.uploadMedia() })
        assertTrue("needs bytes or a path" in refused { c.uploadMedia("{\"x\":{\"path\":\"/nested\"}}") })
        assertTrue("\"path\" in params" in refused { c.uploadMedia("{\"path\":\"/a\"}", path = "/b") })
        assertTrue("\"path\" in params" in refused { c.uploadMedia("{\"path\":\"/a\"}", bytes = ByteArray(1)) })
        assertTrue("JSON object" in refused { c.uploadMedia("[1]", bytes = ByteArray(1)) })
        assertTrue("positive" in refused { c.uploadMedia(bytes = ByteArray(1), timeoutMs = 0) })
        assertTrue("positive" in refused { c.downloadMedia("mxc://fake/1", timeoutMs = -1) {} })
        assertEquals(0, c.pendingRequests())
    }

    @Test
    fun `a download hands every byte over in order, then returns the cached file`() = inProcess { c ->
        val sizes = ArrayList<Int>()
        val (reply, bytes) = download(c, "{\"mxc\":\"mxc://fake/200000\"}", sizes)
        assertEquals("{\"path\":\"/fake/200000\",\"size\":200000}", reply)
        assertTrue(bytes.contentEquals(fakeFile(200000)), "the bytes differ")
        assertTrue(sizes.size >= 4 && sizes.all { it in 1..65536 }, sizes.toString())
        // A bare mxc:// URI does the same; an empty file has no chunk.
        val (again, same) = download(c, " mxc://fake/70000 ")
        assertEquals("{\"path\":\"/fake/70000\",\"size\":70000}", again)
        assertTrue(same.contentEquals(fakeFile(70000)))
        val none = ArrayList<Int>()
        assertEquals("{\"path\":\"/fake/0\",\"size\":0}", download(c, "mxc://fake/0", none).first)
        assertEquals(emptyList<Int>(), none)
    }

    @Test
    fun `a failed download throws the backend's error after its first chunk`() = inProcess { c ->
        val sizes = ArrayList<Int>()
        val e = assertThrows<RemoteException> {
            runBlocking { download(c, "{\"mxc\":\"mxc://fake/300000\",\"fail\":true}", sizes) }
        }
        assertEquals("download failed", e.message)
        assertEquals(listOf(65536), sizes)
        val bad = assertThrows<RemoteException> { runBlocking { download(c, "mxc://elsewhere/1") } }
        assertEquals("invalid mxc URI", bad.message)
        assertEquals(0, c.queuedReports())
    }

    @Test
    fun `a chunk callback that throws cancels the download and rethrows, and the client goes on`() = inProcess { c ->
        val boom = IllegalStateException("disk full")
        var calls = 0
        val thrown = assertThrows<IllegalStateException> {
            runBlocking {
                c.downloadMedia("mxc://fake/4000000") {
                    calls++
                    throw boom
                }
            }
        }
        assertSame(boom, thrown)
        assertEquals(1, calls)
        assertEquals(0, c.pendingRequests())
        assertEquals("{\"next\":2}", c.request("echo", "{\"next\":2}"))
        // The dropped chunks of the cancelled download do not leak into the next one.
        val (reply, bytes) = download(c, "mxc://fake/100000")
        assertEquals("{\"path\":\"/fake/100000\",\"size\":100000}", reply)
        assertTrue(bytes.contentEquals(fakeFile(100000)))
        assertEquals(0, c.queuedReports())
        // So does a progress callback that throws.
        val progressBoom = assertThrows<IllegalArgumentException> {
            runBlocking { c.uploadMedia(bytes = ByteArray(3)) { throw IllegalArgumentException("stop") } }
        }
        assertEquals("stop", progressBoom.message)
        assertEquals("{\"last\":3}", c.request("echo", "{\"last\":3}"))
    }

    @Test
    fun `cancelling the downloading coroutine cancels the download`() = inProcess { c ->
        val first = CompletableDeferred<Unit>()
        var result: String? = null
        val job = launch {
            result = c.downloadMedia("mxc://fake/4000000") {
                first.complete(Unit)
                awaitCancellation()
            }
        }
        first.await()
        job.cancelAndJoin()
        assertNull(result)
        assertEquals(0, c.pendingRequests())
        assertEquals(0, c.queuedReports())
        assertEquals("{\"after\":\"cancel\"}", c.request("echo", "{\"after\":\"cancel\"}"))
    }

    @Test
    fun `a slow chunk callback holds the dispatcher back after a few chunks`() = inProcess { c ->
        val hold = CompletableDeferred<Unit>()
        val out = ByteArrayOutputStream()
        val job = launch {
            c.downloadMedia("mxc://fake/4000000") {
                hold.await()
                out.write(it)
            }
        }
        // 62 chunks are sent; while the first is held, only the bound's worth waits here.
        val until = System.nanoTime() + 5_000_000_000
        while (c.queuedReports() < ClientState.TRANSFER_CAPACITY && System.nanoTime() < until) delay(5)
        delay(300)
        // The dispatcher waits: the rest, and the reply behind them, stay in the library.
        assertEquals(ClientState.TRANSFER_CAPACITY, c.queuedReports())
        assertEquals(1, c.pendingRequests())
        hold.complete(Unit)
        job.join()
        assertTrue(out.toByteArray().contentEquals(fakeFile(4000000)))
        assertEquals(0, c.queuedReports())
    }

    @Test
    fun `a websocket client refuses media with UnsupportedException`(): Unit = runBlocking {
        TestBackend.start().use { b ->
            TetherClient(b.url, testOptions()).use { c ->
                withTimeout(15_000) {
                    c.events.first { it.kind == EventKind.CONNECTED }
                    val up = assertThrows<UnsupportedException> { runBlocking { c.uploadMedia(bytes = ByteArray(1)) } }
                    assertEquals(Status.ERR_UNSUPPORTED, up.status)
                    assertThrows<UnsupportedException> { runBlocking { c.downloadMedia("mxc://fake/1") {} } }
                    assertEquals(0, c.pendingRequests())
                    assertEquals("{}", c.request("echo"))
                }
            }
        }
    }

    @Test
    fun `the keys of a JSON object, top level only`() {
        assertEquals(setOf("a", "b\"c", "path"), Json.objectKeys(" {\"a\":{\"x\":[1,{\"y\":2}]},\"b\\\"c\":\"}\",\"path\":\"p\"} "))
        assertEquals(emptySet<String>(), Json.objectKeys("{}"))
        assertNull(Json.objectKeys("[1]"))
        assertNull(Json.objectKeys("{\"a"))
    }
}
