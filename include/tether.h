/*
 * tether: a resumable native client for websocket RPC backends
 * (gomuks JSON RPC over /_gomuks/websocket, rwws binary over /api/ws).
 *
 * CONVENTIONS
 *  - Every fallible function returns a tether_status: TETHER_OK (0), a positive
 *    informational value (TETHER_TIMEOUT, TETHER_CLOSED) or a negative TETHER_ERR_*.
 *    tether_status_str() describes a status; tether_last_error() gives the message of
 *    the most recent failure on the calling thread.
 *  - Arguments come first, outputs last. Outputs are written only when the function
 *    returns TETHER_OK (exceptions are documented on the function).
 *  - Strings in are NUL-terminated UTF-8; payloads in are (pointer, length). Both are
 *    copied before the function returns, so the caller may free them right after.
 *  - Everything the library returns by pointer is freed with its own tether_*_free,
 *    exactly once. Every free function accepts NULL. Borrowed pointers (event command
 *    and data, status strings) must not be freed.
 *  - A NULL where a pointer is required returns TETHER_ERR_NULL and changes nothing. The
 *    event accessors answer a NULL event with the value each names. A function taking a
 *    destroy(ctx) owns ctx from the call on: destroy(ctx) runs exactly once whatever the
 *    call returns (on failure at once, on the calling thread, before the call returns),
 *    except TETHER_ERR_FORKED, where nothing is called and ctx stays the app's.
 *
 * THREADS
 *  - Any function may be called from any thread unless its comment says otherwise.
 *  - The library runs its network I/O on its own threads ("tether-io-*"). No function
 *    blocks on the network. These wait: tether_client_poll and tether_client_poll_batch,
 *    up to their timeout; tether_client_free, for a running event callback of that client
 *    and its destroy(ctx) (unless called from it) and for a running call of its proxy
 *    resolver; tether_client_connect, while it reads the OS trust store (use_os_trust) or
 *    loads the in-process library, and close, close_keep_resume and tether_store_new on
 *    that client meanwhile; tether_set_log_callback, for the log thread to let go of the
 *    old callback; and the tether_store_* calls, while received events are applied (the
 *    first sync may take a while) or another call on the same store runs.
 *  - A tether_client and a tether_store may be used from several threads at once, except
 *    that their free must not race any other call on the same handle (but a client's own
 *    event callback may be inside a call: free waits for it). A tether_config, a
 *    tether_batch and a tether_settings must not be used from two threads at once. An
 *    event may be read from several threads at once and freed from any thread, once; an
 *    event lent to a callback only until the callback returns.
 *  - Events are consumed in one of two modes, chosen by the first call that consumes:
 *    poll mode (tether_client_poll, tether_client_poll_batch, tether_client_event_fd) or
 *    callback mode (tether_client_set_event_callback). Mixing them returns
 *    TETHER_ERR_WRONG_MODE.
 *  - Callback mode runs every callback on one dispatcher thread per client
 *    ("tether-dispatch"): serialised, in event order, never on an I/O thread. The
 *    callback may call any function but the poll-mode ones on its own client (request,
 *    cancel, close, close_keep_resume, pause, the store's calls, even _free) and on others.
 *    Freeing another client waits for that client's running callback, so two callbacks
 *    that free each other's clients wait for each other for ever. destroy(ctx) runs
 *    exactly once, after the last callback.
 *  - The log callback (tether_set_log_callback) is process-wide and runs on one more
 *    library thread ("tether-log"), so a slow callback drops records, never stalls I/O.
 *  - After fork(), every tether_* call in the child returns TETHER_ERR_FORKED (or the
 *    documented fallback) once the parent has created a client; tether_status_str,
 *    tether_last_error and the version functions keep working. A child forked inside an
 *    event or log callback must exec or _exit before it returns from the callback: the
 *    library thread it returns to would otherwise go on in the child with the parent's
 *    copied state (queued events delivered again, then waiting for ever).
 *
 * SHUTDOWN
 *  1. tether_client_close(c): the library sends the protocol's close frame
 *     (gomuks: 1001) and ends the session; no new requests are accepted.
 *     tether_client_close_keep_resume(c) does the same with gomuks close code 1000, so
 *     the backend keeps the events a later client resuming from
 *     tether_client_resume_state will need.
 *  2. Keep consuming events until TETHER_EVENT_CLOSED (the last event); pending requests
 *     complete first (with their reply if it comes before the server's close reply, else
 *     TETHER_ERR_CLIENT_CLOSED), and rwws packets never written come back as
 *     TETHER_EVENT_UNSENT. tether_client_poll then returns TETHER_CLOSED. In callback
 *     mode, destroy(ctx) follows the CLOSED callback. Read tether_client_resume_state
 *     after CLOSED: events delivered during the close move it.
 *  3. tether_client_free(c).
 *  Freeing without closing is also fine: free closes the connection in the background
 *  (as tether_client_close_keep_resume does), discards queued events, stops the dispatcher (waiting for a running callback unless
 *  called from it) and returns without waiting for the network.
 */


#ifndef TETHER_H
#define TETHER_H

/* Generated by cbindgen from the tether sources (cargo xtask header). Do not edit. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Version of the tether library this header belongs to (from Cargo.toml). */
#define TETHER_VERSION_MAJOR 0
#define TETHER_VERSION_MINOR 1
#define TETHER_VERSION_PATCH 0
#define TETHER_VERSION_STRING "0.1.0"
/** (MAJOR << 16) | (MINOR << 8) | PATCH; compare with tether_version_number(). */
#define TETHER_VERSION_NUMBER ((0u << 16) | (1u << 8) | 0u)


/**
 * A connection attempt starts (in-process: the backend is being started).
 */
#define TETHER_EVENT_CONNECTING 1

/**
 * The websocket is open (and, for rwws, authenticated); in-process: the backend started.
 */
#define TETHER_EVENT_CONNECTED 2

/**
 * The connection ended; see status, close code, reason and whether a retry follows.
 * In-process: the backend stopped (closed by the app, or its start failed); never
 * retried.
 */
#define TETHER_EVENT_DISCONNECTED 3

/**
 * A server event (gomuks: every non-reply message, `run_id` and friends included;
 * in-process: every event of the backend's callback, all with id 0).
 */
#define TETHER_EVENT_MESSAGE 4

/**
 * The reply to a request (success or failure, see status).
 */
#define TETHER_EVENT_RESPONSE 5

/**
 * A keepalive reply, with the round-trip time.
 */
#define TETHER_EVENT_PONG 6

/**
 * rwws: a packet the library does not consume.
 */
#define TETHER_EVENT_PACKET 7

/**
 * The client is closed; always the last event.
 */
#define TETHER_EVENT_CLOSED 8

/**
 * gomuks: what became of the resume this connection asked for (CONNECTED said
 * `resume_attempted`): see the resume outcome. Once per such connection, as soon as the
 * first messages decide it, and before the message that decided it (`run_id`,
 * `sync_complete` with `clear_state`, or `init_complete`), so an app that drops its cache
 * on a reset does so before the fresh state arrives (gomuks-rpc.md §7.2, §7.5). None when
 * the connection ends before the outcome is known (the next one asks again).
 */
#define TETHER_EVENT_RESUMED 9

/**
 * gomuks: a new `gomuks_auth` token replaced the one the client held (a renewal while
 * connected before the old one expires, one before a reconnect or after a 401, or a new
 * login with the configured username and password); read it with `auth_token()` and
 * persist it in place of the old one. Carries no secret (gomuks-rpc.md §1.2). The first
 * token of a password login is not announced: read it after CONNECTED.
 */
#define TETHER_EVENT_TOKEN_RENEWED 10

/**
 * In-process: progress of the media upload with this request id (see `progress`; the
 * data is the same number as JSON). Any number of them precede the upload's RESPONSE.
 */
#define TETHER_EVENT_PROGRESS 11

/**
 * In-process: the next bytes of the media download with this request id (the data).
 * They arrive in order, before the download's RESPONSE.
 */
#define TETHER_EVENT_CHUNK 12

/**
 * A store attached to this client applied an event or an answer (see `Store`): the data
 * is the JSON change set (`gen`, what changed, the ids). It follows the MESSAGE (or
 * CONNECTED, DISCONNECTED with a retry) it reflects and precedes the RESPONSE of a store action, so a read after either sees the
 * change.
 */
#define TETHER_EVENT_STORE 13

/**
 * A request, packet or upload was refused (SEND_BUFFER_FULL), and enough has been
 * written (or has ended) since that the largest message refused would fit with at most
 * half of `max_unsent_bytes` waiting: send again. One per run of refusals, however many
 * calls were refused; an app that is never refused never sees one, and none follows the
 * DISCONNECTED that ends the client for good, or a close (bar one already under way).
 * Carries nothing. Another thread (a callback, an event-fd loop) may get it before the
 * refused call has returned to its caller: keep what was refused where the handler finds
 * it, under the lock the send holds.
 */
#define TETHER_EVENT_SEND_READY 14

/**
 * rwws: a packet the client took (`send_packet`, `send_settings`) but never wrote,
 * handed back as the client ends (the app closed it, or it stopped for good) so nothing
 * is lost without a word: the data is the packet's bytes, ready to send again on another
 * client. One per packet, in the order they were sent, after the DISCONNECTED of a stop
 * for good and before CLOSED; the status is CLIENT_CLOSED (PANIC after an internal
 * panic, before its DISCONNECTED). Written means handed to the
 * connection: the websocket writer's buffer (about 128 KiB) and the kernel's send
 * buffer hold what the peer has not taken yet, and what they hold when a connection is
 * cut, or a close runs out of time against a peer that stopped reading, is lost with it;
 * the protocol has no acknowledgement to tell. Freeing (dropping) a client without
 * closing it discards its events, these too.
 */
#define TETHER_EVENT_UNSENT 15

/**
 * The resume succeeded: every event missed since the resume point is delivered exactly
 * once, in order, before `init_complete`; the app's cached state stays valid.
 */
#define TETHER_RESUME_SUCCEEDED 1

/**
 * The server's state was reset (the backend restarted and its `run_id` changed, or its
 * event buffer no longer held the resume point): missed events are lost and the server
 * sends its state afresh (`sync_complete` with `clear_state`); drop the cached state.
 */
#define TETHER_RESUME_RESET 2

/**
 * The resume point was gone (the backend restarted or no longer held it, as for `Reset`),
 * but the app configured `last_server_ts`, so the server sends what changed since then as
 * one `sync_complete` with `catchup` instead of the missed events: the cached state stays
 * valid once that is applied; the missed events themselves are not delivered
 * (gomuks-rpc.md §6.1).
 */
#define TETHER_RESUME_CAUGHT_UP 3

/**
 * Created; `connect` was not called yet.
 */
#define TETHER_STATE_IDLE 0

/**
 * A connection attempt runs (TCP, TLS, upgrade, handshake).
 */
#define TETHER_STATE_CONNECTING 1

/**
 * Connected.
 */
#define TETHER_STATE_CONNECTED 2

/**
 * Between attempts, waiting out the backoff delay.
 */
