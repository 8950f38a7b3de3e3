// In-process media: upload with progress and streamed download
// (`tether_client_upload_media`, `tether_client_download_media`).
import CTether
import Foundation

extension TetherClient {
    /// How many of a transfer's PROGRESS or CHUNK events (a chunk is at most 64 KiB with the
    /// gomuks FFI) wait for the transfer's task before the library's dispatcher waits too.
    static let transferBufferCapacity = 8

    /// In-process: uploads media (gomuks `upload_media`), calling `onProgress` for each
    /// progress report, and returns the reply's raw JSON: the `m.room.message` content to send
    /// (`{"msgtype":…,"url":"mxc://…","info":{…}}`).
    ///
    /// Give exactly one of `bytes` (copied before the upload starts; may be empty) and a path:
    /// `path`, which is set as `"path"` in `params`, or a `"path"` already in `params`.
    /// `params` is the command's JSON object (`filename`, `encrypt`, `voice_message`, resize
    /// options, ...). `timeout` overrides the configured request timeout and covers the whole
    /// upload.
    ///
    /// Isolation: runs on the caller's actor (`isolation`, by default the caller's), and
    /// `onProgress` is called there, in order, with each report as the backend gives it
    /// (gomuks v0.2607.0: a fraction from 0 to 1). The reports never appear in `events`.
    ///
    /// Throws `.invalidArgument` for both or neither of bytes and a path, or, without bytes,
    /// params that are not a JSON object (`.invalidUTF8` if they are not JSON);
    /// `.unsupported` for a websocket client (use the backend's HTTP upload endpoint);
    /// `.remote` with the backend's error text when it refuses or fails the upload (a missing
    /// file, say); and what `request` throws (`.requestTimeout`, `.clientClosed`, `.state`).
    /// An error thrown by `onProgress`, or cancelling the task, cancels the upload
    /// (`tether_client_cancel`) and is rethrown (`CancellationError` for a cancelled task).
    public func uploadMedia(
        params: Data = Data("{}".utf8), bytes: Data? = nil, path: String? = nil,
        timeout: Duration? = nil, isolation: isolated (any Actor)? = #isolation,
        onProgress: (Double) throws -> Void = { _ in }
    ) async throws -> Data {
        let params = try Self.uploadParams(params, bytes: bytes, path: path)
        return try await transfer(
            timeout: timeout, isolation: isolation, onProgress: onProgress, onChunk: { _ in }
        ) { ms, id in
            params.withUnsafeBytes { p in
                let pp = p.bindMemory(to: UInt8.self).baseAddress
                guard let bytes else {
                    return tether_client_upload_media(client, pp, p.count, nil, 0, ms, id)
                }
                // An empty upload still needs a non-NULL pointer: NULL means "the path".
                return bytes.withUnsafeBytes { b in
                    withUnsafePointer(to: UInt8(0)) { nonNull in
                        let bp = b.bindMemory(to: UInt8.self).baseAddress ?? nonNull
                        return tether_client_upload_media(client, pp, p.count, bp, b.count, ms, id)
                    }
                }
            }
        }
    }

    /// In-process: downloads media as a stream (gomuks `download_media`), handing the file's
    /// bytes to `onChunk` in order, and returns the reply's raw JSON: the cached file's row
    /// and path.
    ///
    /// `params` is the command's JSON object (`{"mxc":"mxc://…","encrypted":…}`); see
    /// `downloadMedia(mxc:timeout:onChunk:)` for the URI alone. Chunks come only for uncached,
    /// unencrypted media. `timeout` overrides the configured request timeout and covers the
    /// whole download.
    ///
    /// Isolation and backpressure: runs on the caller's actor (`isolation`, by default the
    /// caller's), and `onChunk` is awaited there for each chunk before the next is taken. At
    /// most 8 chunks (`transferBufferCapacity`) wait for it; beyond that the library's
    /// dispatcher waits, as it does for a full `events` buffer, so the client's other events
    /// and replies wait too. So `onChunk` must not await a reply of this client's `request`
    /// (start that in its own task). The chunks never appear in `events`.
    ///
    /// Throws `.unsupported` for a websocket client, and as the reply for a backend library
    /// without streaming download (gomuks v0.2607.0); `.remote` with the backend's error text
    /// when it fails the download (chunks may have been delivered); and what `request` throws
    /// (`.requestTimeout`, `.clientClosed`, `.state`). An error thrown by `onChunk`, or
    /// cancelling the task, cancels the download (`tether_client_cancel`) and is rethrown
    /// (`CancellationError` for a cancelled task).
    public func downloadMedia(
        params: Data, timeout: Duration? = nil, isolation: isolated (any Actor)? = #isolation,
        onChunk: (Data) async throws -> Void
    ) async throws -> Data {
        try await transfer(
            timeout: timeout, isolation: isolation, onProgress: { _ in }, onChunk: onChunk
        ) { ms, id in
            params.withUnsafeBytes { p in
                tether_client_download_media(client, p.bindMemory(to: UInt8.self).baseAddress, p.count, ms, id)
            }
        }
    }

