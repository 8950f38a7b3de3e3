// The Swift wrapper over the tether C API (include/tether.h).
import CTether
import Foundation

/// Shared between the client and the C callbacks. Retained once for the library
/// (`Unmanaged.passRetained`) and released by the library's `destroy` callback, which runs
/// exactly once.
///
/// `@unchecked Sendable`: `pending`, `early`, `timers`, `expired`, `transfers`,
/// `transfersUnbounded` and `freed` are only touched with `lock` held; `events`, `closed`, `storeHub` and the transfers'
/// buffers are thread-safe themselves.
final class ClientCore: @unchecked Sendable {
    private let lock = NSLock()
    private var pending: [Int64: CheckedContinuation<Data, Error>] = [:]
    /// The client was freed: no reply will come (a store, which may outlive its client, can
    /// still register one).
    private var freed = false
    /// Replies that arrived before their request was registered: the dispatcher can deliver a
    /// reply between `tether_client_request` returning the id and `register`.
    private var early: [Int64: Event] = [:]
    /// Each waiting request's backstop (see `register`), cancelled by its reply.
    private var timers: [Int64: Task<Void, Never>] = [:]
    /// Requests whose wait the backstop ended: their late reply is dropped, not kept.
    private var expired: Set<Int64> = []
    /// The client's request timeout (`TetherOptions.requestTimeoutMs`, or the library's default).
    let requestTimeoutMs: UInt32
    /// The media transfers in flight (`TetherClient.uploadMedia`/`downloadMedia`), by request
    /// id: each gets its PROGRESS or CHUNK events and then its RESPONSE, in order, through a
    /// bounded buffer of its own. An entry stays until the RESPONSE, also after the transfer
    /// was abandoned (its buffer finished, so what still comes is dropped).
    private var transfers: [Int64: EventBuffer] = [:]
    /// Set with `stopWaiting()`: transfer buffers created from then on do not wait either.
    private var transfersUnbounded = false
    /// The status of the last RESPONSE that came for an abandoned transfer
    /// (`TETHER_ERR_CANCELLED` once `abandon`'s caller cancelled it in time); for tests and
    /// diagnostics.
    private var abandonedReply: Int32?
    let events: EventBuffer
    /// Fired when the library delivers CLOSED, whether or not the app has read it yet, or
    /// when it refused to close (`endWithoutClosed`).
    let closed = OnceSignal()
    /// The `changes` streams of the client's store (none without a store).
    let storeHub = StoreHub()

    /// Whether the client stopped for good, asked by `events` and every transfer's buffer
    /// while it waits for room (see `EventBuffer.stopped`).
    private let stopped: (@Sendable () -> Bool)?

    /// The library's request timeout when none is set (`tether_config_new`'s documented default).
    static let defaultRequestTimeoutMs: UInt32 = 60_000
    /// How long past its timeout a request's wait ends on its own (see `register`).
    static let replyGrace: Duration = .seconds(2)

    init(eventCapacity: Int, requestTimeoutMs: UInt32? = nil, stopped: (@Sendable () -> Bool)? = nil) {
        self.requestTimeoutMs = requestTimeoutMs ?? Self.defaultRequestTimeoutMs
        self.stopped = stopped
        events = EventBuffer(capacity: eventCapacity, stopped: stopped)
    }

    /// On the dispatcher thread, one event at a time, in order.
    func deliver(_ ev: Event) {
        switch ev.kind {
        case .response:
            lock.lock()
            let transfer = transfers.removeValue(forKey: ev.requestId)
            let waiter = transfer == nil ? pending.removeValue(forKey: ev.requestId) : nil
            timers.removeValue(forKey: ev.requestId)?.cancel()
            if transfer == nil && waiter == nil && expired.remove(ev.requestId) == nil {
                early[ev.requestId] = ev
            }
            lock.unlock()
            if let t = transfer, !t.push(ev) {
                lock.lock()
                abandonedReply = ev.status
                lock.unlock()
            }
            transfer?.finish()
            if let w = waiter { ClientCore.complete(w, with: ev) }
        case .progress, .chunk:
            // Only ever a transfer's, registered before the library could deliver anything for
            // it (`startTransfer`); never the app's events. Waits while the transfer's buffer
            // is full: the backpressure of `events`, for one transfer.
            lock.lock()
            let transfer = transfers[ev.requestId]
            lock.unlock()
            transfer?.push(ev)
        case .store:
            // The store's streams first, then the app's events like a MESSAGE: a RESPONSE
            // that follows (a store action's) completes after every stream has the change.
            storeHub.publish(ev.data)
            events.push(ev)
        case .closed:
            storeHub.finish()
            events.stopWaiting()
            closed.fire()
            events.push(ev)
            events.finish()
        case .disconnected where ev.retryInMs == nil && ev.status < 0:
            // The library gave up: only CLOSED follows, and it must not wait behind a reader
            // that is gone. A pause also comes without a retry, but with status OK, and the
            // client goes on: the buffer stays bounded.
            events.stopWaiting()
            events.push(ev)
        default:
            events.push(ev)
        }
    }