#define TETHER_STATE_WAITING 3

/**
 * Closed for good (by the app, or the server refused us for good).
 */
#define TETHER_STATE_CLOSED 4

/**
 * Paused by the app: no connection and no attempt until it unpauses.
 */
#define TETHER_STATE_PAUSED 5

/**
 * The client gave up or a call failed in a way the app must handle.
 */
#define TETHER_LOG_ERROR 1

/**
 * An attempt to connect failed (refused, timed out) and will be retried, or the library
 * closed a connection over a server's bad message.
 */
#define TETHER_LOG_WARN 2

/**
 * The connection's life: attempts, connections, closes, resumes, backoff. A connection
 * that dropped and will be resumed is normal life on a phone, so it is logged here.
 */
#define TETHER_LOG_INFO 3

/**
 * Details: timings of each step, requests that timed out, ignored messages.
 */
#define TETHER_LOG_DEBUG 4

/**
 * Everything else the library notices.
 */
#define TETHER_LOG_TRACE 5

/**
 * `data_offset` of every entry of a lending batch: its payload is not in the batch buffer;
 * `tether_batch_payloads` lends it.
 */
#define TETHER_BATCH_DATA_LENT UINT64_MAX

/**
 * gomuks JSON RPC over `/_gomuks/websocket` (the default).
 */
#define TETHER_PROTOCOL_GOMUKS 1

/**
 * rwws binary packets over `/api/ws`.
 */
#define TETHER_PROTOCOL_RWWS 2

/**
 * A reusable container for `tether_client_poll_batch`. Create with `tether_batch_new`, free
 * with `tether_batch_free`. Not thread-safe: one batch per polling thread.
 */
typedef struct tether_batch tether_batch;

/**
 * A connection to one backend, kept alive and resumed across drops. Create with
 * `tether_client_new`, free with `tether_client_free`.
 */
typedef struct tether_client tether_client;

/**
 * Connection settings; create with `tether_config_new`, free with `tether_config_free`.
 * A client copies what it needs, so a config may be freed or reused right after
 * `tether_client_new`. Not thread-safe: use one config from one thread at a time.
 */
typedef struct tether_config tether_config;

/**
 * One event, taken with `tether_client_poll` (owned; free with `tether_event_free`) or lent to
 * an event callback (borrowed for the call only).
 */
typedef struct tether_event tether_event;

/**
 * The answer a `tether_proxy_resolver_cb` gives, set with `tether_proxy_answer_set`. Lent to
 * the callback for the duration of the call only.
 */
typedef struct tether_proxy_answer tether_proxy_answer;

/**
 * rwws settings to send with `tether_client_send_settings`. Create with
 * `tether_settings_new`, free with `tether_settings_free`. Not thread-safe.
 */
typedef struct tether_settings tether_settings;

/**
 * A store attached to one gomuks client: room list, timelines, state, receipts and local
 * echo, kept from the client's events. Create with `tether_store_new`, free with
 * `tether_store_free`. Every function may be called from any thread, at the same time,
 * except `tether_store_free`, which must not race any other call on the store. The actions
 * write their request id to `out_request_id`, which must not be NULL (`TETHER_ERR_NULL`,
 * nothing sent). The store may outlive its client (reads keep working, actions fail with
 * `TETHER_ERR_STATE`).
 */
typedef struct tether_store tether_store;

/**
 * Result of a fallible call: `TETHER_OK` (0), a positive informational value, or a negative
 * `TETHER_ERR_*`.
 */
typedef int32_t tether_status;

/**
 * One event of a batch. `command_*` and `data_*` locate the command name (no NUL) and the
 * payload (as `tether_event_data`) inside the batch buffer; entries with the same command
 * name share its bytes (the same `command_offset`). Fields that do not apply to the
 * kind hold the same values as the single-event accessors return (0, or -1 for `rtt_us` and
 * `retry_in_ms`).
 */
typedef struct tether_batch_entry {
    /**
     * As `tether_event_request_id`. Offset 0.
     */
    int64_t request_id;
    /**
     * Offset of the payload in the buffer. Offset 8.
     */
    uint64_t data_offset;
    /**
     * Length of the payload. Offset 16.
     */
    uint64_t data_len;
    /**
     * As `tether_event_acked_id`. Offset 24.
     */
    int64_t acked_id;
    /**
     * As `tether_event_server_time_ms`. Offset 32.
     */
    int64_t server_time_ms;
    /**
     * As `tether_event_rtt_us`. Offset 40.
     */
    int64_t rtt_us;
    /**
     * As `tether_event_retry_in_ms`. Offset 48.
     */
    int64_t retry_in_ms;
    /**
     * As `tether_event_kind`. Offset 56.
     */
    uint32_t kind;
    /**
     * As `tether_event_status`. Offset 60.
     */
    tether_status status;
    /**
     * Offset of the command name in the buffer. Offset 64.
     */
    uint32_t command_offset;
    /**
     * Length of the command name (0 for none). Offset 68.
     */
    uint32_t command_len;
    /**
     * As `tether_event_attempt`. Offset 72.
     */
    uint32_t attempt;
    /**
     * As `tether_event_close_code`. Offset 76.
     */
    uint16_t close_code;
    /**
     * As `tether_event_resume_attempted` (0 or 1). Offset 78.
     */
    uint8_t resume_attempted;
    /**
     * As `tether_event_resume_outcome` (0, or a `TETHER_RESUME_*` value). Offset 79.
     */
    uint8_t resume_outcome;
} tether_batch_entry;

/**
 * One payload a batch lends: `len` bytes at `ptr`. `ptr` is never NULL (with `len` 0 it
 * addresses nothing).
 */
typedef struct tether_bytes {
    /**
     * First byte. Offset 0.
     */
    const uint8_t *ptr;
    /**
     * Number of bytes. Offset 8.
     */
    size_t len;
} tether_bytes;

/**
 * Called with each event. `ev` is borrowed for the duration of the call only.
 */
typedef void (*tether_event_cb)(void *ctx, const struct tether_event *ev);

/**
 * Called once with `ctx` after the last event callback.
 */
typedef void (*tether_destroy_cb)(void *ctx);

/**
 * Says which proxy one connection takes: `url` is the URL about to be opened (NUL-terminated
 * UTF-8, valid during the call: `ws[s]://host:port/path`, or `http[s]://host:port/_gomuks/auth`
 * for the gomuks login, the scheme following the configured URL's; no query). Set the answer
 * with `tether_proxy_answer_set` and return `TETHER_OK`; leaving it unset leaves the decision
 * to `tether_config_set_proxy` and the environment. `TETHER_ERR_CONFIG` ends the client with
 * that status (the app's settings cannot work); any other return value fails that connection
 * attempt (`TETHER_ERR_CONNECT`, retried with backoff). Runs on a blocking thread of the
 * library, never on a network thread; one call per client at a time (an attempt that timed
 * out waiting for a call leaves it running, and the next attempt waits for it to return
 * before calling again), but clients made from one config may call it at once. It may block
 * (a PAC script, an OS lookup), and its time counts against the attempt's limit (twice the
 * connect timeout): an attempt that ran out of time while it was still running says so ("the
 * proxy resolver has not answered for N ms"), and a resolver that is always slower than that
 * fails every attempt (raise the connect timeout, or answer from a cache of its own).
 * `tether_client_free` waits for a call in progress for that client, so none runs once it
 * has returned; called from inside that call it returns without waiting. Freeing another
 * client from inside a resolver waits for that client's call: two resolvers that each free
 * the other's client at the same time wait for each other for ever, like two threads joining
 * each other.
 */
typedef tether_status (*tether_proxy_resolver_cb)(void *ctx, const char *url, struct tether_proxy_answer *answer);

/**
 * One log record, lent to a `tether_log_cb` for the duration of the call.
 */
typedef struct tether_log_record {
    /**
     * `TETHER_LOG_ERROR` (1) to `TETHER_LOG_TRACE` (5).
     */
    uint32_t level;
    /**
     * The part of the library that wrote it ("tether::session", "tether::gomuks", ...).
     */
    const char *target;
    /**
     * `tether_client_id` of the client it belongs to; 0 for none.
     */
    uint64_t client_id;
    /**
     * What happened, NUL-terminated UTF-8. Never holds a token, password, cookie or key.
     */
    const char *message;
    /**
     * When it happened, in microseconds since the Unix epoch (the callback may run a little
     * later). Fields are only ever added after this one.
     */
    int64_t unix_time_us;
} tether_log_record;

/**
 * Receives log records on the library's `tether-log` thread, one at a time, in order. The
 * record and its strings are valid only during the call. It may do anything but call
 * `tether_set_log_callback`, or free a client whose event callback or proxy resolver may be
 * inside `tether_set_log_callback` at that moment (see there).
 */
typedef void (*tether_log_cb)(void *ctx, const struct tether_log_record *record);

/**
 * A client's statistics, filled by `tether_client_stats`. Set `size` to
 * `sizeof(tether_stats)` before the call: the struct only grows at its end, so a program
 * built against an older header keeps working with a newer library, which fills only the
 * fields that fit in `size`.
 */
typedef struct tether_stats {
    /**
     * In: the size of the caller's struct. Out: how many bytes the library filled.
     */
    uint32_t size;
    /**
     * `TETHER_STATE_*`, as `tether_client_state` reports it.
     */
    uint32_t state;
    /**
     * Connection attempts started.
     */
    uint64_t connect_attempts;
    /**
     * Attempts that ended connected (for rwws: authenticated).
     */
    uint64_t connections;
    /**
     * gomuks: connections that asked to resume and got every missed event.
     */
    uint64_t resumes_succeeded;
    /**
     * gomuks: connections that asked to resume and got a fresh state (or a catchup) instead.
     */
    uint64_t resumes_reset;
    /**
     * Bytes read from the network by the websocket's connections (a proxy's handshake, TLS,
     * the upgrade and the framing included; the gomuks login request is not counted).
     */
    uint64_t wire_bytes_in;
    /**
     * Bytes written to the network by the websocket's connections (a proxy's handshake, TLS,
     * the upgrade and the framing included; the gomuks login request is not counted).
     */
    uint64_t wire_bytes_out;
    /**
     * Bytes of the received messages after decompression: compression saved
     * `1 - wire_bytes_in / payload_bytes_in`.
     */
    uint64_t payload_bytes_in;
    /**
     * Websocket data messages received (0 in-process, where no websocket carries the
     * backend's events, nor any bytes: only `events_received` counts them).
     */
    uint64_t messages_received;
    /**
     * Server events received (gomuks: not replies or pongs; rwws: packets).
     */
    uint64_t events_received;
    /**
     * Requests written to a connection (in-process: handed to the backend).
     */
    uint64_t requests_sent;
    /**
     * Requests without an outcome yet.
     */
    uint64_t requests_in_flight;
    /**
     * Requests that ended with `TETHER_ERR_REQUEST_TIMEOUT`.
     */
    uint64_t requests_timed_out;
    /**
     * Events waiting to be taken.
     */
    uint64_t queued_events;
    /**
     * Round-trip time of the last ping answered with a measured round trip (see
     * `tether_event_rtt_us`) in microseconds; -1 before the first.
     */
    int64_t last_rtt_us;
    /**
     * How long the current connection has been up, in milliseconds; -1 while not connected.
     */
    int64_t connected_ms;
    /**
     * Bytes of requests and packets waiting to be written: made while disconnected, or
     * faster than the uplink carries. At most `max_unsent_bytes` (one larger message alone
     * excepted); a send that would pass it fails with `TETHER_ERR_SEND_BUFFER_FULL`. Added
     * after the first version of the struct: a caller whose `size` ends before it gets
     * everything else.
     */
    uint64_t unsent_bytes;
} tether_stats;

