// In-process media upload and download (TetherClient.uploadMedia/downloadMedia) against
// tests/inproc's double of libgomuksffi; see the rules at the top of fake_gomuksffi.c.
import Foundation
import XCTest

@testable import Tether

/// A JSON object's data as a dictionary, for comparing replies whatever their key order.
private func object(_ d: Data, file: StaticString = #filePath, line: UInt = #line) -> NSDictionary {
    guard let o = (try? JSONSerialization.jsonObject(with: d)) as? NSDictionary else {
        XCTFail("not a JSON object: \(String(decoding: d, as: UTF8.self))", file: file, line: line)
        return [:]
    }
    return o
}

/// Byte k of the double's file "mxc://fake/N".
private func fakeByte(_ k: Int) -> UInt8 { UInt8(k % 251) }

/// The double's answer to an upload of `len` bytes.
private func uploaded(_ len: Int) -> NSDictionary {
    ["msgtype": "m.file", "url": "mxc://fake/\(len)", "info": ["size": len]]
}

private struct ChunkRefused: Error, Equatable {}

/// Downloads on its own isolation: the closures run there and may touch its state directly.
private actor Collector {
    var bytes = 0
    var progress: [Double] = []

    func download(_ c: TetherClient, _ mxc: String) async throws -> Data {
        try await c.downloadMedia(mxc: mxc) { chunk in
            self.assertIsolated()
            bytes += chunk.count
        }
    }

    func upload(_ c: TetherClient, _ bytes: Data) async throws -> Data {
        try await c.uploadMedia(bytes: bytes) {
            self.assertIsolated()
            progress.append($0)
        }
    }
}

extension InProcessTests {
    /// An in-process client whose startup events were read (so only what follows is left).
    private func mediaClient(_ root: DataRoot, queueCapacity: Int? = nil) async throws -> TetherClient {
        var o = try root.options()
        o.queueCapacity = queueCapacity
        let c = try TetherClient(o)
        _ = try await next(c, "sync_status") { $0.command == "sync_status" }
        return c
    }