    /// Registers `w` as the waiter of request `id`, sent with `timeoutMs` (nil: the client's).
    ///
    /// The library ends a request at its timeout with a reply, but that reply queues behind
    /// the events nobody has taken: awaited inside the `events` loop with the buffer full, it
    /// could never arrive. So the wait ends on its own `replyGrace` after the timeout, with
    /// `.requestTimeout`, and `cancel` tells the library.
    func register(
        _ id: Int64, _ w: CheckedContinuation<Data, Error>, timeoutMs: UInt32? = nil,
        cancel: @escaping @Sendable (Int64) -> Void = { _ in }
    ) {
        lock.lock()
        let reply = early.removeValue(forKey: id)
        let gone = reply == nil && freed
        if reply == nil && !gone {
            pending[id] = w
            let wait = Duration.milliseconds(Int64(timeoutMs ?? requestTimeoutMs)) + Self.replyGrace
            timers[id] = Task.detached { [weak self] in
                try? await Task.sleep(for: wait)
                if !Task.isCancelled { self?.expire(id, after: wait, cancel: cancel) }
            }
        }
        lock.unlock()
        if let ev = reply { ClientCore.complete(w, with: ev) }
        if gone { w.resume(throwing: TetherError.clientClosed("client freed")) }
    }

    /// The backstop of `register`: ends request `id`'s wait unless its reply came first.
    private func expire(_ id: Int64, after wait: Duration, cancel: @Sendable (Int64) -> Void) {
        lock.lock()
        timers.removeValue(forKey: id)
        let w = pending.removeValue(forKey: id)
        if w != nil { expired.insert(id) }
        lock.unlock()
        guard let w else { return }
        cancel(id)
        w.resume(
            throwing: TetherError.requestTimeout(
                "no reply within \(wait): the reply could not pass the events not taken ahead of it "
                    + "(awaiting a request inside the events loop with the buffer full)"))
    }

    /// Starts a media transfer with `start` (which calls the C function and writes the request
    /// id) and registers it, all with `lock` held: the dispatcher takes `lock` to route an
    /// event, so it finds the transfer's buffer for the first PROGRESS or CHUNK and for the
    /// RESPONSE. `start` only hands the request to the library's runtime; it does not wait
    /// for the dispatcher. Throws the library's error when it refuses the call.
    func startTransfer(capacity: Int, _ start: (UnsafeMutablePointer<Int64>) -> tether_status) throws
        -> (id: Int64, buffer: EventBuffer)
    {
        lock.lock()
        defer { lock.unlock() }
        var id: Int64 = 0
        let status = start(&id)
        // Read on this thread, before any other tether call here (`TetherError.last`).
        if status != TETHER_OK { throw TetherError.last(status) }
        // A transfer whose task stopped reading (`onChunk` waiting for something that never
        // comes) must not keep a client that stopped for good from closing either.
        let buffer = EventBuffer(capacity: capacity, stopped: stopped)
        if transfersUnbounded { buffer.stopWaiting() }
        // Never freed here: a transfer's task holds its client until the transfer ends.
        transfers[id] = buffer
        return (id, buffer)
    }

    /// The transfer's task stops reading (an error of its closure, cancellation): its buffer is
    /// finished, so the dispatcher drops the transfer's remaining events, and never waits for
    /// this reader. The entry stays until the RESPONSE, which the caller asks for by
    /// cancelling the request right after, so that late events of the id reach no one else.
    func abandon(_ buffer: EventBuffer) {
        buffer.finish()
    }

    /// See `abandonedReply`.
    var lastAbandonedReply: Int32? {
        lock.lock()
        defer { lock.unlock() }
        return abandonedReply
    }