/**
 * Success.
 */
#define TETHER_OK 0

/**
 * `poll` found no event before its timeout.
 */
#define TETHER_TIMEOUT 1

/**
 * The client is closed and its final CLOSED event has been taken.
 */
#define TETHER_CLOSED 2

/**
 * A required pointer argument was NULL.
 */
#define TETHER_ERR_NULL (-1)

/**
 * An argument was out of range or malformed.
 */
#define TETHER_ERR_INVALID_ARGUMENT (-2)

/**
 * A string argument was not valid UTF-8, or a payload was not valid JSON.
 */
#define TETHER_ERR_INVALID_UTF8 (-3)

/**
 * The call is not valid in the client's current state (e.g. connect twice, request after close).
 */
#define TETHER_ERR_STATE (-4)

/**
 * Poll mode and callback mode were mixed.
 */
#define TETHER_ERR_WRONG_MODE (-5)

/**
 * An internal panic was caught. Inside a call on a client: every later call that takes
 * that `tether_client` is refused (free still works; a store attached to it keeps
 * working); on another handle, only that call failed. In a client's session task: each
 * request in flight gets a RESPONSE of this status and each rwws packet not yet written
 * an UNSENT of this status, then come a DISCONNECTED of this status and CLOSED, all
 * taken as usual; the client's state is CLOSED, later requests and sends fail with this
 * status, and its statistics and resume state still answer.
 */
#define TETHER_ERR_PANIC (-6)

/**
 * The process forked after the library started; nothing works in the child.
 */
#define TETHER_ERR_FORKED (-7)

/**
 * The configuration is invalid (missing URL, bad scheme, bad key, ...).
 */
#define TETHER_ERR_CONFIG (-8)

/**
 * A caller-supplied buffer was too small (the needed size is reported).
 */
#define TETHER_ERR_BUFFER_TOO_SMALL (-9)

/**
 * The call does not apply to this client's transport or protocol (pause, unpause and
 * reconnect in-process; media uploads and downloads over the websocket; a download from
 * a backend library without streaming download).
 */
#define TETHER_ERR_UNSUPPORTED (-10)

/**
 * Held by another client: the in-process backend's data root (a lock file guards it
 * across processes), or the one in-process backend a process can run at a time.
 */
#define TETHER_ERR_IN_USE (-11)

/**
 * More bytes of requests and packets already wait to be written than the client's
 * `max_unsent_bytes` allows with this one: the call took nothing; make it again after the
 * SEND_READY event that follows once room frees.
 */
#define TETHER_ERR_SEND_BUFFER_FULL (-12)

/**
 * The server answered a request with an `error` reply.
 */
#define TETHER_ERR_REMOTE (-20)

/**
 * A request got no reply within its timeout (a `cancel` was sent).
 */
#define TETHER_ERR_REQUEST_TIMEOUT (-21)

/**
 * A request was cancelled by the caller.
 */
#define TETHER_ERR_CANCELLED (-22)

/**
 * The connection dropped before the request was answered; its outcome is unknown.
 */
#define TETHER_ERR_DISCONNECTED (-23)

/**
 * The client was closed before the request was answered: by the app, or for good by
 * the library after an error it does not retry (the RESPONSE's text then says which).
 */
#define TETHER_ERR_CLIENT_CLOSED (-24)

/**
 * TCP connect or I/O failure (refused, reset, unreachable, connect timeout).
 */
#define TETHER_ERR_CONNECT (-30)

/**
 * The TLS handshake failed for another reason than a certificate (the connection broke
 * during the handshake, no common protocol version, a bad record); retried with backoff.
 * Also: the OS trust store holds no usable certificate (`use_os_trust`).
 */
#define TETHER_ERR_TLS (-31)

/**
 * The server rejected the credentials (HTTP 401 after one re-authentication).
 */
#define TETHER_ERR_UNAUTHORIZED (-32)

/**
 * The server refused the request (HTTP 403, e.g. Origin check).
 */
#define TETHER_ERR_FORBIDDEN (-33)

/**
 * The websocket upgrade failed with another HTTP status.
 */
#define TETHER_ERR_HTTP (-34)

/**
 * Nothing was received within the receive timeout.
 */
#define TETHER_ERR_RECEIVE_TIMEOUT (-35)

/**
 * The server closed the websocket with a close frame (see the close code).
 */
#define TETHER_ERR_REMOTE_CLOSED (-36)

/**
 * A certificate was refused: the server's or an `https://` proxy's (unknown issuer,
 * wrong name, expired, not yet valid, no pin matches a key of the server's verified
 * chain) or ours (the server refused or required a client certificate; an `https://`
 * proxy that requires one, which it is never shown, refuses this way too when it
 * answers with a TLS alert).
 * Final: it would fail the same way on every attempt, so the client stops instead of
 * retrying; reconnect with a new client once the configuration or the server changed.
 */
#define TETHER_ERR_CERTIFICATE (-37)

/**
 * The server violated the protocol (wrong frame type, missing envelope field, bad packet).
 */
#define TETHER_ERR_PROTOCOL (-40)

/**
 * Server data could not be inflated (invalid or truncated deflate stream).
 */
#define TETHER_ERR_INFLATE (-41)

/**
 * Server data was not valid JSON or not valid UTF-8.
 */
#define TETHER_ERR_JSON (-42)

/**
 * A server message exceeded the configured size cap (after decompression).
 */
#define TETHER_ERR_MESSAGE_TOO_LARGE (-43)

/**
 * rwws: the server's protocol version does not match (close 3002).
 */
#define TETHER_ERR_VERSION_MISMATCH (-50)

/**
 * rwws: the access key was revoked (close 3004).
 */
#define TETHER_ERR_KEY_REVOKED (-51)

/**
 * In-process: the backend could not open its database (`GomuksStart` returned 10).
 */
#define TETHER_ERR_BACKEND_DATABASE (-60)

/**
 * In-process: the backend could not look up its account (`GomuksStart` returned 11).
 */
#define TETHER_ERR_BACKEND_ACCOUNT (-61)

/**
 * In-process: the backend failed to start (`GomuksStart` returned 12, or another
 * non-zero code), e.g. a logged-in account whose homeserver is unreachable.
 */
#define TETHER_ERR_BACKEND_START (-62)

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Creates a batch that holds up to `max_events` events (at least 1). `*out` receives a batch
 * owned by the caller (free with `tether_batch_free`). `TETHER_ERR_INVALID_ARGUMENT` for 0.
 */
tether_status tether_batch_new(size_t max_events, struct tether_batch **out);

/**
 * Creates a batch like `tether_batch_new` that lends the payloads where the library
 * received them instead of copying them into its buffer: for readers that use each payload
 * in place, a copy saved per event. Each entry's `data_offset` is `TETHER_BATCH_DATA_LENT`
 * (only the command names are in the buffer); take the payloads from
 * `tether_batch_payloads`. Until its next `tether_client_poll_batch` or `tether_batch_free`
 * the batch keeps the taken events' memory alive. `*out` receives a batch owned by the
 * caller (free with `tether_batch_free`). `TETHER_ERR_INVALID_ARGUMENT` for 0.
 */
tether_status tether_batch_new_lending(size_t max_events, struct tether_batch **out);

/**
 * Waits up to `timeout_ms` (0: do not wait; negative: until one arrives) for an event, then
 * moves it and every other queued event, up to the batch's capacity, into `batch`, replacing
 * what it held. Returns `TETHER_OK` with `*out_count` (may be NULL) set to the number of
 * events (at least 1); `TETHER_TIMEOUT` or `TETHER_CLOSED` (as `tether_client_poll`) with the
 * batch emptied. A CLOSED event is always the last entry. Puts the client in poll mode.
 * Any thread, but one batch per thread.
 *
 * The batch buffer holds at most 4 GiB: an event that would take it further stays queued
 * for the next call. If the first event alone is larger, nothing is taken and
 * `TETHER_ERR_MESSAGE_TOO_LARGE` is returned with the batch emptied and the event still
 * queued; take it with `tether_client_poll`.
 */
tether_status tether_client_poll_batch(struct tether_client *c, int32_t timeout_ms, struct tether_batch *batch, size_t *out_count);

/**
 * Lends the batch's contents until its next `tether_client_poll_batch` or `tether_batch_free`:
 * `*entries` and `*count` the entries, `*bytes` and `*bytes_len` the buffer they point into
 * (in a lending batch, the command names only). Pointers are never NULL on success (they
 * may address 0 items). `TETHER_ERR_NULL` if any argument is NULL; no output is written
 * then.
 */
tether_status tether_batch_view(const struct tether_batch *batch, const struct tether_batch_entry **entries, size_t *count, const uint8_t **bytes, size_t *bytes_len);

/**
 * Lends one `tether_bytes` per entry, in entry order, until the batch's next
 * `tether_client_poll_batch` or `tether_batch_free`: `*payloads` and `*count` (the entry
 * count). In a batch from `tether_batch_new` they point into its buffer, in a lending batch
 * to where the library received each payload; either way the same bytes as
 * `tether_event_data`. Any thread, but not while another uses the batch. `TETHER_ERR_NULL`
 * if any argument is NULL; no output is written then.
 */
tether_status tether_batch_payloads(const struct tether_batch *batch, const struct tether_bytes **payloads, size_t *count);

/**
 * Empties the batch now, as the next `tether_client_poll_batch` into it would: what it
 * lent is released, and its events count as taken by the app in the resume state
 * (`tether_client_resume_state`). For a consumer that moves a batch's events elsewhere
 * before the app sees them, and then calls this. NULL is fine. The batch's thread only.
 */
void tether_batch_clear(struct tether_batch *batch);

/**
 * Frees a batch. NULL is fine; never twice.
 */
void tether_batch_free(struct tether_batch *batch);

/**
 * Creates a client from `cfg` (copied; the config may be freed right after). Nothing happens
 * on the network until `tether_client_connect`. `*out` receives a client owned by the caller
 * (free with `tether_client_free`). `TETHER_ERR_CONFIG` with the reason in
 * `tether_last_error()` if the configuration is invalid; `TETHER_ERR_NULL` for NULL. Any
 * thread.
 */
tether_status tether_client_new(const struct tether_config *cfg, struct tether_client **out);

/**
 * Starts connecting in the background and returns at once; progress arrives as events
 * (CONNECTING, CONNECTED, MESSAGE..., DISCONNECTED with the reason and whether a retry
 * follows). `TETHER_ERR_STATE` if already connected once or closed. Any thread.
 */
