/*
 * C API contract tests against a real tether-backend: lifecycle, requests and replies,
 * argument checking, modes, the event fd, the batch path and the resume state getter.
 * Also compiled as C++ (the header must work there too).
 */
#include "harness.h"

#include <pthread.h>
#include <stddef.h>

/* The batch entry layout is part of the ABI (bindings read it with struct offsets). */
#ifdef __cplusplus
#define TH_STATIC_ASSERT static_assert
#else
#define TH_STATIC_ASSERT _Static_assert
#endif
TH_STATIC_ASSERT(sizeof(tether_batch_entry) == 80, "entry size");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, request_id) == 0, "request_id");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, data_offset) == 8, "data_offset");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, data_len) == 16, "data_len");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, acked_id) == 24, "acked_id");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, server_time_ms) == 32, "server_time_ms");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, rtt_us) == 40, "rtt_us");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, retry_in_ms) == 48, "retry_in_ms");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, kind) == 56, "kind");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, status) == 60, "status");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, command_offset) == 64, "command_offset");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, command_len) == 68, "command_len");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, attempt) == 72, "attempt");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, close_code) == 76, "close_code");
TH_STATIC_ASSERT(offsetof(tether_batch_entry, resume_attempted) == 78, "resume_attempted");

static th_backend backend;

static tether_client *connected_client(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    return c;
}

static int64_t send_request(tether_client *c, const char *command, const char *json) {
    int64_t id = 0;
    CHECK_OK(tether_client_request(c, command, (const uint8_t *)json, strlen(json), &id));
    CHECK(id > 0);
    return id;
}

static void test_version_and_status_strings(void) {
    CHECK(strcmp(tether_version(), TETHER_VERSION_STRING) == 0);
    CHECK(tether_version_number() == TETHER_VERSION_NUMBER);
    const tether_status all[] = {
        TETHER_OK, TETHER_TIMEOUT, TETHER_CLOSED, TETHER_ERR_NULL,
        TETHER_ERR_INVALID_ARGUMENT, TETHER_ERR_INVALID_UTF8, TETHER_ERR_STATE,
        TETHER_ERR_WRONG_MODE, TETHER_ERR_PANIC, TETHER_ERR_FORKED, TETHER_ERR_CONFIG,
        TETHER_ERR_BUFFER_TOO_SMALL, TETHER_ERR_UNSUPPORTED, TETHER_ERR_IN_USE, TETHER_ERR_SEND_BUFFER_FULL,
        TETHER_ERR_REMOTE, TETHER_ERR_REQUEST_TIMEOUT,
        TETHER_ERR_CANCELLED, TETHER_ERR_DISCONNECTED, TETHER_ERR_CLIENT_CLOSED,
        TETHER_ERR_CONNECT, TETHER_ERR_TLS, TETHER_ERR_UNAUTHORIZED, TETHER_ERR_FORBIDDEN,
        TETHER_ERR_HTTP, TETHER_ERR_RECEIVE_TIMEOUT, TETHER_ERR_REMOTE_CLOSED, TETHER_ERR_CERTIFICATE,
        TETHER_ERR_PROTOCOL, TETHER_ERR_INFLATE, TETHER_ERR_JSON,
        TETHER_ERR_MESSAGE_TOO_LARGE, TETHER_ERR_VERSION_MISMATCH, TETHER_ERR_KEY_REVOKED,
        TETHER_ERR_BACKEND_DATABASE, TETHER_ERR_BACKEND_ACCOUNT, TETHER_ERR_BACKEND_START};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *s = tether_status_str(all[i]);
        CHECK(s != NULL && *s != 0 && strcmp(s, "unknown status") != 0);
        for (size_t j = 0; j < i; j++) CHECK(strcmp(s, tether_status_str(all[j])) != 0);
    }
    CHECK(strcmp(tether_status_str(12345), "unknown status") == 0);
}