    /// `downloadMedia(params:timeout:onChunk:)` of `{"mxc": mxc}`, the `mxc://` URI alone.
    /// Same isolation, backpressure and errors.
    public func downloadMedia(
        mxc: String, timeout: Duration? = nil, isolation: isolated (any Actor)? = #isolation,
        onChunk: (Data) async throws -> Void
    ) async throws -> Data {
        let params = try JSONSerialization.data(withJSONObject: ["mxc": mxc])
        return try await downloadMedia(params: params, timeout: timeout, isolation: isolation, onChunk: onChunk)
    }

    /// Starts a transfer with `start` (given the timeout in milliseconds, 0 for the configured
    /// one, and where to write the request id), hands each of its PROGRESS or CHUNK events to
    /// `onProgress` or `onChunk` on `isolation`, and returns the data of its RESPONSE or throws
    /// its error. Whatever else ends it early (an error of a closure, cancellation) cancels
    /// the request. The app's closures are called from here, not through closures formed in
    /// the callers: such a closure would not be isolated to `isolation` (Swift 6.0), and the
    /// app's closure would run off its actor.
    private func transfer(
        timeout: Duration?, isolation: isolated (any Actor)?,
        onProgress: (Double) throws -> Void, onChunk: (Data) async throws -> Void,
        start: (UInt32, UnsafeMutablePointer<Int64>) -> tether_status
    ) async throws -> Data {
        try Task.checkCancellation()
        let ms = timeout.map(Self.milliseconds) ?? 0
        let (id, buffer) = try core.startTransfer(capacity: Self.transferBufferCapacity) { start(ms, $0) }
        let response: Event
        do {
            read: while true {
                try Task.checkCancellation()
                // nil: the task was cancelled (nothing else finishes the buffer of a transfer
                // that is still read before its RESPONSE).
                guard let ev = await buffer.next() else { throw CancellationError() }
                switch ev.kind {
                case .response:
                    response = ev
                    break read
                case .progress:
                    try onProgress(ev.progress ?? 0)
                default:
                    try await onChunk(ev.data)
                }
            }
        } catch {
            // Abandoned first, so that the RESPONSE the cancel brings is dropped rather than
            // buffered for no one.
            core.abandon(buffer)
            cancelRequest(id)
            throw error
        }
        do {
            return try ClientCore.reply(response)
        } catch TetherError.cancelled(_) where Task.isCancelled {
            throw CancellationError()
        }
    }

    /// The JSON params of `upload_media`: `params`, with `path` (when given) set as its
    /// `"path"`. Exactly one of `bytes` and a path (`path` or `"path"` in `params`).
    static func uploadParams(_ params: Data, bytes: Data?, path: String?) throws -> Data {
        if bytes != nil && path != nil {
            throw TetherError.invalidArgument("uploadMedia takes bytes or a path, not both")
        }
        if bytes != nil { return params }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: params.isEmpty ? Data("{}".utf8) : params)
        } catch {
            throw TetherError.invalidUTF8("uploadMedia params are not JSON: \(error)")
        }
        guard var object = parsed as? [String: Any] else {
            throw TetherError.invalidArgument("uploadMedia params must be a JSON object")
        }
        guard let path else {
            if object["path"] == nil { throw TetherError.invalidArgument("uploadMedia needs bytes or a path") }
            return params
        }
        object["path"] = path
        return try JSONSerialization.data(withJSONObject: object)
    }
}
