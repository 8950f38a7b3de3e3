// The reconnect cue wired to Apple's notifications: NWPathMonitor for network changes, UIKit's
// background and foreground notifications for pause and unpause. Apple platforms only: on
// Linux, where this example is built and run by the test command, the block below is parsed
// but not compiled (there is no Network or UIKit), so it is not tested here.
#if canImport(Network) && canImport(UIKit)
import Network
import UIKit
import Tether

final class TetherNetworkLife {
    private let client: TetherClient
    private let monitor = NWPathMonitor()
    private var observers: [NSObjectProtocol] = []

    init(client: TetherClient) { self.client = client }

    func start() {
        // A new path (Wi-Fi to cellular, a VPN coming up): the socket may be bound to the old
        // interface, or dead. Probe now instead of waiting for the next ping.
        monitor.pathUpdateHandler = { [client] path in
            if path.status == .satisfied { try? client.reconnectNow() }
        }
        monitor.start(queue: DispatchQueue(label: "tether.path"))
        let center = NotificationCenter.default
        // iOS suspends sockets in the background: close in place and let the backend keep
        // what arrives meanwhile.
        observers.append(center.addObserver(
            forName: UIApplication.didEnterBackgroundNotification, object: nil, queue: nil
        ) { [client] _ in try? client.pause() })
        observers.append(center.addObserver(
            forName: UIApplication.willEnterForegroundNotification, object: nil, queue: nil
        ) { [client] _ in
            try? client.unpause()        // does nothing if it was not paused
            try? client.reconnectNow()   // and when it was not, check the link is alive
        })
    }

    func stop() {
        monitor.cancel()
        observers.forEach(NotificationCenter.default.removeObserver)
        observers.removeAll()
    }
}
#endif
