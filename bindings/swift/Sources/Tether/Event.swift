import CTether
import Foundation

/// Which wire protocol a client speaks.
public enum TetherProtocol: UInt32, Sendable {
    /// gomuks JSON RPC over `/_gomuks/websocket` (the default).
    case gomuks = 1
    /// rwws binary packets over `/api/ws`.
    case rwws = 2
}

/// What an event reports (`TETHER_EVENT_*`).
public enum EventKind: UInt32, Sendable {
    /// A connection attempt starts.
    case connecting = 1
    /// The websocket is open (and, for rwws, authenticated).
    case connected
    /// The connection ended; see `status`, `closeCode`, `data` (the reason) and `retryInMs`.
    case disconnected
    /// A server event.
    case message
    /// The reply to a request; `TetherClient.request` consumes these, so `events` never
    /// carries one.
    case response
    /// A keepalive reply, with the round-trip time.
    case pong
    /// rwws: a packet the library does not consume.
    case packet
    /// The client is closed; always the last event.
    case closed
    /// gomuks: what became of the resume this connection asked for, in `resumeOutcome`. Once
    /// per such connection, before the message that decided it (so before the fresh state of
    /// a reset, and before `init_complete`).
    case resumed
    /// gomuks: a new token replaced the one the client held (renewed before it expires or
    /// after a 401, or a new login); read it with `TetherClient.authToken()` and persist it.
    /// Carries no secret. The first token of a password login is not announced.
    case tokenRenewed
    /// In-process: progress of a media upload (`progress`; the data is the same number as
    /// JSON). `TetherClient.uploadMedia` consumes these, so `events` never carries one.
    case progress
    /// In-process: the next bytes of a streamed media download (the data).
    /// `TetherClient.downloadMedia` consumes these, so `events` never carries one.
    case chunk
    /// The client's `Store` (`TetherOptions.store`) applied an event or the answer to a store
    /// action: the data is the JSON change set (`gen`, `cause`, what changed; `StoreChange`
    /// decodes it). It follows the MESSAGE (or CONNECTED, DISCONNECTED with a retry) it reflects and precedes the RESPONSE of a store
    /// action. It stays in `TetherClient.events` like a MESSAGE, and its change set is handed
    /// to the store's `changes` streams first.
    case store
    /// A call threw `.sendBufferFull`, and enough has been written (or has ended) since that
    /// the largest message refused would fit with at most half of
    /// `TetherOptions.maxUnsentBytes` waiting: send again. One per run of refusals, however
    /// many calls were refused; an app that is never refused never sees one. Carries nothing.
    case sendReady
    /// rwws: a packet the client took (`sendPacket`, `sendSettings`) but never wrote, handed
    /// back as the client ends (`close`, or a stop for good) so nothing is lost without a
    /// word: the data is its bytes, ready to send on another client. One per packet, in the
    /// order sent, after the DISCONNECTED of a stop for good and before CLOSED; the status is
    /// CLIENT_CLOSED (PANIC after an internal panic, before its DISCONNECTED). Written means
    /// handed to the connection: what its buffers (the websocket writer's, about 128 KiB, and
    /// the kernel's) hold when it is cut, or when a close runs out of time against a peer that
    /// stopped reading, is lost with it; the protocol has no acknowledgement.
    case unsent
}

/// A RESUMED event's `resumeOutcome` (`TETHER_RESUME_*`).
public enum ResumeOutcome: UInt32, Sendable {
    /// Every missed event is delivered exactly once: keep the cached state.
    case succeeded = 1
    /// The backend restarted or no longer held the resume point: drop the cached state (the
    /// fresh state follows, `sync_complete` with `clear_state`).
    case reset = 2
    /// The resume point was gone, but with `lastServerTs` configured the changes since then
    /// follow as one `sync_complete` with `catchup`: keep the cached state and apply it (the
    /// missed events themselves are not delivered).
    case caughtUp = 3
}

/// One event, copied out of the library (the C event is only lent to the callback).
public struct Event: Sendable {
    public let kind: EventKind
    /// RESPONSE/PONG: the request id; MESSAGE: the server's event id (negative for buffered
    /// events, 0 otherwise).
    public let requestId: Int64
    /// RESPONSE: the outcome; DISCONNECTED: why the connection ended; UNSENT:
    /// `TETHER_ERR_CLIENT_CLOSED`, or `TETHER_ERR_PANIC` after an internal panic (a `TETHER_*`
    /// status; `TETHER_OK` otherwise).
    public let status: Int32
    /// gomuks command name of a MESSAGE, "" otherwise.
    public let command: String
    /// JSON for MESSAGE/RESPONSE/STORE, packet bytes for PACKET and UNSENT, reason text for DISCONNECTED.
    public let data: Data
    /// DISCONNECTED: the websocket close code, 0 without a close frame, or the HTTP status of a
    /// refused upgrade.
    public let closeCode: UInt16
    /// DISCONNECTED: milliseconds until the next attempt; nil when no retry follows.
    public let retryInMs: Int64?
    /// PONG: round-trip time in microseconds; nil for the rwws auth answer, which answers no
    /// ping of ours, and for a pong that may have waited unread while the app let the queue
    /// fill.
    public let rttMicros: Int64?
    /// PONG (gomuks): the acknowledged event id, 0 for none.
    public let ackedId: Int64
    /// PONG (rwws): the server's unix milliseconds, 0 if unknown.
    public let serverTimeMs: Int64
    /// CONNECTING/CONNECTED/DISCONNECTED: whether this connection asked the server to resume.
    public let resumeAttempted: Bool
    /// CONNECTING/CONNECTED/DISCONNECTED: the connection attempt number, from 1; 0 otherwise.
    public let attempt: UInt32
    /// RESUMED: whether the resume succeeded or the server's state was reset; nil otherwise.
    public let resumeOutcome: ResumeOutcome?
    /// PROGRESS: how much of the upload is done, as the backend reports it (gomuks v0.2607.0:
    /// a fraction from 0 to 1); nil otherwise.
    public let progress: Double?

