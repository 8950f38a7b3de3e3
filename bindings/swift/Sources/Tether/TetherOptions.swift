import CTether
import Foundation

/// Everything a client is configured with: one property per `tether_config_*` setter of the
/// header, plus the wrapper's own event buffer. `nil` keeps the library's default (documented
/// per setter in include/tether.h). Values are checked by the library when the client is
/// created; a bad one makes `TetherClient.init` throw `.config` or `.invalidArgument` naming
/// it.
public struct TetherOptions: Sendable {
    /// gomuks username and password for `POST /_gomuks/auth`.
    public struct BasicAuth: Sendable {
        public var username: String
        public var password: String
        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }
    }

    /// gomuks: the backend bundled into this process, driven through its C FFI
    /// (`tether_config_set_in_process`), instead of a websocket.
    public struct InProcess: Sendable, Equatable {
        /// Path of `libgomuksffi` (gomuks `pkg/ffi`), loaded when the client connects and never
        /// unloaded.
        public var library: String
        /// The backend's directory for its config, database, cache and logs, created if
        /// missing. One client per data root (a lock file guards it, across processes too).
        public var dataRoot: String
        public init(library: String, dataRoot: String) {
            self.library = library
            self.dataRoot = dataRoot
        }
    }

    /// `ws://`/`wss://` is the websocket endpoint as given; `http://`/`https://` is the
    /// backend's base, from which the protocol's path is derived. Ignored with `inProcess`.
    public var url: String
    public var `protocol`: TetherProtocol
    /// gomuks: the `gomuks_auth` cookie token; rwws: the access key in base64. A secret.
    public var token: String?
    /// gomuks: used when no token is set or the token is rejected.
    public var basicAuth: BasicAuth?
    /// gomuks: `compress=1` (raw deflate); on by default.
    public var compression: Bool?
    /// Keepalive ping interval (default gomuks 15000, rwws 10000); below `receiveTimeoutMs`, and
    /// for rwws below the server's 30000 limit (a gomuks websocket sending nothing else for
    /// 60000 is closed by the backend with 4002).
    public var pingIntervalMs: UInt32?
    /// Reconnect when nothing arrives for this long.
    public var receiveTimeoutMs: UInt32?
    /// How long a ping may go unanswered (no byte arriving) before the link counts as dead;
    /// also the deadline of ``TetherClient/reconnectNow()``'s probe (the library's default:
    /// gomuks 10 s, rwws 20 s).
    public var pongTimeoutMs: UInt32?
    /// Default per-request timeout (the library's default is 60 s).
    public var requestTimeoutMs: UInt32?
    /// Bound on a connection's TCP connects and proxy tunnel (an `https://` proxy's TLS
    /// handshake included) once the names are resolved (the library's default is 10 s):
    /// addresses still silent then are given up and named in the error. It also bounds the
    /// gomuks login's answer once its connection is open. A whole attempt (name resolution,
    /// login, TLS and upgrade included), and a token renewal, is bounded by twice this.
    public var connectTimeoutMs: UInt32?
    /// First reconnect delay and the cap; needs `0 < min <= max`.
    public var reconnectBackoffMs: (min: UInt32, max: UInt32)?
    /// Cap on one server message after decompression (at least 1024).
    public var maxMessageBytes: Int?
    /// Events the library queues for the wrapper before it stops reading the socket.
    public var queueCapacity: Int?
    /// Bytes of requests and packets that may wait to be written (the library's default is
    /// 32 MiB; at least 1): those made while disconnected, or faster than the uplink carries.
    /// A call past it throws `.sendBufferFull` and takes nothing (`TetherStats.unsentBytes`
    /// tells how much waits); one message larger than the limit is taken while nothing else
    /// waits.
    public var maxUnsentBytes: Int?
    /// Resume from an earlier client's `resumeState()`.
    public var resume: ResumeState?
    /// gomuks: `last_server_ts`, only if the app persisted its state from that time.
    public var lastServerTs: Int64?
    /// gomuks: send `prev_listener_id` on reconnect (off by default; see the header).
    public var prevListenerId: Bool?
    /// Extra headers on the websocket upgrade (e.g. `Origin`), in order.
    public var headers: [(name: String, value: String)] = []
    /// CA certificates (PEM) trusted in addition to the roots (webpki, or the OS store).
    public var caPEM: Data?
    /// Certificate revocation lists (PEM `X509 CRL` blocks): a server certificate they revoke
    /// is refused with `.certificate`, no retry. Only the leaf is checked, and only against
    /// these lists (a leaf whose issuer has none here is accepted; a list past its next
    /// update still revokes; one per issuer). They apply to an `https://` proxy's
    /// certificate too. tether fetches none. Needs TLS.
    public var crlPEM: Data?
    /// Public-key pins: `sha256/<base64>` (or the bare base64) of the SHA-256 of a
    /// SubjectPublicKeyInfo: the leaf's, or that of a certificate on its verified path to a
    /// trusted root (an intermediate, the root). Checked *in addition to* the chain and name (a
    /// pinned self-signed server still needs `caPEM`). A mismatch ends the client with
    /// `.certificate`, no retry. Needs a `wss://`/`https://` URL.
    public var pinsSHA256: [String] = []
    /// A client certificate chain and its private key (PEM) for servers that require one
    /// (mTLS). The key is a secret. Needs a `wss://`/`https://` URL (`.config` otherwise):
    /// only the server is shown it, never a proxy.
    public var clientCertificate: (certPEM: Data, keyPEM: Data)?
    /// Trust the operating system's certificate store instead of the built-in webpki roots.
    public var useOSTrust: Bool?
    /// Allow credentials over plain `ws://`/`http://` to a host that is not loopback.
    public var allowInsecureCredentials: Bool?
    /// The proxy for the websocket and the gomuks login alike: `http://[user:pass@]host:port`
    /// (HTTP CONNECT), `https://…` (the same inside TLS to the proxy, verified like the server
    /// but without the pins, and shown no client certificate), `socks5://…` (the name resolved locally) or `socks5h://…` (by
    /// the proxy); `"direct"` ignores the environment. `nil`: the environment decides
    /// (`https_proxy`, `http_proxy`, `all_proxy`, `no_proxy`; never for loopback). A proxy that
    /// refuses the credentials ends the client with `.unauthorized`. Its credentials are secrets.
    public var proxy: String?
    /// Asked before every connection (each websocket attempt and each gomuks login) which
    /// proxy to take, for settings that change while the app runs (a PAC script, the system's
    /// proxy settings, which follow the network): given the URL about to be opened
    /// (`ws[s]://host:port/path`, `http[s]://host:port/_gomuks/auth`; no query), it returns a proxy
    /// URL as `proxy` takes it, `"direct"`, or `nil` to leave the decision to `proxy` and the
    /// environment. It runs on a thread of the library, possibly on several at once, and may
    /// block; its time counts against the attempt's limit (twice `connectTimeoutMs`). A thrown
    /// error fails that attempt (`.connect`, retried); an answer that is not a proxy URL ends
    /// the client with `.config`. Releasing the last reference to the client waits for a
    /// call in progress to return (none starts afterwards), on the releasing thread: a
    /// resolver that blocks for long, or waits for the thread that releases the client (the
    /// main thread, say), must not be used, or the client released from elsewhere.
    /// `nil` (default): none.
    public var proxyResolver: (@Sendable (String) throws -> String?)?
    /// gomuks: talk to the backend bundled into this process instead of a websocket (see
    /// `InProcess`; `init(inProcess:)` sets it). `url` is then ignored, and so are compression,
    /// pings, acks, `resume`, `proxy`, the TLS options and the credentials. One in-process
    /// backend runs per process at a time and one client per data root: another client's
    /// `TetherClient.init` throws `.inUse` until the first is closed. `pause()`, `unpause()`
    /// and `reconnectNow()` throw `.unsupported`. A failed start ends the client with a
    /// `.disconnected` event without retry whose status is `.backendDatabase`,
    /// `.backendAccount` or `.backendStart`. A close answers every request at once but waits
    /// up to 5 s for calls the backend is still running. `nil` (default): the websocket at
    /// `url`.
    public var inProcess: InProcess?
    /// How many events `TetherClient.events` holds for a task that does not read them; when it
    /// is full the library's queue (`queueCapacity`) fills next, and then the server sees TCP
    /// backpressure. Nothing is dropped. At least 1.
    public var eventBufferCapacity: Int = 256
    /// gomuks: attach a `Store` before connecting, read as `TetherClient.store`. nil (default):
    /// no store. rwws clients refuse it with `.unsupported`, websocket clients with
    /// `lastServerTs` with `.config` (the store starts empty, and that first sync would hold
    /// only what changed since then).
    public var store: StoreOptions?

    public init(url: String, protocol proto: TetherProtocol = .gomuks) {
        self.url = url
        self.protocol = proto
    }

    /// A gomuks client of the backend bundled into this process (no URL):
    /// `TetherOptions(inProcess: .init(library: "/path/libgomuksffi.so", dataRoot: "/path/root"))`.
    public init(inProcess: InProcess) {
        self.init(url: "")
        self.inProcess = inProcess
    }

    /// The one place options reach the library, so a new setter is added here and nowhere
    /// else. Each failure throws the setter's own error, which names the argument.
    func apply(to cfg: OpaquePointer) throws {
        func size(_ v: Int, _ name: String) throws -> Int {
            // size_t arrives as Int: a negative value would wrap to a huge size.
            guard v >= 0 else { throw TetherError.invalidArgument("\(name) must not be negative") }
            return v
        }
        try check(tether_config_set_url(cfg, try cString(url, "url")))
        try check(tether_config_set_protocol(cfg, self.protocol.rawValue))
        if let v = token { try check(tether_config_set_token(cfg, try cString(v, "token"))) }
        if let v = basicAuth {
            try check(tether_config_set_basic_auth(
                cfg, try cString(v.username, "username"), try cString(v.password, "password")))
        }
        if let v = compression { try check(tether_config_set_compression(cfg, v)) }
        if let v = pingIntervalMs { try check(tether_config_set_ping_interval_ms(cfg, v)) }
        if let v = receiveTimeoutMs { try check(tether_config_set_receive_timeout_ms(cfg, v)) }
        if let v = pongTimeoutMs { try check(tether_config_set_pong_timeout_ms(cfg, v)) }
        if let v = requestTimeoutMs { try check(tether_config_set_request_timeout_ms(cfg, v)) }
        if let v = connectTimeoutMs { try check(tether_config_set_connect_timeout_ms(cfg, v)) }
        if let v = reconnectBackoffMs { try check(tether_config_set_reconnect_backoff_ms(cfg, v.min, v.max)) }
        if let v = maxMessageBytes {
            try check(tether_config_set_max_message_bytes(cfg, try size(v, "maxMessageBytes")))
        }
        if let v = maxUnsentBytes {
            try check(tether_config_set_max_unsent_bytes(cfg, try size(v, "maxUnsentBytes")))
        }
        if let v = queueCapacity {
            try check(tether_config_set_queue_capacity(cfg, try size(v, "queueCapacity")))
        }
        if let v = resume {
            try check(tether_config_set_resume_state(cfg, try cString(v.runId, "runId"), v.lastReceivedEvent))
        }
        if let v = lastServerTs { try check(tether_config_set_last_server_ts(cfg, v)) }
        if let v = prevListenerId { try check(tether_config_set_prev_listener_id(cfg, v)) }
        for h in headers {
            try check(tether_config_add_header(
                cfg, try cString(h.name, "a header name"), try cString(h.value, "a header value")))
        }
        if let v = caPEM {
            try v.withUnsafeBytes { raw in
                try check(tether_config_set_ca_pem(cfg, raw.bindMemory(to: UInt8.self).baseAddress, raw.count))
            }
        }
        if let v = crlPEM {
            try v.withUnsafeBytes { raw in
                try check(tether_config_set_crl_pem(cfg, raw.bindMemory(to: UInt8.self).baseAddress, raw.count))
            }
        }
        for pin in pinsSHA256 { try check(tether_config_add_pin_sha256(cfg, try cString(pin, "a pin"))) }
        if let v = clientCertificate {
            try v.certPEM.withUnsafeBytes { cert in
                try v.keyPEM.withUnsafeBytes { key in
                    try check(tether_config_set_client_cert_pem(
                        cfg, cert.bindMemory(to: UInt8.self).baseAddress, cert.count,
                        key.bindMemory(to: UInt8.self).baseAddress, key.count))
                }
            }
        }
        if let v = useOSTrust { try check(tether_config_set_use_os_trust(cfg, v)) }
        if let v = allowInsecureCredentials {
            try check(tether_config_set_allow_insecure_credentials(cfg, v))
        }
        if let v = proxy { try check(tether_config_set_proxy(cfg, try cString(v, "proxy"))) }
        if let resolve = proxyResolver {
            // Released by the library's destroy, which also runs when the call fails.
            let ctx = Unmanaged.passRetained(ProxyResolverBox(resolve)).toOpaque()
            try check(tether_config_set_proxy_resolver(
                cfg,
                { ctx, url, answer in
                    guard let ctx, let url else { return TETHER_OK }
                    let box = Unmanaged<ProxyResolverBox>.fromOpaque(ctx).takeUnretainedValue()
                    let proxy: String?
                    do {
                        proxy = try box.resolve(String(cString: url))
                    } catch {
                        return TETHER_ERR_CONNECT  // the resolver's own failure: retried
                    }
                    guard let proxy else { return TETHER_OK }
                    // An answer with a NUL is no proxy URL: the same resolver would give it
                    // again, so it ends the client (.config) like any other such answer.
                    guard let c = try? cString(proxy, "the proxy answer") else { return TETHER_ERR_CONFIG }
                    return tether_proxy_answer_set(answer, c)
                },
                ctx,
                { ctx in
                    guard let ctx else { return }
                    Unmanaged<ProxyResolverBox>.fromOpaque(ctx).release()
                }))
        }
        if let v = inProcess {
            try check(tether_config_set_in_process(
                cfg, try cString(v.library, "library"), try cString(v.dataRoot, "dataRoot")))
        }
        guard eventBufferCapacity >= 1 else {
            throw TetherError.invalidArgument("eventBufferCapacity must be at least 1")
        }
    }
}

