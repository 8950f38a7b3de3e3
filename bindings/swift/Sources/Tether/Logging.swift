// The library's log records, handed to a Swift closure (and, on Apple platforms, optionally to
// os.Logger).
import CTether
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(os)
import os
#endif

/// How important a log record is (`TETHER_LOG_*`); `error` is the most important.
public enum TetherLogLevel: UInt32, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    /// The client gave up, or a call failed in a way the app must handle.
    case error = 1
    /// An attempt to connect failed (refused, timed out) and will be retried, or the library
    /// closed a connection over a server's bad message. A connection that dropped and will be
    /// resumed is `info`.
    case warn = 2
    /// The connection's life: attempts, connections, closes, resumes, backoff.
    case info = 3
    /// Details: timings of each step, requests that timed out, ignored messages.
    case debug = 4
    /// Everything else the library notices.
    case trace = 5

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .error: "error"
        case .warn: "warn"
        case .info: "info"
        case .debug: "debug"
        case .trace: "trace"
        }
    }
}

/// One record of the library's log, copied out of the C record (which is only lent to the
/// callback). Never holds a password, token, cookie or key.
public struct TetherLogRecord: Sendable, Equatable, CustomStringConvertible {
    public let level: TetherLogLevel
    /// The part of the library that wrote it, e.g. "tether::session" or "tether::gomuks".
    public let target: String
    /// `TetherClient.id` of the client it belongs to; 0 for a record of no client.
    public let clientID: UInt64
    /// What happened, in English.
    public let message: String
    /// When the library wrote it (the handler may run a little later).
    public let date: Date

    public init(level: TetherLogLevel, target: String, clientID: UInt64, message: String, date: Date) {
        self.level = level
        self.target = target
        self.clientID = clientID
        self.message = message
        self.date = date
    }

    /// `"info tether::session [3] connected in 12 ms"`.
    public var description: String { "\(level) \(target) [\(clientID)] \(message)" }
}

/// The process-wide hook for the library's log records. Independent of any client: a handler
/// set before the first client sees that client's first attempt.
public enum TetherLog {
    /// Sends every record at `level` or more important to `handler`, replacing the previous
    /// handler. Records arrive one at a time, in order, on the library's own `tether-log`
    /// thread, never on a network thread: a slow handler costs dropped records (the next
    /// record says how many), never a stalled connection. When this returns, the previous
    /// handler has received its last record and has been released.
    ///
    /// Throws `.state` when called from inside a handler, and `.incompatibleLibrary` if the
    /// loaded libtether does not match the header.
    public static func setHandler(
        level: TetherLogLevel = .info, _ handler: @escaping @Sendable (TetherLogRecord) -> Void
    ) throws {
        if let e = libraryIncompatibility { throw e }
        let ctx = Unmanaged.passRetained(LogSink(handler)).toOpaque()
        let status = tether_set_log_callback(
            { ctx, record in
                guard let ctx, let record, let r = TetherLogRecord(record.pointee) else { return }
                LogThread.running { Unmanaged<LogSink>.fromOpaque(ctx).takeUnretainedValue().handler(r) }
            },
            ctx,
            { ctx in
                guard let ctx else { return }
                // The handler's captures go with it, perhaps the last reference to a client.
                LogThread.running { Unmanaged<LogSink>.fromOpaque(ctx).release() }
            },
            level.rawValue)
        // No release on failure: a refused call has already run destroy (the library drops
        // the hook it was given), so releasing here too would free the sink twice. Where the
        // library refuses before taking the hook (after fork) the sink leaks, which is the safe
        // side of that choice.
        try check(status)
    }

    /// Stops sending records; returns once the handler has received its last record and has
    /// been released. Removing when no handler is set does nothing. Throws `.state` when
    /// called from inside a handler.
    public static func removeHandler() throws {
        if libraryIncompatibility != nil { return }
        try check(tether_set_log_callback(nil, nil, nil, 0))
    }

    #if canImport(os)
    /// Apple platforms: sends records at `level` or more important to the unified log, as
    /// `os.Logger(subsystem: subsystem, category: record.target)`. Every message is marked
    /// public: the library keeps secrets out of its records, and private fields would show
    /// as `<private>` in Console for exactly the lines a bug report needs. Replaces any handler.
    public static func forwardToOSLog(level: TetherLogLevel = .info, subsystem: String = "tether") throws {
        try setHandler(level: level) { r in
            let logger = Logger(subsystem: subsystem, category: r.target)
            logger.log(level: r.level.osLogType, "[\(r.clientID, privacy: .public)] \(r.message, privacy: .public)")
        }
    }
    #endif
}

#if canImport(os)
extension TetherLogLevel {
    /// os_log has no warning level; `.default` is what Apple's own frameworks use for one.
    var osLogType: OSLogType {
        switch self {
        case .error: .error
        case .warn: .default
        case .info: .info
        case .debug, .trace: .debug
        }
    }
}
#endif

/// Marks the library's `tether-log` thread while a handler (or its release) runs there. A
/// client whose last reference goes there is freed on another thread (`TetherClient.deinit`):
/// `tether_set_log_callback` waits for the log thread, so a free there could wait for a
/// callback of that client which is itself inside that call, and neither would ever return.
enum LogThread {
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        precondition(pthread_key_create(&k, nil) == 0, "pthread_key_create failed")
        return k
    }()

    /// Whether this thread is running a log handler or its release right now.
    static var isCurrent: Bool { pthread_getspecific(key) != nil }

    /// Nests: a handler's refused `setHandler` releases the refused handler here too, and the
    /// outer handler is still running when that returns.
    static func running(_ body: () -> Void) {
        let outer = pthread_getspecific(key)
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: 1))
        defer { pthread_setspecific(key, outer) }
        body()
    }
}

/// The handler, owned by the library through one retain: `setHandler` retains it once and the
/// library's destroy callback, which runs exactly once, releases it.
final class LogSink: Sendable {
    let handler: @Sendable (TetherLogRecord) -> Void
    init(_ handler: @escaping @Sendable (TetherLogRecord) -> Void) { self.handler = handler }
}

extension TetherLogRecord {
    /// `nil` for a level this wrapper does not know (a newer library), rather than a guess.
    init?(_ r: tether_log_record) {
        guard let level = TetherLogLevel(rawValue: r.level) else { return nil }
        self.level = level
        target = r.target.map { String(cString: $0) } ?? ""
        clientID = r.client_id
        message = r.message.map { String(cString: $0) } ?? ""
        date = Date(timeIntervalSince1970: TimeInterval(r.unix_time_us) / 1_000_000)
    }
}
