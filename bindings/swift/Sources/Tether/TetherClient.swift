// The Swift wrapper over the tether C API (include/tether.h). Reviewed line by line against the
// header; see README.md for what was and was not compiled.
import CTether
import Foundation

/// Which wire protocol a client speaks.
public enum TetherProtocol: UInt32 {
    case gomuks = 1  // TETHER_PROTOCOL_GOMUKS
    case rwws = 2  // TETHER_PROTOCOL_RWWS
}

/// Every status of the header, as a Swift error. `message` is `tether_last_error()` or the
/// event's text.
public enum TetherError: Error, Equatable {
    case nullArgument(String)
    case invalidArgument(String)
    case invalidUTF8(String)
    case state(String)
    case wrongMode(String)
    case panic(String)
    case forked(String)
    case config(String)
    case bufferTooSmall(String)
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
    case protocolViolation(String)
    case inflate(String)
    case json(String)
    case messageTooLarge(String)
    case versionMismatch(String)
    case keyRevoked(String)
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
        case TETHER_ERR_PROTOCOL: self = .protocolViolation(message)
        case TETHER_ERR_INFLATE: self = .inflate(message)
        case TETHER_ERR_JSON: self = .json(message)
        case TETHER_ERR_MESSAGE_TOO_LARGE: self = .messageTooLarge(message)
        case TETHER_ERR_VERSION_MISMATCH: self = .versionMismatch(message)
        case TETHER_ERR_KEY_REVOKED: self = .keyRevoked(message)
        default: self = .unknown(status, message)
        }
    }
}

/// Throws unless `status` is TETHER_OK.
@inline(__always)
func check(_ status: tether_status) throws {
    if status != TETHER_OK {
        throw TetherError(status: status, message: String(cString: tether_last_error()))
    }
}

/// What an event reports (`TETHER_EVENT_*`).
public enum EventKind: UInt32 {
    case connecting = 1, connected, disconnected, message, response, pong, packet, closed
}

/// One event, copied out of the library (the C event is only lent to the callback).
public struct Event {
    public let kind: EventKind
    /// RESPONSE/PONG: the request id; MESSAGE: the server's event id (negative if buffered).
    public let requestId: Int64
    public let status: Int32
    /// gomuks command name of a MESSAGE, "" otherwise.
    public let command: String
    /// JSON for MESSAGE/RESPONSE, packet bytes for PACKET, reason text for DISCONNECTED.
    public let data: Data
    public let closeCode: UInt16
    /// DISCONNECTED: milliseconds until the next attempt; nil when no retry follows.
    public let retryInMs: Int64?
    /// PONG: round-trip time in microseconds.
    public let rttMicros: Int64?
    /// PONG (gomuks): the acknowledged event id, 0 for none.
    public let ackedId: Int64
    /// PONG (rwws): the server's unix milliseconds, 0 if unknown.
    public let serverTimeMs: Int64
    public let resumeAttempted: Bool

    init(_ ev: OpaquePointer) {
        var ptr: UnsafePointer<UInt8>? = nil
        var len: Int = 0
        if tether_event_data(ev, &ptr, &len) == TETHER_OK, let p = ptr, len > 0 {
            data = Data(bytes: p, count: len)
        } else {
            data = Data()
        }
        kind = EventKind(rawValue: tether_event_kind(ev)) ?? .message
        requestId = tether_event_request_id(ev)
        status = tether_event_status(ev)
        command = String(cString: tether_event_command(ev))
        closeCode = tether_event_close_code(ev)
        let retry = tether_event_retry_in_ms(ev)
        retryInMs = retry < 0 ? nil : retry
        let rtt = tether_event_rtt_us(ev)
        rttMicros = rtt < 0 ? nil : rtt
        ackedId = tether_event_acked_id(ev)
        serverTimeMs = tether_event_server_time_ms(ev)
        resumeAttempted = tether_event_resume_attempted(ev)
    }
}

