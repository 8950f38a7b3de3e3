/*
 * RESUMED and TOKEN_RENEWED through the C API (gomuks spec §7.2 and §1.2): a resume after a
 * cut succeeds, a backend restart and a buffer overrun reset, and a short-lived token is
 * renewed while connected and announced without the secret.
 */
#include "harness.h"

static th_backend backend;

/* Takes events until RESUMED; returns its outcome. Checks that no init_complete came first
 * (the outcome precedes the message that decided it) and that no other RESUMED follows before
 * init_complete. */
static uint32_t wait_resumed(tether_client *c) {
    tether_event *ev = th_wait(c, TETHER_EVENT_CONNECTED, NULL, 20000);
    CHECK(tether_event_resume_attempted(ev));
    tether_event_free(ev);
    uint32_t outcome = 0;
    int64_t deadline = th_now_ms() + 20000 * th_scale();
    for (;;) {
        CHECK(th_now_ms() < deadline);
        ev = NULL;
        tether_status s = tether_client_poll(c, 1000, &ev);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        uint32_t kind = tether_event_kind(ev);
        if (kind == TETHER_EVENT_RESUMED) {
            CHECK(outcome == 0);
            outcome = tether_event_resume_outcome(ev);
            CHECK(tether_event_status(ev) == TETHER_OK);
            CHECK(strcmp(tether_event_command(ev), "") == 0);
        } else {
            CHECK(tether_event_resume_outcome(ev) == 0);
        }
        int init = kind == TETHER_EVENT_MESSAGE &&
                   strcmp(tether_event_command(ev), "init_complete") == 0;
        tether_event_free(ev);
        if (init) break;
    }
    CHECK(outcome != 0);
    return outcome;
}

static tether_client *connected_client(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    int64_t newest = th_push(&backend, 2);
    /* Wait for the newest event so the resume point is known. */
    for (;;) {
        tether_event *ev = th_wait(c, TETHER_EVENT_MESSAGE, NULL, 10000);
        int done = tether_event_request_id(ev) == newest;
        tether_event_free(ev);
        if (done) break;
    }
    return c;
}

/* §7.2/§7.5: a cut with events missed meanwhile: the resume succeeds. */
static void test_resume_after_cut_succeeds(void) {
    tether_client *c = connected_client();
    CHECK(th_control(&backend, "POST", "/_testkit/cut?push=3", NULL, 0) == 200);
    CHECK(wait_resumed(c) == TETHER_RESUME_SUCCEEDED);
    th_close_and_free(c);
}

/* §7.2: a backend restart (new run_id) resets the state. */
static void test_restart_resets(void) {
    tether_client *c = connected_client();
    CHECK(th_control(&backend, "POST", "/_testkit/restart", NULL, 0) == 200);
    CHECK(wait_resumed(c) == TETHER_RESUME_RESET);
    th_close_and_free(c);
}

/* §7.2/§7.4: more events missed than the buffer (5 here) holds: reset. */
static void test_buffer_overrun_resets(void) {
    tether_client *c = connected_client();
    CHECK(th_control(&backend, "POST", "/_testkit/reject_upgrades?n=1000000", NULL, 0) == 200);
    CHECK(th_control(&backend, "POST", "/_testkit/cut?push=20", NULL, 0) == 200);
    tether_event_free(th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, 10000));
    CHECK(th_control(&backend, "POST", "/_testkit/reject_upgrades?n=0", NULL, 0) == 200);
    CHECK(wait_resumed(c) == TETHER_RESUME_RESET);
    th_close_and_free(c);
}

/* §1.2: the first token of a password login is not announced (it replaces nothing); a token
 * that lives 2 s is renewed while connected, each new one announced by TOKEN_RENEWED with no
 * payload; tether_client_auth_token has it. */
static void test_token_renewed_while_connected(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    tether_event *ev = NULL;
    /* Up to CONNECTED: no TOKEN_RENEWED for the login itself. */
    for (;;) {
        ev = NULL;
        tether_status s = tether_client_poll(c, 10000 * th_scale(), &ev);
        CHECK_OK(s);
        uint32_t kind = tether_event_kind(ev);
        tether_event_free(ev);
        CHECK(kind != TETHER_EVENT_TOKEN_RENEWED);
        if (kind == TETHER_EVENT_CONNECTED) break;
    }
    char first[512], now[512];
    CHECK_OK(tether_client_auth_token(c, first, sizeof first, NULL));
    CHECK(strlen(first) > 0);
    for (int i = 0; i < 2; i++) {
        ev = th_wait(c, TETHER_EVENT_TOKEN_RENEWED, NULL, 10000);
        const uint8_t *p = NULL;
        size_t n = 1;
        CHECK_OK(tether_event_data(ev, &p, &n));
        CHECK(n == 0);
        tether_event_free(ev);
    }
    CHECK_OK(tether_client_auth_token(c, now, sizeof now, NULL));
    CHECK(strcmp(first, now) != 0);
    char body[4096];
    CHECK(th_control(&backend, "GET", "/_testkit/stats", body, sizeof body) == 200);
    CHECK(strstr(body, "\"token_renewals\":0,") == NULL);
    th_close_and_free(c);
}

static void test_null_event(void) {
    CHECK(tether_event_resume_outcome(NULL) == 0);
}

int main(void) {
    /* Scaled: renewed at half its life, a token must outlive the renewal's round trip. */
    char lifetime[16];
    snprintf(lifetime, sizeof lifetime, "%d", 2000 * th_scale());
    const char *const args[] = {"--buffer-size", "5", "--token-lifetime-ms", lifetime, NULL};
    th_backend_start(&backend, args);
    TH_RUN(test_null_event);
    TH_RUN(test_resume_after_cut_succeeds);
    TH_RUN(test_restart_resets);
    TH_RUN(test_buffer_overrun_resets);
    TH_RUN(test_token_renewed_while_connected);
    th_backend_stop(&backend);
    return 0;
}