/// Options end up in logs and crash reports (`print`, `dump`, a debugger, a reporter walking the
/// `Mirror`), so every view of them leaves the secrets out: the token (the rwws key), the
/// password, the header values, the client key and the userinfo of the URL and the proxy. The mirror is the one
/// list the text is made from, so an option left out of it is missing from the logs, never
/// leaked.
extension TetherOptions: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var customMirror: Mirror {
        Mirror(self, children: [
            // A password in the URL is refused when the client is made, but may be printed first.
            "url": Self.maskUserinfo(url),
            "protocol": self.protocol,
            "token": token.map { _ in redacted } as Any,
            "basicAuth": basicAuth as Any,
            "compression": compression as Any,
            "pingIntervalMs": pingIntervalMs as Any,
            "receiveTimeoutMs": receiveTimeoutMs as Any,
            "pongTimeoutMs": pongTimeoutMs as Any,
            "requestTimeoutMs": requestTimeoutMs as Any,
            "connectTimeoutMs": connectTimeoutMs as Any,
            "reconnectBackoffMs": reconnectBackoffMs as Any,
            "maxMessageBytes": maxMessageBytes as Any,
            "queueCapacity": queueCapacity as Any,
            "maxUnsentBytes": maxUnsentBytes as Any,
            "resume": resume as Any,
            "lastServerTs": lastServerTs as Any,
            "prevListenerId": prevListenerId as Any,
            // The names tell what was sent; a value may be a credential (Authorization, Cookie).
            "headers": headers.map { (name: $0.name, value: redacted) },
            "caPEM": caPEM as Any,
            "crlPEM": crlPEM as Any,
            "pinsSHA256": pinsSHA256,
            "clientCertificate": clientCertificate.map { (certPEM: $0.certPEM, keyPEM: redacted) } as Any,
            "useOSTrust": useOSTrust as Any,
            "allowInsecureCredentials": allowInsecureCredentials as Any,
            "proxy": proxy.map(Self.maskUserinfo) as Any,
            "proxyResolver": proxyResolver as Any,
            "inProcess": inProcess as Any,
            "eventBufferCapacity": eventBufferCapacity,
            "store": store as Any,
        ], displayStyle: .struct)
    }

    public var description: String { describe(customMirror, as: "TetherOptions") }
    public var debugDescription: String { description }

    /// A URL (the server's, the proxy's) without its user and password. Userinfo ends at the
    /// last `@`, where URL parsers split it, and not at the first `/`: options are logged most
    /// when the library refused them, and a raw password it refuses may hold `@`, `/`, `:`,
    /// `?` or `#`. An `@` further on (in a path) hides more than the userinfo, never less.
    static func maskUserinfo(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@") else { return url }
        // Only a real scheme is kept: a `//` inside the password is no scheme's.
        let scheme = url.range(of: "^[A-Za-z][A-Za-z0-9+.-]*://", options: .regularExpression)
        return "\(url[..<(scheme?.upperBound ?? url.startIndex)])\(redacted)\(url[at...])"
    }
}

extension TetherOptions.BasicAuth: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var customMirror: Mirror {
        Mirror(self, children: ["username": username, "password": redacted], displayStyle: .struct)
    }

    public var description: String { describe(customMirror, as: "BasicAuth") }
    public var debugDescription: String { description }
}

private let redacted = "<redacted>"

/// `Name(label: value, ...)` with optionals shown as their value or `nil`, as in the logs of the
/// other bindings.
private func describe(_ mirror: Mirror, as name: String) -> String {
    let fields = mirror.children.map { child -> String in
        var shown = "\(child.value)"
        let value = Mirror(reflecting: child.value)
        if value.displayStyle == .optional { shown = value.children.first.map { "\($0.value)" } ?? "nil" }
        return "\(child.label ?? "_"): \(shown)"
    }
    return "\(name)(\(fields.joined(separator: ", ")))"
}

/// A `TetherOptions.proxyResolver` while the library holds it.
final class ProxyResolverBox: Sendable {
    let resolve: @Sendable (String) throws -> String?
    init(_ resolve: @escaping @Sendable (String) throws -> String?) { self.resolve = resolve }
}