tether_status tether_client_connect(struct tether_client *c);

/**
 * Sends a request: `command` (NUL-terminated UTF-8) with `data` as JSON (`len` bytes; NULL
 * with `len` 0 means `{}`), both copied. Returns at once; the reply arrives as a RESPONSE
 * event carrying the id written to `*out_request_id` (may be NULL). Requests made while
 * disconnected are sent once connected. The config's request timeout applies, counted
 * from this call; before `tether_client_connect` nothing runs the timers, so a request
 * made then waits for it (one whose timeout passed meanwhile ends at once). gomuks only:
 * `TETHER_ERR_STATE` for rwws clients (use `tether_client_send_packet`).
 * `TETHER_ERR_INVALID_UTF8` if `data` is not JSON or `command` not UTF-8;
 * `TETHER_ERR_INVALID_ARGUMENT` for an empty command, for `ping` (the library sends the
 * pings, and their replies would move its acknowledgements), for `data` that is `null` (gomuks
 * handlers dereference it: the backend would close the connection), and over the
 * websocket for a request over the backend's 1 MiB limit for one message (it would close
 * the connection, failing every request in flight);
 * `TETHER_ERR_SEND_BUFFER_FULL` if it would pass `max_unsent_bytes` (nothing taken, no
 * id written); `TETHER_ERR_STATE` after close, and over the websocket for a command
 * that needs the account (`get_profile`, `send_message`, ...; README, "The bundled
 * backend") while the backend's latest `client_state` says it is not logged in (its
 * handler would panic and the backend close the connection; in-process such a request is
 * answered `TETHER_ERR_STATE` as a RESPONSE). Any thread, including inside an event
 * callback.
 */
tether_status tether_client_request(struct tether_client *c, const char *command, const uint8_t *data, size_t len, int64_t *out_request_id);

/**
 * `tether_client_request` with its own timeout in milliseconds (must be positive:
 * `TETHER_ERR_INVALID_ARGUMENT` for 0); otherwise exactly as `tether_client_request`
 * (`out_request_id` may be NULL; any thread, including inside an event callback).
 */
tether_status tether_client_request_with_timeout(struct tether_client *c, const char *command, const uint8_t *data, size_t len, uint32_t timeout_ms, int64_t *out_request_id);

/**
 * In-process clients: uploads media with progress. `params` (`params_len` bytes) is the
 * JSON of gomuks's `upload_media` (`filename`, `encrypt`, `voice_message`, resize
 * options, ...). With `bytes` non-NULL the `bytes_len` bytes are uploaded (copied before
 * the call returns); with `bytes` NULL and `bytes_len` 0 the file named by `"path"` in the
 * params is (NULL with a length is `TETHER_ERR_NULL`). Bytes and a `"path"`, or neither,
 * is `TETHER_ERR_INVALID_ARGUMENT`.
 * `timeout_ms` 0 means the configured request timeout. `*out_request_id` (optional)
 * receives the id: PROGRESS events for it (`tether_event_progress`) come
 * first, then one RESPONSE with the `m.room.message` content to send. Websocket clients:
 * `TETHER_ERR_UNSUPPORTED` (use the backend's HTTP upload endpoint). The bytes count
 * against `max_unsent_bytes` until the backend takes them (`TETHER_ERR_SEND_BUFFER_FULL`
 * past it, nothing taken; one upload larger than it goes while nothing else waits). Any
 * thread.
 */
tether_status tether_client_upload_media(struct tether_client *c, const uint8_t *params, size_t params_len, const uint8_t *bytes, size_t bytes_len, uint32_t timeout_ms, int64_t *out_request_id);

/**
 * In-process clients: downloads media as a stream. `params` is the JSON of gomuks's
 * `download_media` (`mxc`, `encrypted`, ...). `timeout_ms` 0 means the configured request
 * timeout. `*out_request_id` (optional) receives the id: CHUNK events for it carry the
 * file's bytes in order (for uncached, unencrypted media), then one RESPONSE carries the
 * cached file's row and path. A backend library without streaming download (gomuks
 * v0.2607.0 has none) answers with `TETHER_ERR_UNSUPPORTED` in the RESPONSE. Websocket
 * clients: `TETHER_ERR_UNSUPPORTED` from this call. Any thread.
 */
tether_status tether_client_download_media(struct tether_client *c, const uint8_t *params, size_t params_len, uint32_t timeout_ms, int64_t *out_request_id);

/**
 * Cancels request `request_id`: its RESPONSE arrives with `TETHER_ERR_CANCELLED` (unless the
 * reply won the race), and the server is told if it has the request and the client is
 * online (a request not written yet is dropped unsent; offline, nothing is sent; an
 * in-process backend cannot be told, and its late answer is dropped).
 * `TETHER_ERR_INVALID_ARGUMENT` for an id this client never issued (the ids of the
 * library's own pings count as issued: cancelling one does nothing). After close:
 * `TETHER_OK` while the client is closing (the request ends CANCELLED unless the close
 * ended it first, with `TETHER_ERR_CLIENT_CLOSED`), `TETHER_ERR_STATE` once it has
 * stopped, from the moment `tether_client_state` reads `TETHER_STATE_CLOSED` (its
 * requests have all ended or are ending). Any thread.
 */
tether_status tether_client_cancel(struct tether_client *c, int64_t request_id);

/**
 * rwws: sends one raw packet (`len` bytes, copied, one binary websocket message); queued while
 * disconnected. The library already sends Ping (`00`) itself. `TETHER_ERR_STATE` for gomuks
 * clients and after close; `TETHER_ERR_INVALID_ARGUMENT` for 0 bytes;
 * `TETHER_ERR_SEND_BUFFER_FULL` if it would pass `max_unsent_bytes` (nothing taken). A
 * packet the client ends without having written (a close while offline, a stop for good
 * such as a 3001) comes back in a `TETHER_EVENT_UNSENT` event with its bytes, before
 * CLOSED; once the state reads `TETHER_STATE_CLOSED`, `TETHER_ERR_STATE` and nothing is
 * taken. Any thread.
 */
tether_status tether_client_send_packet(struct tether_client *c, const uint8_t *bytes, size_t len);

/**
 * Takes the next event, waiting up to `timeout_ms` (0: do not wait; negative: wait until one
 * arrives). Returns `TETHER_OK` with `*out` set to an event the caller frees with
 * `tether_event_free`; `TETHER_TIMEOUT` if none arrived; `TETHER_CLOSED` once the CLOSED event
 * has been taken (every later call too). Puts the client in poll mode
 * (`TETHER_ERR_WRONG_MODE` if a callback is set). Any thread; concurrent pollers each get
 * different events. The event owns what it carries and stays valid after
 * `tether_client_free`.
 */
tether_status tether_client_poll(struct tether_client *c, int32_t timeout_ms, struct tether_event **out);

/**
 * A descriptor that is readable while events are queued (Linux: an eventfd; elsewhere a
 * pipe), for select/poll/epoll/kqueue/asyncio/libuv. Wait on it, then call
 * `tether_client_poll` with timeout 0 until `TETHER_TIMEOUT`, or `TETHER_CLOSED`: CLOSED was
 * taken, the descriptor is not readable again, and the loop should stop waiting on it.
 * Only wait for readability and
 * never read or close it: the library resets it when the queue drains and closes it in
 * `tether_client_free` (remove it from your poll set before). The same descriptor is returned
 * on every call. Puts the client in poll mode. Returns -1 (reason in `tether_last_error()`)
 * for NULL, in callback mode, for a client an internal panic poisoned, or if no
 * descriptor could be created.
 */
int tether_client_event_fd(const struct tether_client *c);

/**
 * Delivers every event to `cb(ctx, ev)` on a dedicated dispatcher thread, one at a time and
 * in order; `ev` is borrowed for the call (do not free it; copy what you keep). Events queued
 * before this call are delivered too. `destroy(ctx)` (may be NULL) runs exactly once on that
 * thread after the last callback: after the CLOSED event, or when the client is freed.
 * Inside `cb` you may call `tether_client_request`, `_cancel`, `_close` and `_free` on this
 * client; do not block for long, since events wait behind the callback. On failure nothing is
 * started and `destroy(ctx)` runs at once, on the calling thread, before this returns: as
 * for every function taking a `destroy`, it runs exactly once whatever the call returns,
 * except `TETHER_ERR_FORKED` (nothing is called; `ctx` stays the app's).
 * `TETHER_ERR_NULL` if `c` or `cb` is NULL; `TETHER_ERR_WRONG_MODE` after poll mode was
 * used; `TETHER_ERR_STATE` if a callback is already set, or the client is being freed (a
 * call from the running callback while another thread frees it); `TETHER_ERR_PANIC` for a
 * client an internal panic poisoned.
 */
tether_status tether_client_set_event_callback(struct tether_client *c, tether_event_cb cb, void *ctx, tether_destroy_cb destroy);

/**
 * Closes gracefully for good and returns at once: if connected, the close frame is sent
 * (gomuks: 1001, so the backend frees the events it kept for this client; not while paused
 * or waiting to reconnect, when there is no connection: the backend keeps the events until
 * its own expiry), pending requests complete with
 * `TETHER_ERR_CLIENT_CLOSED` (unless their reply comes before the server's close reply,
 * waited for up to 2 s), and CLOSED is the last event. To resume later from
 * `tether_client_resume_state`, use `tether_client_close_keep_resume` instead.
 * `TETHER_ERR_STATE` if the app already closed it (a client the server ended for good
 * returns `TETHER_OK`: its CLOSED is queued, or about to be, and nothing more happens);
 * `TETHER_ERR_NULL` for NULL. Any thread, including inside an event callback.
 */
tether_status tether_client_close(struct tether_client *c);

/**
 * Pauses in place (the app goes to the background, the OS suspends its sockets): the
 * connection closes keeping the backend's resume entry (gomuks close code 1000) with a
 * DISCONNECTED event (status `TETHER_OK`, no retry), and no reconnect happens until
 * `tether_client_unpause`. Requests already sent get the replies that come before the
 * server's close reply (waited for up to 2 s), the others end with
 * `TETHER_ERR_DISCONNECTED`; requests made meanwhile wait for the connection (their
 * timeouts still run). The same client and events go on afterwards; the events missed meanwhile
 * arrive after unpausing, exactly once. Paused while connecting, the attempt ends with
 * that same DISCONNECTED; paused while waiting to reconnect, there is no connection to
 * close and no event: the state reads `TETHER_STATE_PAUSED` and no attempt follows.
 * `TETHER_ERR_UNSUPPORTED` for an in-process client (there is no connection);
 * `TETHER_ERR_STATE` if closed (by the app, or stopped for good: from the moment
 * `tether_client_state` reads `TETHER_STATE_CLOSED`); `TETHER_ERR_NULL` for NULL. Any
 * thread.
 */
tether_status tether_client_pause(struct tether_client *c);

