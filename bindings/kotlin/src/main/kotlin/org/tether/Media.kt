package org.tether

/** The JSON params of `upload_media` and `download_media` (see [TetherClient.uploadMedia]). */
internal object Media {
    /**
     * `upload_media`'s params: [params] (a JSON object) with [path], when given, as its
     * `"path"`. Exactly one of [bytes], [path] and a `"path"` in [params] says what to upload.
     */
    fun uploadParams(params: String, bytes: ByteArray?, path: String?): ByteArray {
        val keys = Json.objectKeys(params) ?: throw invalid("uploadMedia params must be a JSON object")
        val given = listOfNotNull(bytes?.let { "bytes" }, path?.let { "path" }, "\"path\" in params".takeIf { "path" in keys })
        if (given.size > 1) throw invalid("uploadMedia takes one of bytes and a path, not ${given.joinToString(" and ")}")
        if (given.isEmpty()) throw invalid("uploadMedia needs bytes or a path")
        val text = if (path == null) {
            params
        } else {
            val rest = params.trim().substring(1).trimStart()
            "{\"path\":" + Json.quote(path) + (if (rest.startsWith("}")) "" else ",") + rest
        }
        return text.toByteArray(Charsets.UTF_8)
    }

    /** `download_media`'s params: [params] as given, or `{"mxc":…}` for an `mxc://` URI alone. */
    fun downloadParams(params: String): ByteArray {
        val t = params.trim()
        val json = if (t.startsWith("mxc://")) Json.obj("mxc" to t) else params
        return json.toByteArray(Charsets.UTF_8)
    }

    /** The C API's `timeout_ms` for [timeoutMs]: 0 (the configured timeout) for null. */
    fun timeoutArg(timeoutMs: Int?): Int = checkTimeout(timeoutMs) ?: 0

    /** The timeout a transfer given [arg] (as [timeoutArg] makes it) runs under. */
    fun timeoutOf(arg: Int, core: ClientState): Long = if (arg > 0) arg.toLong() else core.requestTimeoutMs

    private fun invalid(message: String) = InvalidArgumentException(Status.ERR_INVALID_ARGUMENT, message)
}

/** [timeoutMs] unless it is not positive ([InvalidArgumentException]); null stays null. */
internal fun checkTimeout(timeoutMs: Int?): Int? {
    if (timeoutMs != null && timeoutMs <= 0) {
        throw InvalidArgumentException(Status.ERR_INVALID_ARGUMENT, "timeoutMs must be positive")
    }
    return timeoutMs
}
