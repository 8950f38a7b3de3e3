package org.tether

import java.io.File
import java.net.InetAddress
import java.net.ServerSocket
import java.net.Socket
import java.nio.file.Files
import java.security.KeyStore
import javax.net.ssl.KeyManagerFactory
import javax.net.ssl.SSLContext
import kotlin.concurrent.thread
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** Each [TetherOptions] field reaches the library: bad values are refused, good ones act. */
class OptionsTest : WithBackend() {

    private fun login(o: TetherOptions = TetherOptions()) =
        o.copy(username = "tether", password = "tether-password", reconnectBackoffMs = o.reconnectBackoffMs ?: 20..200)

    /** The first DISCONNECTED of a client made with [o]. */
    private fun firstDisconnect(o: TetherOptions, url: String = backend.url): Event = runBlocking {
        TetherClient(url, o).use { c -> withTimeout(15_000) { c.events.first { it.kind == EventKind.DISCONNECTED } } }
    }

    @Test
    fun `the library version rule takes a newer minor release only from 1_0 on`() {
        val (major, minor) = TetherClient.BINDING_VERSION.split(".").map { it.toInt() }
        assertTrue(TetherClient.compatible(major, minor, major, minor))
        assertFalse(TetherClient.compatible(0, 3, 0, 2))
        assertTrue(TetherClient.compatible(1, 3, 1, 2))
        assertFalse(TetherClient.compatible(1, 1, 1, 2))
        assertFalse(TetherClient.compatible(2, 2, 1, 2))
    }

