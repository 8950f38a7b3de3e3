package org.tether

/** Every `tether_status` of the header (a test checks the two lists match). */
enum class Status(val code: Int) {
    OK(0), TIMEOUT(1), CLOSED(2),
    ERR_NULL(-1), ERR_INVALID_ARGUMENT(-2), ERR_INVALID_UTF8(-3), ERR_STATE(-4),
    ERR_WRONG_MODE(-5), ERR_PANIC(-6), ERR_FORKED(-7), ERR_CONFIG(-8), ERR_BUFFER_TOO_SMALL(-9),
    ERR_UNSUPPORTED(-10), ERR_IN_USE(-11), ERR_SEND_BUFFER_FULL(-12),
    ERR_REMOTE(-20), ERR_REQUEST_TIMEOUT(-21), ERR_CANCELLED(-22), ERR_DISCONNECTED(-23),
    ERR_CLIENT_CLOSED(-24),
    ERR_CONNECT(-30), ERR_TLS(-31), ERR_UNAUTHORIZED(-32), ERR_FORBIDDEN(-33), ERR_HTTP(-34),
    ERR_RECEIVE_TIMEOUT(-35), ERR_REMOTE_CLOSED(-36), ERR_CERTIFICATE(-37),
    ERR_PROTOCOL(-40), ERR_INFLATE(-41), ERR_JSON(-42), ERR_MESSAGE_TOO_LARGE(-43),
    ERR_VERSION_MISMATCH(-50), ERR_KEY_REVOKED(-51),
    ERR_BACKEND_DATABASE(-60), ERR_BACKEND_ACCOUNT(-61), ERR_BACKEND_START(-62),
    /** A code this binding does not know (a newer library). */
    UNKNOWN(Int.MIN_VALUE);

    /** The library's description of this status. */
    val description: String get() = TetherNative.string(TetherNative.tether_status_str(code))

    companion object {
        private val byCode = entries.associateBy { it.code }

        /** The status for a C value ([UNKNOWN] if the binding does not know it). */
        fun of(code: Int): Status = byCode[code] ?: UNKNOWN
    }
}

/**
 * Base of every error tether raises; [status] is the library's status, and [code] its C value,
 * which says which status it was when [status] is [Status.UNKNOWN] (a newer library's).
 */
open class TetherException(val status: Status, message: String, val code: Int = status.code) : Exception(message) {
    companion object {
        /** The typed exception for [code] with [message]. */
        fun of(code: Int, message: String): TetherException {
            val s = Status.of(code)
            val text = message.ifEmpty { if (s == Status.UNKNOWN) "unknown status $code" else s.description }
            return when (s) {
                Status.ERR_NULL, Status.ERR_INVALID_ARGUMENT, Status.ERR_INVALID_UTF8,
                Status.ERR_BUFFER_TOO_SMALL -> InvalidArgumentException(s, text)
                Status.ERR_STATE, Status.ERR_WRONG_MODE -> StateException(s, text)
                Status.ERR_UNSUPPORTED -> UnsupportedException(s, text)
                Status.ERR_IN_USE -> InUseException(s, text)
                Status.ERR_SEND_BUFFER_FULL -> SendBufferFullException(s, text)
                Status.ERR_BACKEND_DATABASE, Status.ERR_BACKEND_ACCOUNT, Status.ERR_BACKEND_START ->
                    BackendException(s, text)
                Status.ERR_PANIC -> PanicException(s, text)
                Status.ERR_FORKED -> ForkedException(s, text)
                Status.ERR_CONFIG -> ConfigException(s, text)
                Status.ERR_REMOTE -> RemoteException(s, text)
                Status.ERR_REQUEST_TIMEOUT -> RequestTimeoutException(s, text)
                Status.ERR_CANCELLED -> CancelledException(s, text)
                Status.ERR_DISCONNECTED -> DisconnectedException(s, text)
                Status.ERR_CLIENT_CLOSED, Status.CLOSED -> ClientClosedException(s, text)
                Status.ERR_UNAUTHORIZED, Status.ERR_FORBIDDEN, Status.ERR_KEY_REVOKED ->
                    AuthException(s, text)
                Status.ERR_CONNECT, Status.ERR_TLS, Status.ERR_HTTP, Status.ERR_RECEIVE_TIMEOUT,
                Status.ERR_REMOTE_CLOSED, Status.ERR_CERTIFICATE -> ConnectionException(s, text)
                Status.ERR_PROTOCOL, Status.ERR_INFLATE, Status.ERR_JSON,
                Status.ERR_MESSAGE_TOO_LARGE, Status.ERR_VERSION_MISMATCH ->
                    ProtocolException(s, text)
                Status.OK, Status.TIMEOUT, Status.UNKNOWN -> TetherException(s, text, code)
            }
        }
    }
}

/** The call does not apply to this transport (pause in-process, media over the websocket, a store on rwws). */
class UnsupportedException(s: Status, m: String) : TetherException(s, m)
/**
 * The in-process backend's data root (or the process's one backend) is held by another
 * client; a store's pagination of the room is already running; a store was attached before.
 */
class InUseException(s: Status, m: String) : TetherException(s, m)
/**
 * More bytes of requests and packets already wait to be written than
 * [TetherOptions.maxUnsentBytes] allows with this one (the server does not read, the uplink is
 * slow, or the client is disconnected). Nothing was taken: try again after the
 * [EventKind.SEND_READY] event that follows once room frees.
 */
class SendBufferFullException(s: Status, m: String) : TetherException(s, m)
/** The in-process backend failed to start (database, account lookup, or start). */
class BackendException(s: Status, m: String) : TetherException(s, m)
/** A bad argument (NULL, invalid UTF-8, non-JSON data, out of range). */
class InvalidArgumentException(s: Status, m: String) : TetherException(s, m)
/** The call is not valid now (closed client, wrong delivery mode). */
class StateException(s: Status, m: String) : TetherException(s, m)
/** The library caught an internal panic; the client sends nothing more (its last events can still be taken). */
class PanicException(s: Status, m: String) : TetherException(s, m)
/** Used in a child process after fork(). */
class ForkedException(s: Status, m: String) : TetherException(s, m)
/** The configuration is invalid. */
class ConfigException(s: Status, m: String) : TetherException(s, m)
/** The server answered the request with an error; the message is its text. */
class RemoteException(s: Status, m: String) : TetherException(s, m)
/** No reply within the request timeout (the server was told to cancel). */
class RequestTimeoutException(s: Status, m: String) : TetherException(s, m)
/** The request was cancelled. */
class CancelledException(s: Status, m: String) : TetherException(s, m)
/** The connection dropped before the reply; the outcome is unknown. */
class DisconnectedException(s: Status, m: String) : TetherException(s, m)
/** The client closed before the reply. */
class ClientClosedException(s: Status, m: String) : TetherException(s, m)
/** Credentials or key refused (401, 403, rwws 3001/3004). */
class AuthException(s: Status, m: String) : TetherException(s, m)
/**
 * Network, TLS or HTTP failure, or the server closed the connection. With
 * [Status.ERR_CERTIFICATE] (a refused certificate or pin mismatch) the client does not retry.
 */
class ConnectionException(s: Status, m: String) : TetherException(s, m)
/** The server broke the protocol (bad frames, deflate, JSON, size, version). */
class ProtocolException(s: Status, m: String) : TetherException(s, m)

/** Throws the typed exception unless [code] is OK; the message is `tether_last_error()`. */
internal fun check(code: Int) {
    if (code != Status.OK.code) {
        throw TetherException.of(code, TetherNative.string(TetherNative.tether_last_error()))
    }
}
