package org.tether

import com.sun.jna.CallbackThreadInitializer
import com.sun.jna.Native
import java.net.InetSocketAddress
import java.net.Proxy
import java.net.ProxySelector
import java.net.URI
import java.net.URISyntaxException
import java.util.Collections
import java.util.concurrent.ConcurrentHashMap

/**
 * Answers the library's `tether_proxy_resolver_cb` from a [ProxySelector]: [selector], or
 * `ProxySelector.getDefault()` at each call when it is `null`, so a default the app or the
 * platform replaces later counts.
 */
internal class SelectorResolver(private val selector: ProxySelector?) {
    val onAsk = TetherNative.ProxyResolverCallback { _, url, answer ->
        try {
            val proxy = if (url == null) null else choose(url.getString(0, "UTF-8"))
            if (proxy == null || answer == null) {
                0
            } else if (proxy.indexOf('\u0000') >= 0) {
                // Not a proxy URL (the header's rule): the client ends with ERR_CONFIG rather
                // than retrying an answer that can never work.
                Status.ERR_CONFIG.code
            } else {
                TetherNative.tether_proxy_answer_set(answer, TetherNative.cstr(proxy))
            }
        } catch (t: Throwable) {
            // An exception must not cross into the library's thread: the attempt fails instead.
            Status.ERR_CONNECT.code
        }
    }

    val onDestroy = TetherNative.DestroyCallback { _ -> live.remove(this) }

    init {
        // JNA holds callbacks weakly: this stays reachable until the library lets go of it.
        live.add(this)
        Native.setCallbackThreadInitializer(onAsk, CallbackThreadInitializer(true, false, "tether-proxy"))
    }

    private fun choose(url: String): String? {
        val select = selector ?: ProxySelector.getDefault() ?: return null
        // ProxySelectors know http and https; a websocket goes to the same place.
        val http = url.replaceFirst(Regex("^ws"), "http")
        // A selector looks at the scheme, host and port only: a path java.net.URI refuses
        // (`|`, `{`) must not fail every attempt, so that is dropped for the selector then.
        val uri = try {
            URI(http)
        } catch (e: URISyntaxException) {
            URI(Regex("^[a-z]+://[^/?#]*").find(http)?.value ?: return null)
        }
        // The first usable entry, in the selector's order of preference; DIRECT is an answer
        // too (the configured decision).
        for (p in select.select(uri) ?: return null) {
            if (p.type() == Proxy.Type.DIRECT) return null
            val addr = p.address() as? InetSocketAddress ?: continue
            val host = addr.hostString.let { if (it.contains(':')) "[$it]" else it }
            return when (p.type()) {
                Proxy.Type.SOCKS -> "socks5h://$host:${addr.port}"
                else -> "http://$host:${addr.port}"
            }
        }
        return null
    }

    private companion object {
        val live: MutableSet<SelectorResolver> = Collections.newSetFromMap(ConcurrentHashMap())
    }
}