/**
 * Ends a pause: connects at once and resumes where the paused connection stopped. Does
 * nothing when not paused. `TETHER_ERR_UNSUPPORTED` for an in-process client;
 * `TETHER_ERR_STATE` if closed (as for `tether_client_pause`); `TETHER_ERR_NULL` for NULL.
 * Any thread.
 */
tether_status tether_client_unpause(struct tether_client *c);

/**
 * The cue for the OS glue to call on a network change or when the app comes back to the
 * foreground (Android ConnectivityManager, Apple NWPathMonitor). Waiting to reconnect:
 * connects now. Connected: probes the link with a ping and reconnects at once if nothing
 * arrives within the pong timeout (`tether_config_set_pong_timeout_ms`). Never opens a
 * second connection; does nothing while connecting or paused. `TETHER_ERR_UNSUPPORTED`
 * for an in-process client; `TETHER_ERR_STATE` if closed (as for `tether_client_pause`);
 * `TETHER_ERR_NULL` for NULL. Any thread.
 */
tether_status tether_client_reconnect_now(struct tether_client *c);

/**
 * Like `tether_client_close`, but the backend keeps what it buffers for this client (gomuks:
 * close code 1000 instead of 1001), so a later client given this one's
 * `tether_client_resume_state` through `tether_config_set_resume_state` receives the events
 * it missed. For apps that suspend (mobile backgrounding, restarts) rather than log out.
 * Read the resume state after CLOSED: events delivered while the close runs move it.
 * rwws has no resume: the same as `tether_client_close`. `TETHER_ERR_STATE` if the app
 * already closed it (as for `tether_client_close`, a client the server ended for good
 * returns `TETHER_OK`); `TETHER_ERR_NULL` for NULL. Any thread, including inside an event
 * callback.
 */
tether_status tether_client_close_keep_resume(struct tether_client *c);

/**
 * The resume point, to persist and pass to a later client with
 * `tether_config_set_resume_state`: the backend's `run_id` is copied NUL-terminated into
 * `run_id` (capacity `run_id_cap` bytes) and the id of the newest buffered event the app has
 * taken (0 or negative) into `*out_last_received_event` (may be NULL): a polled event
 * counts once polled, a batch's events once the batch is polled into again or freed
 * (while one thread still holds a batch, the point stops short of its events, whatever
 * other threads take meanwhile), a callback's event once the callback returns. Events
 * the client has read but the app has not taken are not counted, so a later client
 * resuming from here receives them, unless a ping acknowledged them meanwhile (pings
 * acknowledge what the client read) and the backend let them go: that resume then fails
 * (`TETHER_RESUME_RESET`), never leaving a silent gap. Nor do the events of a connection
 * that started the backend's state afresh (or of a room list after a login) count until
 * the `init_complete` after it: resuming inside that state would skip the rest of it,
 * which no resume replays. `*out_run_id_len` (may be NULL) receives the
 * run_id's length without the NUL, also when `TETHER_ERR_BUFFER_TOO_SMALL` is returned, so
 * `run_id = NULL, run_id_cap = 0` asks for the size (a NULL `run_id` with a nonzero cap is
 * `TETHER_ERR_NULL`, nothing written). Before the first connection the run_id and event id
 * are those the config was given (`tether_config_set_resume_state`), else "" and 0. Any
 * thread.
 */
tether_status tether_client_resume_state(const struct tether_client *c, char *run_id, size_t run_id_cap, size_t *out_run_id_len, int64_t *out_last_received_event);

/**
 * The credential the client's next connection sends, for an app that persists it instead of
 * a password: gomuks, the `gomuks_auth` token (the configured one until a login with the
 * Basic credentials or a renewal replaces it; each replacement is announced by a
 * `TETHER_EVENT_TOKEN_RENEWED` event, which carries no secret: read the new token here
 * then. Renewals happen while connected, halfway through the token's remaining life and
 * at least daily, before reconnect attempts when due, and after a 401); rwws, the configured
 * access key. Copied NUL-terminated into `buf` (capacity `cap` bytes); `*out_len` (may be
 * NULL) receives its length without the NUL, also with `TETHER_ERR_BUFFER_TOO_SMALL`, so
 * `buf = NULL, cap = 0` asks for the size. "" before a client configured with a username and
 * password (and no token) has logged in, and with auth disabled and no token configured. The token is a secret:
 * keep it out of logs. `TETHER_ERR_NULL` for a NULL client, or a NULL `buf` with a
 * nonzero `cap` (nothing written). Any thread.
 */
tether_status tether_client_auth_token(const struct tether_client *c, char *buf, size_t cap, size_t *out_len);

/**
 * Frees the client. NULL is fine; never twice, and never while another thread is inside a
 * call on this client. If the client is open it is closed in the background (no waiting on
 * the network) as by `tether_client_close_keep_resume`, so its resume state stays usable;
 * queued events are discarded. In callback mode this waits for a running
 * callback to return, so no callback runs after free returns, except when called from the
 * callback itself: then the dispatcher stops after the callback returns. Either way
 * `destroy(ctx)` runs exactly once. A proxy resolver call of this client in progress is
 * waited for (unless this is called from inside it), and none starts afterwards; if this
 * client held the resolver last, its `destroy(ctx)` runs here (see
 * `tether_config_set_proxy_resolver`). After fork() in the child this does nothing (the
 * memory is left alone).
 */
void tether_client_free(struct tether_client *c);

/**
 * Creates a config with the defaults (gomuks, compression on, request timeout 60 s, connect
 * timeout 10 s, and per-protocol keepalive and backoff defaults, see the setters) and no URL.
 * `*out` receives a config owned by the caller (free with `tether_config_free`).
 * `TETHER_ERR_NULL` if `out` is NULL.
 */
tether_status tether_config_new(struct tether_config **out);

/**
 * Sets the URL: `ws://` or `wss://` is the websocket endpoint as given; `http://` or
 * `https://` is the backend's base, from which the dialect's paths are derived. Checked by
 * `tether_client_new`. The string is copied.
 */
tether_status tether_config_set_url(struct tether_config *cfg, const char *url);

/**
 * Selects the protocol: `TETHER_PROTOCOL_GOMUKS` (default) or `TETHER_PROTOCOL_RWWS`.
 * `TETHER_ERR_INVALID_ARGUMENT` for other values.
 */
tether_status tether_config_set_protocol(struct tether_config *cfg, uint32_t protocol);

/**
 * gomuks: the `gomuks_auth` cookie token; rwws: the access key in base64 (standard or URL-safe
 * alphabet, padding optional, 1-127 bytes decoded; checked by `tether_client_new`). Copied;
 * never logged.
 */
tether_status tether_config_set_token(struct tether_config *cfg, const char *token);

/**
 * gomuks: username and password for `POST /_gomuks/auth` (used when no token is set or the
 * token is rejected). Both copied; the password is never logged.
 */
tether_status tether_config_set_basic_auth(struct tether_config *cfg, const char *user, const char *password);

/**
 * gomuks: compression (`compress=1`, raw deflate), on by default.
 */
tether_status tether_config_set_compression(struct tether_config *cfg, bool on);

/**
 * Keepalive ping interval in milliseconds (default gomuks 15000, rwws 10000; must be below the
 * receive timeout, and for rwws below the server's 30000 limit; a gomuks websocket that
 * sends nothing else for 60000 ms is closed by the backend with 4002, so an interval of
 * 60000 or more is logged as a warning at connect).
 */
tether_status tether_config_set_ping_interval_ms(struct tether_config *cfg, uint32_t ms);

/**
 * Reconnect when nothing arrives for this many milliseconds (default gomuks 60000 or 4 ping
 * intervals, whichever is longer; rwws 20000 or 2 ping intervals, the pong deadline). While
 * the deadline of a ping queued behind our own sends is put off (see
 * `tether_config_set_pong_timeout_ms`), this waits for that ping's verdict.
 */
tether_status tether_config_set_receive_timeout_ms(struct tether_config *cfg, uint32_t ms);

/**
 * How long a ping may go unanswered (no byte at all arriving) before the link counts as
 * dead and the client reconnects, in milliseconds (default: gomuks 10000, rwws 20000): a
 * silent link is noticed within the ping interval plus this. Also the deadline of the probe that
 * `tether_client_reconnect_now` sends. Must be positive (checked by `tether_client_new`).
 * A ping queued behind earlier sends (more than 64 KiB unacknowledged, or messages not
 * written yet) that the peer keeps acknowledging (read from the kernel on Linux, Android
 * and Apple systems) has its deadline put off by this much at a time, once more after the
 * ping itself is acknowledged; the receive timeout waits for that verdict.
 */
tether_status tether_config_set_pong_timeout_ms(struct tether_config *cfg, uint32_t ms);

/**
 * Default per-request timeout in milliseconds (default 60000); a request that times out is
 * cancelled on the server and answered with `TETHER_ERR_REQUEST_TIMEOUT`.
 */
tether_status tether_config_set_request_timeout_ms(struct tether_config *cfg, uint32_t ms);

/**
 * Bound on a connection's TCP connects and proxy tunnel (an `https://` proxy's TLS
 * handshake included), once the names are resolved, in milliseconds (default 10000):
 * addresses still silent then are given up, and the DISCONNECTED reason names them
 * beside what the others did. It also bounds the server's TLS handshake and the
 * websocket upgrade, each (a server silent after the connect is named with the step),
 * and the gomuks login's answer once its connection is open. A whole attempt (name
 * resolution, gomuks login, TLS and upgrade included), and a token renewal, is bounded
 * by twice this.
 */
tether_status tether_config_set_connect_timeout_ms(struct tether_config *cfg, uint32_t ms);

/**
 * Reconnect backoff: the first delay and the cap, in milliseconds (default gomuks 125 and
 * 10000, rwws 1000 and 60000);
 * delays double with jitter, back to the first after a connection that got through its
 * start (gomuks: delivered `init_complete`, or carried data for 30 s; rwws: stayed
 * authenticated 60 s). Needs `0 < min_ms <= max_ms` (checked by
 * `tether_client_new`).
 */
tether_status tether_config_set_reconnect_backoff_ms(struct tether_config *cfg, uint32_t min_ms, uint32_t max_ms);

/**
 * Cap on one server message after decompression (default gomuks 64 MiB, rwws 64 KiB; at
 * least 1024). A larger message, a decompression bomb included, ends the connection with
 * `TETHER_ERR_MESSAGE_TOO_LARGE`, and that connection does not reset the backoff: a
 * buffered gomuks event that large comes back with every resume, so the client keeps
 * retrying further apart, the resume point still before it. To get past it, close with
 * `tether_client_close_keep_resume` and resume in a client with a larger cap.
 */
tether_status tether_config_set_max_message_bytes(struct tether_config *cfg, size_t bytes);

/**
 * How many events may wait for the app before the library stops reading the socket
 * (default 4096). Nothing is dropped: the server sees TCP backpressure. While
 * disconnected, a full queue also holds back the next connection attempt until the app
 * has taken it below its capacity (or calls `tether_client_reconnect_now`), so an app
 * that stops polling during an outage does not gather two events per attempt; requests
 * made meanwhile wait unsent.
 */