    /// `nil` for a kind this wrapper does not know (a newer library), which is skipped rather
    /// than passed on as something it is not.
    init?(_ ev: OpaquePointer) {
        guard let kind = EventKind(rawValue: tether_event_kind(ev)) else { return nil }
        self.kind = kind
        var ptr: UnsafePointer<UInt8>? = nil
        var len: Int = 0
        if tether_event_data(ev, &ptr, &len) == TETHER_OK, let p = ptr, len > 0 {
            data = Data(bytes: p, count: len)
        } else {
            data = Data()
        }
        requestId = tether_event_request_id(ev)
        status = tether_event_status(ev)
        command = String(cString: tether_event_command(ev))
        closeCode = tether_event_close_code(ev)
        let retry = tether_event_retry_in_ms(ev)
        retryInMs = retry < 0 ? nil : retry
        let rtt = tether_event_rtt_us(ev)
        rttMicros = rtt < 0 ? nil : rtt
        ackedId = tether_event_acked_id(ev)
        serverTimeMs = tether_event_server_time_ms(ev)
        resumeAttempted = tether_event_resume_attempted(ev)
        attempt = tether_event_attempt(ev)
        resumeOutcome = ResumeOutcome(rawValue: tether_event_resume_outcome(ev))
        progress = kind == .progress ? tether_event_progress(ev) : nil
    }
}

extension Event {
    /// A RESPONSE (or, with `kind`, a CHUNK or PROGRESS) made in Swift, for the tests of
    /// reply routing: the library's own events cannot be made to arrive in every order.
    init(response id: Int64, status: Int32, data: Data, kind: EventKind = .response) {
        self.kind = kind
        requestId = id
        self.status = status
        command = ""
        self.data = data
        closeCode = 0
        retryInMs = nil
        rttMicros = nil
        ackedId = 0
        serverTimeMs = 0
        resumeAttempted = false
        attempt = 0
        resumeOutcome = nil
        progress = nil
    }

    /// Any kind of event made in Swift, for the tests of the resume point.
    init(kind: EventKind, requestId: Int64 = 0, command: String = "", resumeAttempted: Bool = false,
         resumeOutcome: ResumeOutcome? = nil) {
        self.kind = kind
        self.requestId = requestId
        status = 0
        self.command = command
        data = Data()
        closeCode = 0
        retryInMs = nil
        rttMicros = nil
        ackedId = 0
        serverTimeMs = 0
        self.resumeAttempted = resumeAttempted
        attempt = 0
        self.resumeOutcome = resumeOutcome
        progress = nil
    }
}

/// Where to resume: the backend's run id and the last received event id (0 or negative).
/// Persist it (it is `Codable`) and pass it in `TetherOptions.resume` to a later client.
public struct ResumeState: Equatable, Sendable, Codable {
    public let runId: String
    public let lastReceivedEvent: Int64
    public init(runId: String, lastReceivedEvent: Int64) {
        self.runId = runId
        self.lastReceivedEvent = lastReceivedEvent
    }

    /// The resume point of an app that has not taken `held` (oldest first) yet. The library
    /// counts what the binding's callback took from it, but a later client must be replayed
    /// what the app never saw: the point goes back to just before the first buffered event
    /// held. Buffered ids count down by one per event in a run (gomuks-rpc.md §3.3), so that
    /// is its id plus one. That holds only while the held events continue what the app saw: a
    /// held connection that did not resume or whose resume failed, or a held `sync_complete`
    /// with id 0 (a start's state, a catchup, the room list after a login), which no resume
    /// replays, means the app must start afresh, and the point is 0 (the Python binding's
    /// `before_held` follows the same rule).
    func before(held: [Event]) -> ResumeState {
        // Nothing the library counts was taken: whatever is held is older.
        if lastReceivedEvent == 0 { return self }
        let fresh = ResumeState(runId: runId, lastReceivedEvent: 0)
        var first: Int64? = nil
        for ev in held {
            switch ev.kind {
            case .message:
                if ev.requestId < 0 {
                    if first == nil { first = ev.requestId }
                } else if ev.requestId == 0 && ev.command == "sync_complete" {
                    return fresh
                }
            case .connected:
                if !ev.resumeAttempted { return fresh }
            case .resumed:
                if ev.resumeOutcome != .succeeded { return fresh }
            default:
                break
            }
        }
        return first.map { ResumeState(runId: runId, lastReceivedEvent: $0 + 1) } ?? self
    }
}
