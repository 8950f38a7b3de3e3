// ping/ack/resume through the Kotlin binding: connects to a running tether-backend, sends an
// echo every two seconds, prints pongs with their round-trip time and the acknowledged event,
// rides out the cuts the backend makes, shows the missed events replayed and the library's
// log records about them, closes cleanly and prints the client's statistics. Each resume's
// RESUMED event says how it went: SUCCEEDED (the missed events were replayed, each once: keep
// the cached state), RESET (the backend restarted or lost the resume point: drop the cached
// state, the fresh state follows) or CAUGHT_UP (only with lastServerTs: keep the cached state, a
// catchup sync_complete follows).
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
import org.tether.ResumeOutcome
import org.tether.Tether
import org.tether.TetherClient
import org.tether.TetherException
import org.tether.TetherOptions

/**
 * Runs the walk-through; returns 0 when every buffered event arrived once and in order (a reset
 * starting afresh), every request was answered or lost in a cut, and the client reached CLOSED.
 */
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
        // Buffered event ids count down from -1; each must be the previous one minus 1. 0: none
        // since a fresh start.
        var lastId = 0L
        var received = 0
        var gaps = 0
        var cuts = 0
        var resets = 0
        var pongs = 0
        // From a CONNECTED that asked to resume to its RESUMED: the events that arrive are the
        // replay if the resume succeeds, the new state if it is reset, so an id that does not
        // follow is only a gap once RESUMED says SUCCEEDED.
        var resuming = false
        var replayed = 0
        var unsure = 0
        val reader = launch {
            client.events.collect { ev ->
                when (ev.kind) {
                    EventKind.CONNECTED -> {
                        out("connected${if (ev.resumeAttempted) ", resuming after event $lastId" else ""}")
                        resuming = ev.resumeAttempted
                        replayed = 0
                        if (!resuming) lastId = 0 // no resume asked: the backend sends its state afresh
                    }
                    // Once per connection that asked to resume, before the message that decided it.
                    EventKind.RESUMED -> {
                        when (ev.resumeOutcome) {
                            // The missed events arrived just before, each once: keep the cached state.
                            ResumeOutcome.SUCCEEDED -> {
                                gaps += unsure
                                out("  RESUMED SUCCEEDED: replayed $replayed missed events; ${if (gaps == 0) "in order, no gap" else "WITH GAPS"}")
                            }
                            // The backend restarted or no longer held the resume point: the missed
                            // events are gone and its state comes afresh (a new run's ids start at -1).
                            ResumeOutcome.RESET -> {
                                resets++
                                out("  RESUMED RESET: drop the cached state; the fresh state follows")
                                lastId = 0
                            }
                            // Only with lastServerTs: the missed events are gone, but a
                            // sync_complete with catchup brings the cached state up to date.
                            ResumeOutcome.CAUGHT_UP -> {
                                out("  RESUMED CAUGHT_UP: keep the cached state; a catchup sync_complete follows")
                                lastId = 0
                            }
                            null -> {}
                        }
                        resuming = false
                        unsure = 0
                    }
                    EventKind.DISCONNECTED -> {
                        if (ev.retryInMs != null) cuts++ // not the DISCONNECTED of our own close
                        out("disconnected: ${ev.status.description} (code ${ev.closeCode}) \"${ev.text}\"; ${ev.retryInMs?.let { "retry in $it ms" } ?: "no retry"}")
                    }
                    EventKind.PONG -> {
                        pongs++
                        out("pong: rtt ${ev.rttMicros} us, acknowledged event ${ev.ackedId}")
                    }
                    EventKind.MESSAGE -> if (ev.requestId < 0) {
                        if (lastId != 0L && ev.requestId != lastId - 1) {
                            if (resuming) {
                                out("  event ${ev.requestId} after $lastId: a gap unless the resume was reset")
                                unsure++
                            } else {
                                out("  GAP: event ${ev.requestId} after $lastId")
                                gaps++
                            }
                        }
                        lastId = minOf(lastId, ev.requestId)
                        received++
                        if (resuming) replayed++
                    }
                    EventKind.CLOSED -> out("closed")
                    else -> {}
                }
            }
        }
        val end = System.currentTimeMillis() + seconds * 1000L
        var failed = false
        while (System.currentTimeMillis() < end) {
            delay(2000)
            val reply = try {
                client.request("echo", "{\"hello\":\"from Kotlin\"}")
            } catch (e: DisconnectedException) {
                // On the wire when the backend cut: whether the server ran it is unknown, so only
                // the app can decide to repeat it (an echo could be).
                "lost in a cut (${e.message})"
            } catch (e: TetherException) {
                // The client ended for good (a refused login: ClientClosedException or
                // StateException) or the server refused the request: no point going on.
                out("request failed: ${e::class.simpleName}: ${e.message}")
                failed = true
                break
            }
            out("response: $reply")
        }
        out("closing (1000: the backend keeps what a resume needs)")
        val closed = client.closeAndWait(keepResume = true)
        reader.join()
        // The point just after the last event collected (those read but never collected are
        // replayed to a later client); read it after CLOSED, as events delivered while the
        // close runs still move it.
        if (closed) {
            out("resume state to persist: ${client.resumeState()}")
        } else {
            out("resume state not persisted: read before CLOSED it may be behind (a later client would get some events twice)")
        }
        out("summary: $received events, $gaps gaps, $cuts cuts survived, $resets resets, $pongs pongs")
        // Still readable after the close: the counters of the client's last moment.
        val s = client.stats()
        val saved = if (s.payloadBytesIn > 0) 100 - 100 * s.wireBytesIn / s.payloadBytesIn else 0L
        out("stats: ${s.connections} connections, ${s.resumesSucceeded} resumed, ${s.requestsSent} requests, compression saved $saved%")
        if (closed && !failed && gaps == 0 && received > 0) 0 else 1
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
