import Foundation

/// A client's events in order, held in a bounded buffer.
///
/// `AsyncStream` cannot do this: its `yield` never waits, so it either grows without bound or
/// drops (`bufferingNewest`/`bufferingOldest`). Here the library's dispatcher thread (never a
/// Swift concurrency thread) blocks in `push` while the buffer is full; the library's own queue
/// (`TetherOptions.queueCapacity`) fills behind it, and then the library stops reading the
/// socket, so the server sees TCP backpressure. Nothing is dropped.
///
/// Iterate from one task. Several iterators share the buffer: each event goes to one of them.
/// Cancelling the iterating task ends its iteration (`next()` returns nil) without losing the
/// events that are still buffered.
///
/// Replies to requests wait behind unread events in the library's queue. A loop over
/// `events` that awaits a request inside its body therefore waits for itself once more than
/// `eventBufferCapacity` events arrive in the meantime, until the request ends with
/// `.requestTimeout` two seconds after its timeout: start such requests in their own task.
public struct TetherEvents: AsyncSequence, Sendable {
    public typealias Element = Event
    let buffer: EventBuffer

    public struct AsyncIterator: AsyncIteratorProtocol {
        let buffer: EventBuffer
        public mutating func next() async -> Event? { await buffer.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(buffer: buffer) }
}

/// The buffer behind `TetherEvents`.
///
/// `@unchecked Sendable`: every mutable property is read and written only with `cond` locked.
final class EventBuffer: @unchecked Sendable {
    private let cond = NSCondition()
    private let capacity: Int
    private var items: [Event] = []
    /// Index of the oldest item in `items`; the array is compacted now and then rather than
    /// shifted on every take.
    private var head = 0
    /// No more events will come: once the buffered ones are taken, `next()` returns nil.
    private var finished = false
    /// `push` no longer waits for room. Set once the client is closing or being freed: what
    /// can still arrive is bounded by the library's queue, and a dispatcher blocked here would
    /// keep CLOSED from arriving and `tether_client_free` from returning.
    private var unbounded = false
    /// Tasks suspended in `next()`; only ever non-empty while no item is buffered.
    private var waiters: [(id: UInt64, cont: CheckedContinuation<Event?, Never>)] = []
    private var nextWaiter: UInt64 = 0

    /// Asked, with `cond` locked, while `push` waits for room: whether the client has stopped
    /// for good. Its DISCONNECTED, which would lift the limit (`ClientCore.deliver`), waits
    /// behind the very push that waits here, so an app that stopped reading would never see
    /// CLOSED, and its requests would never end.
    private let stopped: (@Sendable () -> Bool)?

    init(capacity: Int, stopped: (@Sendable () -> Bool)? = nil) {
        self.capacity = max(1, capacity)
        self.stopped = stopped
    }

    private var count: Int { items.count - head }

    /// Called on the library's dispatcher thread; waits while the buffer is full. False if
    /// the buffer was finished, so the event was dropped.
    @discardableResult
    func push(_ ev: Event) -> Bool {
        cond.lock()
        while true {
            if finished {
                cond.unlock()
                return false
            }
            // Checked again after every wait: a reader that drained the buffer while this
            // thread waited is now a waiter, and must get this event, not the one after it.
            if !waiters.isEmpty {
                let w = waiters.removeFirst()
                cond.unlock()
                w.cont.resume(returning: ev)
                return true
            }
            if count < capacity || unbounded {
                items.append(ev)
                cond.unlock()
                return true
            }
            if let stopped {
                if stopped() {
                    unbounded = true
                    continue
                }
                _ = cond.wait(until: Date(timeIntervalSinceNow: 0.25))
            } else {
                cond.wait()
            }
        }
    }

    /// Stops `push` from waiting (see `unbounded`).
    func stopWaiting() {
        cond.lock()
        unbounded = true
        cond.broadcast()
        cond.unlock()
    }

    /// After CLOSED or free: readers get what is buffered, then nil.
    func finish() {
        cond.lock()
        finished = true
        let ws = waiters
        waiters.removeAll()
        cond.broadcast()
        cond.unlock()
        for w in ws { w.cont.resume(returning: nil) }
    }

    /// The events waiting to be read, oldest first.
    var heldEvents: [Event] {
        cond.lock()
        defer { cond.unlock() }
        return Array(items[head...])
    }

    /// Events waiting to be read (for tests and diagnostics).
    var bufferedCount: Int {
        cond.lock()
        defer { cond.unlock() }
        return count
    }

    private func takeLocked() -> Event? {
        guard head < items.count else { return nil }
        let ev = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        cond.signal()
        return ev
    }

    /// Locks are not allowed in async functions (a task may resume on another thread), so
    /// the locked parts of `next()` are synchronous functions.
    private func takeNow() -> Event? {
        cond.lock()
        defer { cond.unlock() }
        return takeLocked()
    }

    private func reserveWaiter() -> UInt64 {
        cond.lock()
        defer { cond.unlock() }
        nextWaiter += 1
        return nextWaiter
    }

    func next() async -> Event? {
        // A cancelled task takes nothing: under load events are always buffered, and a loop
        // that kept taking them would never end, and would take them from the next reader.
        if Task.isCancelled { return nil }
        if let ev = takeNow() { return ev }
        let id = reserveWaiter()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (cont: CheckedContinuation<Event?, Never>) in
                cond.lock()
                // An event or the end may have come since the first look.
                if let ev = takeLocked() {
                    cond.unlock()
                    cont.resume(returning: ev)
                    return
                }
                // The cancellation flag is set before onCancel runs, and onCancel takes the
                // lock: either it is seen here or onCancel finds this waiter.
                if finished || Task.isCancelled {
                    cond.unlock()
                    cont.resume(returning: nil)
                    return
                }
                waiters.append((id, cont))
                cond.unlock()
            }
        } onCancel: {
            cond.lock()
            let i = waiters.firstIndex { $0.id == id }
            let w = i.map { waiters.remove(at: $0) }
            cond.unlock()
            w?.cont.resume(returning: nil)
        }
    }
}

/// A one-shot signal that any number of tasks can await, each cancellably.
///
/// `@unchecked Sendable`: the mutable properties are only touched with `lock` held.
final class OnceSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var fired = false
    private var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var nextId: UInt64 = 0

    var isFired: Bool {
        lock.lock()
        defer { lock.unlock() }
        return fired
    }

    func fire() {
        lock.lock()
        fired = true
        let ws = waiters.values
        waiters.removeAll()
        lock.unlock()
        for w in ws { w.resume() }
    }

    /// Returns once fired, or at once when the task is cancelled.
    /// The id of a new waiter, or nil if already fired (synchronous: see `EventBuffer`).
    private func reserve() -> UInt64? {
        lock.lock()
        defer { lock.unlock() }
        if fired { return nil }
        nextId += 1
        return nextId
    }

    func wait() async {
        guard let id = reserve() else { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
                lock.lock()
                if fired || Task.isCancelled {
                    lock.unlock()
                    cont.resume()
                    return
                }
                waiters[id] = cont
                lock.unlock()
            }
        } onCancel: {
            lock.lock()
            let w = waiters.removeValue(forKey: id)
            lock.unlock()
            w?.resume()
        }
    }
}
