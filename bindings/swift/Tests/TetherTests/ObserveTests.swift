// The log hook, connection state and statistics against real tether-backend processes.
import Foundation
import XCTest

@testable import Tether

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Collects every record of the process-wide hook while a test runs. The hook is global, so
/// each test looks only at the records of its own clients (by id).
final class LogCapture: Sendable {
    let records = Shared<[TetherLogRecord]>([])

    init(level: TetherLogLevel = .debug) throws {
        let records = self.records
        try TetherLog.setHandler(level: level) { r in records.withLock { $0.append(r) } }
    }

    func all(_ client: UInt64) -> [TetherLogRecord] {
        records.withLock { $0.filter { $0.clientID == client } }
    }

    /// The records of `client` once one contains `text`, within 20 s.
    func wait(_ client: UInt64, for text: String) async throws -> [TetherLogRecord] {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let recs = all(client)
            if recs.contains(where: { $0.message.contains(text) }) { return recs }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestFailure("no record of client \(client) with \"\(text)\":\n"
            + all(client).map(\.description).joined(separator: "\n"))
    }
}

/// The first record containing `text`.
func record(_ recs: [TetherLogRecord], _ text: String, file: StaticString = #filePath, line: UInt = #line)
    throws -> TetherLogRecord
{
    try XCTUnwrap(recs.first { $0.message.contains(text) }, "no record with \"\(text)\"", file: file, line: line)
}

/// A local port that refuses connections for as long as the returned socket stays open: bound
/// but not listening, so the kernel answers with a reset and no other process can take it.
func refusingPort() throws -> (fd: Int32, port: UInt16) {
    let s = try loopbackTCPSocket()
    let fd = s.fd
    var addr = s.addr
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
        }
    }
    guard ok else {
        close(fd)
        throw TestFailure("bind: \(errno)")
    }
    return (fd, UInt16(bigEndian: addr.sin_port))
}

final class ObserveTests: XCTestCase {
    override func tearDown() {
        // A failed test must not leave its handler collecting records for the next one.
        try? TetherLog.removeHandler()
        super.tearDown()
    }

    func testAWrongPasswordIsLoggedAsRefusedForGood() async throws {
        let log = try LogCapture()
        let b = try Backend()
        var o = b.gomuks()
        o.basicAuth = .init(username: "tether", password: "wrong-password")
        let c = try TetherClient(o)
        let recs = try await log.wait(c.id, for: "connection ended for good")
        let auth = try record(recs, "POST /_gomuks/auth to log in")
        XCTAssertTrue(auth.message.contains("failed") && auth.message.contains("401"), auth.message)
        XCTAssertEqual(auth.level, .warn)
        XCTAssertEqual(try record(recs, "connection ended for good").level, .error)
        XCTAssertTrue(recs.allSatisfy { $0.target.hasPrefix("tether") }, "\(recs)")
        XCTAssertFalse(recs.contains { $0.message.contains("wrong-password") })
        // The library's time of writing, in order.
        XCTAssertTrue(recs.allSatisfy { abs($0.date.timeIntervalSinceNow) < 60 })
        XCTAssertEqual(recs.map(\.date), recs.map(\.date).sorted())
        await c.waitUntilClosed()
        XCTAssertEqual(c.state, .closed)
    }

    func testARefusedPortLogsEachAttemptAndTheBackoff() async throws {
        let log = try LogCapture()
        let (fd, port) = try refusingPort()
        defer { close(fd) }
        var o = TetherOptions(url: "http://127.0.0.1:\(port)")
        o.reconnectBackoffMs = (min: 50, max: 50)
        let c = try TetherClient(o)
        let recs = try await log.wait(c.id, for: "attempt 2 failed")
        let first = try record(recs, "attempt 1 failed")
        XCTAssertEqual(first.level, .warn)
        XCTAssertTrue(first.message.contains("127.0.0.1:\(port)"), first.message)
        XCTAssertTrue([.info, .warn].contains(try record(recs, "reconnecting in").level))
        XCTAssertTrue([.connecting, .waiting].contains(c.state))
        let s = try c.stats()
        XCTAssertGreaterThanOrEqual(s.connectAttempts, 2)
        XCTAssertEqual(s.connections, 0)
        XCTAssertNil(s.connectedFor)
        XCTAssertNil(s.lastRTT)
        let closed = await c.close(timeout: .seconds(10))
        XCTAssertTrue(closed)
        XCTAssertEqual(c.state, .closed)
    }

