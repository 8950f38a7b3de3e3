package org.tether

import com.sun.jna.Pointer

/** Which wire protocol a client speaks. */
enum class Protocol(internal val code: Int) { GOMUKS(1), RWWS(2) }

/** Where to resume: the backend's run id and the last received event id (0 or negative). */
data class ResumeState(val runId: String, val lastReceivedEvent: Long) {
    // Written out: the generated one calls java.lang.Long.hashCode(long), which Android
    // only has from API 24.
    override fun hashCode(): Int = runId.hashCode() * 31 + (lastReceivedEvent xor (lastReceivedEvent ushr 32)).toInt()

    /**
     * The resume point of an app that has not taken [held] (oldest first) yet. The library
     * counts what the binding's callback took from it, but a later client must be replayed
     * what the app never saw: the point goes back to just before the first buffered event
     * held. Buffered ids count down by one per event in a run (gomuks-rpc.md §3.3), so that is
     * its id plus one. That holds only while the held events continue what the app saw: a
     * held connection that did not resume or whose resume failed, or a held `sync_complete`
     * with id 0 (a start's state, a catchup, the room list after a login), which no resume
     * replays, means the app must start afresh, and the point is 0 (the Python binding's
     * `before_held` follows the same rule).
     */
    internal fun before(held: List<Event>): ResumeState {
        // Nothing the library counts was taken: whatever is held is older.
        if (lastReceivedEvent == 0L) return this
        val fresh = ResumeState(runId, 0)
        var first: Long? = null
        for (ev in held) {
            when (ev.kind) {
                EventKind.MESSAGE -> when {
                    ev.requestId < 0 -> if (first == null) first = ev.requestId
                    ev.requestId == 0L && ev.command == "sync_complete" -> return fresh
                }
                EventKind.CONNECTED -> if (!ev.resumeAttempted) return fresh
                EventKind.RESUMED -> if (ev.resumeOutcome != ResumeOutcome.SUCCEEDED) return fresh
                else -> {}
            }
        }
        return first?.let { ResumeState(runId, it + 1) } ?: this
    }
}

/**
 * The in-process transport (gomuks only): instead of a websocket, the client drives the gomuks
 * backend bundled into this process through its C FFI (`tether_config_set_in_process`).
 *
 * @property library path of `libgomuksffi` (gomuks `pkg/ffi`), loaded when the client connects
 *   and never unloaded.
 * @property dataRoot the backend's directory for its config, database, cache and logs, created
 *   if missing. One client per data root (a lock file guards it, across processes too) and one
 *   in-process backend per process: another client is refused with [InUseException] when it
 *   connects, until the first one is closed.
 */
data class InProcess(val library: String, val dataRoot: String)

/**
 * Everything a [TetherClient] can be configured with besides its URL: one field per
 * `tether_config_set_*` / `tether_config_add_header` of `include/tether.h`, plus
 * [eventBufferCapacity] of this binding. `null` keeps the library's default (given in each
 * field's description); the library checks the values when the client is created and refuses
 * bad ones with a [ConfigException] or [InvalidArgumentException].
 *
 * Millisecond values are C `uint32_t`: a negative [Int] reaches the library as a value above
 * 2^31, so it is refused here with an [InvalidArgumentException] instead.
 */