tether_status tether_config_set_queue_capacity(struct tether_config *cfg, size_t events);

/**
 * How many bytes of requests and packets may wait to be written (default 32 MiB): those
 * made while disconnected, and those made faster than the uplink carries. A
 * `tether_client_request*` or `tether_client_send_*` call that would pass it returns
 * `TETHER_ERR_SEND_BUFFER_FULL` and takes nothing (make it again after the
 * `TETHER_EVENT_SEND_READY` that follows once room frees). One message larger than the
 * limit is taken while nothing else waits. Pings and cancels are not counted. 0 is
 * `TETHER_ERR_CONFIG` at `tether_client_new`.
 */
tether_status tether_config_set_max_unsent_bytes(struct tether_config *cfg, size_t bytes);

/**
 * Resume point from an earlier client (see `tether_client_resume_state`): the backend's
 * `run_id` and the newest event id the app took (0 or negative). The string is copied.
 * A positive id or a `run_id` over 64 bytes is `TETHER_ERR_CONFIG` at
 * `tether_client_new`.
 */
tether_status tether_config_set_resume_state(struct tether_config *cfg, const char *run_id, int64_t last_received_event);

/**
 * gomuks: sends `last_server_ts` so a failed resume costs a catch-up rather than a full
 * sync. Only set it if the app persisted its state from that time.
 */
tether_status tether_config_set_last_server_ts(struct tether_config *cfg, int64_t ts_ms);

/**
 * gomuks: send `prev_listener_id` on reconnect (off by default: the current backend then
 * drops its buffer before the new listener subscribes, which defeats resume).
 */
tether_status tether_config_set_prev_listener_id(struct tether_config *cfg, bool on);

/**
 * Adds a header to the websocket upgrade request (e.g. `Origin`). Both strings are copied;
 * `tether_client_new` refuses (`TETHER_ERR_CONFIG`) a name other than letters, digits, `-`
 * and `_`, a value other than printable ASCII, space and tab, and the handshake's own
 * headers (`Host`, `Connection`, `Upgrade`, `Sec-WebSocket-*`). `Cookie` headers are sent
 * as one header after the library's `gomuks_auth` cookie; one that sets `gomuks_auth`
 * while a token or login is configured is refused (`TETHER_ERR_CONFIG`).
 */
tether_status tether_config_add_header(struct tether_config *cfg, const char *name, const char *value);

/**
 * Trusts the CA certificates in this PEM data, in addition to the roots (the built-in
 * webpki roots, or the OS store with `tether_config_set_use_os_trust`).
 * The bytes are copied; they are parsed by `tether_client_new` (`TETHER_ERR_CONFIG` for
 * bad PEM). NULL with a length is `TETHER_ERR_NULL`; empty data (NULL with 0 included)
 * `TETHER_ERR_INVALID_ARGUMENT`.
 */
tether_status tether_config_set_ca_pem(struct tether_config *cfg, const uint8_t *pem, size_t len);

/**
 * Refuses a server certificate that these certificate revocation lists (PEM, `X509 CRL`
 * blocks) revoke, with `TETHER_ERR_CERTIFICATE` and no retry. Only the leaf is checked,
 * and only against the lists given: a leaf whose issuer has no list here is accepted,
 * and a list past its next update still revokes. A list for the leaf's issuer that does
 * not verify refuses it too; two lists of one issuer and scope are `TETHER_ERR_CONFIG`.
 * They apply to an `https://` proxy's certificate too. tether fetches no CRL; replace the
 * lists with a new client. Needs TLS (a `wss://`/`https://` URL or an `https://` proxy).
 * The bytes are copied; `tether_client_new` parses them (`TETHER_ERR_CONFIG` for a bad
 * list). NULL with a length is `TETHER_ERR_NULL`; empty data `TETHER_ERR_INVALID_ARGUMENT`.
 */
tether_status tether_config_set_crl_pem(struct tether_config *cfg, const uint8_t *pem, size_t len);

/**
 * Pins the server's public key: adds one SHA-256 hash of a certificate's
 * SubjectPublicKeyInfo, written `sha256/<base64>` (as OkHttp) or as the bare base64 (as
 * HPKP's `pin-sha256`). Call once per pin (a backup pin survives a key rotation). With
 * pins, the server is accepted only when one matches the leaf's key or the key of a
 * certificate on a verified path from the leaf to a trusted root (an intermediate, the
 * root), as OkHttp matches, *in addition to* the normal chain and name verification;
 * another certificate the server sends matches nothing. A pinned self-signed server
 * still needs its certificate given to `tether_config_set_ca_pem`. A mismatch ends the
 * client with `TETHER_ERR_CERTIFICATE` (no retry). Checked by `tether_client_new` (the form, and a
 * `wss://`/`https://` URL). Copied. Default: no pins.
 */
tether_status tether_config_add_pin_sha256(struct tether_config *cfg, const char *pin);

/**
 * A client certificate for servers that ask for one (mTLS): `cert` is the PEM chain,
 * leaf first; `key` its private key in PEM (PKCS#8, PKCS#1 or SEC1). Both are copied;
 * `tether_client_new` parses them and refuses a key that does not belong to the
 * certificate (`TETHER_ERR_CONFIG`). The key is a secret: it never appears in logs or
 * error messages. A server that refuses the certificate ends the client with
 * `TETHER_ERR_CERTIFICATE`. It needs a `wss://`/`https://` URL (`TETHER_ERR_CONFIG`
 * otherwise): it is shown only to the server, never to a proxy. Default: none. NULL with
 * a length is `TETHER_ERR_NULL`; empty PEM data (NULL with length 0 included) is
 * `TETHER_ERR_INVALID_ARGUMENT`.
 */
tether_status tether_config_set_client_cert_pem(struct tether_config *cfg, const uint8_t *cert, size_t cert_len, const uint8_t *key, size_t key_len);

/**
 * Trusts the operating system's certificate store instead of the built-in webpki roots
 * (default off): on Linux the OpenSSL locations (`SSL_CERT_FILE`/`SSL_CERT_DIR` replace
 * them when set), on macOS the keychain, on Windows the system store; on Android and iOS
 * no store is found (rustls-native-certs reads none there), so the connect fails. CAs
 * given to `tether_config_set_ca_pem` still add to it. Only read when TLS is used (a
 * `wss://` server, or an `https://` proxy). Read when the client connects;
 * `tether_client_connect` fails with `TETHER_ERR_TLS` when the store holds no usable
 * certificate.
 */
tether_status tether_config_set_use_os_trust(struct tether_config *cfg, bool on);

/**
 * The proxy the websocket and the gomuks login (`POST /_gomuks/auth`) both go through:
 * `http://[user:pass@]host[:port]` (HTTP CONNECT, Basic proxy auth, port 80 by default),
 * `https://[user:pass@]host[:port]` (the same inside TLS to the proxy, port 443 by
 * default; its certificate verified with the client's roots, CAs and CRLs, never the
 * pins, and shown no client certificate: both are the server's),
 * `socks5://[user:pass@]host[:port]` (SOCKS5 with RFC 1929 auth, port 1080 by default; the
 * server's name is resolved locally) or `socks5h://...` (the proxy resolves the name).
 * No scheme means `http://`; user and password may be percent-encoded. An explicit proxy
 * is used for every host, loopback included. `"direct"` connects directly and ignores
 * the environment. NULL or `""` restores the default: the environment decides when
 * `tether_client_new` runs (`https_proxy`/`HTTPS_PROXY` for `wss://`/`https://`,
 * `http_proxy`/`HTTP_PROXY` for `ws://`/`http://`, then `all_proxy`/`ALL_PROXY`, lower
 * case first, neither `http_proxy` spelling when `REQUEST_METHOD` is set (a CGI
 * program, where a request header sets `HTTP_PROXY`); hosts in `no_proxy`/`NO_PROXY` —
 * a comma list of domain suffixes, IPs, networks or `*` — and loopback hosts go
 * directly). The URL is checked by
 * `tether_client_new` (`TETHER_ERR_CONFIG`, a message that does not repeat the URL). A
 * proxy that refuses the credentials (HTTP 407, SOCKS5 auth failure) ends the client
 * with `TETHER_ERR_UNAUTHORIZED`, like a 401 from the server, but with close code 407
 * (also when the proxy answered a CONNECT with 401), so an app can tell the proxy's
 * refusal from the server's; other refusals are
 * `TETHER_ERR_CONNECT` and retried. Copied; the credentials are never logged.
 */
tether_status tether_config_set_proxy(struct tether_config *cfg, const char *url);

/**
 * Asks `cb(ctx, url, answer)` before every connection a client of this config opens
 * (each websocket attempt and each gomuks login) which proxy to take: for settings that
 * change while the app runs, such as a PAC script or the OS's proxy settings, which
 * follow the network. Its answer overrides `tether_config_set_proxy` and the environment
 * for that connection; see `tether_proxy_resolver_cb`. An answer that is not a proxy URL,
 * or that would carry a token or password over plain `ws://` to a proxy that is not
 * loopback (without `tether_config_set_allow_insecure_credentials`), ends the client
 * with `TETHER_ERR_CONFIG`; the answer is never logged (it may hold a password). `cb`
 * NULL removes the resolver. `destroy(ctx)` (may be NULL) runs exactly once, whatever
 * this call returns: at once when `cb` is NULL or the call fails, otherwise when neither
 * this config nor any client made from it can call `cb` any more (after
 * `tether_config_free`, a later call of this function, and `tether_client_free` of those
 * clients), inside whichever of those calls lets go last and on its thread: after it, the
 * app's code for this resolver never runs again, so an interpreter may shut down. That is
 * one of the library's threads only when the app made it so: a client freed from inside
 * its own resolver call (`destroy(ctx)` runs when that call returns, on its thread), or
 * from inside an event or log callback (on that callback's thread). After
 * fork(), in the child, the call returns `TETHER_ERR_FORKED` and calls nothing: `ctx`
 * stays the app's. Default: no resolver.
 */
tether_status tether_config_set_proxy_resolver(struct tether_config *cfg, tether_proxy_resolver_cb cb, void *ctx, tether_destroy_cb destroy);

/**
 * Sets the answer of a `tether_proxy_resolver_cb`: a proxy URL as
 * `tether_config_set_proxy` takes it, or `"direct"`; NULL or `""` takes the answer back
 * (the configured decision). Copied. Only valid inside the callback that was given
 * `answer`. `TETHER_ERR_NULL` if `answer` is NULL, `TETHER_ERR_INVALID_UTF8` if `proxy`
 * is not UTF-8 (the answer is then unchanged).
 */
tether_status tether_proxy_answer_set(struct tether_proxy_answer *answer, const char *proxy);

/**
 * Allows credentials over plain `ws://`/`http://` to a host that is not loopback, or
 * through a proxy that is not loopback (refused by default, `tether_client_new` failing
 * with `TETHER_ERR_CONFIG`): the token, the username and password, and the app's own
 * headers that carry credentials: `Cookie`, `Authorization`, `Proxy-Authorization`, and
 * any whose name has a word such as `key`, `token`, `secret`, `auth` or `session`
 * (`X-Api-Key`, `X-Auth-Token`, `CF-Access-Client-Secret`; words split at `-` and `_`).
 */