static void test_null_arguments(void) {
    tether_config *cfg = NULL;
    tether_client *c = NULL;
    tether_event *ev = NULL;
    tether_batch *b = NULL;
    CHECK_STATUS(tether_config_new(NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_config_set_url(NULL, "ws://x"), TETHER_ERR_NULL);
    CHECK_STATUS(tether_config_set_compression(NULL, true), TETHER_ERR_NULL);
    CHECK_OK(tether_config_new(&cfg));
    CHECK_STATUS(tether_config_set_url(cfg, NULL), TETHER_ERR_NULL);
    CHECK(strstr(tether_last_error(), "url") != NULL);
    CHECK_STATUS(tether_config_set_basic_auth(cfg, "u", NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_config_set_ca_pem(cfg, NULL, 10), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_new(NULL, &c), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_new(cfg, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_connect(NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_request(NULL, "echo", NULL, 0, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_cancel(NULL, 1), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_poll(NULL, 0, &ev), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_close(NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_close_keep_resume(NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_set_event_callback(NULL, NULL, NULL, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_resume_state(NULL, NULL, 0, NULL, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_poll_batch(NULL, 0, NULL, NULL), TETHER_ERR_NULL);
    CHECK(tether_client_event_fd(NULL) == -1);
    CHECK(ev == NULL);
    /* Event accessors on NULL return their documented defaults. */
    CHECK(tether_event_kind(NULL) == 0);
    CHECK(tether_event_request_id(NULL) == 0);
    CHECK(tether_event_status(NULL) == TETHER_ERR_NULL);
    CHECK(strcmp(tether_event_command(NULL), "") == 0);
    CHECK(tether_event_close_code(NULL) == 0);
    CHECK(tether_event_retry_in_ms(NULL) == -1);
    CHECK(tether_event_rtt_us(NULL) == -1);
    CHECK(tether_event_acked_id(NULL) == 0);
    CHECK(!tether_event_resume_attempted(NULL));
    const uint8_t *p = NULL;
    size_t n = 0;
    CHECK_STATUS(tether_event_data(NULL, &p, &n), TETHER_ERR_NULL);
    CHECK_STATUS(tether_batch_new(4, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_batch_view(NULL, NULL, NULL, NULL, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_batch_new_lending(4, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_batch_payloads(NULL, NULL, NULL), TETHER_ERR_NULL);
    /* Every free accepts NULL. */
    tether_config_free(NULL);
    tether_client_free(NULL);
    tether_event_free(NULL);
    tether_batch_free(NULL);
    tether_config_free(cfg);
    CHECK(b == NULL);
}

static void test_invalid_input(void) {
    const char bad_utf8[] = {'w', 's', ':', '/', '/', (char)0xff, 0};
    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_STATUS(tether_config_set_url(cfg, bad_utf8), TETHER_ERR_INVALID_UTF8);
    CHECK_STATUS(tether_config_set_protocol(cfg, 99), TETHER_ERR_INVALID_ARGUMENT);
    /* No URL: the config is rejected with a reason, and *out is left alone. */
    tether_client *sentinel = (tether_client *)&cfg;
    tether_client *c = sentinel;
    CHECK_STATUS(tether_client_new(cfg, &c), TETHER_ERR_CONFIG);
    CHECK(c == sentinel);
    CHECK(strstr(tether_last_error(), "URL") != NULL);
    CHECK_OK(tether_config_set_url(cfg, "ftp://127.0.0.1/"));
    CHECK_STATUS(tether_client_new(cfg, &c), TETHER_ERR_CONFIG);
    CHECK_OK(tether_config_set_url(cfg, backend.http));
    CHECK_OK(tether_config_set_ping_interval_ms(cfg, 0));
    CHECK_STATUS(tether_client_new(cfg, &c), TETHER_ERR_CONFIG);
    CHECK_OK(tether_config_set_ping_interval_ms(cfg, 15000));
    CHECK_OK(tether_config_set_basic_auth(cfg, "tether", "tether-password"));
    CHECK_OK(tether_client_new(cfg, &c));
    tether_config_free(cfg);

    int64_t id = 77;
    CHECK_STATUS(tether_client_request(c, bad_utf8, NULL, 0, &id), TETHER_ERR_INVALID_UTF8);
    CHECK_STATUS(tether_client_request(c, "", NULL, 0, &id), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_client_request(c, "echo", (const uint8_t *)"{nope", 5, &id),
                 TETHER_ERR_INVALID_UTF8);
    CHECK_STATUS(tether_client_request(c, "echo", NULL, 3, &id), TETHER_ERR_NULL);
    CHECK(id == 77); /* outputs untouched on failure */
    CHECK_STATUS(tether_client_cancel(c, 123456789012LL), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_client_send_packet(c, (const uint8_t *)"x", 1), TETHER_ERR_STATE);
    /* Never connected: close still ends with CLOSED. */
    th_close_and_free(c);
}

static void test_request_response(void) {
    tether_client *c = connected_client();
    int64_t echo = send_request(c, "echo", "{\"a\":1}");
    tether_event *ev = th_wait_response(c, echo, 10000);
    CHECK(tether_event_status(ev) == TETHER_OK);
    CHECK(th_data_is(ev, "{\"a\":1}"));
    tether_event_free(ev);

    int64_t fail = send_request(c, "fail", "{\"message\":\"nope\"}");
    ev = th_wait_response(c, fail, 10000);
    CHECK(tether_event_status(ev) == TETHER_ERR_REMOTE);
    CHECK(th_data_is(ev, "\"nope\""));
    tether_event_free(ev);

    int64_t empty = 0;
    CHECK_OK(tether_client_request(c, "no_such_command", NULL, 0, &empty));
    ev = th_wait_response(c, empty, 10000);
    CHECK(tether_event_status(ev) == TETHER_ERR_REMOTE);
    tether_event_free(ev);

    int64_t slow = 0;
    CHECK_OK(tether_client_request_with_timeout(c, "sleep", (const uint8_t *)"{\"ms\":5000}", 11,
                                                100, &slow));
    ev = th_wait_response(c, slow, 10000);
    CHECK(tether_event_status(ev) == TETHER_ERR_REQUEST_TIMEOUT);
    tether_event_free(ev);

    int64_t cancelled = send_request(c, "sleep", "{\"ms\":5000}");
    CHECK_OK(tether_client_cancel(c, cancelled));
    ev = th_wait_response(c, cancelled, 10000);
    CHECK(tether_event_status(ev) == TETHER_ERR_CANCELLED);
    tether_event_free(ev);

    /* A request pending at close completes with CLIENT_CLOSED before CLOSED. */
    int64_t pending = send_request(c, "sleep", "{\"ms\":5000}");
    CHECK_OK(tether_client_close(c));
    ev = th_wait_response(c, pending, 10000);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_CLIENT_CLOSED);
    tether_event_free(ev);
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    tether_client_free(c);
}

static void test_double_close_and_poll_after_close(void) {
    tether_client *c = connected_client();
    CHECK_OK(tether_client_close(c));
    CHECK_STATUS(tether_client_close(c), TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_close_keep_resume(c), TETHER_ERR_STATE);
    CHECK_STATUS(tether_client_request(c, "echo", NULL, 0, NULL), TETHER_ERR_STATE);
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    for (int i = 0; i < 3; i++) {
        tether_event *ev = NULL;
        CHECK_STATUS(tether_client_poll(c, 10, &ev), TETHER_CLOSED);
        CHECK(ev == NULL);
    }
    CHECK_STATUS(tether_client_connect(c), TETHER_ERR_STATE);
    tether_client_free(c);
}

static int destroyed;
static void count_destroy(void *ctx) {
    (void)ctx;
    destroyed++;
}
static void ignore_event(void *ctx, const tether_event *ev) {
    (void)ctx;
    (void)ev;
}

static void test_wrong_mode(void) {
    tether_client *c = th_client_from(th_config(&backend));
    tether_event *ev = NULL;
    CHECK_STATUS(tether_client_poll(c, 0, &ev), TETHER_TIMEOUT);
    destroyed = 0;
    CHECK_STATUS(tether_client_set_event_callback(c, ignore_event, NULL, count_destroy),
                 TETHER_ERR_WRONG_MODE);
    CHECK(destroyed == 1); /* a refused registration gives ctx back at once */
    tether_client_free(c);
    CHECK(destroyed == 1);

    c = th_client_from(th_config(&backend));
    CHECK_STATUS(tether_client_set_event_callback(c, NULL, NULL, count_destroy), TETHER_ERR_NULL);
    CHECK(destroyed == 2);
    destroyed = 0;
    CHECK_OK(tether_client_set_event_callback(c, ignore_event, NULL, count_destroy));
    CHECK_STATUS(tether_client_set_event_callback(c, ignore_event, NULL, count_destroy),
                 TETHER_ERR_STATE);
    CHECK(destroyed == 1); /* the refused one's; the registered one runs at free */
    CHECK_STATUS(tether_client_poll(c, 0, &ev), TETHER_ERR_WRONG_MODE);
    CHECK(tether_client_event_fd(c) == -1);
    tether_batch *b = NULL;
    CHECK_OK(tether_batch_new(8, &b));
    CHECK_STATUS(tether_client_poll_batch(c, 0, b, NULL), TETHER_ERR_WRONG_MODE);
    tether_batch_free(b);
    tether_client_free(c);
    CHECK(destroyed == 2);
    CHECK(ev == NULL);
}

static int fd_readable(int fd, int ms) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void test_event_fd(void) {
    tether_client *c = th_client_from(th_config(&backend));
    int fd = tether_client_event_fd(c);
    CHECK(fd >= 0);
    CHECK(tether_client_event_fd(c) == fd);
    CHECK(!fd_readable(fd, 0));
    CHECK_OK(tether_client_connect(c));
    int seen_init = 0;
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    while (!seen_init) {
        CHECK(th_now_ms() < deadline);
        if (!fd_readable(fd, 1000)) continue;
        /* Readable means at least one event is there right now. */
        tether_event *ev = NULL;
        CHECK_OK(tether_client_poll(c, 0, &ev));
        for (;;) {
            if (strcmp(tether_event_command(ev), "init_complete") == 0) seen_init = 1;
            tether_event_free(ev);
            ev = NULL;
            tether_status s = tether_client_poll(c, 0, &ev);
            if (s == TETHER_TIMEOUT) break;
            CHECK(s == TETHER_OK);
        }
        CHECK(!fd_readable(fd, 0)); /* drained: not readable */
    }
    th_push(&backend, 3);
    CHECK(fd_readable(fd, 5000 * th_scale()));
    th_close_and_free(c);
}

/* Both kinds of batch over a real socket: a copying one (payloads in its buffer) and a
 * lending one (payloads where the library received them, entries marked
 * TETHER_BATCH_DATA_LENT); tether_batch_payloads gives the same view of both. */
static void batch_round(int lending) {
    tether_batch *b = NULL;
    tether_status (*new_batch)(size_t, tether_batch **) =
        lending ? tether_batch_new_lending : tether_batch_new;
    CHECK_STATUS(new_batch(0, &b), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_OK(new_batch(16, &b));
    tether_client *c = connected_client();
    int64_t newest = th_push(&backend, 50);
    int64_t first = newest + 49, expect = first;
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    while (expect >= newest) {
        CHECK(th_now_ms() < deadline);
        size_t count = 0;
        tether_status s = tether_client_poll_batch(c, 500, b, &count);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        CHECK(count >= 1 && count <= 16);
        const tether_batch_entry *e = NULL;
        const uint8_t *bytes = NULL;
        size_t n = 0, len = 0;
        CHECK_OK(tether_batch_view(b, &e, &n, &bytes, &len));
        CHECK(n == count);
        const tether_bytes *data = NULL;
        size_t data_count = 0;
        CHECK_OK(tether_batch_payloads(b, &data, &data_count));
        CHECK(data_count == n);
        for (size_t i = 0; i < n; i++) {
            CHECK(e[i].command_offset + (uint64_t)e[i].command_len <= len);
            CHECK(data[i].ptr != NULL && data[i].len == e[i].data_len);
            if (lending) {
                CHECK(e[i].data_offset == TETHER_BATCH_DATA_LENT);
            } else {
                CHECK(e[i].data_offset + e[i].data_len <= len);
                CHECK(data[i].ptr == bytes + e[i].data_offset);
            }
            if (e[i].kind != TETHER_EVENT_MESSAGE || e[i].request_id >= 0) continue;
            if (e[i].request_id > first) continue; /* older events replayed at connect */
            CHECK(e[i].request_id == expect);
            expect--;
            CHECK(e[i].command_len > 0);
            /* Both ends are read, so ASan and valgrind would see a payload lent past its life. */
            CHECK(data[i].len > 0 && data[i].ptr[0] == '{' && data[i].ptr[data[i].len - 1] == '}');
            CHECK(e[i].rtt_us == -1 && e[i].retry_in_ms == -1 && e[i].resume_outcome == 0);
        }
    }
    CHECK_OK(tether_client_close(c));
    int closed = 0;
    while (!closed) {
        size_t count = 0;
        CHECK_OK(tether_client_poll_batch(c, 5000 * th_scale(), b, &count));
        const tether_batch_entry *e = NULL;
        const uint8_t *bytes = NULL;
        size_t n = 0, len = 0;
        CHECK_OK(tether_batch_view(b, &e, &n, &bytes, &len));
        for (size_t i = 0; i < n; i++) {
            if (e[i].kind == TETHER_EVENT_CLOSED) {
                CHECK(i == n - 1);
                closed = 1;
            }
        }
    }
    size_t count = 99;
    CHECK_STATUS(tether_client_poll_batch(c, 0, b, &count), TETHER_CLOSED);
    CHECK(count == 99);
    tether_client_free(c);
    tether_batch_free(b);
}

static void test_batch(void) { batch_round(0); }

static void test_batch_lending(void) { batch_round(1); }

static void test_resume_state(void) {
    tether_client *c = connected_client();
    int64_t newest = th_push(&backend, 3);
    tether_event *ev = NULL;
    for (;;) {
        ev = th_wait(c, TETHER_EVENT_MESSAGE, NULL, 10000);
        int done = tether_event_request_id(ev) == newest;
        tether_event_free(ev);
        if (done) break;
    }
    size_t len = 0;
    int64_t last = 1;
    CHECK_STATUS(tether_client_resume_state(c, NULL, 0, &len, &last), TETHER_ERR_BUFFER_TOO_SMALL);
    CHECK(len > 0 && last == 1);
    char run_id[128];
    CHECK(len < sizeof run_id);
    CHECK_OK(tether_client_resume_state(c, run_id, sizeof run_id, &len, &last));
    CHECK(strlen(run_id) == len);
    CHECK(last == newest);
    /* No close: free alone must be enough, and (like tether_client_close_keep_resume) it
     * keeps the backend's buffer entry, so the resume below gets what was missed. */
    tether_client_free(c);

    /* Events pushed while no client is connected are replayed to a client that resumes. */
    int64_t missed = th_push(&backend, 2);
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_resume_state(cfg, run_id, last));
    c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    ev = th_wait(c, TETHER_EVENT_CONNECTED, NULL, 10000);
    CHECK(tether_event_resume_attempted(ev));
    tether_event_free(ev);
    int64_t expect = missed + 1;
    while (expect >= missed) {
        ev = th_wait(c, TETHER_EVENT_MESSAGE, NULL, 10000);
        int64_t id = tether_event_request_id(ev);
        if (id < 0) {
            CHECK(id == expect);
            expect--;
        }
        tether_event_free(ev);
    }
    th_close_and_free(c);
}

/* Polls into `b` until it holds the event `id`. */
static void poll_batch_until(tether_client *c, tether_batch *b, int64_t id) {
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (int seen = 0; !seen;) {
        CHECK(th_now_ms() < deadline);
        tether_status s = tether_client_poll_batch(c, 500, b, NULL);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        const tether_batch_entry *e = NULL;
        const uint8_t *bytes = NULL;
        size_t n = 0, len = 0;
        CHECK_OK(tether_batch_view(b, &e, &n, &bytes, &len));
        for (size_t i = 0; i < n; i++) seen |= e[i].request_id == id;
    }
}

/* gomuks-rpc.md §7.2: a batch's events count in the resume state once the app is done with
 * the batch (it polls into it again, or frees it): a client freed while the app still works
 * through a batch must have them replayed to the next one. */
static void test_resume_state_counts_a_batch_once_the_app_is_done_with_it(void) {
    for (int reuse = 0; reuse <= 1; reuse++) {
        tether_client *c = connected_client();
        tether_batch *b = NULL;
        CHECK_OK(tether_batch_new(64, &b));
        int64_t newest = th_push(&backend, 3);
        poll_batch_until(c, b, newest);
        CHECK(th_last_taken(c) > newest); /* the batch holding it is still the app's */
        if (reuse) {
            CHECK_STATUS(tether_client_poll_batch(c, 0, b, NULL), TETHER_TIMEOUT);
        } else {
            tether_batch_free(b);
            b = NULL;
        }
        CHECK(th_last_taken(c) == newest);
        tether_batch_free(b);
        th_close_and_free(c);
    }
}

/* gomuks-rpc.md §7.2: with two batches held at once (two polling threads), the one handed
 * over first does not count the other's older events: the point stops short of every batch
 * still held, until its thread is done with it too. */
static void test_resume_state_stops_short_of_a_batch_another_thread_holds(void) {
    tether_client *c = connected_client();
    tether_batch *older = NULL, *newer = NULL;
    CHECK_OK(tether_batch_new(1, &older));
    CHECK_OK(tether_batch_new(64, &newer));
    int64_t newest = th_push(&backend, 3);
    poll_batch_until(c, older, newest + 2);
    poll_batch_until(c, newer, newest);
    CHECK_STATUS(tether_client_poll_batch(c, 0, newer, NULL), TETHER_TIMEOUT);
    CHECK(th_last_taken(c) > newest + 2); /* the older batch is still the app's */
    tether_batch_free(older);
    CHECK(th_last_taken(c) == newest);
    tether_batch_free(newer);
    th_close_and_free(c);
}

/* gomuks-rpc.md §1.2: the token from the Basic login is handed back; it alone authorizes a
 * later client, which is how an app persists a session without the password. */
static void test_auth_token(void) {
    tether_client *c = th_client_from(th_config(&backend));
    size_t len = 99;
    CHECK_STATUS(tether_client_auth_token(c, NULL, 0, &len), TETHER_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 0); /* no login before connect */
    char none[1] = {'x'};
    CHECK_OK(tether_client_auth_token(c, none, sizeof none, NULL));
    CHECK(none[0] == 0);
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_CONNECTED, NULL, 10000));
    CHECK_STATUS(tether_client_auth_token(c, NULL, 0, &len), TETHER_ERR_BUFFER_TOO_SMALL);
    CHECK(len > 0);
    char small[4] = "abc";
    CHECK_STATUS(tether_client_auth_token(c, small, sizeof small, NULL), TETHER_ERR_BUFFER_TOO_SMALL);
    CHECK(strcmp(small, "abc") == 0); /* untouched when too small */
    char *token = (char *)malloc(len + 1);
    CHECK(token != NULL);
    size_t len2 = 0;
    CHECK_OK(tether_client_auth_token(c, token, len + 1, &len2));
    CHECK(len2 == len && strlen(token) == len);
    th_close_and_free(c);

    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_url(cfg, backend.http));
    CHECK_OK(tether_config_set_token(cfg, token));
    c = th_client_from(cfg);
    char again[512];
    CHECK_OK(tether_client_auth_token(c, again, sizeof again, NULL));
    CHECK(strcmp(again, token) == 0);
    CHECK_OK(tether_client_connect(c));
    tether_event *ev = th_wait(c, TETHER_EVENT_CONNECTED, NULL, 10000);
    CHECK(tether_event_status(ev) == TETHER_OK);
    tether_event_free(ev);
    th_close_and_free(c);
    free(token);
}

/* A loopback port nobody listens on right now. */
static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(s, (struct sockaddr *)&sa, sizeof sa) == 0);
    socklen_t len = sizeof sa;
    CHECK(getsockname(s, (struct sockaddr *)&sa, &len) == 0);
    close(s);
    return ntohs(sa.sin_port);
}

/* A proxy resolver for the tests: counts its calls, keeps the last URL asked about, answers
 * `answer` (NULL: no answer) and returns `ret`. The counters are read with __atomic builtins
 * (this file is compiled as C and as C++). */
typedef struct {
    int asked;
    int calls;
    int destroyed;
    pthread_t destroyed_on;
    int delay_ms;
    tether_client *free_me; /* freed by the resolver itself, inside its call */
    const char *answer;
    tether_status ret;
    tether_status bad_utf8;
    char last_url[256];
} resolver_ctx;

static tether_status resolve_proxy(void *ctx, const char *url, tether_proxy_answer *answer) {
    resolver_ctx *r = (resolver_ctx *)ctx;
    __atomic_fetch_add(&r->asked, 1, __ATOMIC_SEQ_CST);
    if (r->delay_ms) usleep((useconds_t)r->delay_ms * 1000);
    if (r->free_me) {
        tether_client_free(r->free_me);
        r->free_me = NULL;
    }
    snprintf(r->last_url, sizeof r->last_url, "%s", url);
    /* A bad answer is refused and leaves the answer as it was. */
    r->bad_utf8 = tether_proxy_answer_set(answer, "http://\xff@h:1");
    if (r->answer) CHECK_OK(tether_proxy_answer_set(answer, r->answer));
    __atomic_fetch_add(&r->calls, 1, __ATOMIC_SEQ_CST);
    return r->ret;
}

static void resolver_destroyed(void *ctx) {
    ((resolver_ctx *)ctx)->destroyed_on = pthread_self();
    __atomic_fetch_add(&((resolver_ctx *)ctx)->destroyed, 1, __ATOMIC_SEQ_CST);
}

static int resolver_load(const int *counter) { return __atomic_load_n(counter, __ATOMIC_SEQ_CST); }

/* Waits up to 10 s (scaled) for `counter` to leave 0; returns its value then. */
static int resolver_wait(const int *counter) {
    int64_t until = th_now_ms() + 10000 * th_scale();
    while (resolver_load(counter) == 0 && th_now_ms() < until) usleep(1000);
    return resolver_load(counter);
}

/* A connecting client of the backend whose proxy resolver is `resolve_proxy` over `r`. */
static tether_client *connect_with_resolver(resolver_ctx *r) {
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_proxy_resolver(cfg, resolve_proxy, r, NULL));
    tether_client *c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    return c;
}

/* The websocket and the login through tinyproxy with Basic proxy auth; a wrong proxy password
 * ends the client with TETHER_ERR_UNAUTHORIZED and no retry, and never shows in the message.
 * Skipped (with the reason) when tinyproxy is missing, except under CI=true. */
static void test_proxy_through_tinyproxy(void) {
    const char *bin = "/usr/bin/tinyproxy";
    if (access(bin, X_OK) != 0) {
        const char *ci = getenv("CI");
        if (ci && strcmp(ci, "true") == 0) th_fail(__FILE__, __LINE__, "tinyproxy is missing");
        fprintf(stderr, "SKIPPED: tinyproxy is not installed (scripts/ensure-tools.sh)\n");
        return;
    }
    int port = free_port();
    char conf[64], log[64];
    snprintf(conf, sizeof conf, "/tmp/tether-c-tinyproxy-%d.conf", (int)getpid());
    snprintf(log, sizeof log, "/tmp/tether-c-tinyproxy-%d.log", (int)getpid());
    FILE *f = fopen(conf, "w");
    CHECK(f != NULL);
    fprintf(f, "Port %d\nListen 127.0.0.1\nTimeout 60\nLogLevel Connect\nLogFile \"%s\"\n"
               "BasicAuth puser ppass\n", port, log);
    fclose(f);
    const char *argv[] = {bin, "-d", "-c", conf, NULL};
    pid_t pid = 0;
    CHECK(posix_spawn(&pid, bin, NULL, NULL, (char *const *)argv, environ) == 0);
    int64_t deadline = th_now_ms() + 10000;
    for (;;) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = connect(s, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(s);
        if (ok) break;
        CHECK(th_now_ms() < deadline);
        usleep(20000);
    }

    char url[128];
    snprintf(url, sizeof url, "http://puser:ppass@127.0.0.1:%d", port);
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_proxy(cfg, url));
    tether_client *c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    tether_event *ev = th_wait_response(c, send_request(c, "echo", "{\"p\":1}"), 10000);
    CHECK(tether_event_status(ev) == TETHER_OK);
    tether_event_free(ev);
    CHECK_OK(tether_client_close(c));
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    tether_client_free(c);

    snprintf(url, sizeof url, "http://puser:not-SECRET@127.0.0.1:%d", port);
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_proxy(cfg, url));
    c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    ev = th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, 10000);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_UNAUTHORIZED);
    CHECK(tether_event_retry_in_ms(ev) == -1);
    const uint8_t *msg = NULL;
    size_t len = 0;
    CHECK_OK(tether_event_data(ev, &msg, &len));
    char text[512];
    snprintf(text, sizeof text, "%.*s", (int)len, (const char *)msg);
    CHECK(strstr(text, "proxy") != NULL);
    CHECK(strstr(text, "not-SECRET") == NULL);
    tether_event_free(ev);
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    tether_client_free(c);

    /* A resolver is asked before the login and the websocket, and its answer is taken: the
     * proxy although the config says "direct". destroy(ctx) runs once, after the client. */
    snprintf(url, sizeof url, "http://puser:ppass@127.0.0.1:%d", port);
    resolver_ctx r;
    memset(&r, 0, sizeof r);
    r.answer = url;
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_proxy(cfg, "direct"));
    CHECK_OK(tether_config_set_proxy_resolver(cfg, resolve_proxy, &r, resolver_destroyed));
    c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    CHECK(resolver_load(&r.calls) == 2);
    CHECK(r.bad_utf8 == TETHER_ERR_INVALID_UTF8);
    CHECK(strncmp(r.last_url, "ws://127.0.0.1:", 15) == 0);
    CHECK(strstr(r.last_url, "/_gomuks/websocket") != NULL);
    CHECK(resolver_load(&r.destroyed) == 0);
    CHECK_OK(tether_client_close(c));
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    tether_client_free(c);
    CHECK(resolver_load(&r.destroyed) == 1);
    f = fopen(log, "r");
    CHECK(f != NULL);
    int connects = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) connects += strstr(line, "CONNECT 127.0.0.1:") != NULL;
    fclose(f);
    CHECK(connects >= 4); /* two of the first client, two of this one */

    /* A resolver that fails fails the attempt only: TETHER_ERR_CONNECT, retried. */
    resolver_ctx failing;
    memset(&failing, 0, sizeof failing);
    failing.ret = TETHER_ERR_CONNECT;
    c = connect_with_resolver(&failing);
    ev = th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, 10000);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_CONNECT);
    CHECK(tether_event_retry_in_ms(ev) >= 0);
    CHECK_OK(tether_event_data(ev, &msg, &len));
    snprintf(text, sizeof text, "%.*s", (int)len, (const char *)msg);
    CHECK(strstr(text, "proxy resolver failed") != NULL);
    tether_event_free(ev);
    CHECK_OK(tether_client_close(c));
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    tether_client_free(c);

    /* TETHER_ERR_CONFIG from the resolver ends the client: its settings cannot work. */
    failing.ret = TETHER_ERR_CONFIG;
    c = connect_with_resolver(&failing);
    ev = th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, 10000);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_CONFIG);
    CHECK(tether_event_retry_in_ms(ev) == -1);
    tether_event_free(ev);
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    tether_client_free(c);

    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(conf);
    unlink(log);
}

