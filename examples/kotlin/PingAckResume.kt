// ping/ack/resume through the Kotlin binding: connects to a running tether-backend, sends an
// echo every two seconds, prints pongs with their round-trip time and the acknowledged event,
// rides out the cuts the backend makes, shows the missed events replayed and the library's
// log records about them, closes cleanly and prints the client's statistics.
//
//   tether-backend --event-rate 20 --cut-after-events 40      # prints its address
//   (run) org.tether.examples.PingAckResumeKt http://127.0.0.1:PORT [seconds]
package org.tether.examples

import kotlin.system.exitProcess
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import org.tether.DisconnectedException
import org.tether.EventKind
import org.tether.LogLevel
import org.tether.Tether
import org.tether.TetherClient
import org.tether.TetherOptions

/** Runs the walk-through; returns 0 when every buffered event arrived once and in order. */
fun pingAckResume(url: String, seconds: Int, out: (String) -> Unit = ::println): Int = runBlocking {
    val client = TetherClient(
        url,
        TetherOptions(username = "tether", password = "tether-password", pingIntervalMs = 1000),
    )
    // Process-wide; this walk-through shows only its own client's connection life.
    Tether.setLogHandler(LogLevel.INFO) { r ->
        if (r.clientId == client.id) out("log: ${r.level} ${r.target}: ${r.message}")
    }
    try {
        var lastId = 0L
        var received = 0
        var gaps = 0
        var cuts = 0
        var pongs = 0
        var replayed = -1
        val reader = launch {
            client.events.collect { ev ->
                when (ev.kind) {
                    EventKind.CONNECTED -> {
                        out("connected${if (ev.resumeAttempted) ", resuming after event $lastId" else ""}")
                        replayed = if (ev.resumeAttempted) 0 else -1
                    }
                    EventKind.DISCONNECTED -> {
                        if (ev.retryInMs != null) cuts++ // not the DISCONNECTED of our own close
                        out("disconnected: ${ev.status.description} (code ${ev.closeCode}) \"${ev.text}\"; retry in ${ev.retryInMs} ms")
                    }
                    EventKind.PONG -> {
                        pongs++
                        out("pong: rtt ${ev.rttMicros} us, acknowledged event ${ev.ackedId}")
                    }
                    EventKind.MESSAGE -> if (ev.requestId < 0) {
                        if (lastId != 0L && ev.requestId != lastId - 1) {
                            out("  GAP: event ${ev.requestId} after $lastId")
                            gaps++
                        }
                        lastId = minOf(lastId, ev.requestId)
                        received++
                        if (replayed >= 0) replayed++
                    } else if (ev.command == "init_complete" && replayed >= 0) {
                        out("  replayed $replayed missed events; ${if (gaps == 0) "in order, no gap" else "WITH GAPS"}")
                        replayed = -1
                    }
                    EventKind.CLOSED -> out("closed")
                    else -> {}
                }
            }
        }
        val end = System.currentTimeMillis() + seconds * 1000L
        while (System.currentTimeMillis() < end) {
            delay(2000)
            // A request on the wire when the backend cuts fails: whether the server ran it is
            // unknown, so only the app can decide to repeat it (an echo could be).
            val reply = try {
                client.request("echo", "{\"hello\":\"from Kotlin\"}")
            } catch (e: DisconnectedException) {
                "lost in a cut (${e.message})"
            }
            out("response: $reply")
        }
        out("closing (1000: the backend keeps what a resume needs)")
        client.closeAndWait(keepResume = true)
        reader.join()
        // Read after CLOSED: the library moves it as events arrive, collected or not.
        out("resume state to persist: ${client.resumeState()}")
        out("summary: $received events, $gaps gaps, $cuts cuts survived, $pongs pongs")
        // Still readable after the close: the counters of the client's last moment.
        val s = client.stats()
        val saved = if (s.payloadBytesIn > 0) 100 - 100 * s.wireBytesIn / s.payloadBytesIn else 0L
        out("stats: ${s.connections} connections, ${s.resumesSucceeded} resumed, ${s.requestsSent} requests, compression saved $saved%")
        if (gaps == 0 && received > 0) 0 else 1
    } finally {
        Tether.removeLogHandler()
        client.close()
    }
}

fun main(args: Array<String>) {
    if (args.isEmpty()) {
        System.err.println("usage: PingAckResume URL [seconds]")
        exitProcess(2)
    }
    exitProcess(pingAckResume(args[0], args.getOrNull(1)?.toInt() ?: 10))
}