data class TetherOptions(
    /** Wire protocol (default gomuks). */
    val protocol: Protocol = Protocol.GOMUKS,
    /** gomuks: the `gomuks_auth` cookie token; rwws: the access key in base64. A secret. */
    val token: String? = null,
    /** gomuks: username for `POST /_gomuks/auth`, used when no token is set or it is refused. */
    val username: String? = null,
    /** gomuks: password going with [username]. A secret. */
    val password: String? = null,
    /** gomuks: per-message raw deflate (default on). */
    val compression: Boolean = true,
    /**
     * Keepalive ping interval (default gomuks 15000, rwws 10000); below [receiveTimeoutMs], and
     * for rwws below the server's 30000 limit (a gomuks websocket sending nothing else for
     * 60000 is closed by the backend with 4002).
     */
    val pingIntervalMs: Int? = null,
    /** Reconnect when nothing arrives this long (default gomuks 60000, rwws 20000, or more). */
    val receiveTimeoutMs: Int? = null,
    /**
     * How long a ping may go unanswered, no byte at all arriving, before the link counts as
     * dead and the client reconnects (default gomuks 10000, rwws 20000; positive): a silent link is noticed
     * within [pingIntervalMs] plus this. Also the deadline of the probe
     * [TetherClient.reconnectNow] sends on a live connection.
     */
    val pongTimeoutMs: Int? = null,
    /** Default timeout of a [TetherClient.request] (default 60000). */
    val requestTimeoutMs: Int? = null,
    /**
     * Bound on a connection's TCP connects and proxy tunnel (an `https://` proxy's TLS
     * handshake included) once the names are resolved (default 10000): addresses still
     * silent then are given up and named in the error. It also bounds the gomuks login's
     * answer once its connection is open. A whole attempt (name resolution, login, TLS and
     * upgrade included), and a token renewal, is bounded by twice this.
     */
    val connectTimeoutMs: Int? = null,
    /** First reconnect delay and its cap, `min..max` (default gomuks 125..10000, rwws 1000..60000). */
    val reconnectBackoffMs: IntRange? = null,
    /** Cap on one server message after decompression (default gomuks 64 MiB, rwws 64 KiB; >= 1024). */
    val maxMessageBytes: Long? = null,
    /** Events the library queues before it stops reading the socket (default 4096). */
    val queueCapacity: Long? = null,
    /** Resume point of an earlier client, from [TetherClient.resumeState]. */
    val resume: ResumeState? = null,
    /** gomuks: `last_server_ts`, so a failed resume costs a catch-up instead of a full sync. */
    val lastServerTs: Long? = null,
    /** gomuks: send `prev_listener_id` on reconnect (default off; defeats resume on current backends). */
    val prevListenerId: Boolean = false,
    /**
     * Extra headers of the websocket upgrade (e.g. `Origin`), in order; a name may repeat.
     * The library refuses the handshake's own headers and non-ASCII values.
     */
    val headers: List<Pair<String, String>> = emptyList(),
    /** PEM certificates to trust in addition to the roots (webpki, or the OS store) (`wss://`, `https://`). */
    val caPem: String? = null,
    /**
     * Public-key pins: `sha256/<base64>` (or the bare base64) of the SHA-256 of the server
     * certificate's SubjectPublicKeyInfo. With pins, one must match the key of the leaf or of
     * a certificate on its verified path to a trusted root (an intermediate, the root), *in
     * addition to* the normal chain and name checks (a pinned self-signed server still needs
     * [caPem]). A mismatch ends the client with [Status.ERR_CERTIFICATE], no retry. Needs a
     * `wss://`/`https://` URL.
     */
    val pinsSha256: List<String> = emptyList(),
    /**
     * Client certificate chain (PEM, leaf first) for servers that require one (mTLS); needs
     * [clientKeyPem] and a `wss://`/`https://` URL ([ConfigException] otherwise): only the
     * server is shown it, never a proxy.
     */
    val clientCertPem: String? = null,
    /** The private key (PEM) of [clientCertPem]. A secret. */
    val clientKeyPem: String? = null,
    /** Trust the operating system's certificate store instead of the built-in webpki roots. */
    val useOsTrust: Boolean = false,
    /** Allow credentials (token, password, `Cookie`/`Authorization` headers) over plain `ws://`/`http://` to a host that is not loopback. */
    val allowInsecureCredentials: Boolean = false,
    /**
     * The proxy for the websocket and the gomuks login alike: `http://[user:pass@]host:port`
     * (HTTP CONNECT), `https://…` (the same inside TLS to the proxy, verified like the
     * server but without the pins, and shown no client certificate), `socks5://…` (the name resolved locally) or `socks5h://…`
     * (by the proxy); `"direct"` ignores the environment. `null` (default) or `""`: the process
     * environment decides (`https_proxy`, `http_proxy`, `all_proxy`, `no_proxy`; never for loopback). A
     * proxy that refuses the credentials ends the client with [Status.ERR_UNAUTHORIZED]. The
     * credentials in it are secrets.
     */
    val proxy: String? = null,
    /**
     * Asked before every connection (each websocket attempt and each gomuks login) which
     * proxy to take, as OkHttp asks: `select(uri)` with the URL about to be opened (`ws`
     * and `wss` given as `http` and `https`). Its first HTTP proxy is taken as `http://`,
     * a SOCKS proxy as `socks5h://` (the proxy resolves the name, as Java's SOCKS does);
     * [java.net.Proxy.NO_PROXY] (DIRECT) or an empty list leaves the decision to [proxy]
     * and the environment. It runs on a library thread and may block; an exception fails
     * that attempt ([Status.ERR_CONNECT], retried). Credentials cannot come from it:
     * put them in [proxy]. `null` (default): `ProxySelector.getDefault()` at each
     * connection when [proxy] is `null` or `""` — on Android the system's proxy settings, which
     * follow the network (a PAC script through the platform's local PAC proxy); on a JVM
     * the `https.proxyHost`/`http.proxyHost`/`socksProxyHost` properties minus
     * `http.nonProxyHosts` — and none when [proxy] is set.
     */
    val proxySelector: java.net.ProxySelector? = null,
    /**
     * gomuks: use the backend bundled into this process instead of a websocket (see
     * [InProcess]). The client's URL is then ignored (pass `""`), and so are [compression],
     * pings, acks, [resume], [proxy], the TLS options and the credentials. [TetherClient.pause],
     * [TetherClient.unpause] and [TetherClient.reconnectNow] throw [UnsupportedException]. A
     * failed start ends the client with [Status.ERR_BACKEND_DATABASE],
     * [Status.ERR_BACKEND_ACCOUNT] or [Status.ERR_BACKEND_START] (a DISCONNECTED without
     * retry). A close answers every request at once but waits up to 5 s for calls the backend
     * is still running. `null` (default): the websocket at the client's URL.
     */
    val inProcess: InProcess? = null,
    /**
     * How many events [TetherClient.events] holds for a collector that is behind. When it is
     * full the library's dispatcher waits, the library's own queue ([queueCapacity]) fills
     * and the socket stops being read: nothing is dropped, the server sees TCP backpressure.
     * In-process there is no socket: gomuks's events then wait in the library's memory.
     */
    val eventBufferCapacity: Int = 256,
    /**
     * gomuks: attach a [Store] before connecting (`tether_store_new`), read as
     * [TetherClient.store]. `null` (default): no store. rwws clients refuse it with an
     * [UnsupportedException], websocket clients with [lastServerTs] with a [ConfigException]
     * (the store starts empty, and that first sync would hold only what changed since then).
     */
    val store: StoreOptions? = null,
    /**
     * Certificate revocation lists (PEM `X509 CRL` blocks): a server certificate they revoke
     * is refused with [Status.ERR_CERTIFICATE], no retry. Only the leaf is checked, and only
     * against these lists (a leaf whose issuer has none here is accepted; a list past its next
     * update still revokes; one per issuer). They apply to an `https://` proxy's certificate
     * too. tether fetches none. Needs TLS.
     */
    val crlPem: String? = null,
    /**
     * Bytes of requests and packets that may wait to be written (default 32 MiB): those made
     * while disconnected, or faster than the uplink carries. A call past it throws
     * [SendBufferFullException] and takes nothing ([TetherStats.unsentBytes] tells how much
     * waits); one message larger than the limit is taken while nothing else waits. Must be
     * at least 1.
     */
    val maxUnsentBytes: Long? = null,
) {
    // Written out for the same reason as ResumeState.hashCode (Android API 21).
    override fun hashCode(): Int = arrayOf<Any?>(
        protocol, token, username, password, compression, pingIntervalMs, receiveTimeoutMs,
        pongTimeoutMs, requestTimeoutMs, connectTimeoutMs, reconnectBackoffMs, maxMessageBytes,
        queueCapacity, resume, lastServerTs, prevListenerId, headers, caPem, pinsSha256,
        clientCertPem, clientKeyPem, useOsTrust, allowInsecureCredentials, proxy, proxySelector,
        inProcess, eventBufferCapacity, store, crlPem, maxUnsentBytes,
    ).contentHashCode()

    /** Leaves the secrets out, since options end up in logs. */
    override fun toString(): String =
        "TetherOptions(protocol=$protocol, token=${mask(token)}, username=$username, " +
            "password=${mask(password)}, compression=$compression, pingIntervalMs=$pingIntervalMs, " +
            "receiveTimeoutMs=$receiveTimeoutMs, pongTimeoutMs=$pongTimeoutMs, " +
            "requestTimeoutMs=$requestTimeoutMs, " +
            "connectTimeoutMs=$connectTimeoutMs, reconnectBackoffMs=$reconnectBackoffMs, " +
            "maxMessageBytes=$maxMessageBytes, queueCapacity=$queueCapacity, resume=$resume, " +
            "lastServerTs=$lastServerTs, prevListenerId=$prevListenerId, " +
            "headers=${headers.map { it.first }}, caPem=${caPem?.let { "${it.length} chars" }}, " +
            "pinsSha256=$pinsSha256, clientCertPem=${clientCertPem?.let { "${it.length} chars" }}, " +
            "clientKeyPem=${mask(clientKeyPem)}, useOsTrust=$useOsTrust, " +
            "allowInsecureCredentials=$allowInsecureCredentials, proxy=${proxy?.let { maskProxy(it) }}, " +
            "proxySelector=$proxySelector, " +
            "inProcess=$inProcess, eventBufferCapacity=$eventBufferCapacity, store=$store, " +
            "crlPem=${crlPem?.let { "${it.length} chars" }}, maxUnsentBytes=$maxUnsentBytes)"

    /** Writes every option into a fresh `tether_config`; the one place options meet the C API. */
    internal fun applyTo(cfg: Pointer) {
        val n = TetherNative
        if (eventBufferCapacity < 1) invalid("eventBufferCapacity must be at least 1")
        check(n.tether_config_set_protocol(cfg, protocol.code))
        token?.let { check(n.tether_config_set_token(cfg, n.cstr(it))) }
        if (username != null || password != null) {
            check(n.tether_config_set_basic_auth(cfg, n.cstr(username ?: ""), n.cstr(password ?: "")))
        }
        check(n.tether_config_set_compression(cfg, flag(compression)))
        pingIntervalMs?.let { check(n.tether_config_set_ping_interval_ms(cfg, u32("pingIntervalMs", it))) }
        receiveTimeoutMs?.let { check(n.tether_config_set_receive_timeout_ms(cfg, u32("receiveTimeoutMs", it))) }
        pongTimeoutMs?.let { check(n.tether_config_set_pong_timeout_ms(cfg, u32("pongTimeoutMs", it))) }
        requestTimeoutMs?.let { check(n.tether_config_set_request_timeout_ms(cfg, u32("requestTimeoutMs", it))) }
        connectTimeoutMs?.let { check(n.tether_config_set_connect_timeout_ms(cfg, u32("connectTimeoutMs", it))) }
        reconnectBackoffMs?.let {
            val min = u32("reconnectBackoffMs", it.first)
            val max = u32("reconnectBackoffMs", it.last)
            check(n.tether_config_set_reconnect_backoff_ms(cfg, min, max))
        }
        maxMessageBytes?.let { check(n.tether_config_set_max_message_bytes(cfg, size("maxMessageBytes", it))) }
        queueCapacity?.let { check(n.tether_config_set_queue_capacity(cfg, size("queueCapacity", it))) }
        maxUnsentBytes?.let { check(n.tether_config_set_max_unsent_bytes(cfg, size("maxUnsentBytes", it))) }
        resume?.let { check(n.tether_config_set_resume_state(cfg, n.cstr(it.runId), it.lastReceivedEvent)) }
        lastServerTs?.let { check(n.tether_config_set_last_server_ts(cfg, it)) }
        check(n.tether_config_set_prev_listener_id(cfg, flag(prevListenerId)))
        for ((name, value) in headers) check(n.tether_config_add_header(cfg, n.cstr(name), n.cstr(value)))
        caPem?.let {
            val pem = it.toByteArray(Charsets.UTF_8)
            check(n.tether_config_set_ca_pem(cfg, pem, pem.size.toLong()))
        }
        crlPem?.let {
            val pem = it.toByteArray(Charsets.UTF_8)
            check(n.tether_config_set_crl_pem(cfg, pem, pem.size.toLong()))
        }
        for (pin in pinsSha256) check(n.tether_config_add_pin_sha256(cfg, n.cstr(pin)))
        if (clientCertPem != null || clientKeyPem != null) {
            if (clientCertPem == null || clientKeyPem == null) invalid("clientCertPem and clientKeyPem go together")
            val cert = clientCertPem.toByteArray(Charsets.UTF_8)
            val key = clientKeyPem.toByteArray(Charsets.UTF_8)
            check(n.tether_config_set_client_cert_pem(cfg, cert, cert.size.toLong(), key, key.size.toLong()))
        }
        if (useOsTrust) check(n.tether_config_set_use_os_trust(cfg, 1))
        check(n.tether_config_set_allow_insecure_credentials(cfg, flag(allowInsecureCredentials)))
        proxy?.let { check(n.tether_config_set_proxy(cfg, n.cstr(it))) }
        if (inProcess == null && (proxySelector != null || proxy.isNullOrEmpty())) {
            val r = SelectorResolver(proxySelector)
            check(n.tether_config_set_proxy_resolver(cfg, r.onAsk, null, r.onDestroy))
        }
        inProcess?.let { check(n.tether_config_set_in_process(cfg, n.cstr(it.library), n.cstr(it.dataRoot))) }
    }

    private companion object {
        fun mask(secret: String?) = if (secret == null) "null" else "<redacted>"

        /**
         * The proxy URL without its user and password. Userinfo ends at the last `@`, where URL
         * parsers split it, and not at the first `/`: options are logged most when the library
         * refused them, and a raw password it refuses may hold `@`, `/`, `:`, `?` or `#`.
         */
        fun maskProxy(url: String): String {
            val at = url.lastIndexOf('@')
            if (at < 0) return url
            // Only a real scheme is kept: a `//` inside the password is no scheme's.
            val scheme = SCHEME.find(url)?.value ?: ""
            return "$scheme<redacted>${url.substring(at)}"
        }

        val SCHEME = Regex("^[A-Za-z][A-Za-z0-9+.-]*://")

        fun flag(on: Boolean): Byte = if (on) 1 else 0

        fun invalid(message: String): Nothing =
            throw InvalidArgumentException(Status.ERR_INVALID_ARGUMENT, message)

        fun u32(name: String, v: Int): Int = if (v < 0) invalid("$name must not be negative") else v

        fun size(name: String, v: Long): Long = if (v < 0) invalid("$name must not be negative") else v
    }
}
