// The gomuks store (Store) against a real tether-backend with its room model (--rooms 4
// --history 30): !r0 a DM with alice, !r1 and !r2 in the space, !r2 with 3 unread, !r3
// favourite, and an invite. Each test has a backend of its own.
import Foundation
import XCTest

@testable import Tether

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private let r1 = "!r1:example.org"
private let r2 = "!r2:example.org"

/// A parsed JSON document, and paths into it.
private func parse(_ d: Data?) throws -> Any {
    guard let d else { throw TestFailure("no document") }
    return try JSONSerialization.jsonObject(with: d, options: .fragmentsAllowed)
}

private func at(_ v: Any?, _ path: String...) -> Any? {
    var v = v
    for k in path { v = (v as? [String: Any])?[k] }
    return v
}

private func int(_ v: Any?) -> Int? { (v as? NSNumber)?.intValue ?? v as? Int }

private func bool(_ v: Any?) -> Bool? { v as? Bool ?? (v as? NSNumber)?.boolValue }

private func list(_ v: Any?, _ path: String...) -> [Any] {
    var v = v
    for k in path { v = (v as? [String: Any])?[k] }
    return v as? [Any] ?? []
}

private func bodies(_ items: [Any]) -> [String?] {
    items.map { at($0, "event", "content", "body") as? String }
}

private func ids(_ d: Data) throws -> [String] {
    list(try parse(d), "rooms").compactMap { at($0, "room_id") as? String }
}

/// Every element of `stream` until it ends, within `limit`.
private func drain(_ stream: AsyncStream<StoreChange>, within limit: Duration = .seconds(10)) async throws -> [StoreChange] {
    try await withTimeout(limit, "the end of the changes") {
        var all: [StoreChange] = []
        for await c in stream { all.append(c) }
        return all
    }
}

/// The next element of `stream` that matches, within `limit`; the ones before it are consumed.
/// A regression fails here instead of hanging the suite until the runner's limit.
private func nextChange(
    _ stream: AsyncStream<StoreChange>, _ what: String, within limit: Duration = .seconds(20),
    where match: @escaping @Sendable (StoreChange) -> Bool
) async throws -> StoreChange {
    try await withTimeout(limit, what) {
        for await c in stream where match(c) { return c }
        throw TestFailure("the changes ended before \(what)")
    }
}

