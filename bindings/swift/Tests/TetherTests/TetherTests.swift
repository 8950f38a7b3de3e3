// Against real tether-backend processes (TETHER_BACKEND; bindings/swift/run-tests.sh sets it).
import Foundation
import CTether
import XCTest

@testable import Tether

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

final class TetherTests: XCTestCase {
    func testRequestResponseAndRemoteError() async throws {
        let b = try Backend()
        let c = try TetherClient(b.gomuks())
        let data = try await c.request("echo", data: json(#"{"a":1}"#))
        XCTAssertEqual(String(decoding: data, as: UTF8.self), #"{"a":1}"#)
        await assertThrows("remote error", { try await c.request("fail", data: json(#"{"message":"nope"}"#)) }) {
            $0 == .remote("nope")
        }
        await assertThrows("not JSON", { try await c.request("echo", data: json("{not json")) }) {
            if case .invalidUTF8 = $0 { return true }
            return false
        }
        await assertThrows("NUL in the command", { try await c.request("echo\u{0}fail") }) {
            if case .invalidArgument = $0 { return true }
            return false
        }
        let closed = await c.close(timeout: .seconds(10))
        XCTAssertTrue(closed)
    }

    /// A task reading a copy of `client.events` (the README's pattern) does not keep the
    /// client: releasing the last reference frees it, closing it first, and the sequence ends.
    func testReleasingTheClientEndsAReaderOfItsEvents() async throws {
        let b = try Backend()
        weak var released: TetherClient?
        let events: TetherEvents
        do {
            let c = try TetherClient(b.gomuks())
            released = c
            events = c.events
            _ = try await c.request("echo", data: json("{}"))
        }
        let kinds = try await withTimeout(.seconds(20), "the end of the events") {
            var kinds: [EventKind] = []
            for await ev in events { kinds.append(ev.kind) }
            return kinds
        }
        XCTAssertNil(released)
        XCTAssertTrue(kinds.contains(.connected), "\(kinds)")
    }

    func testRequestTimeoutAndCancel() async throws {
        let b = try Backend()
        var o = b.gomuks()
        o.requestTimeoutMs = 300
        let c = try TetherClient(o)
        let slow = json(#"{"ms":10000}"#)

        var t0 = ContinuousClock.now
        // The library's reason, as text: the RESPONSE carries it as a JSON string.
        await assertThrows("configured timeout", { try await c.request("sleep", data: slow) }) {
            if case .requestTimeout(let why) = $0 { return !why.isEmpty && !why.hasPrefix("\"") }
            return false
        }
        XCTAssertLessThan(ContinuousClock.now - t0, .seconds(5))

        t0 = ContinuousClock.now
        await assertThrows("per-request timeout", { try await c.request("sleep", data: slow, timeout: .milliseconds(200)) }) {
            if case .requestTimeout = $0 { return true }
            return false
        }
        XCTAssertLessThan(ContinuousClock.now - t0, .seconds(5))

        // Cancelled while the server works on it (once the library wrote it), and at once,
        // most likely before it was even sent.
        for afterSending in [true, false] {
            t0 = ContinuousClock.now
            let sent = try c.stats().requestsSent
            let task = Task { try await c.request("sleep", data: slow, timeout: .seconds(30)) }
            if afterSending {
                try await waitUntil("the request to be sent") { try c.stats().requestsSent > sent }
            }
            task.cancel()
            do {
                _ = try await task.value
                XCTFail("a cancelled request returned")
            } catch is CancellationError {
            } catch {
                XCTFail("cancelled request: \(error)")
            }
            XCTAssertLessThan(ContinuousClock.now - t0, .seconds(5))
        }
        // The client is still usable.
        let echo = try await c.request("echo", data: json(#"{"b":2}"#))
        XCTAssertEqual(String(decoding: echo, as: UTF8.self), #"{"b":2}"#)
        await c.close(timeout: .seconds(10))
    }

    func testPingsAcknowledgeTheNewestEvent() async throws {
        let b = try Backend()
        var o = b.gomuks()
        o.pingIntervalMs = 100
        let c = try TetherClient(o)
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        let newest = try b.push(5)
        let pong = try await next(c, "PONG acking \(newest)") { $0.kind == .pong && $0.ackedId == newest }
        XCTAssertGreaterThanOrEqual(pong.rttMicros ?? -1, 0)
        XCTAssertTrue(try b.control("/_testkit/stats", method: "GET").contains(#""last_ack":\#(newest)"#))
        await c.close(timeout: .seconds(10))
    }

    func testResumeAfterCutDeliversEveryEventOnceInOrder() async throws {
        let b = try Backend()
        let c = try TetherClient(b.gomuks())
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        let first = try b.push(10)
        try b.control("/_testkit/cut")
        _ = try b.push(20)
        let (ids, resumed) = try await withTimeout(.seconds(20), "30 events") { () -> ([Int64], Int) in
            var ids: [Int64] = []
            var resumed = 0
            for await ev in c.events {
                if ev.kind == .message && ev.requestId < 0 { ids.append(ev.requestId) }
                if ev.kind == .connected && ev.resumeAttempted { resumed += 1 }
                if ids.last == first - 20 { break }
            }
            return (ids, resumed)
        }
        // The 10 events before the cut and the 20 after it, each once, in order.
        XCTAssertEqual(ids, Array(stride(from: first + 9, through: first - 20, by: -1)))
        XCTAssertEqual(resumed, 1)

        // The resume point carries to a new client, which gets what it missed exactly once.
        // The last event counts once the callback that delivered it returned, which may be a
        // moment after the loop above took it.
        try await waitUntil("the point counts event \(first - 20)") {
            try c.resumeState().lastReceivedEvent == first - 20
        }
        let state = try c.resumeState()
        XCTAssertFalse(state.runId.isEmpty)
        XCTAssertEqual(state.lastReceivedEvent, first - 20)
        let closed = await c.close(keepResume: true, timeout: .seconds(10))
        XCTAssertTrue(closed)
        let missed = try b.push(5)
        let replay = try await replayed(b, from: state, through: missed)
        XCTAssertEqual(replay, Array(stride(from: missed + 4, through: missed, by: -1)))
    }

    /// A later client given `state`: the buffered event ids it is replayed, up to `newest`.
    private func replayed(_ b: Backend, from state: ResumeState, through newest: Int64) async throws -> [Int64] {
        var o = b.gomuks()
        o.resume = state
        let later = try TetherClient(o)
        let ids = try await withTimeout(.seconds(20), "replayed events") { () -> [Int64] in
            var ids: [Int64] = []
            for await ev in later.events where ev.kind == .message && ev.requestId < 0 {
                ids.append(ev.requestId)
                if ev.requestId == newest { break }
            }
            return ids
        }
        await later.close(timeout: .seconds(10))
        return ids
    }

    /// gomuks spec 7.2: the resume point leaves out the events held for the app, and is 0
    /// (start afresh) when they start a state the app has not seen.
    func testTheResumePointLeavesOutTheEventsHeldForTheApp() {
        func msg(_ id: Int64, _ command: String = "x") -> Event { Event(kind: .message, requestId: id, command: command) }
        let s = ResumeState(runId: "r", lastReceivedEvent: -9)
        let fresh = ResumeState(runId: "r", lastReceivedEvent: 0)
        XCTAssertEqual(s.before(held: []), s)
        XCTAssertEqual(s.before(held: [msg(-7), msg(-8), msg(-9)]), ResumeState(runId: "r", lastReceivedEvent: -6))
        XCTAssertEqual(fresh.before(held: [msg(-1)]), fresh)
        let resumed = [
            msg(-7), Event(kind: .connected, resumeAttempted: true), msg(0, "run_id"), msg(-8),
            Event(kind: .resumed, resumeOutcome: .succeeded), msg(0, "init_complete"), msg(-9),
        ]
        XCTAssertEqual(s.before(held: resumed), ResumeState(runId: "r", lastReceivedEvent: -6))
        XCTAssertEqual(s.before(held: [msg(-7), Event(kind: .connected)]), fresh)
        XCTAssertEqual(s.before(held: [msg(-7), Event(kind: .resumed, resumeOutcome: .reset), msg(-9)]), fresh)
        XCTAssertEqual(s.before(held: [msg(0, "sync_complete"), msg(0, "init_complete"), msg(-9)]), fresh)
        XCTAssertEqual(s.before(held: [msg(-8), msg(0, "init_complete"), msg(-9)]), ResumeState(runId: "r", lastReceivedEvent: -7))
    }

    /// gomuks spec 7.2: the resume state counts what the app took from `events`. Events read
    /// and buffered for the app but never taken are replayed to the client given the state.
    func testEventsTheAppNeverTookAreReplayedToTheClientGivenTheResumeState() async throws {
        let b = try Backend()
        let c = try TetherClient(b.gomuks())
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        let taken = try b.push(1)
        _ = try await next(c, "event \(taken)") { $0.requestId == taken }
        let before = try c.stats().eventsReceived
        let newest = try b.push(5)
        try await waitUntil("5 events read") { try c.stats().eventsReceived >= before + 5 }
        let closed = await c.close(keepResume: true, timeout: .seconds(10))
        XCTAssertTrue(closed)
        let state = try c.resumeState()
        XCTAssertEqual(state.lastReceivedEvent, taken)
        let replay = try await replayed(b, from: state, through: newest)
        XCTAssertEqual(replay, Array(stride(from: taken - 1, through: newest, by: -1)))
    }

    func testTheLoginTokenAuthorizesALaterClient() async throws {
        let b = try Backend()
        let c = try TetherClient(b.gomuks())
        _ = try await next(c, "CONNECTED") { $0.kind == .connected }
        let token = try XCTUnwrap(try c.authToken())
        await c.close(timeout: .seconds(10))

        var o = TetherOptions(url: b.url)
        o.token = token
        let later = try TetherClient(o)
        XCTAssertEqual(try later.authToken(), token)
        let echo = try await later.request("echo", data: json(#"{"t":1}"#))
        XCTAssertEqual(String(decoding: echo, as: UTF8.self), #"{"t":1}"#)
        await later.close(timeout: .seconds(10))
    }

    /// Options for an rwws client of `b` with `key` (the backend's by default).
    private func rwws(_ b: Backend, key: String = "dGV0aGVyLXRlc3Qta2V5") -> TetherOptions {
        var o = TetherOptions(url: b.url, protocol: .rwws)
        o.token = key
        return o
    }

    func testRwwsHandshakeAndPongWithServerTime() async throws {
        let b = try Backend()
        let c = try TetherClient(rwws(b))
        _ = try await next(c, "CONNECTED") { $0.kind == .connected }
        let pong = try await next(c, "PONG") { $0.kind == .pong }
        XCTAssertGreaterThan(pong.serverTimeMs, 1_700_000_000_000)
        await assertThrows("request over rwws", { try await c.request("echo") }) {
            if case .state = $0 { return true }
            return false
        }
        try c.sendPacket(Data([0x00]))
        await c.close(timeout: .seconds(10))
    }

    /// rwws-binary.md §2.8: a Settings packet is `01`, the (id, value) pairs, then `ff`.
    func testRwwsPacketsAndSettingsReachTheServerAsTheSpecEncodesThem() async throws {
        let b = try Backend()
        let c = try TetherClient(rwws(b))
        _ = try await next(c, "CONNECTED") { $0.kind == .connected }
        try c.sendPacket(Data([0x42, 1, 2]))
        try c.sendSettings([(id: 1, value: Data([5, 6])), (id: 7, value: Data())])
        var stats = ""
        for _ in 0..<500 {
            stats = try b.control("/_testkit/rwws/stats", method: "GET")
            if stats.contains("420102") && stats.contains("0101050607ff") { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertTrue(stats.contains("420102") && stats.contains("0101050607ff"), stats)
        for bad: UInt8 in [0x00, 0xFF] {
            await assertThrows("setting id \(bad)", { try c.sendSettings([(id: bad, value: Data())]) }) {
                if case .invalidArgument = $0 { return true }
                return false
            }
        }
        await c.close(timeout: .seconds(10))
    }

    /// rwws-binary.md §2.8: packets waiting while paused come back as UNSENT on close, in
    /// order, before CLOSED.
    func testACloseHandsBackTheRwwsPacketsNeverWritten() async throws {
        let b = try Backend()
        let c = try TetherClient(rwws(b))
        _ = try await next(c, "CONNECTED") { $0.kind == .connected }
        try c.pause()
        _ = try await next(c, "DISCONNECTED") { $0.kind == .disconnected }
        try c.sendPacket(Data([0x42, 1]))
        try c.sendSettings([(id: 5, value: Data([7]))])
        c.close()
        let evs = try await rest(c)
        let unsent = evs.filter { $0.kind == .unsent }
        XCTAssertEqual(unsent.map { $0.data }, [Data([0x42, 1]), Data([0x01, 0x05, 0x07, 0xff])])
        for e in unsent {
            XCTAssertEqual(TetherError(status: e.status, message: ""), .clientClosed(""))
        }
        XCTAssertEqual(evs.last?.kind, .closed)
    }

    func testARejectedRwwsKeyStopsWithCloseCode3001() async throws {
        let b = try Backend()
        let c = try TetherClient(rwws(b, key: "d3Jvbmc="))
        let evs = try await rest(c)
        let d = try XCTUnwrap(evs.first { $0.kind == .disconnected })
        XCTAssertEqual(TetherError(status: d.status, message: ""), .unauthorized(""))
        XCTAssertEqual(d.closeCode, 3001)
        XCTAssertNil(d.retryInMs)
        XCTAssertEqual(evs.last?.kind, .closed)
        XCTAssertTrue(c.isClosed)
    }

    /// tinyproxy with Basic proxy auth puser/ppass, which run-tests.sh starts on the host's
    /// loopback and passes as TETHER_TEST_PROXY; a skip without it (a failure under CI).
    private func testProxy() throws -> String {
        let env = ProcessInfo.processInfo.environment
        guard let proxy = env["TETHER_TEST_PROXY"] else {
            if env["CI"] == "true" { throw TestFailure("CI=true but TETHER_TEST_PROXY is not set") }
            throw XCTSkip("set TETHER_TEST_PROXY to tinyproxy with BasicAuth puser ppass (run-tests.sh does)")
        }
        return proxy
    }

    /// The login and the websocket through tinyproxy with Basic proxy auth; a wrong proxy
    /// password is final.
    func testTheProxyOptionCarriesTheLoginAndTheWebsocket() async throws {
        let proxy = try testProxy()
        let b = try Backend()
        var o = b.gomuks()
        o.proxy = proxy
        let c = try TetherClient(o)
        let echo = try await c.request("echo", data: json(#"{"p":1}"#))
        XCTAssertEqual(String(decoding: echo, as: UTF8.self), #"{"p":1}"#)
        await c.close(timeout: .seconds(10))

        var bad = b.gomuks()
        bad.proxy = proxy.replacingOccurrences(of: ":ppass@", with: ":not-SECRET@")
        let c2 = try TetherClient(bad)
        let evs = try await rest(c2)
        let d = try XCTUnwrap(evs.first { $0.kind == .disconnected })
        XCTAssertEqual(TetherError(status: d.status, message: ""), .unauthorized(""))
        XCTAssertNil(d.retryInMs)
        XCTAssertFalse(String(decoding: d.data, as: UTF8.self).contains("not-SECRET"))
        XCTAssertEqual(evs.last?.kind, .closed)
    }

    /// A proxy resolver is asked before the login and the websocket, and its answer wins over
    /// `proxy`; a thrown error fails the attempt, which is retried.
    func testTheProxyResolverDecidesEachConnection() async throws {
        let proxy = try testProxy()
        let b = try Backend()
        let asked = Shared<[String]>([])
        var o = b.gomuks()
        o.proxy = "direct"
        o.proxyResolver = { url in
            asked.withLock { $0.append(url) }
            return proxy
        }
        let c = try TetherClient(o)
        let echo = try await c.request("echo", data: json(#"{"r":1}"#))
        XCTAssertEqual(String(decoding: echo, as: UTF8.self), #"{"r":1}"#)
        await c.close(timeout: .seconds(10))
        let urls = asked.withLock { $0 }
        XCTAssertGreaterThanOrEqual(urls.count, 1)
        XCTAssertTrue(urls.contains { $0.hasSuffix("/_gomuks/websocket") }, "\(urls)")

        struct NoPAC: Error {}
        var failing = b.gomuks()
        failing.proxyResolver = { _ in throw NoPAC() }
        let c2 = try TetherClient(failing)
        let d = try await next(c2, "DISCONNECTED") { $0.kind == .disconnected }
        XCTAssertEqual(TetherError(status: d.status, message: ""), .connect(""))
        XCTAssertNotNil(d.retryInMs)
        XCTAssertTrue(String(decoding: d.data, as: UTF8.self).contains("proxy resolver failed"))
        await c2.close(timeout: .seconds(10))

        // An answer with a NUL is no proxy URL and would come again: the client ends (.config).
        var broken = b.gomuks()
        broken.proxyResolver = { _ in "http://a\u{0}b" }
        let c3 = try TetherClient(broken)
        let d3 = try await next(c3, "DISCONNECTED") { $0.kind == .disconnected }
        XCTAssertEqual(TetherError(status: d3.status, message: ""), .config(""))
        XCTAssertNil(d3.retryInMs)
        await c3.close(timeout: .seconds(10))
    }

    /// The last reference to a client may go inside its own resolver: the free that runs there
    /// does not wait for the very call it is in, and the resolver's context is released once
    /// that call has returned.
    func testAClientMayBeReleasedInsideItsOwnResolver() async throws {
        /// Released with the resolver's context.
        final class Token: @unchecked Sendable {
            let released: Shared<Bool>
            init(_ r: Shared<Bool>) { released = r }
            deinit { released.withLock { $0 = true } }
        }
        let b = try Backend()
        let slot = Shared<TetherClient?>(nil)
        let released = Shared<Bool>(false)
        let freedInside = Shared<Bool>(false)
        let handedOver = Shared<Bool>(false)
        do {
            let token = Token(released)
            var o = b.gomuks()
            o.proxyResolver = { _ in
                _ = token
                let deadline = Date().addingTimeInterval(10)
                while !handedOver.withLock({ $0 }) && Date() < deadline { usleep(1000) }
                do {
                    // The only reference: the client is freed at the end of this scope.
                    let c = slot.withLock { v -> TetherClient? in
                        defer { v = nil }
                        return v
                    }
                    _ = c
                }
                freedInside.withLock { $0 = true }
                return nil
            }
            let c = try TetherClient(o)
            slot.withLock { $0 = c }
        }
        // The test's own reference is gone: the slot holds the last one.
        handedOver.withLock { $0 = true }
        let deadline = Date().addingTimeInterval(10)
        while !(freedInside.withLock { $0 } && released.withLock { $0 }) && Date() < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        XCTAssertTrue(freedInside.withLock { $0 }, "the free inside the resolver returned")
        XCTAssertTrue(released.withLock { $0 }, "the resolver's context was released")
    }

    /// A cancelled task's `next()` takes nothing, even with events buffered: under load the
    /// buffer never empties, so a loop that kept taking would never end, and the events it took
    /// would be lost to the next reader.
    func testACancelledReaderGetsNilAndLeavesTheBufferedEvents() async {
        let buf = EventBuffer(capacity: 4)
        for i in 1...4 { _ = buf.push(Event(response: Int64(i), status: 0, data: Data(), kind: .message)) }
        let t = Task { () -> Event? in
            withUnsafeCurrentTask { $0?.cancel() }
            return await buf.next()
        }
        let got = await t.value
        XCTAssertNil(got)
        XCTAssertEqual(buf.bufferedCount, 4)
    }

    /// A reply that came before its request was registered is still the answer after the
    /// client was freed: a store action that succeeded must not read as `.clientClosed`.
    func testAReplyThatCameFirstSurvivesTheFree() async throws {
        let core = ClientCore(eventCapacity: 4)
        core.deliver(Event(response: 7, status: 0 /* TETHER_OK */, data: json("{\"ok\":1}")))
        core.failAll()
        let reply = try await withCheckedThrowingContinuation { core.register(7, $0) }
        XCTAssertEqual(String(decoding: reply, as: UTF8.self), #"{"ok":1}"#)
        // One that never came ends as closed.
        await assertThrows("no reply", { try await withCheckedThrowingContinuation { core.register(8, $0) } }) {
            if case .clientClosed = $0 { return true }
            return false
        }
    }

    /// A media transfer whose task stopped reading does not keep a client that stopped for good
    /// from closing: the dispatcher waiting for room in the transfer's full buffer asks, as it
    /// does for `events`, whether the client stopped, and then goes on without dropping.
    func testAFullTransferBufferLetsAClientThatStoppedForGoodGoOn() async throws {
        let stopped = Shared(false)
        let core = ClientCore(eventCapacity: 4) { stopped.withLock { $0 } }
        let (id, buffer) = try core.startTransfer(capacity: 2) { $0.pointee = 5; return 0 /* TETHER_OK */ }
        XCTAssertEqual(id, 5)
        let delivered = Shared(0)
        Thread.detachNewThread {
            for _ in 0..<3 {
                core.deliver(Event(response: 5, status: 0, data: Data([1]), kind: .chunk))
                delivered.withLock { $0 += 1 }
            }
        }
        try await waitUntil("two chunks buffered") { delivered.withLock { $0 } == 2 }
        // Over a few of the dispatcher's 250 ms checks: the third waits while the client runs.
        try await Task.sleep(for: .milliseconds(700))
        XCTAssertEqual(delivered.withLock { $0 }, 2, "a chunk went past a full buffer")
        stopped.withLock { $0 = true }
        try await waitUntil("the dispatcher went on", within: .seconds(5)) { delivered.withLock { $0 } == 3 }
        XCTAssertEqual(buffer.bufferedCount, 3)
    }

    /// A timeout too long for milliseconds in 32 bits is the longest there is, not a crash.
    func testAHugeTimeoutIsClamped() {
        XCTAssertEqual(TetherClient.milliseconds(.seconds(Int64.max / 1000) + .milliseconds(900)), UInt32.max)
        XCTAssertEqual(TetherClient.milliseconds(.milliseconds(1500)), 1500)
        XCTAssertEqual(TetherClient.milliseconds(.nanoseconds(1)), 1)
    }

    func testConfigErrorsAndUseAfterClose() async throws {
        XCTAssertThrowsError(try TetherClient(url: "ftp://nope")) { e in
            guard case TetherError.config = e else { return XCTFail("\(e)") }
        }
        let b = try Backend()
        let c = try TetherClient(b.gomuks())
        c.close()
        c.close()  // closing twice is harmless
        await assertThrows("request after close", { try await c.request("echo") }) {
            if case .state = $0 { return true }
            return false
        }
        let evs = try await rest(c)
        XCTAssertEqual(evs.last?.kind, .closed)
    }

    func testEveryHeaderStatusHasACase() throws {
        let header = try String(contentsOf: repoRoot.appendingPathComponent("include/tether.h"), encoding: .utf8)
        let re = try NSRegularExpression(pattern: #"#define TETHER_ERR_(\w+) \((-?\d+)\)"#)
        let matches = re.matches(in: header, range: NSRange(header.startIndex..., in: header))
        XCTAssertGreaterThan(matches.count, 20)
        for m in matches {
            let name = String(header[Range(m.range(at: 1), in: header)!])
            let code = Int32(header[Range(m.range(at: 2), in: header)!])!
            if case .unknown = TetherError(status: code, message: "") {
                XCTFail("TETHER_ERR_\(name) (\(code)) has no TetherError case")
            }
        }
    }

    /// Every config setter of the header is called, once, by `TetherOptions.apply`.
    func testEveryConfigSetterIsReachableFromOneOptionsStruct() throws {
        let header = try String(contentsOf: repoRoot.appendingPathComponent("include/tether.h"), encoding: .utf8)
        // Bracketed so that scripts/check-bindings.py does not take the pattern for a C call.
        let re = try NSRegularExpression(pattern: #"tether_status[ ](tether[_]config[_](?:set|add)[_]\w+)[(]"#)
        let setters = re.matches(in: header, range: NSRange(header.startIndex..., in: header))
            .map { String(header[Range($0.range(at: 1), in: header)!]) }
        XCTAssertGreaterThanOrEqual(setters.count, 18)
        let dir = repoRoot.appendingPathComponent("bindings/swift/Sources/Tether")
        var sources = ""
        for f in try FileManager.default.contentsOfDirectory(atPath: dir.path) where f.hasSuffix(".swift") {
            sources += try String(contentsOf: dir.appendingPathComponent(f), encoding: .utf8)
        }
        let options = try String(contentsOf: dir.appendingPathComponent("TetherOptions.swift"), encoding: .utf8)
        for s in setters {
            XCTAssertEqual(sources.components(separatedBy: "\(s)(").count - 1, 1, "\(s) is not called exactly once")
            XCTAssertTrue(options.contains("\(s)("), "\(s) is not applied in TetherOptions.swift")
        }
    }

    /// Options end up in logs and crash reports: every way Swift prints or reflects them
    /// leaves the secrets out, and keeps everything else readable.
    func testOptionsLeaveTheirSecretsOutOfDescriptionsDumpsAndMirrors() {
        var o = TetherOptions(url: "wss://example.invalid/ws")
        o.token = "S3CRET-token"
        o.basicAuth = .init(username: "tether-user", password: "S3CRET-pw")
        o.proxy = "http://u:S3CRET-px@proxy.invalid:3128"
        o.headers = [(name: "X-Tether-Test", value: "S3CRET-hdr")]
        o.clientCertificate = (certPEM: Data("CERT".utf8), keyPEM: Data("S3CRET-key".utf8))
        o.pongTimeoutMs = 4321
        o.pinsSHA256 = ["sha256/pin"]
        var rwws = TetherOptions(url: "https://example.invalid", protocol: .rwws)
        rwws.token = "S3CRET-rwws-key"
        // A URL with a password is refused when the client is made: just when apps log options.
        let withPassword = TetherOptions(url: "wss://me:S3CRET-url@example.invalid/ws")

        func outputs<T>(_ value: T) -> [(String, String)] {
            var dumped = ""
            dump(value, to: &dumped)
            var printed = ""
            print(value, to: &printed)
            let children = Mirror(reflecting: value).children
                .map { "\($0.label ?? "_"): \(String(reflecting: $0.value))" }
            return [
                ("String(describing:)", String(describing: value)),
                ("String(reflecting:)", String(reflecting: value)),
                ("interpolation", "\(value)"),
                ("print", printed),
                ("dump", dumped),
                ("Mirror children", children.joined(separator: ", ")),
            ]
        }
        let all = outputs(o).map { ("gomuks options, \($0.0)", $0.1) }
            + outputs(rwws).map { ("rwws options, \($0.0)", $0.1) }
            + outputs(o.basicAuth!).map { ("basicAuth, \($0.0)", $0.1) }
            + outputs(withPassword).map { ("URL with a password, \($0.0)", $0.1) }
        for (how, text) in all {
            XCTAssertFalse(text.contains("S3CRET"), "\(how): \(text)")
        }

        let text = String(describing: o)
        for shown in ["wss://example.invalid/ws", "gomuks", "tether-user", "X-Tether-Test",
                      "http://<redacted>@proxy.invalid:3128", "4321", "sha256/pin", "4 bytes",
                      "eventBufferCapacity: 256"] {
            XCTAssertTrue(text.contains(shown), "\(shown) is missing from \(text)")
        }
        XCTAssertTrue(String(describing: rwws).contains("protocol: rwws"), String(describing: rwws))
        XCTAssertTrue(String(describing: TetherOptions(url: "ws://h")).contains("token: nil,"))
        let children = Dictionary(
            Mirror(reflecting: o).children.map { ($0.label ?? "_", $0.value) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(children["url"] as? String, "wss://example.invalid/ws")
        XCTAssertEqual(children["pongTimeoutMs"] as? UInt32, 4321)
        XCTAssertEqual(children["eventBufferCapacity"] as? Int, 256)
        for label in ["token", "basicAuth", "headers", "clientCertificate", "proxy", "inProcess", "store"] {
            XCTAssertNotNil(children[label], "no \(label) in the mirror")
        }
    }

    /// The text of options is made from their mirror: an option missing from it would be
    /// missing from every log.
    func testEveryOptionIsInTheOptionsMirror() throws {
        let source = try String(
            contentsOf: repoRoot.appendingPathComponent("bindings/swift/Sources/Tether/TetherOptions.swift"),
            encoding: .utf8)
        let re = try NSRegularExpression(pattern: #"(?m)^    public var `?(\w+)`?"#)
        let declared = Set(re.matches(in: source, range: NSRange(source.startIndex..., in: source))
            .map { String(source[Range($0.range(at: 1), in: source)!]) })
            .subtracting(["description", "debugDescription", "customMirror"])
        XCTAssertGreaterThan(declared.count, 25)
        let labels = Set(Mirror(reflecting: TetherOptions(url: "ws://h")).children.compactMap(\.label))
        XCTAssertEqual(declared.subtracting(labels), [], "options missing from the mirror")
        XCTAssertEqual(labels.subtracting(declared), [], "mirror labels that are no option")
    }

    /// A proxy's userinfo ends at its last `@`, as URL parsers split it: a raw password (which
    /// the library refuses, when apps are likeliest to log their options) stays hidden whatever
    /// it holds.
    func testTheProxyUserinfoIsHiddenUpToTheLastAt() {
        let cases = [
            ("http://user:p@ss@proxy:3128", "http://<redacted>@proxy:3128"),
            ("socks5://u:a/b@h:1", "socks5://<redacted>@h:1"),
            ("https://u:S3CRET:x?y#z@h:443", "https://<redacted>@h:443"),
            ("socks5h://u:a//b@c@h:1080", "socks5h://<redacted>@h:1080"),
            ("http://u:p%40ss@h:3128", "http://<redacted>@h:3128"),
            ("u:a/b@h:1", "<redacted>@h:1"),
            ("u:x://y@h:1", "<redacted>@h:1"),
            ("http://proxy:3128", "http://proxy:3128"),
            ("direct", "direct"),
        ]
        for (proxy, shown) in cases {
            var o = TetherOptions(url: "ws://h")
            o.proxy = proxy
            let text = String(describing: o)
            XCTAssertTrue(text.contains("proxy: \(shown),"), "\(proxy) shown as: \(text)")
        }
    }

    func testBadOptionsAreRefusedAndGoodOnesWork() async throws {
        let b = try Backend()
        let bad: [(String, (inout TetherOptions) -> Void)] = [
            ("url scheme", { $0.url = "ftp://nope" }),
            ("backoff min 0", { $0.reconnectBackoffMs = (min: 0, max: 100) }),
            ("backoff min > max", { $0.reconnectBackoffMs = (min: 500, max: 100) }),
            ("maxMessageBytes below 1024", { $0.maxMessageBytes = 10 }),
            ("negative maxMessageBytes", { $0.maxMessageBytes = -1 }),
            ("negative queueCapacity", { $0.queueCapacity = -1 }),
            ("handshake header", { $0.headers = [(name: "Host", value: "x")] }),
            ("header name", { $0.headers = [(name: "bad name", value: "x")] }),
            ("header value", { $0.headers = [(name: "X-A", value: "a\nb")] }),
            // A NUL would cut the value short where the library reads (and checks) it.
            ("NUL in a header value", { $0.headers = [(name: "X-A", value: "a\u{0}\r\nX-B: 1")] }),
            ("NUL in the token", { $0.token = "t\u{0}x" }),
            ("rwws key", { $0.protocol = .rwws; $0.token = "not base64!" }),
            ("eventBufferCapacity", { $0.eventBufferCapacity = 0 }),
            ("malformed pin", { $0.url = "https://localhost:1"; $0.pinsSHA256 = ["sha256/short"] }),
            ("pin over plain http", { $0.pinsSHA256 = ["sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="] }),
            ("client key", {
                $0.clientCertificate = (certPEM: Data("-----BEGIN CERTIFICATE-----".utf8),
                                        keyPEM: Data("-----BEGIN PRIVATE KEY-----".utf8))
            }),
        ]
        for (what, change) in bad {
            var o = b.gomuks()
            change(&o)
            XCTAssertThrowsError(try TetherClient(o), what) { e in
                switch e {
                case TetherError.config, TetherError.invalidArgument: break
                default: XCTFail("\(what): \(e)")
                }
            }
        }

        // Every option set to a valid value: the client works.
        var o = b.gomuks()
        o.compression = false
        o.pingIntervalMs = 1000
        o.receiveTimeoutMs = 10_000
        o.requestTimeoutMs = 5000
        o.connectTimeoutMs = 2000
        o.maxMessageBytes = 1 << 20
        o.queueCapacity = 64
        o.lastServerTs = 1
        o.prevListenerId = false
        o.headers = [(name: "X-Tether-Test", value: "1")]
        o.allowInsecureCredentials = false
        o.useOSTrust = true  // only read for wss:// or an https:// proxy
        o.eventBufferCapacity = 16
        let c = try TetherClient(o)
        let echo = try await c.request("echo", data: json(#"{"ok":true}"#))
        XCTAssertEqual(String(decoding: echo, as: UTF8.self), #"{"ok":true}"#)
        await c.close(timeout: .seconds(10))
    }

    func testALibraryOfAnotherMajorOrMinorIsRefused() throws {
        XCTAssertNil(libraryIncompatibility, "\(String(describing: libraryIncompatibility))")
        let (major, minor) = (headerABI.major, headerABI.minor)
        XCTAssertNoThrow(try checkLibraryVersion(number: major << 16 | minor << 8 | 77, text: "x.y.77"))
        for other in [(major + 1) << 16 | minor << 8, major << 16 | (minor + 1) << 8] {
            XCTAssertThrowsError(try checkLibraryVersion(number: other, text: "other")) { e in
                guard case TetherError.incompatibleLibrary(let m) = e else { return XCTFail("\(e)") }
                XCTAssertTrue(m.contains("other"), m)
            }
        }
        // From 1.0 on a newer minor release only adds: it serves older code, not the reverse.
        XCTAssertTrue(compatible(library: (1, 3), header: (1, 2)))
        XCTAssertFalse(compatible(library: (1, 1), header: (1, 2)))
        XCTAssertFalse(compatible(library: (2, 2), header: (1, 2)))
        XCTAssertFalse(compatible(library: (0, 3), header: (0, 2)))
    }

    /// Close races requests from three tasks, over many rounds with random timing: every
    /// request the library accepted ends (a value or an error), none hangs, CLOSED arrives.
    func testCloseRacingRequestsFromSeveralTasks() async throws {
        let b = try Backend()
        let budget = ContinuousClock.now + .seconds(20)
        var rounds = 0
        var accepted = 0
        var refused = 0
        var closedErrors = 0
        while rounds < 1000 && ContinuousClock.now < budget {
            rounds += 1
            let c = try TetherClient(b.gomuks())
            // Per round: requests started, ended, refused, and ended with .clientClosed.
            let tally = Shared((started: 0, ended: 0, refused: 0, clientClosed: 0))
            var workers: [Task<Void, Never>] = []
            for _ in 0..<3 {
                workers.append(Task.detached {
                    for _ in 0..<200 {
                        tally.withLock { $0.started += 1 }
                        do {
                            if Bool.random() {
                                _ = try await c.request("echo", data: json(#"{"r":1}"#))
                            } else {
                                _ = try await c.request("sleep", data: json(#"{"ms":\#(Int.random(in: 0...3))}"#))
                            }
                            tally.withLock { $0.ended += 1 }
                        } catch TetherError.state {
                            // Refused because the client is closed: the library never took it.
                            tally.withLock { $0.refused += 1 }
                            return
                        } catch TetherError.clientClosed {
                            tally.withLock { $0.ended += 1; $0.clientClosed += 1 }
                        } catch {
                            tally.withLock { $0.ended += 1 }
                        }
                    }
                })
            }
            try await Task.sleep(for: .microseconds(Int.random(in: 0...20_000)))
            c.close(keepResume: Bool.random())
            // Watch the counters rather than await the tasks, so a hung request fails the test
            // instead of hanging it.
            let deadline = ContinuousClock.now + .seconds(10)
            while tally.withLock({ $0.started != $0.ended + $0.refused }) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(2))
            }
            let t = tally.withLock { $0 }
            if t.started != t.ended + t.refused {
                XCTFail("round \(rounds): \(t.started - t.ended - t.refused) accepted requests never ended")
                return
            }
            for w in workers { await w.value }
            let ended = await closed(c, within: .seconds(10))
            XCTAssertTrue(ended, "round \(rounds): no CLOSED within 10 s")
            accepted += t.ended
            refused += t.refused
            closedErrors += t.clientClosed
        }
        print("close race: \(rounds) rounds, \(accepted) requests ended (\(closedErrors) with clientClosed), \(refused) refused after close")
        XCTAssertGreaterThanOrEqual(rounds, 20)
        XCTAssertEqual(refused, rounds * 3)
    }

    /// A stopped server (SIGSTOP) cannot make `close(timeout:)` wait longer than asked.
    func testCloseWithTimeoutReturnsOnTimeWhileTheServerIsStopped() async throws {
        let b = try Backend()
        let c = try TetherClient(b.gomuks())
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        let sent = try c.stats().requestsSent
        let pending = Task { try await c.request("sleep", data: json(#"{"ms":30000}"#), timeout: .seconds(60)) }
        try await waitUntil("the request to be sent") { try c.stats().requestsSent > sent }
        XCTAssertEqual(kill(b.pid, SIGSTOP), 0)
        defer { kill(b.pid, SIGCONT) }
        let t0 = ContinuousClock.now
        let closed = await c.close(timeout: .milliseconds(500))
        let took = ContinuousClock.now - t0
        // Well short of what waiting for the stopped server would take (the library's own
        // bounds are seconds), with room for a loaded machine.
        XCTAssertLessThan(took, .seconds(4), "close(timeout: 500 ms) took \(took)")
        // It gives up only once the time is out, not earlier.
        if !closed {
            XCTAssertGreaterThanOrEqual(took, .milliseconds(500), "close(timeout: 500 ms) gave up after \(took)")
        }
        print("close while the server is stopped: \(closed ? "CLOSED" : "timed out") after \(took)")
        // The pending request ends without the server.
        do {
            _ = try await withTimeout(.seconds(10), "pending request") { try await pending.value }
            XCTFail("the request was answered by a stopped server")
        } catch TetherError.clientClosed {
        } catch {
            XCTFail("pending request: \(error)")
        }
        kill(b.pid, SIGCONT)
        let evs = try await rest(c, within: .seconds(30))
        XCTAssertEqual(evs.last?.kind, .closed)
    }

    /// A close the library refuses for an internal panic (no CLOSED will ever come) ends the
    /// events after what they hold and returns the waits, instead of leaving a reader of
    /// `events` waiting until the client is released.
    func testACloseRefusedForAPanicEndsTheEventsAndTheWaits() async throws {
        let b = try Backend()
        let c = try TetherClient(b.gomuks())
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        let real = TetherClient.nativeClose
        TetherClient.nativeClose = { _, _ in TETHER_ERR_PANIC }
        defer { TetherClient.nativeClose = real }
        let reader = Task { try await rest(c, within: .seconds(20)) }
        let t0 = ContinuousClock.now
        let closed = await c.close(timeout: .seconds(20))
        XCTAssertFalse(closed)
        XCTAssertLessThan(ContinuousClock.now - t0, .seconds(5))
        let evs = try await reader.value
        XCTAssertFalse(evs.contains { $0.kind == .closed }, "\(evs.map(\.kind))")
        try await withTimeout(.seconds(5), "waitUntilClosed") { await c.waitUntilClosed() }
        XCTAssertTrue(c.isClosed)
    }

    /// A client with an event buffer of 8 (and a library queue of 16) after init_complete,
    /// and its backend.
    private func boundedClient() async throws -> (Backend, TetherClient) {
        let b = try Backend()
        var o = b.gomuks()
        o.eventBufferCapacity = 8
        o.queueCapacity = 16
        let c = try TetherClient(o)
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        return (b, c)
    }

    /// gomuks-rpc.md §3: every request ends. A reply behind more unread events than the buffer
    /// holds cannot arrive (as for a request awaited inside the `events` loop), so the wait
    /// ends with `.requestTimeout` shortly after the request's timeout, and the client goes on.
    func testARequestWhoseReplyIsStuckBehindAFullBufferEndsAfterItsTimeout() async throws {
        let (b, c) = try await boundedClient()
        let newest = try b.push(30)
        try await waitUntil("a full buffer") { c.bufferedEventCount == 8 }
        let t0 = ContinuousClock.now
        await assertThrows("stuck reply", { try await c.request("echo", data: json("{}"), timeout: .milliseconds(300)) }) {
            if case .requestTimeout = $0 { return true }
            return false
        }
        let took = ContinuousClock.now - t0
        XCTAssertGreaterThanOrEqual(took, .milliseconds(2300))
        XCTAssertLessThan(took, .seconds(10))
        _ = try await next(c, "the newest event") { $0.kind == .message && $0.requestId == newest }
        let echo = try await c.request("echo", data: json(#"{"c":3}"#))
        XCTAssertEqual(String(decoding: echo, as: UTF8.self), #"{"c":3}"#)
        await c.close(timeout: .seconds(10))
    }

    /// A client that stops for good while its app is not reading and the buffer is full still
    /// closes: CLOSED arrives (and `waitUntilClosed` returns) although the DISCONNECTED that
    /// says so waits behind the full buffer; nothing before it is dropped.
    func testAClientThatStopsForGoodBehindAFullBufferStillCloses() async throws {
        let (b, c) = try await boundedClient()
        let newest = try b.push(12)
        try await waitUntil("a full buffer") { c.bufferedEventCount == 8 }
        // A 403 at the next upgrade ends the client for good.
        try b.control("/_testkit/reject_upgrades?n=100&code=403")
        try b.control("/_testkit/cut")
        let ended = await closed(c, within: .seconds(10))
        XCTAssertTrue(ended, "no CLOSED within 10 s")
        let evs = try await rest(c)
        XCTAssertEqual(evs.last?.kind, .closed)
        XCTAssertTrue(evs.contains { $0.kind == .message && $0.requestId == newest }, "an event was dropped")
        let end = evs.last { $0.kind == .disconnected }
        XCTAssertEqual(end.map { TetherError(status: $0.status, message: "") }, .forbidden(""))
    }

    /// An app that stops reading holds at most `eventBufferCapacity` events in Swift; the rest
    /// waits in the library's bounded queue and then in the server. Nothing is dropped, and
    /// CLOSED still arrives.
    func testEventsAreBoundedWithBackpressureAndNothingIsDropped() async throws {
        let (b, c) = try await boundedClient()
        let n = 2000
        let newest = try b.push(n)
        // Until the buffer is full and the library's queue holds what does not fit in it.
        try await waitUntil("a full buffer with a queue behind it") {
            let q = try c.stats().queuedEvents
            return c.bufferedEventCount >= 8 && q > 0
        }
        XCTAssertEqual(c.bufferedEventCount, 8)
        let ids = try await withTimeout(.seconds(30), "\(n) events") { () -> [Int64] in
            var ids: [Int64] = []
            for await ev in c.events where ev.kind == .message && ev.requestId < 0 {
                ids.append(ev.requestId)
                if ev.requestId == newest { break }
            }
            return ids
        }
        XCTAssertEqual(ids, Array(stride(from: newest + Int64(n) - 1, through: newest, by: -1)))

        // Unread again, then closed: CLOSED is delivered although nobody reads, and the events
        // before it are all still there, followed by CLOSED.
        let more = try b.push(n)
        try await waitUntil("a full buffer with a queue behind it, again") {
            let q = try c.stats().queuedEvents
            return c.bufferedEventCount >= 8 && q > 0
        }
        XCTAssertEqual(c.bufferedEventCount, 8)
        // Held now: these 8, the one the dispatcher waits to hand over, and the library's
        // queue. Nobody reads, so that only grows until the close.
        let queued = try c.stats().queuedEvents
        let closed = await c.close(timeout: .seconds(10))
        XCTAssertTrue(closed)
        let evs = try await rest(c)
        XCTAssertEqual(evs.last?.kind, .closed)
        // Everything held at the close arrives before CLOSED (what the close adds is its
        // DISCONNECTED and CLOSED).
        let held = evs.filter { $0.kind != .disconnected && $0.kind != .closed }
        XCTAssertGreaterThanOrEqual(held.count, 8 + Int(queued), "events held at the close were lost")
        let tail = evs.filter { $0.kind == .message && $0.requestId < 0 }.map(\.requestId)
        XCTAssertGreaterThanOrEqual(tail.count, 8, "the full buffer was lost at the close")
        // Close may cut short what the server had not sent yet, but what arrives is in order
        // with no gap or repeat.
        XCTAssertEqual(tail, Array(stride(from: more + Int64(n) - 1, through: more + Int64(n) - Int64(tail.count), by: -1)))
    }

    /// A pause ends its connection with a DISCONNECTED that has no retry, like the library
    /// giving up, but the client goes on: after unpausing, an app that stops reading still
    /// holds at most `eventBufferCapacity` events in Swift.
    func testTheBufferStaysBoundedAfterAPause() async throws {
        let (b, c) = try await boundedClient()
        try c.pause()
        _ = try await next(c, "the pause") { $0.kind == .disconnected }
        try c.unpause()
        _ = try await next(c, "connected again") { $0.kind == .connected }
        let n = 2000
        let newest = try b.push(n)
        try await waitUntil("a full buffer with a queue behind it") {
            let q = try c.stats().queuedEvents
            return c.bufferedEventCount >= 8 && q > 0
        }
        XCTAssertEqual(c.bufferedEventCount, 8)
        let last = try await next(c, "the last event", within: .seconds(30)) {
            $0.kind == .message && $0.requestId == newest
        }
        XCTAssertEqual(last.requestId, newest)
        let closed = await c.close(timeout: .seconds(10))
        XCTAssertTrue(closed)
    }
}
