// The in-process transport (TetherOptions.inProcess) against tests/inproc's double of
// libgomuksffi (TETHER_FAKE_GOMUKS; bindings/swift/run-tests.sh builds it and sets it).
import Foundation
import XCTest

@testable import Tether

/// A process runs one in-process backend at a time, and XCTest runs every test in one process,
/// one after another: each test closes its clients with `close(timeout:)`, which returns once
/// CLOSED came. The backend has stopped and the slot is free by then unless a call was still
/// running in it for more than 5 s (none of these tests leaves one).
final class InProcessTests: XCTestCase {
    /// Closes `c` and checks its last events: DISCONNECTED (OK, no retry), then CLOSED (so no
    /// unread event is left, such as a media transfer's PROGRESS or CHUNK).
    func closeAndCheck(_ c: TetherClient, file: StaticString = #filePath, line: UInt = #line) async throws {
        let closed = await c.close(timeout: .seconds(10))
        XCTAssertTrue(closed, "CLOSED within 10 s", file: file, line: line)
        let evs = try await rest(c)
        XCTAssertEqual(evs.map(\.kind), [.disconnected, .closed], file: file, line: line)
        XCTAssertEqual(evs.first?.status, 0, file: file, line: line)
        XCTAssertNil(evs.first?.retryInMs, file: file, line: line)
    }

    func text(_ d: Data) -> String { String(decoding: d, as: UTF8.self) }

    func testStartupEventsARequestRoundTripARemoteErrorAndClose() async throws {
        let root = try DataRoot()
        let c = try TetherClient(try root.options())
        let start = try await withTimeout(.seconds(20), "the startup events") { () -> [Event] in
            var evs: [Event] = []
            for await ev in c.events {
                evs.append(ev)
                if evs.count == 4 { return evs }
            }
            throw TestFailure("events ended after \(evs.map(\.kind))")
        }
        XCTAssertEqual(start.map(\.kind), [.connecting, .connected, .message, .message])
        XCTAssertFalse(start[1].resumeAttempted)
        // The backend's own startup events, with id 0 (no resume in-process).
        XCTAssertEqual(start[2...].map(\.command), ["client_state", "sync_status"])
        XCTAssertEqual(start[2...].map(\.requestId), [0, 0])
        XCTAssertTrue(text(start[2].data).contains(#""is_logged_in":true"#), text(start[2].data))
        XCTAssertTrue(text(start[3].data).contains(#""waiting""#), text(start[3].data))

        let echo = try await c.request("echo", data: json(#"{"a":[1,2]}"#))
        XCTAssertEqual(text(echo), #"{"a":[1,2]}"#)
        let account = try await c.request("get_account_info")
        XCTAssertTrue(text(account).contains("@fake:localhost"), text(account))
        await assertThrows("unknown command", { try await c.request("no_such") }) {
            $0 == .remote(#"unknown command "no_such""#)
        }
        XCTAssertEqual(c.state, .connected)
        try await closeAndCheck(c)
    }

    func testPauseUnpauseAndReconnectNowAreUnsupported() async throws {
        let root = try DataRoot()
        let c = try TetherClient(try root.options())
        _ = try await next(c, "sync_status") { $0.command == "sync_status" }
        let calls: [(String, () throws -> Void)] = [
            ("pause", c.pause), ("unpause", c.unpause), ("reconnectNow", c.reconnectNow),
        ]
        for (what, call) in calls {
            XCTAssertThrowsError(try call(), what) { e in
                guard case TetherError.unsupported = e else { return XCTFail("\(what): \(e)") }
            }
        }
        XCTAssertEqual(c.state, .connected)
        let echo = try await c.request("echo", data: json(#"{"still":1}"#))
        XCTAssertEqual(text(echo), #"{"still":1}"#)
        try await closeAndCheck(c)
    }

    func testASecondClientIsRefusedWithInUseUntilTheFirstClosed() async throws {
        let root = try DataRoot()
        let first = try TetherClient(try root.options())
        _ = try await next(first, "sync_status") { $0.command == "sync_status" }
        // The same data root (its lock file), and any other root: one backend per process.
        let other = try DataRoot()
        let refused = [("same root", try root.options()), ("other root", try other.options())]
        for (what, options) in refused {
            XCTAssertThrowsError(try TetherClient(options), what) { e in
                guard case TetherError.inUse = e else { return XCTFail("\(what): \(e)") }
            }
        }
        let echo = try await first.request("echo")
        XCTAssertEqual(text(echo), "{}")
        try await closeAndCheck(first)
        // Closed, the first leaves the root and the process's backend free again.
        let again = try TetherClient(try root.options())
        _ = try await next(again, "sync_status") { $0.command == "sync_status" }
        let echoAgain = try await again.request("echo", data: json(#"{"again":true}"#))
        XCTAssertEqual(text(echoAgain), #"{"again":true}"#)
        try await closeAndCheck(again)
    }

    func testAFailedStartEndsTheClientWithTheBackendsStatus() async throws {
        let root = try DataRoot()
        // The double's GomuksStart returns the code in this file (11: account lookup failed).
        try Data("11".utf8).write(to: URL(fileURLWithPath: root.path).appendingPathComponent("fake_start_code"))
        let c = try TetherClient(try root.options())
        let evs = try await rest(c)
        XCTAssertEqual(evs.map(\.kind), [.connecting, .disconnected, .closed])
        guard evs.count == 3 else { return }
        XCTAssertEqual(TetherError(status: evs[1].status, message: ""), .backendAccount(""))
        XCTAssertNil(evs[1].retryInMs)
        XCTAssertTrue(text(evs[1].data).contains("GomuksStart returned 11"), text(evs[1].data))
    }

    func testWhatTheLibraryRefusesAndTheOptionsShape() throws {
        let root = try DataRoot()
        let o = try root.options()
        XCTAssertEqual(o.url, "")
        XCTAssertEqual(o.protocol, .gomuks)
        var rwws = o
        rwws.protocol = .rwws
        let missing = TetherOptions(inProcess: .init(library: root.path + "/no-such-libgomuksffi.so", dataRoot: root.path))
        for (what, options) in [("rwws", rwws), ("missing library", missing)] {
            XCTAssertThrowsError(try TetherClient(options), what) { e in
                guard case TetherError.config = e else { return XCTFail("\(what): \(e)") }
            }
        }
    }
}
