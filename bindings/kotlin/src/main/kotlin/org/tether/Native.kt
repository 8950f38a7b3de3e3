package org.tether

import com.sun.jna.Callback
import com.sun.jna.Library
import com.sun.jna.Native
import com.sun.jna.NativeLibrary
import com.sun.jna.Platform
import com.sun.jna.Pointer
import com.sun.jna.Structure
import com.sun.jna.ptr.IntByReference
import com.sun.jna.ptr.LongByReference
import com.sun.jna.ptr.PointerByReference
import java.io.File
import java.io.IOException

/**
 * JNA direct mapping of `include/tether.h`. Types follow the header: `tether_status` and
 * `uint32_t` are `Int`, `int64_t` and `size_t` are `Long` (64-bit targets only), C `bool` and
 * `uint8_t` are `Byte`, `uint16_t` is `Short`, strings going in are NUL-terminated UTF-8
 * `ByteArray`s (see [cstr]), out-parameters are `*ByReference`.
 * `scripts/check-bindings.py` checks every function here against the header.
 */
internal object TetherNative {
    /** Why the jar's own copy did not load, when another libtether was taken instead. */
    var bundledFailure: UnsatisfiedLinkError? = null
        private set

    /** The library loaded: the jar's own copy, unless [load] says why another. */
    val library: NativeLibrary = load()

    init {
        Native.register(TetherNative::class.java, library)
    }

    /**
     * The jar's copy by its absolute path: loaded by name, JNA would take a `libtether.so` the
     * system's loader finds first (an install in `/usr/local/lib`, `LD_LIBRARY_PATH`), perhaps
     * another version. The name is looked up as JNA does instead when `-Djna.library.path`
     * names a directory holding libtether (the documented override), when the jar has no copy
     * for this platform (an Android app's own `lib` directory; also `-Djna.nounpack`), and
     * when the jar's copy does not load here (a C library older than the build machine's).
     */
    private fun load(): NativeLibrary {
        val loader = TetherNative::class.java.classLoader
        val name = System.mapLibraryName("tether")
        val override = System.getProperty("jna.library.path")?.split(File.pathSeparator)
            ?.any { it.isNotEmpty() && File(it, name).exists() } == true
        val byName = { NativeLibrary.getInstance("tether", mapOf(Library.OPTION_CLASSLOADER to loader)) }
        if (override) return byName()
        val resource = loader.getResource("${Platform.RESOURCE_PREFIX}/$name") ?: return byName()
        val bundled = try {
            Native.extractFromResourcePath("tether", loader)
        } catch (e: IOException) {
            null
        } ?: return byName()
        val lib = try {
            NativeLibrary.getInstance(bundled.absolutePath, mapOf(Library.OPTION_CLASSLOADER to loader))
        } catch (e: UnsatisfiedLinkError) {
            try {
                byName().also { bundledFailure = e }
            } catch (other: UnsatisfiedLinkError) {
                e.addSuppressed(other)
                throw e
            }
        } finally {
            // An extracted copy is unlinked once mapped, as JNA does with its own: none is left
            // behind by a JVM that dies without an orderly exit.
            if (resource.protocol != "file") bundled.delete()
        }
        return lib
    }

    /** `tether_event_cb`: runs on the client's dispatcher thread. */
    fun interface EventCallback : Callback {
        fun invoke(ctx: Pointer?, ev: Pointer?)
    }

    /** `tether_destroy_cb`: runs once after the last event callback. */
    fun interface DestroyCallback : Callback {
        fun invoke(ctx: Pointer?)
    }

    /**
     * `tether_proxy_resolver_cb`: runs on a blocking thread of the library before each
     * connection; [url] is a NUL-terminated UTF-8 string, [answer] a `tether_proxy_answer*`
     * for [tether_proxy_answer_set], both valid during the call only.
     */
    fun interface ProxyResolverCallback : Callback {
        fun invoke(ctx: Pointer?, url: Pointer?, answer: Pointer?): Int
    }

    /** `tether_log_cb`: runs on the library's `tether-log` thread; [record] is a `tether_log_record*`. */
    fun interface LogCallback : Callback {
        fun invoke(ctx: Pointer?, record: Pointer?)
    }

