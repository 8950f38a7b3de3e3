// ping/ack/resume through the Swift binding: connects to a running tether-backend, prints
// pongs with their round-trip time and the acknowledged event, rides out the backend's cuts,
// shows the missed events replayed, and closes cleanly; the library's log tells each cut and
// resume from its side, and the client's statistics sum them up. Exits 1 if an event was missed or
// seen twice.
//   tether-backend --event-rate 20 --cut-after-events 40
//   swift run PingAckResume http://127.0.0.1:PORT [seconds]
import Foundation
import Tether

/// What the event reader saw.
struct Summary: Sendable {
    var received = 0
    var gaps = 0
    var resumes = 0
}

@main
struct PingAckResume {
    static func main() async throws {
        let args = CommandLine.arguments
        guard args.count >= 2 else {
            FileHandle.standardError.write(Data("usage: PingAckResume URL [seconds]\n".utf8))
            exit(2)
        }
        let seconds = args.count > 2 ? Double(args[2]) ?? 10 : 10
        var options = TetherOptions(url: args[1])
        options.basicAuth = .init(username: "tether", password: "tether-password")
        options.pingIntervalMs = 1000
        // Set before the client, so its first attempt is logged too.
        try TetherLog.setHandler(level: .info) { r in print("log: \(r.level) \(r.target): \(r.message)") }
        let client = try TetherClient(options)

        let events = client.events  // not the client: the task must not keep it alive
        let reader = Task { () -> Summary in
            var s = Summary()
            // Buffered events count down from -1; each must be the previous one minus 1.
            var lastId: Int64 = 0
            var replayed: Int? = nil
            for await ev in events {
                switch ev.kind {
                case .connected:
                    print("connected\(ev.resumeAttempted ? ", resuming after event \(lastId)" : "")")
                    if ev.resumeAttempted { s.resumes += 1 }
                    replayed = ev.resumeAttempted ? 0 : nil
                case .disconnected:
                    let why = String(decoding: ev.data, as: UTF8.self)
                    print("disconnected: code \(ev.closeCode) \(why); retry in \(ev.retryInMs.map { "\($0) ms" } ?? "never")")
                case .pong:
                    print("pong: rtt \(ev.rttMicros ?? -1) us, acknowledged event \(ev.ackedId)")
                case .message where ev.requestId < 0:
                    if lastId != 0 && ev.requestId != lastId - 1 { s.gaps += 1 }
                    lastId = min(lastId, ev.requestId)
                    s.received += 1
                    if let r = replayed { replayed = r + 1 }
                case .message where ev.command == "init_complete":
                    if let r = replayed {
                        print("  replayed \(r) missed events; \(s.gaps == 0 ? "in order, no gap" : "WITH GAPS")")
                        replayed = nil
                    }
                case .closed:
                    print("closed")
                default:
                    break
                }
            }
            return s
        }

        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            try await Task.sleep(for: .seconds(2))
            do {
                let reply = try await client.request("echo", data: Data(#"{"hello":"from Swift"}"#.utf8))
                print("response: \(String(decoding: reply, as: UTF8.self))")
            } catch TetherError.disconnected(let why) {
                // On the wire when the backend cut: whether the server ran it is unknown, so
                // only the app can decide to repeat it (an echo could be).
                print("response: lost in a cut (\(why))")
            }
        }
        print("closing (1000: the backend keeps what a resume needs)")
        let closed = await client.close(keepResume: true, timeout: .seconds(5))
        // Read after CLOSED: the library moves it as events arrive, taken or not.
        print("resume state to persist: \(try client.resumeState())")
        // Without CLOSED the events never end; stop reading rather than wait forever.
        if !closed { reader.cancel() }
        let s = await reader.value
        let st = try client.stats()
        print("stats: \(st.connections) connections, \(st.resumesSucceeded) resumed, "
            + "\(st.wireBytesIn) bytes in for \(st.payloadBytesIn) of messages, \(st.requestsSent) requests")
        try TetherLog.removeHandler()
        print("summary: \(s.received) events, \(s.gaps) gaps, \(s.resumes) resumes, closed \(closed ? "cleanly" : "late")")
        exit(s.gaps == 0 && s.received > 0 && closed ? 0 : 1)
    }
}
