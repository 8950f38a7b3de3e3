// Test helpers: a tether-backend process per test, its HTTP control endpoints, timeouts.
import Foundation
import XCTest

@testable import Tether

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A `tether-backend` process (TETHER_BACKEND), started with `--conn-queue-limit 0` so a test
/// that stops reading is slowed down rather than disconnected. Stopped when released.
///
/// `@unchecked Sendable`: every property is set in `init` and never changes; the process is
/// only signalled afterwards, which is safe from any thread.
final class Backend: @unchecked Sendable {
    let process = Process()
    let port: UInt16
    var url: String { "http://127.0.0.1:\(port)" }
    var pid: pid_t { process.processIdentifier }

    init(_ args: [String] = []) throws {
        let env = ProcessInfo.processInfo.environment
        guard let bin = env["TETHER_BACKEND"] else {
            // CI must run these tests, not skip them.
            if env["CI"] == "true" { throw TestFailure("CI=true but TETHER_BACKEND is not set") }
            throw XCTSkip("set TETHER_BACKEND to a tether-backend binary (bindings/swift/run-tests.sh does)")
        }
        process.executableURL = URL(fileURLWithPath: bin)
        process.arguments = ["--conn-queue-limit", "0"] + args
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        // The first line is {"started":true,"address":"127.0.0.1:PORT"}.
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let r = text.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression),
              let port = UInt16(text[r].split(separator: ":")[1])
        else {
            process.terminate()
            throw TestFailure("tether-backend said: \(text)")
        }
        self.port = port
    }

    deinit { stop() }

    /// Kills the backend without waiting: `Process.waitUntilExit()` spins the calling thread's
    /// run loop, and on a Swift concurrency thread under corelibs Foundation it never returned.
    func stop() {
        kill(pid, SIGCONT)
        kill(pid, SIGKILL)
    }

    /// Calls a `/_testkit/...` endpoint and returns the body; throws unless it answered 200.
    /// A plain HTTP/1.0 exchange over a socket keeps the tests free of FoundationNetworking.
    @discardableResult
    func control(_ path: String, method: String = "POST") throws -> String {
        let s = try loopbackTCPSocket(port: port)
        let fd = s.fd
        defer { close(fd) }
        var addr = s.addr
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else { throw TestFailure("connect: \(errno)") }
        let req = Array("\(method) \(path) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\nContent-Length: 0\r\n\r\n".utf8)
        var sent = 0
        while sent < req.count {
            let n = req[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw TestFailure("write: \(errno)") }
            sent += n
        }
        var resp = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            resp.append(contentsOf: buf[0..<n])
        }
        let text = String(decoding: resp, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw TestFailure("bad response: \(text)") }
        let body = String(text[split.upperBound...])
        guard text.hasPrefix("HTTP/1.1 200") || text.hasPrefix("HTTP/1.0 200") else {
            throw TestFailure("\(method) \(path): \(text)")
        }
        return body
    }

    /// Pushes `n` generated events; returns the id of the newest (the most negative).
    func push(_ n: Int) throws -> Int64 {
        let body = try control("/_testkit/push?n=\(n)")
        guard let r = body.range(of: #"-?\d+"#, options: .regularExpression), let id = Int64(body[r]) else {
            throw TestFailure("push: \(body)")
        }
        return id
    }

    /// Options for a gomuks client of this backend: its login, and a fast reconnect.
    func gomuks() -> TetherOptions {
        var o = TetherOptions(url: url)
        o.basicAuth = .init(username: "tether", password: "tether-password")
        o.reconnectBackoffMs = (min: 20, max: 200)
        return o
    }
}

