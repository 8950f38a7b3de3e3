// RESUMED and TOKEN_RENEWED against real tether-backend processes (gomuks spec §7.2, §1.2).
import Foundation
import XCTest

@testable import Tether

/// How many websocket upgrades the backend still refuses (`/_testkit/reject_upgrades`).
private func upgradesLeftToRefuse(_ b: Backend) throws -> Int {
    let stats = try b.control("/_testkit/stats", method: "GET")
    let o = try JSONSerialization.jsonObject(with: Data(stats.utf8)) as? [String: Any]
    guard let n = (o?["reject_upgrades"] as? NSNumber)?.intValue else {
        throw TestFailure("no reject_upgrades in \(stats)")
    }
    return n
}

final class EventsTests: XCTestCase {
    /// Connects, takes two buffered events (so a reconnect resumes), runs `disrupt`, and
    /// returns the events from the resuming CONNECTED through init_complete.
    private func resume(_ b: Backend, _ disrupt: @escaping @Sendable () async throws -> Void) async throws -> [Event] {
        let c = try TetherClient(b.gomuks())
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        let newest = try b.push(2)
        _ = try await next(c, "newest event") { $0.requestId == newest }
        try await disrupt()
        let conn = try await next(c, "CONNECTED") { $0.kind == .connected }
        XCTAssertTrue(conn.resumeAttempted)
        let evs = try await withTimeout(.seconds(20), "init_complete") { () -> [Event] in
            var evs: [Event] = []
            for await ev in c.events {
                evs.append(ev)
                if ev.command == "init_complete" { break }
            }
            return evs
        }
        await c.close(timeout: .seconds(10))
        return evs
    }

    private func outcomes(_ evs: [Event]) -> [ResumeOutcome?] {
        evs.filter { $0.kind == .resumed }.map(\.resumeOutcome)
    }

    /// §7.2/§7.5: a cut, then a complete replay: SUCCEEDED just before init_complete.
    func testAResumeAfterACutReportsSucceeded() async throws {
        let b = try Backend()
        let evs = try await resume(b) { try b.control("/_testkit/cut?push=3") }
        XCTAssertEqual(outcomes(evs), [.succeeded])
        XCTAssertEqual(evs[evs.count - 2].kind, .resumed)
        XCTAssertTrue(evs.filter { $0.kind != .resumed }.allSatisfy { $0.resumeOutcome == nil })
    }

    /// §7.2: a backend restart: RESET before the new run_id.
    func testABackendRestartReportsReset() async throws {
        let b = try Backend()
        let evs = try await resume(b) { try b.control("/_testkit/restart") }
        XCTAssertEqual(outcomes(evs), [.reset])
        let at = try XCTUnwrap(evs.firstIndex { $0.kind == .resumed })
        XCTAssertEqual(evs[at + 1].command, "run_id")
    }

    /// §7.2/§7.4: more missed events than the buffer holds: RESET.
    func testABufferOverrunReportsReset() async throws {
        let b = try Backend(["--buffer-size", "5"])
        let evs = try await resume(b) {
            try b.control("/_testkit/reject_upgrades?n=1000000")
            try b.control("/_testkit/cut?push=20")
            // Let it back in only once it came back and was refused at least once.
            try await waitUntil("a refused reconnect") { try upgradesLeftToRefuse(b) < 1_000_000 }
            try b.control("/_testkit/reject_upgrades?n=0")
        }
        XCTAssertEqual(outcomes(evs), [.reset])
    }

    /// §1.2: a token that lives 2 s is renewed while connected and announced without the
    /// secret; `authToken()` has the new one.
    func testAShortLivedTokenIsRenewedWhileConnected() async throws {
        let b = try Backend(["--token-lifetime-ms", "2000"])
        let c = try TetherClient(b.gomuks())
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        let before = try c.authToken()
        let ev = try await next(c, "TOKEN_RENEWED") { $0.kind == .tokenRenewed }
        XCTAssertTrue(ev.data.isEmpty)
        XCTAssertNotEqual(try c.authToken(), before)
        XCTAssertTrue(try b.control("/_testkit/stats", method: "GET").contains("\"total_connections\":1,"))
        await c.close(timeout: .seconds(10))
    }

    func testEventKindsAndResumeOutcomesMatchTheHeader() throws {
        let header = try String(contentsOf: repoRoot.appendingPathComponent("include/tether.h"), encoding: .utf8)
        for (prefix, known) in [("EVENT_", { (v: UInt32) in EventKind(rawValue: v) != nil }),
                                ("RESUME_", { (v: UInt32) in ResumeOutcome(rawValue: v) != nil })] {
            let re = try NSRegularExpression(pattern: "#define TETHER_\(prefix)(\\w+) (\\d+)")
            let matches = re.matches(in: header, range: NSRange(header.startIndex..., in: header))
            XCTAssertGreaterThan(matches.count, 1)
            for m in matches {
                let v = UInt32(header[Range(m.range(at: 2), in: header)!])!
                XCTAssertTrue(known(v), "TETHER_\(prefix)\(header[Range(m.range(at: 1), in: header)!]) has no case")
            }
        }
    }
}