tether_status tether_config_set_allow_insecure_credentials(struct tether_config *cfg, bool on);

/**
 * gomuks: talks to the backend bundled into this process instead of a websocket.
 * `library_path` names `libgomuksffi` (gomuks `pkg/ffi`), loaded by
 * `tether_client_connect` and never unloaded (a Go runtime cannot be); `data_root` is
 * the backend's directory for its config, database, cache and logs, created if missing.
 * No URL is needed; compression, pings, acks, resume, proxies, TLS settings, credentials,
 * extra headers, the reconnect backoff and the connect timeout do not apply and are
 * ignored, not checked (the start may take minutes); a resume state and token are
 * unused but kept (the resume state checked as for a websocket):
 * `tether_client_resume_state` and `tether_client_auth_token` return them unchanged. One
 * in-process backend runs per process at a time, and a data root is locked while its
 * client runs: a second client gets `TETHER_ERR_IN_USE` from `tether_client_connect`, and
 * a library at another path than one built by Go already loaded gets `TETHER_ERR_CONFIG`
 * (Go supports one runtime per process). At most 64 calls run in the backend at once,
 * of them at most 8 uploads and 8 streamed downloads; later requests wait in tether,
 * where their timeouts and cancels still answer them. A
 * close answers every request at once (those the backend already answered with that
 * answer) but waits up to 5 s for calls the backend is still
 * running (the FFI can neither cancel them nor be destroyed under them); past that
 * CLOSED comes and the backend stops once they return, keeping the root locked until
 * then. The backend writes its own log to stdout and to a file under the data root (the
 * FFI offers no way to configure it).
 * Both strings are copied. `TETHER_ERR_NULL` if either is NULL; `tether_client_new`
 * checks the rest (`TETHER_ERR_CONFIG` for an rwws client or an empty path).
 */
tether_status tether_config_set_in_process(struct tether_config *cfg, const char *library_path, const char *data_root);

/**
 * Frees a config. NULL is fine; never twice. Clients created from it are unaffected.
 */
void tether_config_free(struct tether_config *cfg);

/**
 * The kind: one of `TETHER_EVENT_*`. Returns 0 for NULL. Any thread; the event is not changed.
 */
uint32_t tether_event_kind(const struct tether_event *ev);

/**
 * RESPONSE: the id `tether_client_request` returned. PONG: the ping's id. MESSAGE: the
 * server's event id (negative for buffered events, 0 otherwise). 0 for NULL.
 */
int64_t tether_event_request_id(const struct tether_event *ev);

/**
 * RESPONSE: `TETHER_OK`, `TETHER_ERR_REMOTE` (data is the server's error string as JSON),
 * `_REQUEST_TIMEOUT`, `_CANCELLED`, `_DISCONNECTED`, `_CLIENT_CLOSED`, `_PANIC` after an
 * internal panic, or (in-process) `_STATE` for an account command the backend cannot run
 * logged out, `_UNSUPPORTED` for what the library lacks, `_INVALID_ARGUMENT` for a
 * command name with a NUL and `_PROTOCOL` for an answer that is neither a response nor
 * an error. DISCONNECTED: why the
 * connection ended. UNSENT: `TETHER_ERR_CLIENT_CLOSED`, or `TETHER_ERR_PANIC` after an
 * internal panic. `TETHER_OK` for other kinds; `TETHER_ERR_NULL` for NULL.
 */
tether_status tether_event_status(const struct tether_event *ev);

/**
 * MESSAGE: the gomuks command name (`sync_complete`, `run_id`, ...); "" for other kinds and
 * for NULL. Borrowed: valid as long as the event; never NULL.
 */
const char *tether_event_command(const struct tether_event *ev);

/**
 * The payload, borrowed for as long as the event lives: MESSAGE and a successful RESPONSE:
 * the raw JSON of the envelope's `data`, exactly as received; a failed RESPONSE: a JSON
 * string, the server's error text (decoded and encoded again, so its escapes may differ)
 * or the library's reason; PACKET: the packet bytes; DISCONNECTED: the
 * close reason or error text (UTF-8). `*ptr` is never NULL on success (it may point at 0
 * bytes). `TETHER_ERR_NULL` if any argument is NULL.
 */
tether_status tether_event_data(const struct tether_event *ev, const uint8_t **ptr, size_t *len);

/**
 * DISCONNECTED: the websocket close code, 0 when the connection ended without a close frame,
 * or the HTTP status when the upgrade was refused. 0 otherwise and for NULL.
 */
uint16_t tether_event_close_code(const struct tether_event *ev);

/**
 * DISCONNECTED: milliseconds until the next connection attempt; -1 when none is planned
 * (the client stopped for good: the outcomes of what it still held, then CLOSED, follow;
 * or the app paused it: the client goes on after `tether_client_unpause`) and for other
 * kinds and NULL. Later if the event queue is full by
 * then: the attempt waits for room (see `tether_config_set_queue_capacity`).
 */
int64_t tether_event_retry_in_ms(const struct tether_event *ev);

/**
 * PONG: the round-trip time in microseconds; -1 for other kinds and NULL.
 *
 * Also -1 for the PONG that rwws servers send as the answer to the auth frame (spec
 * rwws-binary.md §2.4): it answers no ping of ours, so it has no round trip, and its request id
 * is 0. Its server clock (`tether_event_server_time_ms`) is still valid. -1 too for the
 * pong of a ping that waited while the client had stopped reading (the app let the queue
 * fill): it may have sat unread, so its time would be the app's stall, not the network's.
 */
int64_t tether_event_rtt_us(const struct tether_event *ev);

/**
 * PONG (gomuks): the event id the ping acknowledged, 0 if it carried no acknowledgement.
 * 0 for other kinds and NULL.
 */
int64_t tether_event_acked_id(const struct tether_event *ev);

/**
 * PONG (rwws): the server's unix time in milliseconds, 0 if absent or not a date; 0 for
 * other kinds and NULL.
 */
int64_t tether_event_server_time_ms(const struct tether_event *ev);

/**
 * CONNECTING, CONNECTED, DISCONNECTED: whether this connection asked the server to resume
 * (gomuks: `run_id` + `last_received_event` in its upgrade request); for CONNECTING, and
 * for an attempt that ended before its upgrade was sent, whether it was to ask. false
 * otherwise and for NULL.
 */
bool tether_event_resume_attempted(const struct tether_event *ev);

/**
 * RESUMED (gomuks): `TETHER_RESUME_SUCCEEDED` (every event missed since the resume point
 * arrives exactly once, before `init_complete`: keep the cached state) or
 * `TETHER_RESUME_RESET` (the backend restarted or no longer held the resume point: drop
 * the cached state; the fresh state follows) or `TETHER_RESUME_CAUGHT_UP` (the resume
 * point was gone, but with `last_server_ts` configured the changes since then follow as
 * one `sync_complete` with `catchup`: keep the cached state and apply it; the missed
 * events themselves are not delivered). 0 for other kinds and NULL.
 */
uint32_t tether_event_resume_outcome(const struct tether_event *ev);

/**
 * CONNECTING, CONNECTED, DISCONNECTED: the connection attempt number, from 1 (0 for the
 * DISCONNECTED of an internal panic). 0 otherwise and for NULL.
 */
uint32_t tether_event_attempt(const struct tether_event *ev);

/**
 * PROGRESS: how much of the upload is done, as the backend reports it (gomuks v0.2607.0:
 * a fraction from 0 to 1, although its header promises a percentage). -1 for other kinds
 * and NULL.
 */
double tether_event_progress(const struct tether_event *ev);

/**
 * Frees an event taken with `tether_client_poll`. NULL is fine; never free an event lent to a
 * callback, and never free one twice.
 */
void tether_event_free(struct tether_event *ev);

/**
 * A static, NUL-terminated English description of a status; "unknown status" for values the
 * library does not define. Never NULL, never freed. Any thread.
 */
const char *tether_status_str(tether_status s);

/**
 * The message of the most recent failed call on the calling thread ("" if none), naming
 * the argument or the reason (e.g. why a configuration is invalid). Borrowed: valid until
 * the next failing tether call on this thread. Never NULL. Credentials never appear in it.
 */
const char *tether_last_error(void);

/**
 * The library version, e.g. "0.1.0" (static, never freed). Compare with
 * `TETHER_VERSION_STRING` to detect a header/library mismatch.
 */
const char *tether_version(void);

/**
 * The library version as `(MAJOR << 16) | (MINOR << 8) | PATCH`, the same encoding as
 * `TETHER_VERSION_NUMBER`. Before 1.0 a different MAJOR.MINOR means an incompatible ABI.
 */
uint32_t tether_version_number(void);

/**
 * Installs the process-wide log callback: `cb(ctx, record)` receives every record at
 * `max_level` or more important (`TETHER_LOG_ERROR` 1 to `TETHER_LOG_TRACE` 5; larger
 * values mean TRACE), on the library's own `tether-log` thread, never on a network
 * thread: a slow callback costs dropped records (the next record says how many), never
 * a stalled connection. Records describe connect attempts with address and timing, the
 * HTTP status of a refused upgrade or login, TLS failures, close codes, resume
 * asked/succeeded/reset, the backoff chosen, request timeouts and decoding errors; none
 * holds a secret. Replaces the previous callback: this call returns once the previous
 * callback has received its last record and its `destroy(ctx)` has run (on the log
 * thread), so it is never called again afterwards. `cb` NULL (or `max_level` 0) removes
 * the callback; then logging costs one atomic load per record site. `destroy` may be
 * NULL. `destroy(ctx)` runs exactly once whatever this call returns, also on
 * `TETHER_ERR_STATE` (called from inside a log callback, or the `tether-log` thread could
 * not be started), where it runs at once; the one exception is `TETHER_ERR_FORKED` (a
 * child process after fork() in a process that had created a client), where nothing is
 * called and `ctx` stays the app's. In a child forked before any client was created the
 * library works, but the callback installed before the fork is gone with the parent's
 * log thread (never called there, its `destroy` never run): install one again in the
 * child to get its records. Concurrent calls take effect in one order; the level left
 * in place is that of the callback left in place. Any thread. Since this call waits for the log thread, a log callback must not free a client
 * whose event callback or proxy resolver may be inside this call at that moment, nor one
 * whose event callback's `destroy(ctx)` (which that free runs and waits for) makes this
 * call: the free waits for that callback, and the callback for the log thread, for ever.
 */
tether_status tether_set_log_callback(tether_log_cb cb, void *ctx, tether_destroy_cb destroy, uint32_t max_level);

/**
 * The client's id, unique in the process and never 0: log records name their client by
 * it (`tether_log_record.client_id`). 0 for NULL, and for a client an internal panic
 * poisoned (`TETHER_ERR_PANIC`). Any thread.
 */
uint64_t tether_client_id(const struct tether_client *c);