/* The resolver's destroy(ctx) runs in the free that lets go of it last, on the caller's
 * thread, never later on a library thread: a client freed while its resolver is being asked
 * waits for that call, and after free returns the app's code is never called again. */
static void test_proxy_resolver_ends_with_free(void) {
    resolver_ctx r;
    memset(&r, 0, sizeof r);
    r.delay_ms = 300;
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_proxy_resolver(cfg, resolve_proxy, &r, resolver_destroyed));
    tether_client *a = th_client_from(cfg);
    CHECK_OK(tether_client_connect(a));
    CHECK(resolver_wait(&r.asked) == 1);
    CHECK(resolver_load(&r.calls) == 0);
    tether_client_free(a);
    CHECK(resolver_load(&r.calls) == 1);
    CHECK(resolver_load(&r.destroyed) == 1);
    CHECK(pthread_equal(r.destroyed_on, pthread_self()));

    /* Shared by a config and two clients: the last of the three to go runs destroy. */
    memset(&r, 0, sizeof r);
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_proxy_resolver(cfg, resolve_proxy, &r, resolver_destroyed));
    tether_client *b = NULL, *c = NULL;
    CHECK_OK(tether_client_new(cfg, &b));
    CHECK_OK(tether_client_new(cfg, &c));
    CHECK_OK(tether_client_connect(b));
    tether_event_free(th_wait(b, TETHER_EVENT_CONNECTED, NULL, 10000));
    CHECK(resolver_load(&r.calls) >= 1);
    tether_client_free(b);
    tether_config_free(cfg);
    CHECK(resolver_load(&r.destroyed) == 0);
    tether_client_free(c);
    CHECK(resolver_load(&r.destroyed) == 1);
    CHECK(pthread_equal(r.destroyed_on, pthread_self()));

    /* Freed by its own resolver: that free cannot wait for the call it is in, so it returns,
     * and destroy runs once the resolver has returned, on the resolver's thread. */
    memset(&r, 0, sizeof r);
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_proxy_resolver(cfg, resolve_proxy, &r, resolver_destroyed));
    r.free_me = th_client_from(cfg);
    CHECK_OK(tether_client_connect(r.free_me));
    CHECK(resolver_wait(&r.destroyed) == 1);
    CHECK(resolver_load(&r.calls) == 1);
    CHECK(!pthread_equal(r.destroyed_on, pthread_self()));
}

int main(void) {
    th_backend_start(&backend, NULL);
    TH_RUN(test_version_and_status_strings);
    TH_RUN(test_null_arguments);
    TH_RUN(test_invalid_input);
    TH_RUN(test_request_response);
    TH_RUN(test_double_close_and_poll_after_close);
    TH_RUN(test_wrong_mode);
    TH_RUN(test_event_fd);
    TH_RUN(test_batch);
    TH_RUN(test_batch_lending);
    TH_RUN(test_resume_state);
    TH_RUN(test_resume_state_counts_a_batch_once_the_app_is_done_with_it);
    TH_RUN(test_resume_state_stops_short_of_a_batch_another_thread_holds);
    TH_RUN(test_auth_token);
    TH_RUN(test_proxy_through_tinyproxy);
    TH_RUN(test_proxy_resolver_ends_with_free);
    th_backend_stop(&backend);
    return 0;
}