    /// Stops the dispatcher from waiting for room in `events` and in every transfer's buffer
    /// (see `EventBuffer.stopWaiting`), also in those started later.
    func stopWaiting() {
        lock.lock()
        transfersUnbounded = true
        let buffers = Array(transfers.values)
        lock.unlock()
        events.stopWaiting()
        for b in buffers { b.stopWaiting() }
    }

    /// The library refused to close a client an internal panic left unusable, so no CLOSED
    /// will come: `events` and the store's streams end after what they hold, and whoever
    /// waits for CLOSED goes on.
    func endWithoutClosed() {
        storeHub.finish()
        events.finish()
        closed.fire()
    }

    /// After free: no reply will come for what is still pending.
    func failAll() {
        lock.lock()
        freed = true
        let waiters = pending
        pending.removeAll()
        for t in timers.values { t.cancel() }
        timers.removeAll()
        // No reply comes after the free: nothing left to drop.
        expired.removeAll()
        // `early` stays: a reply that came before its request was registered is still the
        // answer (a store action that succeeded must not read as closed); `register` looks
        // there before it looks at `freed`.
        // Only abandoned transfers are left (a transfer's task holds its client): their
        // RESPONSE will not come.
        let buffers = transfers.values
        transfers.removeAll()
        lock.unlock()
        for (_, w) in waiters { w.resume(throwing: TetherError.clientClosed("client freed")) }
        for b in buffers { b.finish() }
        storeHub.finish()
        events.finish()
        closed.fire()
    }

    static func complete(_ w: CheckedContinuation<Data, Error>, with ev: Event) {
        w.resume(with: Result { try reply(ev) })
    }

    /// A RESPONSE's data, or its failure as a `TetherError`.
    static func reply(_ ev: Event) throws -> Data {
        if ev.status == TETHER_OK { return ev.data }
        // A failure's data is its reason as a JSON string: the server's text for a remote
        // error, the library's for a timeout, a cancel or a close.
        var text = String(decoding: ev.data, as: UTF8.self)
        if let s = try? JSONSerialization.jsonObject(with: ev.data, options: .fragmentsAllowed) as? String {
            text = s
        }
        throw TetherError(status: ev.status, message: text)
    }
}

/// Whether a request's task was cancelled, and the id to cancel once it is known: the
/// cancellation handler can run before, during or after the request is sent.
///
/// `@unchecked Sendable`: both properties are only touched with `lock` held.
final class RequestTicket: @unchecked Sendable {
    private let lock = NSLock()
    private var id: Int64?
    private var cancelled = false

    /// Records the id; true if the task was already cancelled, so the caller cancels it.
    func sent(_ v: Int64) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        id = v
        return cancelled
    }

    /// Whether the task was cancelled before the request was sent: a cancellation that lands
    /// between `Task.checkCancellation()` and the continuation runs the cancellation handler
    /// at once, before the body that would send.
    var cancelledBeforeSending: Bool {
        lock.lock()
        defer { lock.unlock() }
        return cancelled && id == nil
    }

    /// Marks cancelled; the id to cancel if the request was already sent.
    func cancel() -> Int64? {
        lock.lock()
        defer { lock.unlock() }
        cancelled = true
        return id
    }
}

/// The C client, for the question of the event buffers (`events`, a transfer's) while their
/// dispatcher waits for room.
///
/// `@unchecked Sendable`: only asked from inside `EventBuffer.push` with the buffer locked:
/// for `events` and the transfers still registered, before `stopWaiting()`, which `deinit`
/// calls (taking each lock) before it frees the client; a transfer's buffer taken out of
/// `transfers` for its RESPONSE is pushed to while its `transfer()` still holds the client.
private struct ClientRef: @unchecked Sendable {
    let client: OpaquePointer

    var stoppedForGood: Bool { connectionState(client) == .closed }
}

/// What `TetherClient.deinit` leaves to do, possibly on another thread.
///
/// `@unchecked Sendable`: the client is no one else's once its last reference is gone.
private struct PendingFree: @unchecked Sendable {
    let client: OpaquePointer
    let core: ClientCore

    func run() {
        // Joins the dispatcher: no callback runs after this; destroy releases the core.
        tether_client_free(client)
        core.failAll()
    }
}