/// Where to resume: the backend's run id and the last received event id (0 or negative).
public struct ResumeState: Equatable {
    public let runId: String
    public let lastReceivedEvent: Int64
    public init(runId: String, lastReceivedEvent: Int64) {
        self.runId = runId
        self.lastReceivedEvent = lastReceivedEvent
    }
}

/// Shared between the client and the C callbacks. Retained once for the library
/// (`Unmanaged.passRetained`) and released in `destroy`, which runs exactly once.
final class CallbackBox {
    let lock = NSLock()
    var pending: [Int64: CheckedContinuation<Data, Error>] = [:]
    var early: [Int64: Event] = [:]
    var events: AsyncStream<Event>.Continuation?

    func deliver(_ ev: Event) {
        if ev.kind == .response {
            lock.lock()
            let waiter = pending.removeValue(forKey: ev.requestId)
            if waiter == nil { early[ev.requestId] = ev }
            lock.unlock()
            if let w = waiter { TetherClient.resume(w, with: ev) }
            return
        }
        events?.yield(ev)
        if ev.kind == .closed { events?.finish() }
    }

    /// After free: nothing will answer the remaining requests.
    func failAll() {
        lock.lock()
        let waiters = pending
        pending.removeAll()
        lock.unlock()
        for (_, w) in waiters { w.resume(throwing: TetherError.clientClosed("client closed")) }
        events?.finish()
    }
}

/// A connection to one backend, kept alive and resumed across drops by the native library.
/// Events arrive on `events` (callbacks run on the library's dispatcher thread, never on an
/// I/O thread); replies to `request` are routed to the awaiting task. `deinit` frees.
public final class TetherClient {
    private let client: OpaquePointer
    private let box = CallbackBox()
    /// Every event except request replies, in order; finishes after CLOSED.
    public let events: AsyncStream<Event>

    public init(
        url: String,
        protocol proto: TetherProtocol = .gomuks,
        token: String? = nil,
        username: String? = nil,
        password: String? = nil,
        compress: Bool = true,
        pingIntervalMs: UInt32? = nil,
        resume: ResumeState? = nil
    ) throws {
        var cfg: OpaquePointer? = nil
        try check(tether_config_new(&cfg))
        defer { tether_config_free(cfg) }
        try check(tether_config_set_url(cfg, url))
        try check(tether_config_set_protocol(cfg, proto.rawValue))
        if let t = token { try check(tether_config_set_token(cfg, t)) }
        if let u = username { try check(tether_config_set_basic_auth(cfg, u, password ?? "")) }
        try check(tether_config_set_compression(cfg, compress))
        if let p = pingIntervalMs { try check(tether_config_set_ping_interval_ms(cfg, p)) }
        if let r = resume {
            try check(tether_config_set_resume_state(cfg, r.runId, r.lastReceivedEvent))
        }
        var c: OpaquePointer? = nil
        try check(tether_client_new(cfg, &c))
        guard let client = c else { throw TetherError.nullArgument("tether_client_new returned NULL") }
        self.client = client
        var cont: AsyncStream<Event>.Continuation?
        events = AsyncStream { cont = $0 }
        box.events = cont

        let ctx = Unmanaged.passRetained(box).toOpaque()
        let status = tether_client_set_event_callback(
            client,
            { ctx, ev in
                guard let ctx = ctx, let ev = ev else { return }
                Unmanaged<CallbackBox>.fromOpaque(ctx).takeUnretainedValue().deliver(Event(ev))
            },
            ctx,
            { ctx in
                guard let ctx = ctx else { return }
                Unmanaged<CallbackBox>.fromOpaque(ctx).release()
            })
        if status != TETHER_OK {
            // Not registered: destroy will never run, so balance the retain here.
            Unmanaged<CallbackBox>.fromOpaque(ctx).release()
            tether_client_free(client)
            throw TetherError(status: status, message: String(cString: tether_last_error()))
        }
        do {
            try check(tether_client_connect(client))
        } catch {
            tether_client_free(client)
            throw error
        }
    }

    deinit {
        // Joins the dispatcher: no callback runs after this; destroy releases the box.
        tether_client_free(client)
        box.failAll()
    }

