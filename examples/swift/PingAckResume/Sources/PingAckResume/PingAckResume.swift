// ping/ack/resume through the Swift binding: connects to a running tether-backend, prints
// pongs with their round-trip time and the acknowledged event, rides out the backend's cuts,
// shows the missed events replayed, and closes cleanly; the library's log tells each cut and
// resume from its side, and the client's statistics sum them up. Each resume's RESUMED event
// says how it went: .succeeded (the missed events were replayed, each once: keep the cached
// state), .reset (the backend restarted or lost the resume point: drop the cached state, the
// fresh state follows) or .caughtUp (only with lastServerTs: keep the cached state, a catchup
// sync_complete follows). Exits 1 if an event was missed or seen twice (a reset starts afresh),
// a request failed for good (a refused login) or CLOSED did not come.
//   tether-backend --event-rate 20 --cut-after-events 40
//   swift run PingAckResume http://127.0.0.1:PORT [seconds]
import Foundation
import Tether

/// What the event reader saw.
struct Summary: Sendable {
    var received = 0
    var gaps = 0
    var resumes = 0
    var resets = 0
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
            // Buffered events count down from -1; each must be the previous one minus 1. 0: none
            // since a fresh start.
            var lastId: Int64 = 0
            // From a CONNECTED that asked to resume to its RESUMED: the events that arrive are
            // the replay if the resume succeeds, the new state if it is reset, so an id that does
            // not follow is only a gap once RESUMED says .succeeded.
            var resuming = false
            var replayed = 0
            var unsure = 0
            for await ev in events {
                switch ev.kind {
                case .connected:
                    print("connected\(ev.resumeAttempted ? ", resuming after event \(lastId)" : "")")
                    if ev.resumeAttempted { s.resumes += 1 } else { lastId = 0 }  // not resuming: a fresh start
                    resuming = ev.resumeAttempted
                    replayed = 0
                case .resumed:
                    // Once per connection that asked to resume, before the message that decided it.
                    switch ev.resumeOutcome {
                    case .succeeded?:
                        // The missed events arrived just before, each once: keep the cached state.
                        s.gaps += unsure
                        print("  RESUMED succeeded: replayed \(replayed) missed events; \(s.gaps == 0 ? "in order, no gap" : "WITH GAPS")")
                    case .reset?:
                        // The backend restarted or no longer held the resume point: the missed
                        // events are gone and its state comes afresh (a new run's ids start at -1).
                        s.resets += 1
                        print("  RESUMED reset: drop the cached state; the fresh state follows")
                        lastId = 0
                    case .caughtUp?:
                        // Only with lastServerTs: the missed events are gone, but a sync_complete
                        // with catchup brings the cached state up to date.
                        print("  RESUMED caughtUp: keep the cached state; a catchup sync_complete follows")
                        lastId = 0
                    case nil:
                        break
                    }
                    resuming = false
                    unsure = 0
                case .disconnected:
                    let why = String(decoding: ev.data, as: UTF8.self)
                    print("disconnected: code \(ev.closeCode) \(why); retry in \(ev.retryInMs.map { "\($0) ms" } ?? "never")")
                case .pong:
                    print("pong: rtt \(ev.rttMicros ?? -1) us, acknowledged event \(ev.ackedId)")
                case .message where ev.requestId < 0:
                    if lastId != 0 && ev.requestId != lastId - 1 {
                        if resuming {
                            print("  event \(ev.requestId) after \(lastId): a gap unless the resume was reset")
                            unsure += 1
                        } else {
                            print("  GAP: event \(ev.requestId) after \(lastId)")
                            s.gaps += 1
                        }
                    }
                    lastId = min(lastId, ev.requestId)
                    s.received += 1
                    if resuming { replayed += 1 }
                case .closed:
                    print("closed")
                default:
                    break
                }
            }
            return s
        }

        let end = Date().addingTimeInterval(seconds)
        var failed = false
        requests: while Date() < end {
            try await Task.sleep(for: .seconds(2))
            do {
                let reply = try await client.request("echo", data: Data(#"{"hello":"from Swift"}"#.utf8))
                print("response: \(String(decoding: reply, as: UTF8.self))")
            } catch TetherError.disconnected(let why) {
                // On the wire when the backend cut: whether the server ran it is unknown, so
                // only the app can decide to repeat it (an echo could be).
                print("response: lost in a cut (\(why))")
            } catch {
                // The client ended for good (a refused login: .clientClosed or .state) or the
                // server refused the request: no point going on.
                print("request failed: \(error)")
                failed = true
                break requests
            }
        }
        print("closing (1000: the backend keeps what a resume needs)")
        let closed = await client.close(keepResume: true, timeout: .seconds(5))
        // Without CLOSED the events never end; stop reading rather than wait forever.
        if !closed { reader.cancel() }
        let s = await reader.value
        // The point just after the last event taken from `events` (those read but never taken
        // are replayed to a later client); read it after CLOSED, as events delivered while the
        // close runs still move it.
        if closed {
            print("resume state to persist: \(try client.resumeState())")
        } else {
            print("resume state not persisted: read before CLOSED it may be behind (a later client would get some events twice)")
        }
        let st = try client.stats()
        print("stats: \(st.connections) connections, \(st.resumesSucceeded) resumed, "
            + "\(st.wireBytesIn) bytes in for \(st.payloadBytesIn) of messages, \(st.requestsSent) requests")
        try TetherLog.removeHandler()
        print("summary: \(s.received) events, \(s.gaps) gaps, \(s.resumes) resumes, \(s.resets) resets, closed \(closed ? "cleanly" : "late")")
        exit(!failed && s.gaps == 0 && s.received > 0 && closed ? 0 : 1)
    }
}
