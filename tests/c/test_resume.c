/*
 * Keepalive, resume and backpressure through the C API (gomuks spec §7 and §16): pings carry
 * the last received id, a cut connection resumes with every event delivered exactly once and
 * in order, and a slow consumer loses nothing.
 */
#include "harness.h"

static th_backend backend;

/* Takes MESSAGE events until `newest` arrived, checking buffered ids are consecutive, starting
 * after `*expect_prev` (0: take the first id seen as the start). Counts DISCONNECTED events. */
static void take_until(tether_client *c, int64_t newest, int64_t *expect_prev, int *disconnects,
                       int *resumed) {
    int64_t deadline = th_now_ms() + 20000 * th_scale();
    while (*expect_prev != newest) {
        CHECK(th_now_ms() < deadline);
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, 1000, &ev);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        uint32_t kind = tether_event_kind(ev);
        int64_t id = tether_event_request_id(ev);
        if (kind == TETHER_EVENT_DISCONNECTED) {
            CHECK(tether_event_retry_in_ms(ev) >= 0);
            (*disconnects)++;
        } else if (kind == TETHER_EVENT_CONNECTED && tether_event_resume_attempted(ev)) {
            (*resumed)++;
        } else if (kind == TETHER_EVENT_MESSAGE && id < 0) {
            if (*expect_prev != 0 && id != *expect_prev - 1)
                th_fail(__FILE__, __LINE__, "event %lld after %lld: gap or duplicate",
                        (long long)id, (long long)*expect_prev);
            *expect_prev = id;
        }
        tether_event_free(ev);
    }
}

/* §7.4 + §16: a ping acknowledges the newest received id; the backend records it. */
static void test_ping_acknowledges_last_event(void) {
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_ping_interval_ms(cfg, 100));
    tether_client *c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    int64_t newest = th_push(&backend, 5);
    int64_t prev = 0;
    int disconnects = 0, resumed = 0;
    take_until(c, newest, &prev, &disconnects, &resumed);
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (;;) {
        CHECK(th_now_ms() < deadline);
        tether_event *ev = th_wait(c, TETHER_EVENT_PONG, NULL, 10000);
        int64_t acked = tether_event_acked_id(ev);
        CHECK(tether_event_rtt_us(ev) >= 0);
        tether_event_free(ev);
        if (acked == newest) break;
    }
    char body[4096];
    CHECK(th_control(&backend, "GET", "/_testkit/stats", body, sizeof body) == 200);
    char want[64];
    snprintf(want, sizeof want, "\"last_ack\":%lld", (long long)newest);
    CHECK(strstr(body, want) != NULL);
    CHECK(disconnects == 0);
    th_close_and_free(c);
}

/* §16: after a cut the client reconnects with run_id + last_received_event and every event,
 * including those pushed while it was away, arrives exactly once and in order. */
static void test_resume_after_cuts(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    int64_t prev = 0;
    int disconnects = 0, resumed = 0;
    for (int round = 0; round < 5; round++) {
        int64_t newest = th_push(&backend, 20);
        if (prev == 0) prev = newest + 20;
        CHECK(th_control(&backend, "POST", "/_testkit/cut", NULL, 0) == 200);
        newest = th_push(&backend, 30);
        take_until(c, newest, &prev, &disconnects, &resumed);
    }
    CHECK(disconnects >= 1);
    CHECK(resumed >= 1);
    th_close_and_free(c);
}

/* A consumer that stops polling: the library stops reading (TCP backpressure), nothing is
 * dropped, and everything arrives once it polls again. */
static void test_backpressure(void) {
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_queue_capacity(cfg, 16));
    /* Uncompressed: one event per message, so a read takes no more events than there is room
     * for (a compressed batch could overfill the queue by hundreds). */
    CHECK_OK(tether_config_set_compression(cfg, false));
    tether_client *c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    tether_stats st;
    st.size = sizeof st;
    CHECK_OK(tether_client_stats(c, &st));
    uint64_t before = st.events_received;
    int64_t newest = th_push(&backend, 2000);
    usleep(300000); /* the queue is full long before this */
    /* Full, the library stopped reading: nearly all of the 2000 wait on the server's side. */
    st.size = sizeof st;
    CHECK_OK(tether_client_stats(c, &st));
    if (st.queued_events > 16 + 1 || st.events_received - before > 16 + 1)
        th_fail(__FILE__, __LINE__, "queue full, yet %llu events queued and %llu of 2000 read",
                (unsigned long long)st.queued_events,
                (unsigned long long)(st.events_received - before));
    int64_t prev = newest + 2000;
    int disconnects = 0, resumed = 0;
    take_until(c, newest, &prev, &disconnects, &resumed);
    CHECK(disconnects == 0);
    th_close_and_free(c);
}

int main(void) {
    /* No 4001 "Event queue full" (gomuks closes past 512 queued events): the backpressure
     * test checks that the library itself never drops anything when the app is slow. */
    const char *const args[] = {"--conn-queue-limit", "0", NULL};
    th_backend_start(&backend, args);
    TH_RUN(test_ping_acknowledges_last_event);
    TH_RUN(test_resume_after_cuts);
    TH_RUN(test_backpressure);
    th_backend_stop(&backend);
    return 0;
}
