package org.tether

import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.launch
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.TestInstance

/**
 * A test class sharing one [TestBackend] among its tests: started before the first, stopped
 * after the last (one test instance per class, so the backend lives in a field).
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
abstract class WithBackend {
    protected lateinit var backend: TestBackend

    @BeforeAll
    fun startBackend() {
        backend = TestBackend.start()
    }

    @AfterAll
    fun stopBackend() = backend.close()
}

/** A `tether-backend` process of its own, scripted over its `/_testkit` HTTP endpoints. */
class TestBackend private constructor(private val process: Process, val address: String) : AutoCloseable {
    val url = "http://$address"
    private val http = HttpClient.newHttpClient()

    fun control(path: String, method: String = "POST"): String {
        val req = HttpRequest.newBuilder(URI("$url$path")).method(method, HttpRequest.BodyPublishers.noBody()).build()
        val r = http.send(req, HttpResponse.BodyHandlers.ofString())
        assertEquals(200, r.statusCode(), r.body())
        return r.body()
    }

    /** Pushes [n] events; returns the newest (most negative) id: they are `newest + n - 1 downTo newest`. */
    fun push(n: Int): Long =
        Regex("-?\\d+").find(control("/_testkit/push?n=$n").substringAfter("newest_id"))!!.value.toLong()

    /** A number (or `null`) of `/_testkit/stats`, e.g. `total_connections`. */
    fun stat(name: String): Long? =
        Regex("\"$name\":(-?\\d+|null)").find(control("/_testkit/stats", "GET"))!!.groupValues[1].toLongOrNull()

    /** SIGSTOP: the kernel still accepts connections, nothing answers. */
    fun freeze() {
        signal("STOP")
        // kill returns before every thread has stopped; a reply could still slip out.
        val until = System.nanoTime() + 5_000_000_000
        while (!stopped()) {
            check(System.nanoTime() < until) { "backend did not stop" }
            Thread.sleep(1)
        }
    }

    private fun stopped(): Boolean {
        val tasks = File("/proc/${process.pid()}/task").listFiles() ?: return false
        // The state follows the command name, which is in parentheses.
        return tasks.all { t -> runCatching { File(t, "stat").readText().substringAfterLast(") ").startsWith("T") }.getOrDefault(true) }
    }

    fun thaw() = signal("CONT")

    private fun signal(sig: String) {
        val p = ProcessBuilder("kill", "-$sig", process.pid().toString()).inheritIO().start()
        assertEquals(0, p.waitFor())
    }

    override fun close() {
        thaw()
        process.destroyForcibly().waitFor()
    }

    companion object {
        fun start(vararg args: String): TestBackend {
            val bin = System.getProperty("tether.backend")
            val p = ProcessBuilder(listOf(bin, "--conn-queue-limit", "0") + args).start()
            val line = BufferedReader(InputStreamReader(p.inputStream)).readLine()
            val addr = Regex("127\\.0\\.0\\.1:\\d+").find(line ?: "")?.value ?: error("backend said: $line")
            return TestBackend(p, addr)
        }
    }
}

/** Credentials the testkit backend accepts, with quick reconnects. */
fun testOptions(
    pingIntervalMs: Int? = null,
    eventBufferCapacity: Int = 256,
    queueCapacity: Long? = null,
) = TetherOptions(
    username = "tether", password = "tether-password", pingIntervalMs = pingIntervalMs,
    reconnectBackoffMs = 20..200, eventBufferCapacity = eventBufferCapacity,
    queueCapacity = queueCapacity,
)

/** Drains [c]'s events in [scope]; the deferred completes at the first CONNECTED. */
fun drain(scope: CoroutineScope, c: TetherClient, onEvent: (Event) -> Unit = {}): Pair<Job, CompletableDeferred<Unit>> {
    val connected = CompletableDeferred<Unit>()
    val job = scope.launch {
        c.events.collect {
            if (it.kind == EventKind.CONNECTED) connected.complete(Unit)
            onEvent(it)
        }
    }
    return job to connected
}

/**
 * The test double of `libgomuksffi` (tests/inproc), from the `tether.fakeGomuks` property that
 * run-tests.sh sets after building it with `tests/inproc/build.sh`.
 */
fun fakeGomuks(): String {
    val path = System.getProperty("tether.fakeGomuks") ?: error("tether.fakeGomuks is not set (bindings/kotlin/run-tests.sh sets it)")
    check(File(path).isFile) { "$path is missing: build it with tests/inproc/build.sh (run-tests.sh does)" }
    return path
}

/** Runs [f] with a fresh, empty data root for an in-process backend, removed afterwards. */
inline fun <T> withDataRoot(f: (File) -> T): T {
    val root = java.nio.file.Files.createTempDirectory("tether-kt-inproc").toFile()
    try {
        return f(root)
    } finally {
        root.deleteRecursively()
    }
}

/** Options for an in-process client of the double on [root]. */
fun inProcessOptions(root: File) = TetherOptions(inProcess = InProcess(fakeGomuks(), root.path))
