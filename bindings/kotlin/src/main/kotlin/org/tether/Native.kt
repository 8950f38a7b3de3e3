package org.tether

import com.sun.jna.Callback
import com.sun.jna.Native
import com.sun.jna.Pointer
import com.sun.jna.ptr.LongByReference
import com.sun.jna.ptr.PointerByReference

/**
 * JNA direct mapping of `include/tether.h`. Types follow the header: `tether_status` and
 * `uint32_t` are `Int`, `int64_t` and `size_t` are `Long` (64-bit targets only), C `bool` and
 * `uint8_t` are `Byte`, `uint16_t` is `Short`, strings going in are NUL-terminated UTF-8
 * `ByteArray`s (see [cstr]), out-parameters are `*ByReference`.
 * `scripts/check-bindings.py` checks every function here against the header.
 */
internal object TetherNative {
    init {
        Native.register(TetherNative::class.java, "tether")
    }

    /** `tether_event_cb`: runs on the client's dispatcher thread. */
    fun interface EventCallback : Callback {
        fun invoke(ctx: Pointer?, ev: Pointer?)
    }

    /** `tether_destroy_cb`: runs once after the last event callback. */
    fun interface DestroyCallback : Callback {
        fun invoke(ctx: Pointer?)
    }

    @JvmStatic external fun tether_config_new(out: PointerByReference): Int
    @JvmStatic external fun tether_config_set_url(cfg: Pointer, url: ByteArray): Int
    @JvmStatic external fun tether_config_set_protocol(cfg: Pointer, protocol: Int): Int
    @JvmStatic external fun tether_config_set_token(cfg: Pointer, token: ByteArray): Int
    @JvmStatic external fun tether_config_set_basic_auth(cfg: Pointer, user: ByteArray, password: ByteArray): Int
    @JvmStatic external fun tether_config_set_compression(cfg: Pointer, on: Byte): Int
    @JvmStatic external fun tether_config_set_ping_interval_ms(cfg: Pointer, ms: Int): Int
    @JvmStatic external fun tether_config_set_receive_timeout_ms(cfg: Pointer, ms: Int): Int
    @JvmStatic external fun tether_config_set_request_timeout_ms(cfg: Pointer, ms: Int): Int
    @JvmStatic external fun tether_config_set_connect_timeout_ms(cfg: Pointer, ms: Int): Int
    @JvmStatic external fun tether_config_set_reconnect_backoff_ms(cfg: Pointer, minMs: Int, maxMs: Int): Int
    @JvmStatic external fun tether_config_set_max_message_bytes(cfg: Pointer, bytes: Long): Int
    @JvmStatic external fun tether_config_set_queue_capacity(cfg: Pointer, events: Long): Int
    @JvmStatic external fun tether_config_set_resume_state(cfg: Pointer, runId: ByteArray, lastReceivedEvent: Long): Int
    @JvmStatic external fun tether_config_set_last_server_ts(cfg: Pointer, tsMs: Long): Int
    @JvmStatic external fun tether_config_set_prev_listener_id(cfg: Pointer, on: Byte): Int
    @JvmStatic external fun tether_config_add_header(cfg: Pointer, name: ByteArray, value: ByteArray): Int
    @JvmStatic external fun tether_config_set_ca_pem(cfg: Pointer, pem: ByteArray, len: Long): Int
    @JvmStatic external fun tether_config_set_allow_insecure_credentials(cfg: Pointer, on: Byte): Int
    @JvmStatic external fun tether_config_free(cfg: Pointer?)

    @JvmStatic external fun tether_client_new(cfg: Pointer, out: PointerByReference): Int
    @JvmStatic external fun tether_client_connect(c: Pointer): Int
    @JvmStatic external fun tether_client_request(c: Pointer, command: ByteArray, data: ByteArray?, len: Long, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_client_request_with_timeout(c: Pointer, command: ByteArray, data: ByteArray?, len: Long, timeoutMs: Int, outRequestId: LongByReference): Int
    @JvmStatic external fun tether_client_cancel(c: Pointer, requestId: Long): Int
    @JvmStatic external fun tether_client_send_packet(c: Pointer, bytes: ByteArray, len: Long): Int
    @JvmStatic external fun tether_client_set_event_callback(c: Pointer, cb: EventCallback, ctx: Pointer?, destroy: DestroyCallback): Int
    @JvmStatic external fun tether_client_close(c: Pointer): Int
    @JvmStatic external fun tether_client_close_keep_resume(c: Pointer): Int
    @JvmStatic external fun tether_client_resume_state(c: Pointer, runId: ByteArray?, runIdCap: Long, outRunIdLen: LongByReference, outLastReceivedEvent: LongByReference): Int
    @JvmStatic external fun tether_client_auth_token(c: Pointer, buf: ByteArray?, cap: Long, outLen: LongByReference): Int
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

    @JvmStatic external fun tether_status_str(s: Int): Pointer
    @JvmStatic external fun tether_last_error(): Pointer
    @JvmStatic external fun tether_version(): Pointer
    @JvmStatic external fun tether_version_number(): Int

    /** A NUL-terminated UTF-8 copy of [s]. */
    fun cstr(s: String): ByteArray = (s + "\u0000").toByteArray(Charsets.UTF_8)

    /** Reads a NUL-terminated UTF-8 string the library lends. */
    fun string(p: Pointer): String = p.getString(0, "UTF-8")
}
