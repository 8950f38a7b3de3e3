// A client's connection state and statistics (tether_client_state, tether_client_stats).
import CTether

/// Where a client's connection stands (`TETHER_STATE_*`). Reading it takes no event.
public enum ConnectionState: UInt32, Sendable, CustomStringConvertible {
    /// Created; not connecting yet.
    case idle = 0
    /// A connection attempt runs (TCP, TLS, upgrade, login, handshake).
    case connecting = 1
    /// Connected (rwws: authenticated).
    case connected = 2
    /// Between attempts, waiting out the backoff delay.
    case waiting = 3
    /// Closed for good, by the app or because the server refused the client for good.
    case closed = 4
    /// Paused by the app (``TetherClient/pause()``): no connection, no attempt until unpaused.
    case paused = 5

    public var description: String {
        switch self {
        case .idle: "idle"
        case .connecting: "connecting"
        case .connected: "connected"
        case .waiting: "waiting"
        case .closed: "closed"
        case .paused: "paused"
        }
    }
}

/// A snapshot of a client's counters, for diagnostics and bug reports. Counters cover the
/// client's whole life, across reconnects.
public struct TetherStats: Sendable, Equatable {
    public var state: ConnectionState
    /// Connection attempts started.
    public var connectAttempts: UInt64
    /// Attempts that ended connected (rwws: authenticated).
    public var connections: UInt64
    /// gomuks: connections that asked to resume and got every missed event.
    public var resumesSucceeded: UInt64
    /// gomuks: connections that asked to resume and got a fresh state (or a catchup) instead.
    public var resumesReset: UInt64
    /// Bytes read from the network by the websocket's connections (a proxy's handshake, TLS,
    /// the upgrade and the framing included; the gomuks login request is not counted).
    public var wireBytesIn: UInt64
    /// Bytes written to the network by the websocket's connections (a proxy's handshake, TLS,
    /// the upgrade and the framing included; the gomuks login request is not counted).
    public var wireBytesOut: UInt64
    /// Bytes of the received messages after decompression; compression saved
    /// `1 - wireBytesIn / payloadBytesIn`.
    public var payloadBytesIn: UInt64
    /// Websocket data messages received (0 in-process, as the byte counts: only
    /// `eventsReceived` counts the backend's events).
    public var messagesReceived: UInt64
    /// Server events received (gomuks: not replies or pongs; rwws: packets).
    public var eventsReceived: UInt64
    /// Requests written to a connection (in-process: handed to the backend).
    public var requestsSent: UInt64
    /// Requests without an outcome yet.
    public var requestsInFlight: UInt64
    /// Requests that ended with `.requestTimeout`.
    public var requestsTimedOut: UInt64
    /// Events the library holds that the binding has not taken yet (those waiting in
    /// `TetherClient.events` are not counted here).
    public var queuedEvents: UInt64
    /// Round-trip time of the last ping with a measured round trip (`Event.rttMicros`); nil
    /// before the first.
    public var lastRTT: Duration?
    /// How long the current connection has been up; nil while not connected.
    public var connectedFor: Duration?
    /// Bytes of requests and packets waiting to be written (made while disconnected, or
    /// faster than the uplink carries); a call that would pass
    /// `TetherOptions.maxUnsentBytes` throws `.sendBufferFull`.
    public var unsentBytes: UInt64
}

extension TetherStats {
    init(_ s: tether_stats) {
        // The state field always comes from a library that filled the struct; an unknown value
        // would be a library newer than the ABI check allows, so the nearest safe reading is
        // "not connected".
        state = ConnectionState(rawValue: s.state) ?? .connecting
        connectAttempts = s.connect_attempts
        connections = s.connections
        resumesSucceeded = s.resumes_succeeded
        resumesReset = s.resumes_reset
        wireBytesIn = s.wire_bytes_in
        wireBytesOut = s.wire_bytes_out
        payloadBytesIn = s.payload_bytes_in
        messagesReceived = s.messages_received
        eventsReceived = s.events_received
        requestsSent = s.requests_sent
        requestsInFlight = s.requests_in_flight
        requestsTimedOut = s.requests_timed_out
        queuedEvents = s.queued_events
        lastRTT = s.last_rtt_us < 0 ? nil : .microseconds(s.last_rtt_us)
        connectedFor = s.connected_ms < 0 ? nil : .milliseconds(s.connected_ms)
        unsentBytes = s.unsent_bytes
    }
}

extension TetherClient {
    /// The client's counters now. Cheap (a few atomic loads); any thread. Throws only where
    /// every call fails, in a forked child (`.forked`).
    public func stats() throws -> TetherStats {
        // `.init()` rather than the type name with parentheses, which scripts/check-bindings.py
        // would take for a call of a C function the header does not declare.
        var s: tether_stats = .init()
        s.size = UInt32(MemoryLayout<tether_stats>.size)
        // A library of the same MAJOR.MINOR but older PATCH may fill less than the whole
        // struct (it only grows at its end); what it leaves must read as "unknown", not 0.
        s.last_rtt_us = -1
        s.connected_ms = -1
        try check(tether_client_stats(client, &s))
        return TetherStats(s)
    }

    /// Where the connection stands now. `.closed` where the library refuses every call (in a
    /// forked child), since nothing can use the client there.
    public var state: ConnectionState { connectionState(client) }
}

/// `TetherClient.state` of a C client (see there).
func connectionState(_ client: OpaquePointer) -> ConnectionState {
    var raw: UInt32 = 0
    guard tether_client_state(client, &raw) == TETHER_OK else { return .closed }
    return ConnectionState(rawValue: raw) ?? .connecting
}