    @JvmStatic external fun tether_config_new(out: PointerByReference): Int
    @JvmStatic external fun tether_config_set_url(cfg: Pointer, url: ByteArray): Int
    @JvmStatic external fun tether_config_set_protocol(cfg: Pointer, protocol: Int): Int
    @JvmStatic external fun tether_config_set_token(cfg: Pointer, token: ByteArray): Int
    @JvmStatic external fun tether_config_set_basic_auth(cfg: Pointer, user: ByteArray, password: ByteArray): Int
    @JvmStatic external fun tether_config_set_compression(cfg: Pointer, on: Byte): Int
    @JvmStatic external fun tether_config_set_ping_interval_ms(cfg: Pointer, ms: Int): Int
    @JvmStatic external fun tether_config_set_receive_timeout_ms(cfg: Pointer, ms: Int): Int
    @JvmStatic external fun tether_config_set_pong_timeout_ms(cfg: Pointer, ms: Int): Int
    @JvmStatic external fun tether_config_set_request_timeout_ms(cfg: Pointer, ms: Int): Int
    @JvmStatic external fun tether_config_set_connect_timeout_ms(cfg: Pointer, ms: Int): Int
    @JvmStatic external fun tether_config_set_reconnect_backoff_ms(cfg: Pointer, minMs: Int, maxMs: Int): Int
    @JvmStatic external fun tether_config_set_max_message_bytes(cfg: Pointer, bytes: Long): Int
    @JvmStatic external fun tether_config_set_queue_capacity(cfg: Pointer, events: Long): Int
    @JvmStatic external fun tether_config_set_max_unsent_bytes(cfg: Pointer, bytes: Long): Int
    @JvmStatic external fun tether_config_set_resume_state(cfg: Pointer, runId: ByteArray, lastReceivedEvent: Long): Int
    @JvmStatic external fun tether_config_set_last_server_ts(cfg: Pointer, tsMs: Long): Int
    @JvmStatic external fun tether_config_set_prev_listener_id(cfg: Pointer, on: Byte): Int
    @JvmStatic external fun tether_config_add_header(cfg: Pointer, name: ByteArray, value: ByteArray): Int
    @JvmStatic external fun tether_config_set_ca_pem(cfg: Pointer, pem: ByteArray, len: Long): Int
    @JvmStatic external fun tether_config_set_crl_pem(cfg: Pointer, pem: ByteArray, len: Long): Int
    @JvmStatic external fun tether_config_add_pin_sha256(cfg: Pointer, pin: ByteArray): Int
    @JvmStatic external fun tether_config_set_client_cert_pem(cfg: Pointer, cert: ByteArray, certLen: Long, key: ByteArray, keyLen: Long): Int
    @JvmStatic external fun tether_config_set_use_os_trust(cfg: Pointer, on: Byte): Int
    @JvmStatic external fun tether_config_set_allow_insecure_credentials(cfg: Pointer, on: Byte): Int
    @JvmStatic external fun tether_config_set_proxy(cfg: Pointer, url: ByteArray): Int
    @JvmStatic external fun tether_config_set_proxy_resolver(cfg: Pointer, cb: ProxyResolverCallback?, ctx: Pointer?, destroy: DestroyCallback?): Int
    @JvmStatic external fun tether_proxy_answer_set(answer: Pointer, proxy: ByteArray?): Int
    @JvmStatic external fun tether_config_set_in_process(cfg: Pointer, libraryPath: ByteArray, dataRoot: ByteArray): Int
    @JvmStatic external fun tether_config_free(cfg: Pointer?)