    func testACutAndItsResumeAreLoggedAndCounted() async throws {
        let log = try LogCapture()
        let b = try Backend()
        let c = try TetherClient(b.gomuks())
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        // A received event id is what a resume asks from.
        let newest = try b.push(3)
        _ = try await next(c, "event \(newest)") { $0.kind == .message && $0.requestId == newest }
        try b.control("/_testkit/cut")
        _ = try await next(c, "resumed CONNECTED") { $0.kind == .connected && $0.resumeAttempted }
        let recs = try await log.wait(c.id, for: "resume succeeded")
        XCTAssertEqual(try record(recs, "reconnecting in").level, .info)
        XCTAssertEqual(try record(recs, "asking to resume").level, .info)
        XCTAssertEqual(try record(recs, "resume succeeded").level, .info)
        let s = try c.stats()
        XCTAssertEqual([s.connections, s.resumesSucceeded, s.resumesReset], [2, 1, 0])
        XCTAssertEqual(s.state, .connected)
        XCTAssertEqual(c.state, .connected)
        await c.close(timeout: .seconds(10))
    }

    func testNoSecretReachesAnyRecordAndRemovingTheHandlerStopsThem() async throws {
        let log = try LogCapture(level: .trace)
        let b = try Backend()
        var ids: [UInt64] = []
        // A password login (POST /_gomuks/auth), then a connection with the token it got.
        let c = try TetherClient(b.gomuks())
        _ = try await c.request("echo", data: json(#"{"x":1}"#))
        let token = try XCTUnwrap(try c.authToken())
        ids.append(c.id)
        await c.close(timeout: .seconds(10))
        var o = TetherOptions(url: b.url)
        o.token = token
        o.pingIntervalMs = 50
        let t = try TetherClient(o)
        _ = try await next(t, "PONG") { $0.kind == .pong }
        ids.append(t.id)
        await t.close(timeout: .seconds(10))
        // rwws with its key.
        let key = "dGV0aGVyLXRlc3Qta2V5"
        var r = TetherOptions(url: b.url, protocol: .rwws)
        r.token = key
        let w = try TetherClient(r)
        _ = try await next(w, "PONG") { $0.kind == .pong && $0.rttMicros != nil }
        ids.append(w.id)
        await w.close(timeout: .seconds(10))
        XCTAssertEqual(Set(ids).count, 3)
        XCTAssertFalse(ids.contains(0))
        // The log thread delivered up to each close.
        for id in ids { _ = try await log.wait(id, for: "closed") }

        let text = log.records.withLock { $0.map(\.description).joined(separator: "\n") }
        XCTAssertTrue(text.contains("POST /_gomuks/auth to log in") && text.contains("connected in"), text)
        let keyBytes = try XCTUnwrap(Data(base64Encoded: key))
        let secrets = [
            "tether-password", String(token.prefix(24)), key,
            String(decoding: keyBytes, as: UTF8.self),
            keyBytes.map { String(format: "%02x", $0) }.joined(),
            Data("tether:tether-password".utf8).base64EncodedString(),
        ]
        for secret in secrets {
            XCTAssertFalse(text.contains(secret), "secret \(secret) in the log records")
        }

        // Removed: this returns after the last record, so nothing arrives afterwards.
        try TetherLog.removeHandler()
        let before = log.records.withLock { $0.count }
        let q = try TetherClient(b.gomuks())
        _ = try await next(q, "CONNECTED") { $0.kind == .connected }
        await q.close(timeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(100))
        XCTAssertEqual(log.records.withLock { $0.count }, before)
    }

    func testTheHandlerIsReleasedOnceWhenReplacedOrRemoved() async throws {
        /// Counts its deinits, so a handler released twice or never shows.
        final class Token: Sendable {
            let name: String
            let freed: Shared<[String]>
            init(_ name: String, _ freed: Shared<[String]>) { self.name = name; self.freed = freed }
            deinit { freed.withLock { $0.append(name) } }
        }
        let freed = Shared<[String]>([])
        let insideCall = Shared<TetherError?>(nil)
        let tried = Shared(false)
        do {
            let first = Token("first", freed)
            try TetherLog.setHandler(level: .trace) { _ in
                withExtendedLifetime(first) {}
                guard tried.withLock({ t in defer { t = true }; return !t }) else { return }
                // Setting the hook from inside a handler is refused, not a deadlock, and the
                // refused handler is released by the library, once.
                let refused = Token("refused", freed)
                do {
                    try TetherLog.setHandler { _ in withExtendedLifetime(refused) {} }
                } catch let e as TetherError {
                    insideCall.withLock { $0 = e }
                } catch {}
            }
            let second = Token("second", freed)
            let b = try Backend()
            let c = try TetherClient(b.gomuks())
            _ = try await next(c, "CONNECTED") { $0.kind == .connected }
            await c.close(timeout: .seconds(10))
            // Replacing returns after the previous handler's destroy: it is gone already.
            try TetherLog.setHandler(level: .trace) { _ in withExtendedLifetime(second) {} }
        }
        XCTAssertEqual(freed.withLock { $0 }, ["refused", "first"])
        try TetherLog.removeHandler()
        XCTAssertEqual(freed.withLock { $0 }, ["refused", "first", "second"])
        if case .state = insideCall.withLock({ $0 }) {} else {
            XCTFail("setting the hook inside a handler: \(String(describing: insideCall.withLock { $0 }))")
        }
        // Removing twice is harmless.
        try TetherLog.removeHandler()
    }

    /// A handler may let go of the last reference to a client whose resolver is inside
    /// `removeHandler()` (which waits for the log thread) at that moment: the free does not
    /// run on the log thread, where it would wait for that resolver call, and the resolver for
    /// the log thread, for ever.
    func testALogHandlerMayReleaseAClientWhoseResolverWaitsForTheLogThread() async throws {
        let b = try Backend()
        let slot = Shared<TetherClient?>(nil)
        let resolving = Shared(false)
        let handling = Shared(false)
        let removed = Shared(false)
        let releasedInHandler = Shared(false)
        try TetherLog.setHandler(level: .trace) { _ in
            guard resolving.withLock({ $0 }), slot.withLock({ $0 != nil }),
                handling.withLock({ h in defer { h = true }; return !h })
            else { return }
            usleep(200_000)  // the resolver is inside removeHandler() by now
            let c = slot.withLock { v -> TetherClient? in
                defer { v = nil }
                return v
            }
            _ = c
            releasedInHandler.withLock { $0 = true }
        }
        let events: TetherEvents
        do {
            var o = b.gomuks()
            o.proxyResolver = { _ in
                guard resolving.withLock({ r in defer { r = true }; return !r }) else { return nil }
                let deadline = Date().addingTimeInterval(10)
                while !handling.withLock({ $0 }) && Date() < deadline { usleep(1000) }
                try? TetherLog.removeHandler()
                removed.withLock { $0 = true }
                return nil
            }
            let c = try TetherClient(o)
            events = c.events
            slot.withLock { $0 = c }
        }
        try await waitUntil("the resolver runs") { resolving.withLock { $0 } }
        // Any record will do: another client's attempt logs.
        let other = try TetherClient(b.gomuks())
        try await waitUntil("the handler and the resolver are done", within: .seconds(10)) {
            releasedInHandler.withLock { $0 } && removed.withLock { $0 }
        }
        // The free ran elsewhere and returned: the released client's events end (after it).
        try await withTimeout(.seconds(10), "the free") {
            for await _ in events {}
        }
        await other.close(timeout: .seconds(10))
    }

    /// The log thread's mark survives a refused `setHandler` inside a handler (whose refused
    /// handler is released there too): the rest of the handler still frees clients elsewhere.
    func testTheLogThreadMarkOutlivesARefusedSetHandlerInsideAHandler() async throws {
        let marked = Shared<Bool?>(nil)
        try TetherLog.setHandler(level: .trace) { _ in
            guard marked.withLock({ $0 == nil }) else { return }
            try? TetherLog.setHandler { _ in }
            let now = LogThread.isCurrent
            marked.withLock { $0 = now }
        }
        let b = try Backend()
        let c = try TetherClient(b.gomuks())
        try await waitUntil("a record") { marked.withLock { $0 != nil } }
        XCTAssertEqual(marked.withLock { $0 }, true)
        XCTAssertFalse(LogThread.isCurrent)
        await c.close(timeout: .seconds(10))
    }

    func testStatsAfterPushedEventsAndOneRequest() async throws {
        let b = try Backend()
        // A stopped backend still accepts the TCP connection but never answers the login, so
        // the client is caught before CONNECTED however slowly this thread runs.
        kill(b.pid, SIGSTOP)
        let c = try TetherClient(b.gomuks())
        XCTAssertNotEqual(c.id, 0)
        XCTAssertTrue([.idle, .connecting].contains(c.state), "\(c.state)")
        // Once the first attempt started it stays there: the stopped backend never answers.
        try await waitUntil("the first attempt to start") { c.state != .idle }
        XCTAssertEqual(c.state, .connecting)
        kill(b.pid, SIGCONT)
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        XCTAssertEqual(c.state, .connected)
        let newest = try b.push(20)
        _ = try await next(c, "event \(newest)") { $0.kind == .message && $0.requestId == newest }
        _ = try await c.request("echo", data: json(#"{"a":1}"#))
        let s = try c.stats()
        XCTAssertEqual(s.state, .connected)
        XCTAssertEqual(s.connectAttempts, 1)
        XCTAssertEqual(s.connections, 1)
        XCTAssertEqual(s.requestsSent, 1)
        XCTAssertEqual(s.requestsInFlight, 0)
        XCTAssertEqual(s.requestsTimedOut, 0)
        XCTAssertEqual([s.resumesSucceeded, s.resumesReset], [0, 0])
        XCTAssertGreaterThanOrEqual(s.eventsReceived, 20)
        // The backend batches events, so a websocket message may carry several.
        XCTAssertGreaterThan(s.messagesReceived, 0)
        XCTAssertGreaterThan(s.wireBytesOut, 0)
        // Compressed: the wire carries less than the payload.
        XCTAssertGreaterThan(s.wireBytesIn, 0)
        XCTAssertLessThan(s.wireBytesIn, s.payloadBytesIn)
        XCTAssertNotNil(s.connectedFor)
        let closed = await c.close(timeout: .seconds(10))
        XCTAssertTrue(closed)
        XCTAssertEqual(c.state, .closed)
        XCTAssertEqual(try c.stats().state, .closed)
        XCTAssertNil(try c.stats().connectedFor)
    }

    /// Pause closes keeping the resume entry (1000) and stops reconnecting; unpause resumes
    /// with every event missed meanwhile, once and in order; the reconnect cue on a live link
    /// keeps it.
    func testPauseUnpauseAndTheReconnectCue() async throws {
        let b = try Backend()
        var o = b.gomuks()
        // Short, so that a cue wrongly taken for a dead link shows within the test.
        o.pongTimeoutMs = 1500
        let c = try TetherClient(o)
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        let before = try b.push(2)
        _ = try await next(c, "event \(before)") { $0.kind == .message && $0.requestId == before }
        try c.pause()
        let d = try await next(c, "disconnected") { $0.kind == .disconnected }
        XCTAssertEqual(d.status, 0)
        XCTAssertEqual(d.closeCode, 1000)
        XCTAssertNil(d.retryInMs)
        XCTAssertEqual(c.state, .paused)
        let missed = try b.push(3)
        try await Task.sleep(for: .milliseconds(300))
        XCTAssertEqual(c.state, .paused)
        try c.unpause()
        let (resumed, ids) = try await withTimeout(.seconds(20), "the replay") { () -> (Bool, [Int64]) in
            var resumed = false
            var ids: [Int64] = []
            for await ev in c.events {
                if ev.kind == .connected { resumed = ev.resumeAttempted }
                if ev.kind == .message && ev.requestId < 0 { ids.append(ev.requestId) }
                if ev.kind == .message && ev.requestId == missed { return (resumed, ids) }
            }
            throw TestFailure("events ended before the replay")
        }
        XCTAssertTrue(resumed)
        XCTAssertEqual(ids, Array(stride(from: before - 1, through: missed, by: -1)))
        // The cue on a live link: the probe's ping is answered (a PONG), and the link is kept
        // past the 1.5 s pong timeout, with no new attempt.
        let atCue = try c.stats()
        let cued = ContinuousClock.now
        try c.reconnectNow()
        try c.reconnectNow()
        let untilPong = try await withTimeout(.seconds(20), "the probe's PONG") { () -> [EventKind] in
            var kinds: [EventKind] = []
            for await ev in c.events {
                if ev.kind == .pong { return kinds }
                kinds.append(ev.kind)
            }
            throw TestFailure("events ended before the probe's PONG")
        }
        XCTAssertFalse(untilPong.contains(.disconnected), "\(untilPong)")
        // Over two pong timeouts from the cue: a wrongful reconnect would have begun by then.
        while ContinuousClock.now < cued + .milliseconds(4000) {
            let state = c.state
            guard state == .connected else {
                XCTFail("the cue dropped a live link: \(state)")
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let after = try c.stats()
        XCTAssertEqual(after.state, .connected)
        XCTAssertEqual(after.connections, atCue.connections)
        XCTAssertEqual(after.connectAttempts, atCue.connectAttempts)
        let closed = await c.close(timeout: .seconds(10))
        XCTAssertTrue(closed)
        XCTAssertThrowsError(try c.pause())
    }

    /// A request past `maxUnsentBytes` while paused throws `.sendBufferFull` and takes
    /// nothing; the accepted one goes out after unpausing and frees the budget, and one
    /// `.sendReady` tells the refused app to send again.
    func testARequestPastTheSendBudgetIsRefused() async throws {
        let b = try Backend()
        var o = b.gomuks()
        o.maxUnsentBytes = 4096
        let c = try TetherClient(o)
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        try c.pause()
        _ = try await next(c, "disconnected") { $0.kind == .disconnected }
        let body = Data(("\"" + String(repeating: "y", count: 3000) + "\"").utf8)
        let first = Task { try await c.request("echo", data: body) }
        var held: UInt64 = 0
        for _ in 0..<1000 where held == 0 {
            held = try c.stats().unsentBytes
            if held == 0 { try await Task.sleep(for: .milliseconds(10)) }
        }
        XCTAssertTrue(held > 3000 && held < 4096, "\(held)")
        do {
            _ = try await c.request("echo", data: body)
            XCTFail("a request past the budget was taken")
        } catch let TetherError.sendBufferFull(why) {
            XCTAssertTrue(why.contains("max_unsent_bytes"), why)
        }
        XCTAssertEqual(try c.stats().unsentBytes, held)
        try c.unpause()
        let echoed = try await withTimeout(.seconds(20), "the echo") { try await first.value }
        XCTAssertEqual(echoed, body)
        XCTAssertEqual(try c.stats().unsentBytes, 0)
        _ = try await next(c, "send ready") { $0.kind == .sendReady }
        let again = try await withTimeout(.seconds(20), "the second echo") {
            try await c.request("echo", data: body)
        }
        XCTAssertEqual(again, body)
        let closed = await c.close(timeout: .seconds(10))
        XCTAssertTrue(closed)
    }
}