/// A connection to one backend, kept alive and resumed across drops by the native library.
///
/// Events arrive on `events` (copied on the library's dispatcher thread, never on an I/O
/// thread); replies to `request` go to the awaiting task. Close with `close()` (or
/// `close(timeout:)`) and release the client; releasing without closing closes in the
/// background and keeps the resume state usable.
///
/// `@unchecked Sendable`: the stored properties never change, the C API allows every call on
/// a client from any thread except `tether_client_free`, and that runs only in `deinit`, when
/// no other reference, and so no other call, exists.
public final class TetherClient: @unchecked Sendable {
    /// The C client; internal so the extensions in other files of the module can call it.
    let client: OpaquePointer
    /// Internal for the media transfers (Media.swift).
    let core: ClientCore
    /// Unique in the process and never 0; log records name their client by it
    /// (`TetherLogRecord.clientID`).
    public let id: UInt64
    /// Every event except request replies, in order, bounded with backpressure (see
    /// `TetherEvents`); ends after CLOSED. The sequence does not hold the client: a task that
    /// iterates `let events = client.events` lets the client go when its last reference is
    /// released (the sequence then ends), while one that reads `client.events` inside keeps
    /// it alive until CLOSED.
    public let events: TetherEvents
    /// The client's gomuks store, attached before the client connected when
    /// `TetherOptions.store` is set; nil otherwise. It may outlive the client (reads work,
    /// actions fail); release it or call `Store.close()`.
    public let store: Store?

    /// Creates the client and starts connecting; progress arrives on `events`. Throws
    /// `.incompatibleLibrary` if the loaded libtether does not match the header, and the
    /// library's `.config`/`.invalidArgument` error (naming the option) for a bad option.
    /// In-process (`TetherOptions.inProcess`): `.config` when the library does not load,
    /// `.inUse` when the data root or the process's one in-process backend is taken. With
    /// `TetherOptions.store`: `.unsupported` for rwws, `.config` with `lastServerTs` over the
    /// websocket, `.invalidArgument` for bad store options.
    public init(_ options: TetherOptions) throws {
        if let e = libraryIncompatibility { throw e }
        var cfg: OpaquePointer? = nil
        try check(tether_config_new(&cfg))
        defer { tether_config_free(cfg) }
        try options.apply(to: cfg!)
        var c: OpaquePointer? = nil
        try check(tether_client_new(cfg, &c))
        guard let client = c else { throw TetherError.nullArgument("tether_client_new gave no client") }
        self.client = client
        id = tether_client_id(client)
        let ref = ClientRef(client: client)
        core = ClientCore(eventCapacity: options.eventBufferCapacity, requestTimeoutMs: options.requestTimeoutMs) {
            ref.stoppedForGood
        }
        events = TetherEvents(buffer: core.events)
        // Before connect, so that the store sees the first event. Not every stored property
        // is set if this throws, so deinit will not run: the client is freed here.
        do {
            let core = self.core
            if let so = options.store {
                store = try Store(client: client, core: core, options: so)
            } else {
                store = nil
            }
        } catch {
            tether_client_free(client)
            throw error
        }

        let ctx = Unmanaged.passRetained(core).toOpaque()
        let status = tether_client_set_event_callback(
            client,
            { ctx, ev in
                guard let ctx, let ev, let event = Event(ev) else { return }
                Unmanaged<ClientCore>.fromOpaque(ctx).takeUnretainedValue().deliver(event)
            },
            ctx,
            { ctx in
                guard let ctx else { return }
                Unmanaged<ClientCore>.fromOpaque(ctx).release()
            })
        // Every stored property is set, so throwing from here on runs deinit, which frees the
        // client: freeing it here as well would free it twice.
        if status != TETHER_OK {
            // No release here: a refused call has already run destroy, which balanced the
            // retain.
            throw TetherError.last(status)
        }
        store?.adopt(owner: self)
        try check(tether_client_connect(client))
    }

    /// Asks the library to cancel request `id` (a store action's).
    func cancelRequest(_ id: Int64) {
        _ = tether_client_cancel(client, id)
    }

    /// `TetherClient(TetherOptions(url:protocol:))`.
    public convenience init(url: String, protocol proto: TetherProtocol = .gomuks) throws {
        try self.init(TetherOptions(url: url, protocol: proto))
    }

    deinit {
        // A dispatcher blocked on a full event buffer would keep free from returning.
        core.stopWaiting()
        let free = PendingFree(client: client, core: core)
        if LogThread.isCurrent {
            // A log handler let go of the last reference: the free may not wait there.
            DispatchQueue.global().async { free.run() }
        } else {
            free.run()
        }
    }