/// The test double of `libgomuksffi` (tests/inproc) for in-process clients, from
/// TETHER_FAKE_GOMUKS (bindings/swift/run-tests.sh builds it and sets it).
func fakeGomuks() throws -> String {
    let env = ProcessInfo.processInfo.environment
    guard let path = env["TETHER_FAKE_GOMUKS"] else {
        if env["CI"] == "true" { throw TestFailure("CI=true but TETHER_FAKE_GOMUKS is not set") }
        throw XCTSkip("set TETHER_FAKE_GOMUKS to tests/inproc's libfakegomuksffi.so (bindings/swift/run-tests.sh does)")
    }
    guard FileManager.default.fileExists(atPath: path) else {
        throw TestFailure("\(path) is missing: build it with tests/inproc/build.sh")
    }
    return path
}

/// A fresh, empty data root for an in-process backend, removed when released.
final class DataRoot: Sendable {
    let path: String

    init() throws {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("tether-swift-inproc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        path = dir.path
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Options for an in-process client of the double on this root.
    func options() throws -> TetherOptions {
        TetherOptions(inProcess: .init(library: try fakeGomuks(), dataRoot: path))
    }
}

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out: \(what)" }
}

/// Runs `op`, throwing `TimedOut` after `limit`. `op` must end when cancelled.
func withTimeout<T: Sendable>(
    _ limit: Duration, _ what: String = "operation", _ op: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await op() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TimedOut(what: what)
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw TimedOut(what: what) }
        return first
    }
}

/// Whether CLOSED arrives (`waitUntilClosed` returns) within `limit`.
func closed(_ c: TetherClient, within limit: Duration) async -> Bool {
    await withTaskGroup(of: Bool.self) { g in
        g.addTask { await c.waitUntilClosed(); return true }
        g.addTask { try? await Task.sleep(for: limit); return false }
        defer { g.cancelAll() }
        return await g.next() ?? false
    }
}

/// Polls `cond` every 10 ms until it holds; throws `TimedOut` after `limit`.
func waitUntil(_ what: String, within limit: Duration = .seconds(20), _ cond: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + limit
    while try !cond() {
        guard ContinuousClock.now < deadline else { throw TimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// The next event of `c` that matches, within 20 s; the events before it are consumed.
func next(
    _ c: TetherClient, _ what: String, within limit: Duration = .seconds(20),
    where match: @escaping @Sendable (Event) -> Bool
) async throws -> Event {
    try await withTimeout(limit, what) {
        for await ev in c.events where match(ev) { return ev }
        throw TestFailure("events ended before \(what)")
    }
}

/// Every remaining event of `c` up to and including CLOSED.
func rest(_ c: TetherClient, within limit: Duration = .seconds(20)) async throws -> [Event] {
    try await withTimeout(limit, "CLOSED") {
        var all: [Event] = []
        for await ev in c.events { all.append(ev) }
        return all
    }
}

func json(_ s: String) -> Data { Data(s.utf8) }

/// Asserts that `body` throws a `TetherError` that `matches`.
func assertThrows<T>(
    _ what: String, file: StaticString = #filePath, line: UInt = #line,
    _ body: () async throws -> T, matches: (TetherError) -> Bool
) async {
    do {
        _ = try await body()
        XCTFail("\(what): no error", file: file, line: line)
    } catch let e as TetherError {
        XCTAssertTrue(matches(e), "\(what): \(e)", file: file, line: line)
    } catch {
        XCTFail("\(what): \(error)", file: file, line: line)
    }
}

/// The repository root, from this file's path (bindings/swift/Tests/TetherTests/Support.swift).
let repoRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A lock-protected value shared by the tasks of a test.
///
/// `@unchecked Sendable`: `value` is only touched inside `withLock`.
final class Shared<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func withLock<R>(_ f: (inout T) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return f(&value)
    }
}

/// A new IPv4 TCP socket and the address 127.0.0.1:`port` (0: any port), where both the
/// control client and `refusingPort` start. The caller owns the descriptor.
func loopbackTCPSocket(port: UInt16 = 0) throws -> (fd: Int32, addr: sockaddr_in) {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return (fd, addr)
}
