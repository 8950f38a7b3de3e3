// XCTest against a running tether-backend: set TETHER_TEST_URL=http://127.0.0.1:PORT
// (start it with `tether-backend`); the tests are skipped without it.
import Foundation
import XCTest

@testable import Tether

final class TetherTests: XCTestCase {
    private func url() throws -> String {
        guard let u = ProcessInfo.processInfo.environment["TETHER_TEST_URL"] else {
            throw XCTSkip("set TETHER_TEST_URL to a running tether-backend")
        }
        return u
    }

    func testRequestResponseAndRemoteError() async throws {
        let c = try TetherClient(url: try url(), username: "tether", password: "tether-password")
        let data = try await c.request("echo", data: Data(#"{"a":1}"#.utf8))
        XCTAssertEqual(String(decoding: data, as: UTF8.self), #"{"a":1}"#)
        do {
            _ = try await c.request("fail", data: Data(#"{"message":"nope"}"#.utf8))
            XCTFail("expected a remote error")
        } catch TetherError.remote(let m) {
            XCTAssertTrue(m.contains("nope"))
        }
    }

    func testPongAcknowledgesAndRwwsHandshake() async throws {
        let c = try TetherClient(url: try url(), protocol: .rwws, token: "dGV0aGVyLXRlc3Qta2V5")
        for await ev in c.events where ev.kind == .pong {
            XCTAssertGreaterThan(ev.serverTimeMs, 1_700_000_000_000)
            break
        }
    }

    func testBadConfigThrowsTypedError() {
        XCTAssertThrowsError(try TetherClient(url: "ftp://nope")) { e in
            guard case TetherError.config = e else { return XCTFail("\(e)") }
        }
    }
}
