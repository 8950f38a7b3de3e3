import CTether
import Foundation

/// `s`, checked for the library: a NUL inside it would cut it short where the library reads
/// it (a command, a header value, a token sent truncated), so it is refused with
/// `.invalidArgument`, as the Python and Kotlin bindings refuse it.
func cString(_ s: String, _ what: String) throws -> String {
    if s.utf8.contains(0) {
        throw TetherError.invalidArgument("\(what) contains a NUL character")
    }
    return s
}

/// `cString` of UTF-8 bytes, refusing invalid UTF-8 (`.invalidUTF8`) as the C API does,
/// rather than sending U+FFFD in place of the bad bytes.
func cString(utf8 d: Data, _ what: String) throws -> String {
    guard let s = String(data: d, encoding: .utf8) else {
        throw TetherError.invalidUTF8("\(what) is not valid UTF-8")
    }
    return try cString(s, what)
}

/// Every status of the header, as a Swift error. The associated text is `tether_last_error()`
/// for a refused call, or what the event carried (the server's error text for `.remote`).
public enum TetherError: Error, Equatable, Sendable {
    case nullArgument(String)
    case invalidArgument(String)
    case invalidUTF8(String)
    case state(String)
    case wrongMode(String)
    case panic(String)
    case forked(String)
    case config(String)
    case bufferTooSmall(String)
    /// The call does not apply to this transport (pause in-process, media over the websocket).
    case unsupported(String)
    /// The in-process backend's data root, or the process's one backend, is held by another
    /// client.
    case inUse(String)
    /// More bytes of requests and packets already wait to be written than
    /// `TetherOptions.maxUnsentBytes` allows with this one (the server does not read, the
    /// uplink is slow, or the client is disconnected). Nothing was taken: try again after the
    /// `.sendReady` event that follows once room frees.
    case sendBufferFull(String)
    case remote(String)
    case requestTimeout(String)
    case cancelled(String)
    case disconnected(String)
    case clientClosed(String)
    case connect(String)
    case tls(String)
    case unauthorized(String)
    case forbidden(String)
    case http(String)
    case receiveTimeout(String)
    case remoteClosed(String)
    /// A certificate was refused (unknown issuer, wrong name, expired, pin mismatch, or the
    /// server refused ours); the client does not retry.
    case certificate(String)
    case protocolViolation(String)
    case inflate(String)
    case json(String)
    case messageTooLarge(String)
    case versionMismatch(String)
    case keyRevoked(String)
    /// In-process: the backend could not open its database (GomuksStart returned 10).
    case backendDatabase(String)
    /// In-process: the backend could not look up its account (GomuksStart returned 11).
    case backendAccount(String)
    /// In-process: the backend failed to start (GomuksStart returned 12 or another code).
    case backendStart(String)
    /// The loaded libtether is not the MAJOR.MINOR this wrapper was compiled against (no ABI
    /// promise before 1.0), so no client is created. Not a status of the header.
    case incompatibleLibrary(String)
    /// A status this wrapper does not know (a newer library), or TIMEOUT/CLOSED where an
    /// error was expected.
    case unknown(Int32, String)

    /// The error for a C status. Each case is matched against the header's macro, so a renamed
    /// or removed status fails to compile.
    public init(status: Int32, message: String) {
        switch status {
        case TETHER_ERR_NULL: self = .nullArgument(message)
        case TETHER_ERR_INVALID_ARGUMENT: self = .invalidArgument(message)
        case TETHER_ERR_INVALID_UTF8: self = .invalidUTF8(message)
        case TETHER_ERR_STATE: self = .state(message)
        case TETHER_ERR_WRONG_MODE: self = .wrongMode(message)
        case TETHER_ERR_PANIC: self = .panic(message)
        case TETHER_ERR_FORKED: self = .forked(message)
        case TETHER_ERR_CONFIG: self = .config(message)
        case TETHER_ERR_BUFFER_TOO_SMALL: self = .bufferTooSmall(message)
        case TETHER_ERR_UNSUPPORTED: self = .unsupported(message)
        case TETHER_ERR_IN_USE: self = .inUse(message)
        case TETHER_ERR_SEND_BUFFER_FULL: self = .sendBufferFull(message)
        case TETHER_ERR_REMOTE: self = .remote(message)
        case TETHER_ERR_REQUEST_TIMEOUT: self = .requestTimeout(message)
        case TETHER_ERR_CANCELLED: self = .cancelled(message)
        case TETHER_ERR_DISCONNECTED: self = .disconnected(message)
        case TETHER_ERR_CLIENT_CLOSED: self = .clientClosed(message)
        case TETHER_ERR_CONNECT: self = .connect(message)
        case TETHER_ERR_TLS: self = .tls(message)
        case TETHER_ERR_UNAUTHORIZED: self = .unauthorized(message)
        case TETHER_ERR_FORBIDDEN: self = .forbidden(message)
        case TETHER_ERR_HTTP: self = .http(message)
        case TETHER_ERR_RECEIVE_TIMEOUT: self = .receiveTimeout(message)
        case TETHER_ERR_REMOTE_CLOSED: self = .remoteClosed(message)
        case TETHER_ERR_CERTIFICATE: self = .certificate(message)
        case TETHER_ERR_PROTOCOL: self = .protocolViolation(message)
        case TETHER_ERR_INFLATE: self = .inflate(message)
        case TETHER_ERR_JSON: self = .json(message)
        case TETHER_ERR_MESSAGE_TOO_LARGE: self = .messageTooLarge(message)
        case TETHER_ERR_VERSION_MISMATCH: self = .versionMismatch(message)
        case TETHER_ERR_KEY_REVOKED: self = .keyRevoked(message)
        case TETHER_ERR_BACKEND_DATABASE: self = .backendDatabase(message)
        case TETHER_ERR_BACKEND_ACCOUNT: self = .backendAccount(message)
        case TETHER_ERR_BACKEND_START: self = .backendStart(message)
        default: self = .unknown(status, message)
        }
    }

    /// The status of a failed call, with the calling thread's `tether_last_error()`: it must be
    /// read on the thread that made the call, before any other tether call there.
    static func last(_ status: tether_status) -> TetherError {
        TetherError(status: status, message: String(cString: tether_last_error()))
    }
}

/// Throws unless `status` is TETHER_OK.
@inline(__always)
func check(_ status: tether_status) throws {
    if status != TETHER_OK { throw TetherError.last(status) }
}