    static func resume(_ w: CheckedContinuation<Data, Error>, with ev: Event) {
        if ev.status == TETHER_OK {
            w.resume(returning: ev.data)
        } else {
            let text = String(decoding: ev.data, as: UTF8.self)
            w.resume(throwing: TetherError(status: ev.status, message: text))
        }
    }

    /// Sends `command` with `data` (JSON) and returns the reply's raw JSON data. Task
    /// cancellation cancels the request on the server.
    public func request(_ command: String, data: Data = Data("{}".utf8)) async throws -> Data {
        let idBox = RequestId()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (w: CheckedContinuation<Data, Error>) in
                var id: Int64 = 0
                box.lock.lock()
                let status = data.withUnsafeBytes { raw -> tether_status in
                    let p = raw.bindMemory(to: UInt8.self).baseAddress
                    return tether_client_request(client, command, p, raw.count, &id)
                }
                if status != TETHER_OK {
                    box.lock.unlock()
                    w.resume(throwing: TetherError(status: status, message: String(cString: tether_last_error())))
                    return
                }
                idBox.set(id)
                let early = box.early.removeValue(forKey: id)
                if early == nil { box.pending[id] = w }
                box.lock.unlock()
                if let ev = early { TetherClient.resume(w, with: ev) }
            }
        } onCancel: {
            if let id = idBox.get() { _ = tether_client_cancel(client, id) }
        }
    }

    /// rwws: sends one raw packet.
    public func sendPacket(_ bytes: Data) throws {
        try bytes.withUnsafeBytes { raw in
            try check(tether_client_send_packet(client, raw.bindMemory(to: UInt8.self).baseAddress, raw.count))
        }
    }

    /// The resume point to persist and pass to a later client.
    public func resumeState() throws -> ResumeState {
        var last: Int64 = 0
        let runId = try sizedString { buf, cap, len in
            tether_client_resume_state(client, buf, cap, len, &last)
        }
        return ResumeState(runId: runId, lastReceivedEvent: last)
    }

    /// The credential the next connection sends, to persist instead of the password (gomuks
    /// spec 1.2): the `gomuks_auth` token, the configured one until a login with the username
    /// and password or a renewal replaces it; rwws: the configured key. `nil` before the first
    /// login and with auth disabled, unless a token was configured. A secret: keep it out of logs.
    public func authToken() throws -> String? {
        let token = try sizedString { buf, cap, len in
            tether_client_auth_token(client, buf, cap, len)
        }
        return token.isEmpty ? nil : token
    }

    /// Closes gracefully; `events` finishes after CLOSED. gomuks: close code 1001, so the
    /// backend frees the events it kept for this client; with `keepResume: true` the code is
    /// 1000 and a later client given `resumeState()` receives what it missed. rwws: 1000.
    public func close(keepResume: Bool = false) throws {
        try check(keepResume ? tether_client_close_keep_resume(client) : tether_client_close(client))
    }

    /// The native library's version string.
    public static var libraryVersion: String { String(cString: tether_version()) }
}

/// A string from a `(buf, cap, out_len)` function of the C API: asks for the length, then
/// copies; asks again if the value grew in between (a new run_id, a renewed token).
func sizedString(
    _ call: (UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>) -> tether_status
) throws -> String {
    var len: Int = 0
    while true {
        let sized = call(nil, 0, &len)
        if sized != TETHER_OK && sized != TETHER_ERR_BUFFER_TOO_SMALL { try check(sized) }
        var buf = [CChar](repeating: 0, count: len + 1)
        let status = buf.withUnsafeMutableBufferPointer { call($0.baseAddress, $0.count, &len) }
        if status == TETHER_ERR_BUFFER_TOO_SMALL { continue }
        try check(status)
        return String(cString: buf)
    }
}

/// The id of a request in flight, readable from the cancellation handler.
final class RequestId {
    private let lock = NSLock()
    private var value: Int64?
    func set(_ v: Int64) { lock.lock(); value = v; lock.unlock() }
    func get() -> Int64? { lock.lock(); defer { lock.unlock() }; return value }
}