    /// Waits up to 10 s for the RESPONSE of an abandoned transfer and returns its status.
    private func abandonedReply(_ c: TetherClient) async throws -> Int32? {
        for _ in 0..<1000 {
            if let s = c.core.lastAbandonedReply { return s }
            try await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }

    func testMediaUploadOfBytesReportsProgressInOrderAndReturnsTheContent() async throws {
        let root = try DataRoot()
        let c = try await mediaClient(root)
        var seen: [Double] = []
        let reply = try await c.uploadMedia(
            params: json(#"{"filename":"a.bin"}"#), bytes: Data(repeating: 7, count: 1234)
        ) { seen.append($0) }
        XCTAssertEqual(seen, [0, 50, 100])
        XCTAssertEqual(object(reply), uploaded(1234))
        // Empty bytes are an upload of nothing, not one of a path.
        let empty = try await c.uploadMedia(bytes: Data())
        XCTAssertEqual(object(empty), uploaded(0))
        try await closeAndCheck(c)
    }

    func testMediaUploadFromAFilePath() async throws {
        let root = try DataRoot()
        let c = try await mediaClient(root)
        let file = root.path + "/upload.bin"
        try Data(repeating: 1, count: 777).write(to: URL(fileURLWithPath: file))
        var seen: [Double] = []
        let reply = try await c.uploadMedia(params: json(#"{"filename":"upload.bin"}"#), path: file) {
            seen.append($0)
        }
        XCTAssertEqual(seen, [0, 50, 100])
        XCTAssertEqual(object(reply), uploaded(777))
        // The path may also come in the params.
        let inParams = try JSONSerialization.data(withJSONObject: ["path": file])
        let fromParams = try await c.uploadMedia(params: inParams)
        XCTAssertEqual(object(fromParams), uploaded(777))
        let missing = root.path + "/no-such-file"
        var reports = 0
        await assertThrows("missing file", { try await c.uploadMedia(path: missing) { _ in reports += 1 } }) {
            $0 == .remote("open \(missing): no such file or directory")
        }
        XCTAssertEqual(reports, 0)
        try await closeAndCheck(c)
    }

    func testMediaUploadFailureIsARemoteError() async throws {
        let root = try DataRoot()
        let c = try await mediaClient(root)
        var seen: [Double] = []
        await assertThrows("failed upload", {
            try await c.uploadMedia(params: json(#"{"fail":true}"#), bytes: Data("x".utf8)) { seen.append($0) }
        }) { $0 == .remote("upload failed") }
        XCTAssertEqual(seen, [0])
        try await closeAndCheck(c)
    }

    func testMediaUploadTakesExactlyOneOfBytesAndAPath() async throws {
        let root = try DataRoot()
        let c = try await mediaClient(root)
        await assertThrows("both", { try await c.uploadMedia(bytes: Data("x".utf8), path: "/tmp/x") }) {
            guard case .invalidArgument = $0 else { return false }
            return true
        }
        await assertThrows("neither", { try await c.uploadMedia(params: json(#"{"filename":"x"}"#)) }) {
            guard case .invalidArgument = $0 else { return false }
            return true
        }
        await assertThrows("params not an object", { try await c.uploadMedia(params: json("[1]"), path: "/x") }) {
            guard case .invalidArgument = $0 else { return false }
            return true
        }
        // Nothing was sent: the client goes on.
        let echo = try await c.request("echo")
        XCTAssertEqual(text(echo), "{}")
        try await closeAndCheck(c)
    }

    func testMediaDownloadDeliversEveryByteInOrderAndTheReply() async throws {
        let root = try DataRoot()
        let c = try await mediaClient(root)
        var got = Data()
        var sizes: [Int] = []
        let reply = try await c.downloadMedia(params: json(#"{"mxc":"mxc://fake/200000"}"#)) { chunk in
            sizes.append(chunk.count)
            got.append(chunk)
        }
        XCTAssertEqual(object(reply), ["path": "/fake/200000", "size": 200000])
        XCTAssertEqual(got.count, 200_000)
        XCTAssertTrue(sizes.allSatisfy { $0 > 0 && $0 <= 65536 }, "\(sizes)")
        XCTAssertGreaterThan(sizes.count, 1)
        let wrong = got.enumerated().first { $0.element != fakeByte($0.offset) }
        XCTAssertNil(wrong.map { "byte \($0.offset) is \($0.element)" })
        // The URI alone, and the closures on the caller's actor.
        let actor = Collector()
        let again = try await actor.download(c, "mxc://fake/1000")
        XCTAssertEqual(object(again), ["path": "/fake/1000", "size": 1000])
        let total = await actor.bytes
        XCTAssertEqual(total, 1000)
        _ = try await actor.upload(c, Data(count: 3))
        let progress = await actor.progress
        XCTAssertEqual(progress, [0, 50, 100])
        try await closeAndCheck(c)
    }

    func testMediaDownloadFailureAfterAChunkAndAnInvalidURI() async throws {
        let root = try DataRoot()
        let c = try await mediaClient(root)
        var sizes: [Int] = []
        await assertThrows("failed download", {
            try await c.downloadMedia(params: json(#"{"mxc":"mxc://fake/200000","fail":true}"#)) {
                sizes.append($0.count)
            }
        }) { $0 == .remote("download failed") }
        XCTAssertEqual(sizes, [65536])
        await assertThrows("invalid mxc", { try await c.downloadMedia(mxc: "https://x/1") { _ in } }) {
            $0 == .remote("invalid mxc URI")
        }
        try await closeAndCheck(c)
    }

    func testMediaAChunkClosureThatThrowsCancelsTheDownload() async throws {
        let root = try DataRoot()
        // 100 chunks against a queue of 16 and a transfer buffer of 8: the download is still
        // held back when the closure throws, so the cancel comes before its own reply.
        let c = try await mediaClient(root, queueCapacity: 16)
        var chunks = 0
        do {
            _ = try await c.downloadMedia(mxc: "mxc://fake/\(65536 * 100)") { _ in
                chunks += 1
                if chunks == 2 { throw ChunkRefused() }
            }
            XCTFail("no error")
        } catch let e as ChunkRefused {
            XCTAssertEqual(e, ChunkRefused())
        }
        XCTAssertEqual(chunks, 2)
        let status = try await abandonedReply(c)
        XCTAssertEqual(status.map { TetherError(status: $0, message: "") }, .cancelled(""))
        // The client goes on: a request, then a whole download (the limit guards a hang: a
        // dispatcher still waiting for the abandoned transfer's reader would stall the reply).
        let echo = try await withTimeout(.seconds(10), "echo") {
            try await c.request("echo", data: json(#"{"after":1}"#))
        }
        XCTAssertEqual(text(echo), #"{"after":1}"#)
        var total = 0
        _ = try await c.downloadMedia(mxc: "mxc://fake/70000") { total += $0.count }
        XCTAssertEqual(total, 70000)
        try await closeAndCheck(c)
    }

    func testMediaCancellingTheTaskCancelsTheDownload() async throws {
        let root = try DataRoot()
        let c = try await mediaClient(root, queueCapacity: 16)
        let firstChunk = OnceSignal()
        let task = Task {
            try await c.downloadMedia(mxc: "mxc://fake/\(65536 * 100)") { _ in
                firstChunk.fire()
                try await Task.sleep(for: .seconds(60))
            }
        }
        try await withTimeout(.seconds(20), "the first chunk") { await firstChunk.wait() }
        task.cancel()
        do {
            _ = try await task.value
            XCTFail("no error")
        } catch {
            XCTAssertTrue(error is CancellationError, "\(error)")
        }
        let status = try await abandonedReply(c)
        XCTAssertEqual(status.map { TetherError(status: $0, message: "") }, .cancelled(""))
        let echo = try await withTimeout(.seconds(10), "echo") { try await c.request("echo") }
        XCTAssertEqual(text(echo), "{}")
        try await closeAndCheck(c)
    }

    func testMediaDownloadChunksApplyBackpressure() async throws {
        let root = try DataRoot()
        let c = try await mediaClient(root, queueCapacity: 16)
        var chunks = 0
        var total = 0
        var queuedWhileSlow: UInt64 = 0
        _ = try await c.downloadMedia(mxc: "mxc://fake/\(65536 * 100)") { chunk in
            chunks += 1
            total += chunk.count
            if chunks == 1 {
                // A slow reader: the transfer's buffer fills, then the dispatcher waits and the
                // library's queue fills behind it instead of everything being buffered here.
                // Read again until it holds 8, or for 10 s at most (the assertion below then
                // reports what it held).
                let deadline = ContinuousClock.now + .seconds(10)
                while true {
                    queuedWhileSlow = try c.stats().queuedEvents
                    if queuedWhileSlow >= 8 || ContinuousClock.now >= deadline { break }
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
        }
        XCTAssertGreaterThanOrEqual(queuedWhileSlow, 8, "events queued in the library while the reader was slow")
        XCTAssertEqual(total, 65536 * 100)
        try await closeAndCheck(c)
    }

    func testMediaReportsNeverReachTheEventSequence() async throws {
        let root = try DataRoot()
        let c = try await mediaClient(root)
        // A reader waiting on `events` all along: a report routed there would reach it at once.
        let reader = Task { () -> [Event] in
            var all: [Event] = []
            for await ev in c.events { all.append(ev) }
            return all
        }
        var reports = 0
        _ = try await c.uploadMedia(bytes: Data(count: 10)) { _ in reports += 1 }
        _ = try await c.downloadMedia(mxc: "mxc://fake/300000") { _ in reports += 1 }
        XCTAssertEqual(reports, 3 + 5)
        let closed = await c.close(timeout: .seconds(10))
        XCTAssertTrue(closed)
        let evs = try await withTimeout(.seconds(20), "the reader") { await reader.value }
        XCTAssertEqual(evs.map(\.kind), [.disconnected, .closed])
    }

    func testMediaOverTheWebsocketIsUnsupported() async throws {
        let (fd, port) = try refusingPort()
        defer { close(fd) }
        let c = try TetherClient(url: "http://127.0.0.1:\(port)")
        // Refused by the call itself: no reply is awaited (the limit only guards a hang).
        await assertThrows("upload", {
            try await withTimeout(.seconds(10), "upload") { try await c.uploadMedia(bytes: Data("x".utf8)) }
        }) {
            guard case .unsupported = $0 else { return false }
            return true
        }
        await assertThrows("download", {
            try await withTimeout(.seconds(10), "download") { try await c.downloadMedia(mxc: "mxc://fake/1") { _ in } }
        }) {
            guard case .unsupported = $0 else { return false }
            return true
        }
        let closed = await c.close(timeout: .seconds(10))
        XCTAssertTrue(closed)
    }
}
