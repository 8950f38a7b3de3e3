// ping/ack/resume through the Swift binding: connects to a running tether-backend, prints
// pongs with their round-trip time and the acknowledged event, rides out the backend's cuts,
// shows the missed events replayed, and closes cleanly. Not compiled here (see
// bindings/swift/README.md).
//   tether-backend --event-rate 20 --cut-after-events 40
//   swift run PingAckResume http://127.0.0.1:PORT [seconds]
import Foundation
import Tether

let args = CommandLine.arguments
guard args.count >= 2 else {
    FileHandle.standardError.write(Data("usage: PingAckResume URL [seconds]\n".utf8))
    exit(2)
}
let seconds = args.count > 2 ? Double(args[2]) ?? 10 : 10
let client = try TetherClient(
    url: args[1], username: "tether", password: "tether-password", pingIntervalMs: 1000)

var lastId: Int64 = 0
var received = 0
var gaps = 0
var replayed = -1
let reader = Task {
    for await ev in client.events {
        switch ev.kind {
        case .connected:
            print("connected\(ev.resumeAttempted ? ", resuming after event \(lastId)" : "")")
            replayed = ev.resumeAttempted ? 0 : -1
        case .disconnected:
            print("disconnected: code \(ev.closeCode) \(String(decoding: ev.data, as: UTF8.self)); retry in \(ev.retryInMs.map { "\($0) ms" } ?? "never")")
        case .pong:
            print("pong: rtt \(ev.rttMicros ?? -1) us, acknowledged event \(ev.ackedId)")
        case .message where ev.requestId < 0:
            if lastId != 0 && ev.requestId != lastId - 1 { gaps += 1 }
            lastId = min(lastId, ev.requestId)
            received += 1
            if replayed >= 0 { replayed += 1 }
        case .message where ev.command == "init_complete" && replayed >= 0:
            print("  replayed \(replayed) missed events; \(gaps == 0 ? "in order, no gap" : "WITH GAPS")")
            replayed = -1
        case .closed:
            print("closed")
        default:
            break
        }
    }
}
let end = Date().addingTimeInterval(seconds)
while Date() < end {
    try await Task.sleep(nanoseconds: 2_000_000_000)
    let reply = try await client.request("echo", data: Data(#"{"hello":"from Swift"}"#.utf8))
    print("response: \(String(decoding: reply, as: UTF8.self))")
}
print("resume state to persist: \(try client.resumeState())")
try client.close()
await reader.value
print("summary: \(received) events, \(gaps) gaps")
exit(gaps == 0 && received > 0 ? 0 : 1)