/**
 * Writes the client's connection state (`TETHER_STATE_IDLE`, `_CONNECTING`,
 * `_CONNECTED`, `_WAITING` between attempts, `_PAUSED` by the app, `_CLOSED`) to `*out`.
 * Reading it takes no event. `TETHER_ERR_NULL` for a NULL argument. Any thread.
 */
tether_status tether_client_state(const struct tether_client *c, uint32_t *out);

/**
 * Fills `*out` with the client's statistics. The caller sets `out->size` to
 * `sizeof(tether_stats)` first; the library fills the fields that fit in it and sets
 * `out->size` to the bytes it filled. `TETHER_ERR_INVALID_ARGUMENT` if `out->size` is
 * smaller than the first version of the struct (nothing else written); `TETHER_ERR_NULL`
 * for a NULL argument. Cheap (a few atomic loads); any thread.
 */
tether_status tether_client_stats(const struct tether_client *c, struct tether_stats *out);

/**
 * Creates an empty settings list; `*out` is owned by the caller (free with
 * `tether_settings_free`). `TETHER_ERR_NULL` if `out` is NULL.
 */
tether_status tether_settings_new(struct tether_settings **out);

/**
 * Appends setting `id` with `value` (`len` bytes, copied; NULL with 0 for an empty value).
 * Ids 0x00 (reserved) and 0xFF (the list terminator) are `TETHER_ERR_INVALID_ARGUMENT`.
 * The protocol defines no setting yet; the server must know the id and its value layout.
 */
tether_status tether_settings_add(struct tether_settings *s, uint8_t id, const uint8_t *value, size_t len);

/**
 * rwws: sends the settings as one Settings packet (`01`, pairs, `ff`); queued while
 * disconnected. Sent once: a later connection does not repeat them, so settings the
 * server must know on every connection are sent again on each CONNECTED. A packet the
 * client ends without having written (a close while offline, a stop for good such as a
 * 3001) comes back in a `TETHER_EVENT_UNSENT` event with its bytes, before CLOSED.
 * `TETHER_ERR_STATE` for gomuks clients, after close and once the state reads
 * `TETHER_STATE_CLOSED`; `TETHER_ERR_SEND_BUFFER_FULL`
 * if it would pass `max_unsent_bytes` (nothing taken). `s` is read during the call only
 * (free or reuse it afterwards; no other thread may change it meanwhile). Any thread.
 */
tether_status tether_client_send_settings(struct tether_client *c, const struct tether_settings *s);

/**
 * Frees a settings list. NULL is fine; never twice.
 */
void tether_settings_free(struct tether_settings *s);

/**
 * Attaches a new store to `client`, which must be a gomuks client (websocket or
 * in-process) on which `tether_client_connect` was not called yet, so the store sees
 * every event. From then on the client's event stream carries `TETHER_EVENT_STORE`
 * events: each follows the MESSAGE (or CONNECTED, DISCONNECTED with a retry) it reflects and precedes the RESPONSE of a store
 * action, and a read made after taking any event sees that event applied.
 * `options_json` may be NULL or JSON: `{"evict_after_ms": N, "request_timeout_ms": N}`
 * (how long a room that is not open keeps its timeline, default 30 minutes; the timeout of
 * the store's actions, default the client's request timeout). `*out` is owned by the caller (free with
 * `tether_store_free`). `TETHER_ERR_STATE` after connect or close, `TETHER_ERR_IN_USE` if
 * a store was attached to the client before (one per client, also once freed), `TETHER_ERR_UNSUPPORTED` for rwws, `TETHER_ERR_CONFIG` for a websocket client
 * with `last_server_ts` (the store starts empty; that first sync would hold only what
 * changed since then) or with a resume state from `tether_config_set_resume_state` (a
 * resume replays only what was missed; make the client that keeps a store without it),
 * `TETHER_ERR_INVALID_ARGUMENT`
 * for bad options, `TETHER_ERR_NULL` for a NULL client or `out`. Any thread.
 */
tether_status tether_store_new(struct tether_client *c, const char *options_json, struct tether_store **out);

/**
 * Frees the store and detaches it: the client's stream carries no more STORE events.
 * NULL is fine; never twice, and never while another thread is inside a call on it.
 */
void tether_store_free(struct tether_store *s);

/**
 * Reads one snapshot as JSON. `what` is one of `room_list`, `room`, `timeline`, `event`,
 * `state`, `members`, `receipts`, `typing`, `account_data`, `spaces`, `session`;
 * `args_json` (NULL means none) its arguments, as docs/store.md lists them (for example
 * `{"room_id": "!a:b", "limit": 50}` for `timeline`). The JSON is copied NUL-terminated
 * into `buf` (capacity `cap`); `*out_len` (may be NULL) receives its length without the
 * NUL, also with `TETHER_ERR_BUFFER_TOO_SMALL`, so `buf = NULL, cap = 0` asks for the
 * size (a NULL `buf` with a nonzero `cap` is `TETHER_ERR_NULL`, nothing written). The
 * store may change between two calls: a second call may need more room, so
 * loop while it says `TETHER_ERR_BUFFER_TOO_SMALL`. `room` of a room the store does not
 * hold reads `null`, and so do an unknown event (`event`) and an unknown state key
 * (`state` with a key); a room the store does not know is `TETHER_ERR_INVALID_ARGUMENT`
 * in every other read, as are an unknown `what` and bad arguments. Any thread.
 */
tether_status tether_store_read(const struct tether_store *s, const char *what, const char *args_json, char *buf, size_t cap, size_t *out_len);

/**
 * Loads older history of the room (`paginate`): the RESPONSE with `*out_request_id`
 * follows the STORE event that reports the rows as `prepended` (also the first page,
 * into an empty timeline; rows newer than the newest cached one, read after a live row
 * the sync has not brought yet, as `appended`). `limit` 0 picks 50 (100 once 100 rows
 * are cached). One pagination per room at a time: `TETHER_ERR_IN_USE` while one runs.
 * `TETHER_ERR_INVALID_ARGUMENT` for a room the store does not know, `TETHER_ERR_STATE`
 * once the client is closed or, over the websocket, while the backend says it is not
 * logged in, `TETHER_ERR_NULL` for NULL. Any thread.
 */
tether_status tether_store_paginate(const struct tether_store *s, const char *room_id, uint32_t limit, int64_t *out_request_id);

/**
 * Loads the room's whole state (`get_room_state`), with the member list when `members`
 * is true. The RESPONSE follows the STORE event. Errors as `tether_store_paginate`.
 */
tether_status tether_store_load_state(const struct tether_store *s, const char *room_id, bool members, int64_t *out_request_id);

/**
 * Sends a message with local echo: `params_json` is `send_message`'s parameters
 * (`room_id`, `text`, ...). The echo joins the room's pending tail (a STORE event) before
 * the RESPONSE; `send_complete` later updates it, and the synced event replaces it in the
 * timeline. Timeline items of own sends carry `send_status` (`sending`, `sent`, `failed`;
 * gomuks keeps `send_error: "not sent"` even on a sent event, any other text is the
 * failure). Errors as `tether_store_paginate`, and
 * `TETHER_ERR_INVALID_ARGUMENT` for params without a `room_id`.
 */
tether_status tether_store_send_message(const struct tether_store *s, const char *params_json, int64_t *out_request_id);

/**
 * Sends a failed message again (`resend_event`): `rowid` is the echo's `rowid`, a
 * timeline read's `pending` item with `send_status` `failed`. The echo reads as
 * `sending` at once (a STORE event with cause `resend`, queued before this returns, for a
 * watched or open room);
 * `send_complete` then updates it as after `tether_store_send_message`. If the backend
 * refuses, the echo is failed again in the STORE event before the RESPONSE.
 * `TETHER_ERR_INVALID_ARGUMENT` unless `rowid` is a failed send in the room's pending
 * tail; other errors as `tether_store_paginate`.
 */
tether_status tether_store_resend(const struct tether_store *s, const char *room_id, int64_t rowid, int64_t *out_request_id);

/**
 * Drops a failed send from the room's pending tail (the backend keeps its copy), and
 * queues the STORE event that reports it (cause `discard`) before returning: for a watched
 * or open room, and not once the client's CLOSED was queued (the change then shows in
 * reads only).
 * `TETHER_ERR_INVALID_ARGUMENT` unless `rowid` is a failed send in the room's pending
 * tail (an unknown room included), `TETHER_ERR_NULL` for a NULL store or room id. Works
 * on a store whose client is closed. Any thread.
 */
tether_status tether_store_discard(const struct tether_store *s, const char *room_id, int64_t rowid);

/**
 * Marks the room read up to the newest event the store holds (`mark_read`);
 * `receipt_type` NULL means `m.read`. The unread counts change with the backend's next
 * sync. `TETHER_ERR_INVALID_ARGUMENT` when the store holds no event of the room; other
 * errors as `tether_store_paginate`.
 */
tether_status tether_store_mark_read(const struct tether_store *s, const char *room_id, const char *receipt_type, int64_t *out_request_id);

/**
 * Fetches the member events of the users in `user_ids_json` (a JSON array of user ids)
 * in one request (`get_specific_room_state`), skipping those the store holds.
 * `*out_request_id` is 0 when none is missing: nothing is sent and no RESPONSE follows.
 * Errors as `tether_store_paginate`.
 */
tether_status tether_store_request_members(const struct tether_store *s, const char *room_id, const char *user_ids_json, int64_t *out_request_id);

/**
 * The app shows (`open` true) or no longer shows the room. An open room keeps its
 * timeline; a closed one loses it after the eviction delay (`evict_after_ms`). An open
 * room is watched whatever the watch list (`tether_store_watch`) says; closing it
 * leaves the list as it was. `TETHER_ERR_INVALID_ARGUMENT`
 * for an unknown room, `TETHER_ERR_NULL` for NULL. Any thread.
 */
tether_status tether_store_set_open(const struct tether_store *s, const char *room_id, bool open);

/**
 * Limits the detail of STORE events to watched rooms; the others report only `meta`,
 * `removed`, `notifications` and `dismiss_notifications`, which is all a room list and
 * the OS notifications need. `room_id` NULL with `on` true watches
 * every room (the default); NULL with false watches only the open rooms; a room id
 * adds it to or removes it from the watch list (`TETHER_ERR_INVALID_ARGUMENT` for a room
 * the store does not know). Open rooms are always watched. A room joined later is
 * watched after NULL with true, not after NULL with false; a room left is forgotten
 * with its watch setting. `TETHER_ERR_NULL` for a NULL store.
 */
tether_status tether_store_watch(const struct tether_store *s, const char *room_id, bool on);

/**
 * Evicts now the timelines of rooms that are not open and have been idle for the
 * eviction delay (this also happens by itself about once a minute while events
 * arrive), and queues the STORE event that reports it (cause `gc`). `*out_evicted` (may
 * be NULL) receives how many rooms lost their timeline. `TETHER_ERR_NULL` for a NULL
 * store.
 */
tether_status tether_store_collect_garbage(const struct tether_store *s, size_t *out_evicted);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* TETHER_H */
