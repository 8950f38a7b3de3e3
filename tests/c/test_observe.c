/*
 * Logs, state and statistics through the C API: the process-wide log callback (records on
 * the library's own thread, never a secret, destroy exactly once), tether_client_state and
 * tether_client_stats (exact counts for a quiet connection, the size convention).
 */
#include "harness.h"

#include <pthread.h>

static th_backend backend;

typedef struct {
    pthread_mutex_t lock;
    char text[1 << 16];
    size_t len;
    int destroyed;
    int records;
    int from_callback_status;
    uint64_t last_client;
    int64_t last_time_us;
} captured;

static captured cap = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0, 0, 0, 0, 0};

static void on_log(void *ctx, const tether_log_record *r) {
    captured *c = (captured *)ctx;
    /* Setting the callback from inside one is refused, not a deadlock. */
    if (c->records == 0) c->from_callback_status = tether_set_log_callback(NULL, NULL, NULL, 0);
    pthread_mutex_lock(&c->lock);
    int n = snprintf(c->text + c->len, sizeof c->text - c->len, "%u %s [%llu] %s\n",
                     (unsigned)r->level, r->target, (unsigned long long)r->client_id, r->message);
    if (n > 0 && c->len + (size_t)n < sizeof c->text) c->len += (size_t)n;
    c->records++;
    c->last_client = r->client_id;
    c->last_time_us = r->unix_time_us;
    pthread_mutex_unlock(&c->lock);
}

static void on_destroy(void *ctx) {
    captured *c = (captured *)ctx;
    pthread_mutex_lock(&c->lock);
    c->destroyed++;
    pthread_mutex_unlock(&c->lock);
}

/* Waits until the captured text contains `needle`. */
static void wait_text(const char *needle) {
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (;;) {
        pthread_mutex_lock(&cap.lock);
        int found = strstr(cap.text, needle) != NULL;
        pthread_mutex_unlock(&cap.lock);
        if (found) return;
        if (th_now_ms() > deadline) th_fail(__FILE__, __LINE__, "no record with \"%s\":\n%s", needle, cap.text);
        usleep(5000);
    }
}

static void test_log_records_state_and_stats(void) {
    CHECK_OK(tether_set_log_callback(on_log, &cap, on_destroy, TETHER_LOG_DEBUG));
    tether_config *cfg = th_config(&backend);
    tether_client *c = th_client_from(cfg);
    uint64_t id = tether_client_id(c);
    CHECK(id != 0);
    uint32_t state = 99;
    CHECK_OK(tether_client_state(c, &state));
    CHECK(state == TETHER_STATE_IDLE);
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    CHECK_OK(tether_client_state(c, &state));
    CHECK(state == TETHER_STATE_CONNECTED);
    wait_text("connected in");
    wait_text("POST /_gomuks/auth to log in with the username and password: done");
    wait_text("TCP connected to 127.0.0.1:");
    CHECK(cap.from_callback_status == TETHER_ERR_STATE);

    tether_stats st;
    memset(&st, 0xff, sizeof st);
    st.size = sizeof st;
    CHECK_OK(tether_client_stats(c, &st));
    CHECK(st.size == sizeof st);
    CHECK(st.state == TETHER_STATE_CONNECTED);
    CHECK(st.connect_attempts == 1 && st.connections == 1);
    CHECK(st.messages_received > 0 && st.events_received > 0);
    CHECK(st.wire_bytes_in > 0 && st.wire_bytes_out > 0);
    /* Compressed: the wire carries less than the payload. */
    CHECK(st.wire_bytes_in < st.payload_bytes_in);
    CHECK(st.requests_in_flight == 0 && st.requests_timed_out == 0);
    CHECK(st.last_rtt_us == -1);
    CHECK(st.connected_ms >= 0);

    /* A struct from an older header would be shorter; one shorter than the first version is
     * refused without a write. */
    tether_stats small;
    memset(&small, 0, sizeof small);
    small.size = 8;
    CHECK_STATUS(tether_client_stats(c, &small), TETHER_ERR_INVALID_ARGUMENT);
    CHECK(small.connect_attempts == 0);

    /* Scaled: a request whose deadline passes before the session picks it up is never sent,
     * and the first request of the process is slow to encode under valgrind. */
    int64_t rid = 0;
    const char *sleep60 = "{\"ms\":60000}";
    CHECK_OK(tether_client_request_with_timeout(c, "sleep", (const uint8_t *)sleep60, strlen(sleep60),
                                                200 * th_scale(), &rid));
    tether_event *ev = th_wait_response(c, rid, 10000);
    CHECK(tether_event_status(ev) == TETHER_ERR_REQUEST_TIMEOUT);
    tether_event_free(ev);
    st.size = sizeof st;
    CHECK_OK(tether_client_stats(c, &st));
    CHECK(st.requests_sent == 1 && st.requests_timed_out == 1 && st.requests_in_flight == 0);
    wait_text("timed out");

    th_close_and_free(c);
    wait_text("client closed");

    /* Replaced: the old context is destroyed once, after its last record, before the call
     * returns; removed: the same, and no record follows. */
    CHECK_OK(tether_set_log_callback(on_log, &cap, on_destroy, TETHER_LOG_ERROR));
    CHECK(cap.destroyed == 1);
    CHECK_OK(tether_set_log_callback(NULL, NULL, NULL, 0));
    CHECK(cap.destroyed == 2);
    int records = cap.records;
    tether_client *quiet = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(quiet));
    tether_event_free(th_wait(quiet, TETHER_EVENT_CONNECTED, NULL, 10000));
    th_close_and_free(quiet);
    CHECK(cap.records == records);

    /* Records carry the time they were written (Unix microseconds). */
    int64_t now_us = (int64_t)time(NULL) * 1000000;
    CHECK(cap.last_time_us > now_us - 60000000LL && cap.last_time_us < now_us + 60000000LL);

    /* No secret in any record. */
    CHECK(strstr(cap.text, "tether-password") == NULL);
    CHECK(cap.last_client == id || cap.last_client == 0);
}