    @JvmStatic external fun tether_client_new(cfg: Pointer, out: PointerByReference): Int
    @JvmStatic external fun tether_client_connect(c: Pointer): Int
    @JvmStatic external fun tether_client_request(c: Pointer, command: ByteArray, data: ByteArray?, len: Long, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_client_request_with_timeout(c: Pointer, command: ByteArray, data: ByteArray?, len: Long, timeoutMs: Int, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_client_upload_media(c: Pointer, params: ByteArray, paramsLen: Long, bytes: ByteArray?, bytesLen: Long, timeoutMs: Int, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_client_download_media(c: Pointer, params: ByteArray, paramsLen: Long, timeoutMs: Int, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_client_cancel(c: Pointer, requestId: Long): Int
    @JvmStatic external fun tether_client_send_packet(c: Pointer, bytes: ByteArray, len: Long): Int
    @JvmStatic external fun tether_settings_new(out: PointerByReference): Int
    @JvmStatic external fun tether_settings_add(s: Pointer, id: Byte, value: ByteArray?, len: Long): Int
    @JvmStatic external fun tether_client_send_settings(c: Pointer, s: Pointer): Int
    @JvmStatic external fun tether_settings_free(s: Pointer?)
    @JvmStatic external fun tether_client_set_event_callback(c: Pointer, cb: EventCallback, ctx: Pointer?, destroy: DestroyCallback): Int
    @JvmStatic external fun tether_client_close(c: Pointer): Int
    @JvmStatic external fun tether_client_close_keep_resume(c: Pointer): Int
    @JvmStatic external fun tether_client_resume_state(c: Pointer, runId: ByteArray?, runIdCap: Long, outRunIdLen: LongByReference, outLastReceivedEvent: LongByReference): Int
    @JvmStatic external fun tether_client_auth_token(c: Pointer, buf: ByteArray?, cap: Long, outLen: LongByReference): Int
    @JvmStatic external fun tether_client_pause(c: Pointer): Int
    @JvmStatic external fun tether_client_unpause(c: Pointer): Int
    @JvmStatic external fun tether_client_reconnect_now(c: Pointer): Int
    @JvmStatic external fun tether_client_id(c: Pointer): Long
    @JvmStatic external fun tether_client_state(c: Pointer, out: IntByReference): Int
    @JvmStatic external fun tether_client_stats(c: Pointer, out: StatsStruct): Int
    @JvmStatic external fun tether_client_free(c: Pointer?)

    @JvmStatic external fun tether_event_kind(ev: Pointer): Int
    @JvmStatic external fun tether_event_request_id(ev: Pointer): Long
    @JvmStatic external fun tether_event_status(ev: Pointer): Int
    @JvmStatic external fun tether_event_command(ev: Pointer): Pointer
    @JvmStatic external fun tether_event_data(ev: Pointer, ptr: PointerByReference, len: LongByReference): Int
    @JvmStatic external fun tether_event_close_code(ev: Pointer): Short
    @JvmStatic external fun tether_event_retry_in_ms(ev: Pointer): Long
    @JvmStatic external fun tether_event_rtt_us(ev: Pointer): Long
    @JvmStatic external fun tether_event_acked_id(ev: Pointer): Long
    @JvmStatic external fun tether_event_server_time_ms(ev: Pointer): Long
    @JvmStatic external fun tether_event_resume_attempted(ev: Pointer): Byte
    @JvmStatic external fun tether_event_attempt(ev: Pointer): Int
    @JvmStatic external fun tether_event_resume_outcome(ev: Pointer): Int
    @JvmStatic external fun tether_event_progress(ev: Pointer): Double

    @JvmStatic external fun tether_store_new(c: Pointer, optionsJson: ByteArray?, out: PointerByReference): Int
    @JvmStatic external fun tether_store_free(s: Pointer?)
    @JvmStatic external fun tether_store_read(s: Pointer, what: ByteArray, argsJson: ByteArray?, buf: ByteArray?, cap: Long, outLen: LongByReference): Int
    @JvmStatic external fun tether_store_paginate(s: Pointer, roomId: ByteArray, limit: Int, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_store_load_state(s: Pointer, roomId: ByteArray, members: Byte, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_store_send_message(s: Pointer, paramsJson: ByteArray, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_store_mark_read(s: Pointer, roomId: ByteArray, receiptType: ByteArray?, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_store_request_members(s: Pointer, roomId: ByteArray, userIdsJson: ByteArray, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_store_resend(s: Pointer, roomId: ByteArray, rowid: Long, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_store_discard(s: Pointer, roomId: ByteArray, rowid: Long): Int
    @JvmStatic external fun tether_store_set_open(s: Pointer, roomId: ByteArray, open: Byte): Int
    @JvmStatic external fun tether_store_watch(s: Pointer, roomId: ByteArray?, on: Byte): Int
    @JvmStatic external fun tether_store_collect_garbage(s: Pointer, outEvicted: LongByReference): Int

    @JvmStatic external fun tether_status_str(s: Int): Pointer
    @JvmStatic external fun tether_last_error(): Pointer
    @JvmStatic external fun tether_version(): Pointer
    @JvmStatic external fun tether_version_number(): Int
    @JvmStatic external fun tether_set_log_callback(cb: LogCallback?, ctx: Pointer?, destroy: DestroyCallback?, maxLevel: Int): Int

    /**
     * A NUL-terminated UTF-8 copy of [s]. A NUL inside [s] would cut it short where the library
     * reads it (a command, a header value, a token sent truncated): [InvalidArgumentException]
     * instead, as the Python binding refuses it.
     */
    fun cstr(s: String): ByteArray {
        if (s.indexOf('\u0000') >= 0) {
            throw InvalidArgumentException(Status.ERR_INVALID_ARGUMENT, "a string passed to the library contains a NUL character")
        }
        // A lone surrogate has no UTF-8 form: the encoder would send '?' in its place, a
        // different room id or token than the app gave.
        var i = 0
        while (i < s.length) {
            val c = s[i]
            if (Character.isHighSurrogate(c) && i + 1 < s.length && Character.isLowSurrogate(s[i + 1])) {
                i += 2
                continue
            }
            if (Character.isSurrogate(c)) {
                throw InvalidArgumentException(Status.ERR_INVALID_UTF8, "a string passed to the library contains a lone surrogate at index $i")
            }
            i++
        }
        return (s + "\u0000").toByteArray(Charsets.UTF_8)
    }

    /** Reads a NUL-terminated UTF-8 string the library lends. */
    fun string(p: Pointer): String = p.getString(0, "UTF-8")
}

/**
 * `tether_stats`, field for field (`uint64_t` as `Long`). [size] is set to this struct's size
 * before each call; the durations start at -1 so that a library filling only a prefix of the
 * struct reports them as unknown rather than as 0.
 */
@Structure.FieldOrder(
    "size", "state", "connect_attempts", "connections", "resumes_succeeded", "resumes_reset",
    "wire_bytes_in", "wire_bytes_out", "payload_bytes_in", "messages_received", "events_received",
    "requests_sent", "requests_in_flight", "requests_timed_out", "queued_events", "last_rtt_us",
    "connected_ms", "unsent_bytes",
)
internal class StatsStruct : Structure() {
    @JvmField var size: Int = 0
    @JvmField var state: Int = 0
    @JvmField var connect_attempts: Long = 0
    @JvmField var connections: Long = 0
    @JvmField var resumes_succeeded: Long = 0
    @JvmField var resumes_reset: Long = 0
    @JvmField var wire_bytes_in: Long = 0
    @JvmField var wire_bytes_out: Long = 0
    @JvmField var payload_bytes_in: Long = 0
    @JvmField var messages_received: Long = 0
    @JvmField var events_received: Long = 0
    @JvmField var requests_sent: Long = 0
    @JvmField var requests_in_flight: Long = 0
    @JvmField var requests_timed_out: Long = 0
    @JvmField var queued_events: Long = 0
    @JvmField var last_rtt_us: Long = -1
    @JvmField var connected_ms: Long = -1
    @JvmField var unsent_bytes: Long = 0

    init {
        size = size()
    }
}

/** `tether_log_record`, read from the pointer the log callback lends. */
@Structure.FieldOrder("level", "target", "client_id", "message", "unix_time_us")
internal class LogRecordStruct(p: Pointer) : Structure(p) {
    @JvmField var level: Int = 0
    @JvmField var target: Pointer? = null
    @JvmField var client_id: Long = 0
    @JvmField var message: Pointer? = null
    @JvmField var unix_time_us: Long = 0

    init {
        read()
    }
}