    @Test
    fun `bad values are refused with typed exceptions`() {
        fun refused(o: TetherOptions, url: String = backend.url) =
            assertThrows<TetherException>(o.toString()) { TetherClient(url, o).close() }

        fun config(o: TetherOptions, url: String = backend.url) =
            assertTrue(refused(o, url) is ConfigException, o.toString())

        fun argument(o: TetherOptions) = assertTrue(refused(o) is InvalidArgumentException, o.toString())

        config(TetherOptions(protocol = Protocol.RWWS, token = "not base64!"))
        config(TetherOptions(token = "\u0001"))
        config(TetherOptions(pingIntervalMs = 0))
        config(TetherOptions(pingIntervalMs = 1_000, receiveTimeoutMs = 500))
        config(TetherOptions(receiveTimeoutMs = 0))
        config(TetherOptions(requestTimeoutMs = 0))
        config(TetherOptions(pongTimeoutMs = 0))
        config(TetherOptions(connectTimeoutMs = 0))
        config(TetherOptions(reconnectBackoffMs = 200..100))
        config(TetherOptions(reconnectBackoffMs = 0..100))
        config(TetherOptions(maxMessageBytes = 1_000))
        config(TetherOptions(queueCapacity = 0))
        config(TetherOptions(maxUnsentBytes = 0))
        argument(TetherOptions(maxUnsentBytes = -1))
        config(TetherOptions(resume = ResumeState("run", 5)))
        config(TetherOptions(headers = listOf("Sec-WebSocket-Key" to "x")))
        config(TetherOptions(headers = listOf("bad name" to "x")))
        config(TetherOptions(headers = listOf("X-Ok" to "caf\u00e9")))
        // A NUL would cut the value short where the library reads (and checks) it.
        argument(TetherOptions(headers = listOf("X-Ok" to "a\u0000\r\nX-Injected: 1")))
        argument(TetherOptions(token = "tok\u0000en"))
        config(TetherOptions(token = "t", headers = listOf("Cookie" to "gomuks_auth=other")))
        config(TetherOptions(caPem = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"))
        config(TetherOptions(caPem = "no certificate here"))
        argument(TetherOptions(caPem = ""))
        config(TetherOptions(token = "secret"), url = "http://example.invalid")
        argument(TetherOptions(eventBufferCapacity = 0))
        argument(TetherOptions(pingIntervalMs = -1))
        argument(TetherOptions(pongTimeoutMs = -1))
        argument(TetherOptions(maxMessageBytes = -1))
        // The same values where they are fine.
        TetherClient("http://example.invalid", TetherOptions(token = "secret", allowInsecureCredentials = true)).close()
        TetherClient(backend.url, TetherOptions(headers = listOf("Cookie" to "other=1"))).close()
    }

    @Test
    fun `every config setter of the header is declared and applied by an option`() {
        val header = File(System.getProperty("tether.header")).readText()
        val setters = Regex("\\b(tether_config_(?:set|add)_\\w+)\\s*\\(").findAll(header).map { it.groupValues[1] }.toSortedSet()
        assertTrue(setters.size >= 19 && "tether_config_set_pong_timeout_ms" in setters, setters.toString())
        val declared = TetherNative::class.java.declaredMethods.map { it.name }.toSet()
        val src = File(System.getProperty("tether.sources"), "org/tether/TetherOptions.kt").readText()
        val applyTo = src.substring(src.indexOf("fun applyTo"))
        for (name in setters - "tether_config_set_url") {
            assertTrue(name in declared, "$name is not declared in Native.kt")
            assertTrue("n.$name(" in applyTo, "$name is not called by TetherOptions.applyTo")
        }
    }

    /** Runs [block] with tinyproxy on a free loopback port (with Basic auth puser/ppass when [auth]) and its log. */
    private fun withTinyproxy(auth: Boolean, block: (port: Int, log: File) -> Unit) {
        val bin = File("/usr/bin/tinyproxy")
        if (!bin.canExecute()) {
            check(System.getenv("CI") != "true") { "tinyproxy is not installed (scripts/ensure-tools.sh)" }
            org.junit.jupiter.api.Assumptions.assumeTrue(false, "tinyproxy is not installed (scripts/ensure-tools.sh)")
        }
        val port = ServerSocket(0, 1, InetAddress.getLoopbackAddress()).use { it.localPort }
        val dir = Files.createTempDirectory("tether-kt-tinyproxy").toFile()
        val log = File(dir, "tinyproxy.log")
        val conf = File(dir, "tinyproxy.conf")
        conf.writeText(
            "Port $port\nListen 127.0.0.1\nTimeout 60\nLogLevel Connect\nLogFile \"$log\"\n" +
                (if (auth) "BasicAuth puser ppass\n" else ""),
        )
        val proc = ProcessBuilder(bin.path, "-d", "-c", conf.path).redirectErrorStream(true)
            .redirectOutput(File(dir, "out")).start()
        try {
            val deadline = System.nanoTime() + 10_000_000_000L
            while (runCatching { Socket("127.0.0.1", port).close() }.isFailure) {
                check(System.nanoTime() < deadline) { "tinyproxy did not start" }
                Thread.sleep(20)
            }
            block(port, log)
        } finally {
            proc.destroy()
            proc.waitFor()
            dir.deleteRecursively()
        }
    }

    private fun connects(log: File) = Regex("CONNECT 127\\.0\\.0\\.1:").findAll(log.readText()).count()

    @Test
    fun `the proxy option carries the login and the websocket through tinyproxy`() = withTinyproxy(auth = true) { port, log ->
        runBlocking {
            TetherClient(backend.url, login(TetherOptions(proxy = "http://puser:ppass@127.0.0.1:$port"))).use { c ->
                withTimeout(15_000) { assertEquals("{\"p\":1}", c.request("echo", "{\"p\":1}")) }
            }
        }
        // The login and the websocket both tunnel.
        assertTrue(connects(log) >= 2, log.readText())
        // A wrong proxy password is final: ERR_UNAUTHORIZED and no retry.
        val d = firstDisconnect(login(TetherOptions(proxy = "http://puser:not-SECRET@127.0.0.1:$port")))
        assertEquals(Status.ERR_UNAUTHORIZED, d.status)
        assertEquals(null, d.retryInMs)
        assertFalse(d.text.contains("not-SECRET"), d.text)
    }

    /** A ProxySelector answering [proxy] for every URI, keeping the URIs it was asked about. */
    private class Selector(val proxy: java.net.Proxy) : java.net.ProxySelector() {
        val asked: MutableList<java.net.URI> = java.util.concurrent.CopyOnWriteArrayList()
        override fun select(uri: java.net.URI): List<java.net.Proxy> {
            asked.add(uri)
            return listOf(proxy)
        }
        override fun connectFailed(uri: java.net.URI?, sa: java.net.SocketAddress?, e: java.io.IOException?) {}
    }

    @Test
    fun `a ProxySelector is asked before every connection, the default one when no proxy is set`() =
        withTinyproxy(auth = false) { port, log ->
            val http = java.net.Proxy(java.net.Proxy.Type.HTTP, java.net.InetSocketAddress.createUnresolved("127.0.0.1", port))
            // Its own selector: asked for the login and the websocket (as http), both tunnel.
            val mine = Selector(http)
            runBlocking {
                TetherClient(backend.url, login(TetherOptions(proxy = "direct", proxySelector = mine))).use { c ->
                    withTimeout(15_000) { assertEquals("{}", c.request("echo", "{}")) }
                }
            }
            assertEquals(listOf("/_gomuks/auth", "/_gomuks/websocket"), mine.asked.take(2).map { it.path })
            assertTrue(mine.asked.all { it.scheme == "http" }, mine.asked.toString())
            assertTrue(connects(log) >= 2, log.readText())
            val first = connects(log)

            // No proxy set: the process's default selector decides, at each connection.
            val before = java.net.ProxySelector.getDefault()
            val global = Selector(http)
            java.net.ProxySelector.setDefault(global)
            try {
                runBlocking {
                    TetherClient(backend.url, login()).use { c ->
                        withTimeout(15_000) { assertEquals("{}", c.request("echo", "{}")) }
                    }
                }
                assertTrue(global.asked.size >= 2, global.asked.toString())
                assertTrue(connects(log) >= first + 2, log.readText())
                // An empty proxy is no proxy, as in the C API: the default selector still decides.
                val beforeEmpty = global.asked.size
                runBlocking {
                    TetherClient(backend.url, login(TetherOptions(proxy = ""))).use { c ->
                        withTimeout(15_000) { assertEquals("{}", c.request("echo", "{}")) }
                    }
                }
                assertTrue(global.asked.size >= beforeEmpty + 2, global.asked.toString())
                val asked = global.asked.size
                // An explicit proxy means no selector: "direct" stays direct.
                runBlocking {
                    TetherClient(backend.url, login(TetherOptions(proxy = "direct"))).use { c ->
                        withTimeout(15_000) { assertEquals("{}", c.request("echo", "{}")) }
                    }
                }
                assertEquals(asked, global.asked.size)
            } finally {
                java.net.ProxySelector.setDefault(before)
            }
            // A selector that throws fails the attempt, which is retried.
            val broken = object : java.net.ProxySelector() {
                override fun select(uri: java.net.URI): List<java.net.Proxy> = throw IllegalStateException("no PAC")
                override fun connectFailed(uri: java.net.URI?, sa: java.net.SocketAddress?, e: java.io.IOException?) {}
            }
            val d = firstDisconnect(login(TetherOptions(proxySelector = broken)))
            assertEquals(Status.ERR_CONNECT, d.status)
            assertTrue(d.text.contains("proxy resolver failed"), d.text)
            assertTrue(d.retryInMs != null)
            // An answer with a NUL is no proxy URL, and would come again: the client ends.
            val nul = Selector(java.net.Proxy(java.net.Proxy.Type.HTTP, java.net.InetSocketAddress.createUnresolved("bad\u0000h", 3128)))
            val e = firstDisconnect(login(TetherOptions(proxySelector = nul)))
            assertEquals(Status.ERR_CONFIG, e.status, e.text)
            assertEquals(null, e.retryInMs)
        }

    @Test
    fun `a ProxySelector is asked for a URL java_net_URI refuses, by its scheme, host and port`() {
        val direct = Selector(java.net.Proxy.NO_PROXY)
        val d = firstDisconnect(login(TetherOptions(proxySelector = direct)), "${backend.url}/a|b")
        // The server's answer for that path, not a failed proxy decision.
        assertEquals(Status.ERR_HTTP, d.status, d.text)
        assertTrue(direct.asked.isNotEmpty() && direct.asked.all { it.path.isEmpty() && it.port > 0 }, direct.asked.toString())
    }

    @Test
    fun `a ProxySelector may close its own client`() = runBlocking {
        val made = java.util.concurrent.CompletableFuture<TetherClient>()
        val closedInMs = java.util.concurrent.CompletableFuture<Long>()
        val selfClosing = object : java.net.ProxySelector() {
            override fun select(uri: java.net.URI): List<java.net.Proxy> {
                val c = made.get(10, java.util.concurrent.TimeUnit.SECONDS)
                val t0 = System.nanoTime()
                // Frees the client on the thread the library is waiting on: it must not wait
                // for this very call to return.
                c.close()
                closedInMs.complete((System.nanoTime() - t0) / 1_000_000)
                return listOf(java.net.Proxy.NO_PROXY)
            }
            override fun connectFailed(uri: java.net.URI?, sa: java.net.SocketAddress?, e: java.io.IOException?) {}
        }
        val c = TetherClient(backend.url, login(TetherOptions(proxySelector = selfClosing)))
        made.complete(c)
        val ms = closedInMs.get(10, java.util.concurrent.TimeUnit.SECONDS)
        assertTrue(ms < 1_000, "close inside the selector took $ms ms")
        withTimeout(10_000) { c.closedSignal.await() }
        assertThrows<ClientClosedException> { runBlocking { c.request("echo", "{}") } }
        c.close() // idempotent
    }

    @Test
    fun `toString leaves the secrets out`() {
        val p = TetherOptions(proxy = "socks5h://me:px-789@127.0.0.1:1080").toString()
        assertFalse(p.contains("px-789"), p)
        assertTrue(p.contains("127.0.0.1:1080"), p)
        val s = TetherOptions(token = "tok-123", password = "pw-456", username = "u").toString()
        assertFalse(s.contains("tok-123") || s.contains("pw-456"), s)
        assertTrue(s.contains("username=u"), s)
    }

    @Test
    fun `toString hides the whole userinfo of a proxy URL, up to its last @`() {
        // Raw userinfo (refused by the library, but logged by apps all the same) is split at
        // the last @, as URL parsers do: whatever a password holds stays hidden.
        val cases = listOf(
            "http://user:p@ss@proxy:3128" to "http://<redacted>@proxy:3128",
            "socks5://u:a/b@h:1" to "socks5://<redacted>@h:1",
            "https://u:S3CRET:x?y#z@h:443" to "https://<redacted>@h:443",
            "socks5h://u:a//b@c@h:1080" to "socks5h://<redacted>@h:1080",
            "http://u:p%40ss@h:3128" to "http://<redacted>@h:3128",
            "u:a/b@h:1" to "<redacted>@h:1",
            "u:x://y@h:1" to "<redacted>@h:1",
            "http://proxy:3128" to "http://proxy:3128",
            "direct" to "direct",
        )
        val wrong = cases.mapNotNull { (proxy, shown) ->
            val s = TetherOptions(proxy = proxy).toString()
            s.substringAfter("proxy=").substringBefore(", proxySelector=").takeIf { !s.contains("proxy=$shown,") }
                ?.let { "$proxy printed as $it, not $shown" }
        }
        assertTrue(wrong.isEmpty(), wrong.joinToString("\n"))
        assertTrue(TetherOptions().toString().contains("proxy=null,"))
    }

    @Test
    fun `every option at once, with values that work`(): Unit = runBlocking {
        val o = login(
            TetherOptions(
                compression = false, pingIntervalMs = 200, receiveTimeoutMs = 5_000, pongTimeoutMs = 3_000,
                requestTimeoutMs = 5_000, connectTimeoutMs = 5_000, reconnectBackoffMs = 10..100,
                maxMessageBytes = 1L shl 20, queueCapacity = 64, lastServerTs = 1_700_000_000_000,
                prevListenerId = true, headers = listOf("X-Tether-Test" to "1", "Origin" to backend.url),
                caPem = selfSigned().pem, allowInsecureCredentials = true, eventBufferCapacity = 8,
                maxUnsentBytes = 1L shl 20,
            ),
        )
        TetherClient(backend.url, o).use { c ->
            withTimeout(15_000) {
                // lastServerTs turns the first sync into a catch-up from that time.
                val sync = c.events.first { it.command == "sync_complete" }
                assertTrue(sync.text.contains("\"since_ts\":1700000000000"), sync.text)
                assertEquals("{\"x\":1}", c.request("echo", "{\"x\":1}"))
                c.events.first { it.kind == EventKind.PONG }
            }
        }
    }

    @Test
    fun `credentials, headers and the request timeout act`(): Unit = runBlocking {
        assertEquals(Status.ERR_UNAUTHORIZED, firstDisconnect(TetherOptions(username = "tether", password = "wrong")).status)
        // An Origin that does not match the host is refused by the backend: the header arrived.
        val d = firstDisconnect(login(TetherOptions(headers = listOf("Origin" to "https://evil.example"))))
        assertEquals(Status.ERR_FORBIDDEN, d.status)
        assertEquals(403, d.closeCode)
        // A Cookie header alone authorizes, with a token from an earlier login.
        val token = token()
        TetherClient(backend.url, TetherOptions(headers = listOf("Cookie" to "gomuks_auth=$token"))).use { c ->
            withTimeout(15_000) { assertEquals("{}", c.request("echo")) }
        }
        TetherClient(backend.url, login(TetherOptions(requestTimeoutMs = 300))).use { c ->
            withTimeout(15_000) {
                assertThrows<RequestTimeoutException> { runBlocking { c.request("sleep", "{\"ms\":3000}") } }
                assertThrows<RequestTimeoutException> { runBlocking { c.request("sleep", "{\"ms\":3000}", timeoutMs = 200) } }
                assertEquals("null", c.request("sleep", "{\"ms\":500}", timeoutMs = 5_000))
            }
        }
    }

    @Test
    fun `the receive timeout ends a connection to a server that stopped answering`(): Unit = runBlocking {
        TestBackend.start().use { frozen ->
            TetherClient(frozen.url, login(TetherOptions(pingIntervalMs = 100, receiveTimeoutMs = 600))).use { c ->
                withTimeout(15_000) { c.events.first { it.command == "init_complete" } }
                frozen.freeze()
                val t = System.nanoTime()
                val d = withTimeout(5_000) { c.events.first { it.kind == EventKind.DISCONNECTED } }
                val ms = (System.nanoTime() - t) / 1_000_000
                assertEquals(Status.ERR_RECEIVE_TIMEOUT, d.status, d.toString())
                assertTrue(ms < 3_000, "noticed after $ms ms")
            }
        }
    }

    @Test
    fun `resume state is sent by a later client`(): Unit = runBlocking {
        val state = TetherClient(backend.url, login()).use { c ->
            withTimeout(15_000) {
                c.events.first { it.command == "init_complete" }
                val newest = backend.push(3)
                c.events.first { it.requestId == newest }
            }
            c.resumeState()
        }
        TetherClient(backend.url, login(TetherOptions(resume = state))).use { c ->
            val connected = withTimeout(15_000) { c.events.first { it.kind == EventKind.CONNECTED } }
            assertTrue(state.lastReceivedEvent < 0 && connected.resumeAttempted, "$state $connected")
        }
    }

    @Test
    fun `connect timeout, message cap and compression act`() {
        // Accepted by the kernel, never answered: only the connect timeout ends the attempt.
        ServerSocket(0, 50, InetAddress.getLoopbackAddress()).use { silent ->
            val t = System.nanoTime()
            val d = firstDisconnect(login(TetherOptions(connectTimeoutMs = 300)), "http://127.0.0.1:${silent.localPort}")
            val ms = (System.nanoTime() - t) / 1_000_000
            assertTrue(ms < 3_000, "first attempt ended after $ms ms")
            assertTrue(d.status != Status.OK, d.toString())
        }
        runBlocking {
            TetherClient(backend.url, login(TetherOptions(maxMessageBytes = 2_048))).use { c ->
                withTimeout(15_000) {
                    c.events.first { it.command == "init_complete" }
                    backend.control("/_testkit/fault?kind=oversize&n=4096")
                    val d = c.events.first { it.kind == EventKind.DISCONNECTED }
                    assertEquals(Status.ERR_MESSAGE_TOO_LARGE, d.status)
                }
            }
            for (compression in listOf(true, false)) {
                TetherClient(backend.url, login(TetherOptions(compression = compression))).use { c ->
                    withTimeout(15_000) {
                        c.events.first { it.command == "init_complete" }
                        // The backend can only send broken deflate to a client that asked for it.
                        backend.control("/_testkit/fault?kind=invalid_deflate")
                        if (compression) {
                            val d = c.events.first { it.kind == EventKind.DISCONNECTED }
                            assertEquals(Status.ERR_INFLATE, d.status, d.toString())
                        } else {
                            // Queued behind the fault on the backend's side of the connection.
                            assertEquals("{}", c.request("echo"))
                            assertEquals(null, withTimeoutOrNull(300) { c.events.first { it.kind == EventKind.DISCONNECTED } })
                        }
                    }
                }
            }
        }
    }

    @Test
    fun `ca_pem makes a self-signed TLS front trusted`() {
        val cert = selfSigned()
        val token = token()
        TlsFront(cert, backend.address).use { front ->
            val url = "https://localhost:${front.port}"
            val refused = firstDisconnect(TetherOptions(token = token, reconnectBackoffMs = 20..200), url)
            // A refused certificate is final: no retry.
            assertEquals(Status.ERR_CERTIFICATE, refused.status, refused.text)
            assertEquals(null, refused.retryInMs, refused.text)
            runBlocking {
                // The token goes straight to the upgrade; the login goes through POST /_gomuks/auth.
                for (o in listOf(TetherOptions(token = token), login())) {
                    TetherClient(url, o.copy(caPem = cert.pem)).use { c ->
                        withTimeout(15_000) { assertEquals("{\"over\":\"tls\"}", c.request("echo", "{\"over\":\"tls\"}")) }
                    }
                }
            }
        }
    }

    @Test
    fun `pins are checked on top of the chain`() {
        val cert = selfSigned()
        val token = token()
        val ks = KeyStore.getInstance("PKCS12")
        cert.keystore.inputStream().use { ks.load(it, "changeit".toCharArray()) }
        val spki = ks.getCertificate("front").publicKey.encoded
        val pin = "sha256/" + java.util.Base64.getEncoder().encodeToString(
            java.security.MessageDigest.getInstance("SHA-256").digest(spki),
        )
        val wrong = "sha256/" + java.util.Base64.getEncoder().encodeToString(ByteArray(32))
        TlsFront(cert, backend.address).use { front ->
            val url = "https://localhost:${front.port}"
            val base = TetherOptions(token = token, caPem = cert.pem, reconnectBackoffMs = 20..200)
            val refused = firstDisconnect(base.copy(pinsSha256 = listOf(wrong)), url)
            assertEquals(Status.ERR_CERTIFICATE, refused.status, refused.text)
            assertEquals(null, refused.retryInMs, refused.text)
            assertTrue(pin in refused.text, refused.text)
            runBlocking {
                TetherClient(url, base.copy(pinsSha256 = listOf(wrong, pin))).use { c ->
                    withTimeout(15_000) { assertEquals("{\"pinned\":1}", c.request("echo", "{\"pinned\":1}")) }
                }
            }
        }
    }

    @Test
    fun `the client key stays out of toString`() {
        val o = TetherOptions(clientCertPem = "CERT", clientKeyPem = "-----BEGIN PRIVATE KEY-----SEKRIT")
        assertFalse("SEKRIT" in o.toString(), o.toString())
        assertThrows<InvalidArgumentException> { TetherClient("https://localhost:1", TetherOptions(clientKeyPem = "k")) }
    }

    /** A token from a login, to connect without credentials in the config. */
    private fun token(): String = runBlocking {
        TetherClient(backend.url, login()).use { c ->
            withTimeout(15_000) { c.events.first { it.kind == EventKind.CONNECTED } }
            c.authToken()!!
        }
    }

    class Cert(val keystore: File, val pem: String)

    /** A fresh self-signed P-256 certificate for localhost and 127.0.0.1, made by keytool. */
    private fun selfSigned(): Cert {
        val dir = Files.createTempDirectory("tether-tls").toFile().apply { deleteOnExit() }
        val ks = File(dir, "front.p12")
        val keytool = File(System.getProperty("java.home"), "bin/keytool").path
        fun run(vararg args: String): String {
            val p = ProcessBuilder(keytool, *args).redirectErrorStream(true).start()
            val out = p.inputStream.readBytes().toString(Charsets.UTF_8)
            assertEquals(0, p.waitFor(), out)
            return out
        }
        val common = arrayOf("-keystore", ks.path, "-storetype", "PKCS12", "-storepass", "changeit", "-alias", "front")
        run(
            "-genkeypair", *common, "-keyalg", "EC", "-groupname", "secp256r1", "-sigalg", "SHA256withECDSA",
            "-dname", "CN=localhost", "-validity", "2", "-ext", "SAN=dns:localhost,ip:127.0.0.1",
            "-ext", "EKU=serverAuth", "-keypass", "changeit",
        )
        val pem = run("-exportcert", "-rfc", *common)
        return Cert(ks, pem.substring(pem.indexOf("-----BEGIN")))
    }

    /** TLS on a loopback port, relayed byte for byte to [upstream] (host:port). */
    private class TlsFront(cert: Cert, upstream: String) : AutoCloseable {
        private val server: ServerSocket
        val port: Int get() = server.localPort

        init {
            val ks = KeyStore.getInstance("PKCS12")
            cert.keystore.inputStream().use { ks.load(it, "changeit".toCharArray()) }
            val kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm())
            kmf.init(ks, "changeit".toCharArray())
            val ctx = SSLContext.getInstance("TLS")
            ctx.init(kmf.keyManagers, null, null)
            server = ctx.serverSocketFactory.createServerSocket(0, 50, InetAddress.getLoopbackAddress())
            val (host, p) = upstream.split(":")
            thread(isDaemon = true, name = "tls-front") {
                while (!server.isClosed) {
                    val tls = try { server.accept() } catch (e: Exception) { break }
                    thread(isDaemon = true) {
                        try {
                            val up = Socket(host, p.toInt())
                            thread(isDaemon = true) { pump(up, tls) }
                            pump(tls, up)
                        } catch (e: Exception) {
                            tls.close()
                        }
                    }
                }
            }
        }

        private fun pump(from: Socket, to: Socket) {
            try {
                from.getInputStream().copyTo(to.getOutputStream(), 16 * 1024)
            } catch (e: Exception) {
                // One side went away; the other is closed below.
            } finally {
                from.close()
                to.close()
            }
        }

        override fun close() = server.close()
    }
}