    /// Sends `command` with `data` (JSON) and returns the reply's raw JSON.
    ///
    /// Throws `.remote` with the server's error text, `.requestTimeout` after `timeout` (or
    /// the configured request timeout; two seconds later when its reply is stuck behind
    /// events nobody takes, see `TetherEvents`), `.disconnected` when the connection dropped before the
    /// reply (the outcome is unknown), `.clientClosed` when the client closed first, and
    /// `.state` if the client was already closed or speaks rwws, or for a command that needs
    /// the account while the backend says it is not logged in; `.invalidArgument` for `null`
    /// data or, over the websocket, a request over the backend's 1 MiB limit for one message
    /// (which would close the connection). Cancelling the task cancels the request on the
    /// server and throws `CancellationError`.
    public func request(_ command: String, data: Data = Data("{}".utf8), timeout: Duration? = nil)
        async throws -> Data
    {
        try Task.checkCancellation()
        let command = try cString(command, "command")
        let timeoutMs = timeout.map(Self.milliseconds)
        let ticket = RequestTicket()
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (w: CheckedContinuation<Data, Error>) in
                    if ticket.cancelledBeforeSending {
                        w.resume(throwing: CancellationError())
                        return
                    }
                    var id: Int64 = 0
                    let status = data.withUnsafeBytes { raw -> tether_status in
                        let p = raw.bindMemory(to: UInt8.self).baseAddress
                        if let ms = timeoutMs {
                            return tether_client_request_with_timeout(client, command, p, raw.count, ms, &id)
                        }
                        return tether_client_request(client, command, p, raw.count, &id)
                    }
                    guard status == TETHER_OK else {
                        w.resume(throwing: TetherError.last(status))
                        return
                    }
                    core.register(id, w, timeoutMs: timeoutMs) { [weak self] in self?.cancelRequest($0) }
                    if ticket.sent(id) { _ = tether_client_cancel(client, id) }
                }
            } onCancel: {
                if let id = ticket.cancel() { _ = tether_client_cancel(self.client, id) }
            }
        } catch TetherError.cancelled(_) where Task.isCancelled {
            throw CancellationError()
        }
    }

    /// A duration as the positive milliseconds the C API takes, rounded up and clamped.
    static func milliseconds(_ d: Duration) -> UInt32 {
        let (s, atto) = d.components
        if s < 0 || (s == 0 && atto <= 0) { return 1 }
        let ms = s.multipliedReportingOverflow(by: 1000)
        if ms.overflow { return UInt32.max }
        let total = ms.partialValue.addingReportingOverflow(
            (atto + 999_999_999_999_999) / 1_000_000_000_000_000)
        return total.overflow ? UInt32.max : UInt32(clamping: total.partialValue)
    }

    /// rwws: sends one raw packet (queued while disconnected). If the client ends before
    /// writing it, it comes back in an `.unsent` event. Throws `.state` once the client has
    /// stopped (nothing taken), `.sendBufferFull` past `maxUnsentBytes`.
    public func sendPacket(_ bytes: Data) throws {
        try bytes.withUnsafeBytes { raw in
            try check(tether_client_send_packet(client, raw.bindMemory(to: UInt8.self).baseAddress, raw.count))
        }
    }

    /// rwws: sends one Settings packet with these `(id, value)` pairs, in order; comes back
    /// and throws as ``sendPacket(_:)`` does.
    public func sendSettings(_ settings: [(id: UInt8, value: Data)]) throws {
        var s: OpaquePointer? = nil
        try check(tether_settings_new(&s))
        defer { tether_settings_free(s) }
        for (id, value) in settings {
            try value.withUnsafeBytes { raw in
                try check(tether_settings_add(s, id, raw.bindMemory(to: UInt8.self).baseAddress, raw.count))
            }
        }
        try check(tether_client_send_settings(client, s))
    }

    /// The resume point to persist and pass (as `TetherOptions.resume`) to a later client:
    /// just after the newest event taken from `events`, so a later client is replayed what
    /// was read but never taken. An event counts once the library's delivery of it into
    /// `events` has returned, which can be a moment after a task took it: a state read in that
    /// moment is one event behind, so the later client gets that event again (never misses
    /// one). After `close(timeout:)` the state is exact.
    public func resumeState() throws -> ResumeState {
        var last: Int64 = 0
        let runId = try sizedString { buf, cap, len in
            tether_client_resume_state(client, buf, cap, len, &last)
        }
        return ResumeState(runId: runId, lastReceivedEvent: last).before(held: core.events.heldEvents)
    }

    /// The credential the next connection sends, to persist instead of the password: gomuks,
    /// the `gomuks_auth` token (the configured one until a login or a renewal replaces it; each
    /// replacement comes with a `.tokenRenewed` event, and renewals happen while connected,
    /// before the token expires); rwws, the configured key. `nil` before the first login and with auth disabled, unless a
    /// token was configured. A secret: keep it out of logs.
    public func authToken() throws -> String? {
        let token = try sizedString { buf, cap, len in
            tether_client_auth_token(client, buf, cap, len)
        }
        return token.isEmpty ? nil : token
    }

    /// Pauses in place (the app goes to the background): the connection closes keeping the
    /// backend's resume entry (gomuks close code 1000), a `.disconnected` event with status OK
    /// and no retry follows, and nothing reconnects until ``unpause()``. Requests made
    /// meanwhile wait (their timeouts still run); after unpausing, the events missed meanwhile
    /// arrive exactly once. Paused while waiting to reconnect there is no connection to close
    /// and no event: the state reads `.paused`. Throws `.state` once closed or stopped,
    /// `.unsupported` for an in-process client (`TetherOptions.inProcess`: there is no
    /// connection).
    public func pause() throws {
        try check(tether_client_pause(client))
    }

    /// Ends a pause: connects at once and resumes where the paused connection stopped.
    /// `.state` once closed or stopped, `.unsupported` for an in-process client.
    public func unpause() throws {
        try check(tether_client_unpause(client))
    }

    /// The cue for `NWPathMonitor` (a network change) or the app returning to the foreground:
    /// while waiting to reconnect, connects now; while connected, probes the link and
    /// reconnects at once if nothing arrives within `pongTimeoutMs`. Never opens a second
    /// connection. `.state` once closed or stopped, `.unsupported` for an in-process client.
    public func reconnectNow() throws {
        try check(tether_client_reconnect_now(client))
    }

    /// Starts a graceful close and returns at once; pending requests fail with
    /// `.clientClosed`, and `events` ends after CLOSED. gomuks: close code 1001 if connected, so
    /// the backend frees the events it kept for this client (paused or waiting to reconnect
    /// there is no connection to close); with `keepResume` the code is 1000 and a later
    /// client given `resumeState()` receives what it missed. Closing a closed client does
    /// nothing.
    ///
    /// A client an internal panic left unusable (every call throws `.panic`) cannot close and
    /// will deliver no CLOSED: `events` then ends after what it holds, and the waits for
    /// CLOSED return; its connection lasts until the client is released.
    public func close(keepResume: Bool = false) {
        _ = startClose(keepResume: keepResume)
    }

    /// Stands in for `tether_client_close`/`_keep_resume` in tests: a refused close (an
    /// internal panic) cannot be caused from outside the library.
    nonisolated(unsafe) static var nativeClose: (OpaquePointer, Bool) -> tether_status = { c, keep in
        keep ? tether_client_close_keep_resume(c) : tether_client_close(c)
    }

    /// `close(keepResume:)`; false when the library refused it for an internal panic.
    private func startClose(keepResume: Bool) -> Bool {
        // From here on the only events left are those the library already holds, so the
        // buffer may take them all rather than keep CLOSED waiting for a reader.
        core.stopWaiting()
        // TETHER_ERR_STATE means already closed: CLOSED is delivered or on its way.
        guard TetherClient.nativeClose(client, keepResume) == TETHER_ERR_PANIC else { return true }
        core.endWithoutClosed()
        return false
    }

    /// `close(keepResume:)`, then waits up to `timeout` for the library to finish (CLOSED
    /// delivered; the app need not have read it). Returns whether it finished in time; an
    /// unresponsive server cannot make this wait longer than `timeout`. False at once for a
    /// client an internal panic left unusable.
    @discardableResult
    public func close(keepResume: Bool = false, timeout: Duration) async -> Bool {
        guard startClose(keepResume: keepResume) else { return false }
        let closed = core.closed
        if closed.isFired { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await closed.wait()
                return closed.isFired
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return closed.isFired
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// Returns once the library has delivered CLOSED (or at once if the task is cancelled).
    public func waitUntilClosed() async {
        await core.closed.wait()
    }

    /// Whether CLOSED has been delivered, or a close was refused for an internal panic (then
    /// none will come).
    public var isClosed: Bool { core.closed.isFired }

    /// The native library's version string, e.g. "0.1.0".
    public static var libraryVersion: String { String(cString: tether_version()) }

    /// Events held in `events` that no task has read yet.
    var bufferedEventCount: Int { core.events.bufferedCount }
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
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}