/// Polls `cond` until it holds, within 10 s.
private func until(_ what: String, _ cond: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(10)
    while try !cond() {
        guard ContinuousClock.now < deadline else { throw TimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// SIGSTOPs the backend and waits until every thread of it has stopped: `kill` returns
/// earlier, and a reply could still slip out.
private func freeze(_ b: Backend) async throws {
    kill(b.pid, SIGSTOP)
    try await until("the backend to stop") {
        let dir = "/proc/\(b.pid)/task"
        let tasks = try FileManager.default.contentsOfDirectory(atPath: dir)
        return tasks.allSatisfy { t in
            guard let stat = try? String(contentsOfFile: "\(dir)/\(t)/stat", encoding: .utf8),
                  let close = stat.range(of: ") ", options: .backwards) else { return true }
            return stat[close.upperBound...].hasPrefix("T")
        }
    }
}

final class StoreTests: XCTestCase {
    /// A backend with rooms, and a client with a store that has taken the initial sync (its
    /// events up to init_complete are consumed).
    private func session(_ opts: StoreOptions = StoreOptions()) async throws -> (Backend, TetherClient, Store) {
        let b = try Backend(["--rooms", "4", "--history", "30"])
        var o = b.gomuks()
        o.store = opts
        let c = try TetherClient(o)
        _ = try await next(c, "init_complete") { $0.command == "init_complete" }
        guard let store = c.store else { throw TestFailure("no store") }
        return (b, c, store)
    }

    private func remoteMessage(_ b: Backend, _ room: String, _ body: String) throws {
        let q = body.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        try b.control("/_testkit/rooms/message?room=\(room)&sender=@bob:example.org&body=\(q)")
    }

    func testTheRoomListAfterTheInitialSyncHasTheInviteOnTopThenTheFavourite() async throws {
        let (b, c, store) = try await session()
        defer { b.stop() }  // keeps the backend alive to the end
        let doc = try parse(try store.roomList())
        let rooms = list(doc, "rooms")
        XCTAssertEqual(rooms.compactMap { at($0, "room_id") as? String },
                       ["!invite:example.org", "!r3:example.org", r2, r1, "!r0:example.org"])
        XCTAssertEqual(bool(at(rooms[0], "invite")), true)
        XCTAssertEqual(at(rooms[1], "name") as? String, "Room 3")
        XCTAssertEqual(bool(at(rooms[1], "favourite")), true)
        XCTAssertEqual(int(at(rooms[2], "unread_messages")), 3)
        XCTAssertEqual(at(rooms[4], "dm_user_id") as? String, "@alice:example.org")
        XCTAssertEqual(int(at(doc, "total")), 5)
        // Arguments reach the library.
        XCTAssertEqual(try ids(try store.roomList(space: "!space:example.org")), [r2, r1])
        XCTAssertEqual(try ids(try store.roomList(query: "room 3")), ["!r3:example.org"])
        XCTAssertEqual(try ids(try store.roomList(invites: false, limit: 2)), ["!r3:example.org", r2])
        XCTAssertEqual(try ids(try store.roomList(order: "name", favouritesFirst: false, invites: false)),
                       ["!r0:example.org", r1, r2, "!r3:example.org"])
        // The other reads.
        XCTAssertEqual(at(try parse(try store.room(r2)), "meta", "name") as? String, "Room 2")
        XCTAssertNil(try store.room("!nope:example.org"))
        _ = try parse(try store.spaces())
        XCTAssertGreaterThan(int(at(try parse(try store.session()), "gen")) ?? 0, 0)
        _ = try parse(try store.accountData())
        _ = try parse(try store.typing(r2))
        _ = try parse(try store.receipts(r2))
        _ = try parse(try store.state(r2))
        _ = try parse(try store.members(r2))
        XCTAssertEqual(Store.reads.count, 11)
        await c.close(timeout: .seconds(10))
    }

    func testStoreEventsReachTheChangesStreamAndStayInTheEventStreamRightAfterTheirMessage() async throws {
        let (b, c, store) = try await session()
        defer { b.stop() }
        let changes = store.changes
        try remoteMessage(b, r1, "hello from bob")
        let msg = try await next(c, "the message") {
            $0.kind == .message && String(decoding: $0.data, as: UTF8.self).contains("hello from bob")
        }
        XCTAssertEqual(msg.command, "sync_complete")
        // Its STORE event comes next, with the change set as data.
        let ev = try await next(c, "the next event") { _ in true }
        XCTAssertEqual(ev.kind, .store)
        XCTAssertEqual(ev.command, "")
        XCTAssertEqual(ev.requestId, 0)
        let change = StoreChange(json: ev.data)
        XCTAssertEqual(change.cause.command, "sync_complete")
        XCTAssertNotNil(change.rooms[r1])
        XCTAssertEqual(change.rooms[r1]?.meta, true)
        // The same change set reached the stream (handed over before the event was queued).
        store.close()
        let seen = try await drain(changes)
        XCTAssertEqual(seen.last?.json, ev.data)
        XCTAssertEqual(seen.last?.gen, change.gen)
        await c.close(timeout: .seconds(10))
    }

    func testPaginateFillsTheTimelineAndItsReplyComesAfterItsChangeSet() async throws {
        let (b, c, store) = try await session()
        defer { b.stop() }  // keeps the backend alive to the end
        XCTAssertEqual(list(try parse(try store.timeline(r2)), "events").count, 0)
        let changes = store.changes
        // The first page fills the empty timeline, the second goes before it.
        let page1 = try await store.paginate(r2, limit: 10)
        XCTAssertEqual(list(try parse(page1), "events").count, 10)
        XCTAssertEqual(list(try parse(try store.timeline(r2)), "events").count, 10)
        let page2 = try await store.paginate(r2)
        XCTAssertEqual(list(try parse(page2), "events").count, 20)
        // Applied before the reply: the read right after sees every row.
        let tl = try parse(try store.timeline(r2, limit: 100))
        let events = list(tl, "events")
        XCTAssertEqual(events.count, 30)
        XCTAssertEqual(bodies(events).first, "Message 0 in Room 2")
        XCTAssertEqual(bodies(events).last, "Message 29 in Room 2")
        XCTAssertEqual(bool(at(tl, "has_more")), false)
        let before = (at(events[10], "timeline_rowid") as? NSNumber)?.int64Value
        let older = try parse(try store.timeline(r2, before: before, limit: 5))
        XCTAssertEqual(bodies(list(older, "events")), (5...9).map { "Message \($0) in Room 2" })
        // Closing the store right away ends the stream: the paginations' change sets were
        // handed over before their replies, or they would not be there.
        store.close()
        let pages = try await drain(changes).filter { $0.cause.requestId != nil }
        XCTAssertEqual(pages.count, 2)
        // History is never `appended`: the first page into an empty timeline is `prepended` too.
        XCTAssertEqual(pages.first?.rooms[r2]?.prepended, 10)
        XCTAssertEqual(pages.last?.rooms[r2]?.prepended, 20)
        // The second page was the last: whether history is left changed with it only.
        XCTAssertEqual(pages.first?.rooms[r2]?.hasMoreChanged, false)
        XCTAssertEqual(pages.last?.rooms[r2]?.hasMoreChanged, true)
        await c.close(timeout: .seconds(10))
    }

    func testASecondPaginationOfARoomWhileOneRunsIsRefused() async throws {
        let (b, c, store) = try await session()
        defer { b.stop() }
        try await freeze(b)
        let first = Task { try await store.paginate(r2, limit: 5) }
        // Wait until the first one is registered (its request is sent to a stopped backend).
        try await until("the first pagination") {
            bool(at(try parse(try store.timeline(r2)), "paginating")) == true
        }
        await assertThrows("second pagination", { try await store.paginate(r2, limit: 5) }) {
            if case .inUse = $0 { return true }
            return false
        }
        kill(b.pid, SIGCONT)
        let page1 = try await first.value
        XCTAssertEqual(list(try parse(page1), "events").count, 5)
        let page2 = try await store.paginate(r2, limit: 5)
        XCTAssertEqual(list(try parse(page2), "events").count, 5)
        XCTAssertEqual(list(try parse(try store.timeline(r2)), "events").count, 10)
        await c.close(timeout: .seconds(10))
    }

    func testTheStoresOwnRequestTimeoutBoundsItsActions() async throws {
        let (b, c, store) = try await session(StoreOptions(requestTimeoutMs: 300))
        defer { b.stop() }
        try await freeze(b)
        let t0 = ContinuousClock.now
        await assertThrows("a frozen backend", { try await store.paginate(r2, limit: 5) }) {
            if case .requestTimeout = $0 { return true }
            return false
        }
        XCTAssertLessThan(ContinuousClock.now - t0, .seconds(5))
        kill(b.pid, SIGCONT)
        // The timed-out pagination no longer holds the room.
        let page = try await store.paginate(r2, limit: 5)
        XCTAssertEqual(list(try parse(page), "events").count, 5)
        await c.close(timeout: .seconds(10))
    }

    func testSendMessageShowsAPendingEchoThenTheSyncedEvent() async throws {
        let (b, c, store) = try await session()
        defer { b.stop() }  // keeps the backend alive to the end
        let changes = store.changes
        let echo = try parse(try await store.sendMessage(roomId: r1, text: "hello store"))
        let echoId = at(echo, "event_id") as? String ?? ""
        XCTAssertTrue(echoId.hasPrefix("~"), echoId)
        // The send's change set reported the pending tail, before the reply.
        let sent = try await nextChange(changes, "the send's change set") { $0.cause.requestId != nil }
        XCTAssertEqual(sent.rooms[r1]?.pending, true)
        // The echo stays in the pending tail until the synced event takes its place in the
        // timeline. The backend sends send_complete and the sync 20 ms after the reply, so
        // which of the two this read sees depends on timing; the message is in exactly one
        // of them either way, never lost in between nor shown twice.
        let tl = try parse(try store.timeline(r1))
        let gen = try XCTUnwrap((at(try parse(try store.session()), "gen") as? NSNumber)?.uint64Value)
        let pendingBodies = bodies(list(tl, "pending"))
        let inPending = pendingBodies.filter { $0 == "hello store" }.count
        let inTimeline = bodies(list(tl, "events")).filter { $0 == "hello store" }.count
        XCTAssertEqual(inPending + inTimeline, 1, "pending: \(pendingBodies), in the timeline: \(inTimeline)")
        // The store's generation read after the timeline still being the send's means nothing
        // was applied since (it only grows): the read saw the echo pending, alone there.
        XCTAssertGreaterThanOrEqual(gen, sent.gen)
        if gen == sent.gen {
            XCTAssertEqual(pendingBodies, ["hello store"])
            XCTAssertEqual(inTimeline, 0)
        }
        // Then send_complete and the sync: the event joins the timeline, the tail empties.
        _ = try await nextChange(changes, "the synced event") { !($0.rooms[r1]?.appended ?? []).isEmpty }
        let after = try parse(try store.timeline(r1))
        XCTAssertEqual(list(after, "pending").count, 0)
        XCTAssertEqual(bodies(list(after, "events")).last, "hello store")
        XCTAssertTrue((at(list(after, "events").last, "event", "event_id") as? String ?? "").hasPrefix("$"))
        await c.close(timeout: .seconds(10))
    }

    func testAFailedSendIsResentUntilSyncedOrDiscarded() async throws {
        let (b, c, store) = try await session()
        defer { b.stop() }  // keeps the backend alive to the end
        func pendingStatus() throws -> String? {
            at(list(try parse(try store.timeline(r1)), "pending").first, "send_status") as? String
        }
        func failedSend(_ text: String) async throws -> Int64 {
            let echo = try parse(try await store.sendMessage(roomId: r1, text: text))
            try await until("the send failed") { try pendingStatus() == "failed" }
            return Int64(try XCTUnwrap(int(at(echo, "rowid"))))
        }
        let changes = store.changes
        let rowid = try await failedSend("fail once")
        let reply = try parse(try await store.resend(r1, rowid: rowid))
        XCTAssertEqual(int(at(reply, "rowid")).map(Int64.init), rowid)
        _ = try await nextChange(changes, "the resend's change set") { $0.cause.command == "resend" }
        try await until("the resent event synced, sent") {
            let last = list(try parse(try store.timeline(r1)), "events").last
            return try pendingStatus() == nil && int(at(last, "event", "rowid")).map(Int64.init) == rowid
                && at(last, "send_status") as? String == "sent"
        }
        // Refused by the backend: .remote, and the echo reads failed again.
        let forgotten = try await failedSend("fail, forget")
        await assertThrows("a refused resend", { try await store.resend(r1, rowid: forgotten) }) {
            if case .remote = $0 { return true }
            return false
        }
        XCTAssertEqual(try pendingStatus(), "failed")
        try store.discard(r1, rowid: forgotten)
        XCTAssertNil(try pendingStatus())
        _ = try await nextChange(changes, "the discard's change set") { $0.cause.command == "discard" }
        func invalid(_ e: TetherError) -> Bool {
            if case .invalidArgument = e { return true }
            return false
        }
        await assertThrows("discard twice", { try store.discard(r1, rowid: forgotten) }, matches: invalid)
        await assertThrows("resend discarded", { try await store.resend(r1, rowid: forgotten) }, matches: invalid)
        await c.close(timeout: .seconds(10))
    }

    func testAMentionNotifiesEvenUnwatchedAndMarkReadDismisses() async throws {
        let (b, c, store) = try await session()
        defer { b.stop() }  // keeps the backend alive to the end
        try store.watch(on: false)
        let changes = store.changes
        _ = try b.control("/_testkit/rooms/message?room=%21r1%3Aexample.org&body=hi%20%40me%3Aexample.org")
        let ch = try await nextChange(changes, "the notification") { $0.rooms[r1]?.notifications.isEmpty == false }
        XCTAssertEqual(ch.rooms[r1]?.appended, [], "the room is not watched")
        let note = ch.rooms[r1]?.notifications.first
        XCTAssertEqual(note?.sound, true)
        XCTAssertEqual(note?.highlight, true)
        XCTAssertEqual(note?.sender, "@alice:example.org")
        XCTAssertTrue((note?.eventId ?? "").hasPrefix("$"), "\(String(describing: note))")
        _ = try await store.markRead(r1)
        _ = try await nextChange(changes, "the dismissal") { $0.rooms[r1]?.dismissNotifications == true }
        await c.close(timeout: .seconds(10))
    }

    func testLoadStateRequestMembersMarkReadOpenWatchAndCollectGarbage() async throws {
        let (b, c, store) = try await session(StoreOptions(evictAfterMs: 0))
        defer { b.stop() }  // keeps the backend alive to the end
        _ = try parse(try await store.loadState(r2, members: true))
        XCTAssertEqual(bool(at(try parse(try store.room(r2)), "members_loaded")), true)
        XCTAssertTrue(String(decoding: try store.members(r2), as: UTF8.self).contains("@alice:example.org"))
        let none = try await store.requestMembers(r2, userIds: ["@alice:example.org"])
        XCTAssertNil(none)
        XCTAssertNotNil(try store.state(r2, type: "m.room.member", stateKey: "@alice:example.org"))
        XCTAssertNil(try store.state(r2, type: "m.room.member", stateKey: "@nobody:example.org"))
        _ = try await store.markRead(r2)
        try await until("r2 read") {
            int(at(try parse(try store.room(r2)), "entry", "unread_messages")) == 0
        }
        // An open room keeps its timeline; a closed one loses it (eviction delay 0).
        _ = try await store.paginate(r1, limit: 5)
        _ = try await store.paginate(r2, limit: 5)
        try store.openRoom(r2)
        try store.closeRoom(r1)
        try store.watch(on: false)
        try store.watch(r1, on: true)
        try store.watch()
        XCTAssertEqual(try store.collectGarbage(), 1)
        XCTAssertEqual(list(try parse(try store.timeline(r1)), "events").count, 0)
        XCTAssertEqual(list(try parse(try store.timeline(r2)), "events").count, 5)
        XCTAssertEqual(bool(at(try parse(try store.room(r2)), "open")), true)
        await c.close(timeout: .seconds(10))
    }

    func testMisuseThrowsTetherErrors() async throws {
        let (b, c, store) = try await session()
        defer { b.stop() }
        func invalid(_ e: TetherError) -> Bool {
            if case .invalidArgument = e { return true }
            return false
        }
        await assertThrows("unknown read", { try store.read("nope") }, matches: invalid)
        await assertThrows("bad args", { try store.read("timeline", args: json("not json")) }, matches: invalid)
        await assertThrows("unknown room", { try store.timeline("!nope:example.org") }, matches: invalid)
        await assertThrows("unknown space", { try store.roomList(space: "!nope:example.org") }, matches: invalid)
        await assertThrows("open unknown", { try store.openRoom("!nope:example.org") }, matches: invalid)
        await assertThrows("watch unknown", { try store.watch("!nope:example.org", on: true) }, matches: invalid)
        await assertThrows("paginate unknown", { try await store.paginate("!nope:example.org") }, matches: invalid)
        await assertThrows("send without room", { try await store.sendMessage(json(#"{"text":"x"}"#)) }, matches: invalid)
        // Invalid UTF-8 is refused, as by the C API, not sent with U+FFFD in its place.
        func badUTF8(_ e: TetherError) -> Bool {
            if case .invalidUTF8 = e { return true }
            return false
        }
        let bad = Data(#"{"room_id":"\#(r2)","text":""#.utf8) + Data([0xFF]) + Data(#""}"#.utf8)
        await assertThrows("send invalid UTF-8", { try await store.sendMessage(bad) }, matches: badUTF8)
        await assertThrows("read args invalid UTF-8", { try store.read("timeline", args: Data([0x22, 0xFF, 0x22])) },
                           matches: badUTF8)
        // The server's refusal of a store action (a receipt type it refuses).
        await assertThrows("remote", { try await store.markRead(r2, receiptType: "m.bogus") }) {
            if case .remote = $0 { return true }
            return false
        }
        // rwws has no store.
        var rw = TetherOptions(url: b.url, protocol: .rwws)
        rw.token = "dGV0aGVyLXRlc3Qta2V5"
        rw.store = StoreOptions()
        await assertThrows("rwws", { try TetherClient(rw) }) {
            if case .unsupported = $0 { return true }
            return false
        }
        await c.close(timeout: .seconds(10))
    }

    func testClosingTheStoreEndsChangesAndStoreEventsAndTheClientGoesOn() async throws {
        let (b, c, store) = try await session()
        defer { b.stop() }
        let changes = store.changes
        XCTAssertFalse(store.isClosed)
        store.close()
        store.close()
        XCTAssertTrue(store.isClosed)
        let held = try await drain(changes)
        XCTAssertEqual(held.count, 0)
        // A stream made now ends at once.
        let late = try await drain(store.changes)
        XCTAssertEqual(late.count, 0)
        try remoteMessage(b, r1, "after close")
        _ = try await next(c, "the message") {
            $0.kind == .message && String(decoding: $0.data, as: UTF8.self).contains("after close")
        }
        // No STORE event follows it: one would come right after it, so before the MESSAGE of
        // a second message sent now.
        try remoteMessage(b, r1, "a second one")
        let between = try await withTimeout(.seconds(20), "the second message") { () -> [Event] in
            var seen: [Event] = []
            for await ev in c.events {
                if ev.kind == .message && String(decoding: ev.data, as: UTF8.self).contains("a second one") {
                    return seen
                }
                seen.append(ev)
            }
            throw TestFailure("events ended before the second message")
        }
        XCTAssertFalse(between.contains { $0.kind == .store }, "a STORE event after close: \(between.map(\.kind))")
        await assertThrows("read after close", { try store.roomList() }) {
            if case .state = $0 { return true }
            return false
        }
        await assertThrows("action after close", { try await store.paginate(r1) }) {
            if case .state = $0 { return true }
            return false
        }
        let echo = try await c.request("echo", data: json(#"{"x":1}"#))
        XCTAssertEqual(String(decoding: echo, as: UTF8.self), #"{"x":1}"#)
        await c.close(timeout: .seconds(10))
    }

    func testTheStoreOutlivesItsClientAndChangesEndWithTheClient() async throws {
        let b: Backend
        let store: Store
        let changes: AsyncStream<StoreChange>
        weak var released: TetherClient?
        do {
            let (backend, c, s) = try await session()
            b = backend
            store = s
            released = c
            changes = s.changes
            _ = try await s.paginate(r2, limit: 5)
            let closed = await c.close(timeout: .seconds(10))
            XCTAssertTrue(closed)
        }
        defer { b.stop() }  // keeps the backend alive to the end
        // Its last reference went with the scope: the client is freed, the store lives on.
        XCTAssertNil(released, "the client outlived its last reference")
        let all = try await drain(changes)
        XCTAssertGreaterThan(all.count, 0)
        // A stream made now ends at once.
        let late = try await drain(store.changes)
        XCTAssertEqual(late.count, 0)
        // Reads keep working; actions are refused by the closed client (TETHER_ERR_STATE).
        XCTAssertFalse(store.isClosed)
        XCTAssertEqual(list(try parse(try store.timeline(r2)), "events").count, 5)
        await assertThrows("action after the client was freed", { try await store.paginate(r1) }) {
            if case .state = $0 { return true }
            return false
        }
        store.close()
    }
}