static void test_null_handling(void) {
    uint32_t state = 7;
    tether_stats st;
    st.size = sizeof st;
    CHECK(tether_client_id(NULL) == 0);
    CHECK_STATUS(tether_client_state(NULL, &state), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_stats(NULL, &st), TETHER_ERR_NULL);
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_STATUS(tether_client_state(c, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_stats(c, NULL), TETHER_ERR_NULL);
    CHECK(state == 7);
    /* NULL callback with a destroy: the context is handed back at once. */
    int before = cap.destroyed;
    CHECK_OK(tether_set_log_callback(NULL, &cap, on_destroy, TETHER_LOG_INFO));
    CHECK(cap.destroyed == before + 1);
    tether_client_free(c);
}

/* The send budget: requests made before connect wait in the client and hold their bytes; one
 * past tether_config_set_max_unsent_bytes is refused with TETHER_ERR_SEND_BUFFER_FULL and
 * takes nothing; once written, the bytes are back and SEND_READY tells the refused caller so.
 * A caller with the first version of tether_stats gets everything before unsent_bytes. */
static void test_send_budget(void) {
    tether_config *bad = th_config(&backend);
    CHECK_OK(tether_config_set_max_unsent_bytes(bad, 0));
    tether_client *none = NULL;
    CHECK_STATUS(tether_client_new(bad, &none), TETHER_ERR_CONFIG);
    CHECK(none == NULL);
    tether_config_free(bad);
    CHECK_STATUS(tether_config_set_max_unsent_bytes(NULL, 1), TETHER_ERR_NULL);

    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_max_unsent_bytes(cfg, 4096));
    tether_client *c = th_client_from(cfg);
    char body[3002];
    memset(body, 'x', sizeof body);
    body[0] = body[sizeof body - 1] = '"';
    int64_t first = 0, second = 0;
    CHECK_OK(tether_client_request(c, "echo", (const uint8_t *)body, sizeof body, &first));
    tether_stats st;
    st.size = sizeof st;
    CHECK_OK(tether_client_stats(c, &st));
    CHECK(st.unsent_bytes > sizeof body && st.unsent_bytes < 4096);
    uint64_t held = st.unsent_bytes;
    CHECK_STATUS(tether_client_request(c, "echo", (const uint8_t *)body, sizeof body, &second),
                 TETHER_ERR_SEND_BUFFER_FULL);
    CHECK(second == 0);
    CHECK(strstr(tether_last_error(), "max_unsent_bytes") != NULL);
    CHECK_OK(tether_client_stats(c, &st));
    CHECK(st.unsent_bytes == held);

    /* The first version of the struct ends where unsent_bytes starts. */
    tether_stats old;
    memset(&old, 0xff, sizeof old);
    old.size = (uint32_t)offsetof(tether_stats, unsent_bytes);
    CHECK_OK(tether_client_stats(c, &old));
    CHECK(old.size == offsetof(tether_stats, unsent_bytes));
    CHECK(old.unsent_bytes == UINT64_MAX);
    CHECK(old.connect_attempts == 0);
    /* A size that ends inside a field gets the whole fields before it, nothing of that one. */
    memset(&old, 0xff, sizeof old);
    old.size = (uint32_t)offsetof(tether_stats, unsent_bytes) + 4;
    CHECK_OK(tether_client_stats(c, &old));
    CHECK(old.size == offsetof(tether_stats, unsent_bytes));
    CHECK(old.unsent_bytes == UINT64_MAX);

    /* Connected, the first request is written: SEND_READY says to send again, before the
     * reply to what was written. */
    CHECK_OK(tether_client_connect(c));
    tether_event *ev = th_wait(c, TETHER_EVENT_SEND_READY, NULL, 10000);
    const uint8_t *data = NULL;
    size_t len = 1;
    CHECK_OK(tether_event_data(ev, &data, &len));
    CHECK(tether_event_request_id(ev) == 0 && len == 0);
    tether_event_free(ev);
    ev = th_wait_response(c, first, 10000);
    CHECK(tether_event_status(ev) == TETHER_OK);
    tether_event_free(ev);
    CHECK_OK(tether_client_stats(c, &st));
    CHECK(st.unsent_bytes == 0);
    CHECK_OK(tether_client_request(c, "echo", (const uint8_t *)body, sizeof body, &second));
    ev = th_wait_response(c, second, 10000);
    CHECK(tether_event_status(ev) == TETHER_OK);
    tether_event_free(ev);
    th_close_and_free(c);
}

int main(void) {
    th_backend_start(&backend, NULL);
    TH_RUN(test_log_records_state_and_stats);
    TH_RUN(test_null_handling);
    TH_RUN(test_send_budget);
    th_backend_stop(&backend);
    return 0;
}
