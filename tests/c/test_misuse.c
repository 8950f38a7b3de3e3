/*
 * Misuse of the C API against a real tether-backend: every wrong call gets a clear status
 * and a useful tether_last_error(), leaves its outputs and the handle as they were, and loses
 * nothing (no event, request, setting or mode choice). Complements test_api.c, which already
 * covers the NULL handles of the core calls, bad UTF-8 and JSON, poll/callback mode mixing
 * and double close; this file covers the rest. Also compiled as C++.
 *
 * The last four tests reproduce library bugs this file found (each failed before its fix).
 */
#include "harness.h"

#include <pthread.h>

static th_backend backend;

static const char bad_utf8[] = {'r', 'u', 'n', (char)0xff, 0};
static const char *const rwws_key = "dGV0aGVyLXRlc3Qta2V5"; /* the testkit's default key */

/* The last error of the calling thread contains `what`. */
#define CHECK_ERROR_MENTIONS(what)                                                         \
    do {                                                                                   \
        if (strstr(tether_last_error(), (what)) == NULL)                                   \
            th_fail(__FILE__, __LINE__, "last error does not mention \"%s\"", (what));     \
    } while (0)

/* Leaves a last error that does not contain `what`, so a call that fails without recording
 * its own message cannot pass CHECK_ERROR_MENTIONS on a stale one. */
static void reset_last_error(const char *what) {
    tether_batch *b = NULL;
    CHECK(tether_batch_new(0, &b) == TETHER_ERR_INVALID_ARGUMENT); /* "max_events ..." */
    if (strstr(tether_last_error(), what) != NULL)
        CHECK(tether_client_cancel(NULL, 1) == TETHER_ERR_NULL); /* "client is NULL" */
    if (strstr(tether_last_error(), what) != NULL)
        th_fail(__FILE__, __LINE__, "cannot reset the last error away from \"%s\"", what);
}

/* Status and message of a failing call, in one line. */
#define CHECK_FAILS(expr, want, what)                                                      \
    do {                                                                                   \
        reset_last_error(what);                                                            \
        CHECK_STATUS(expr, want);                                                          \
        CHECK_ERROR_MENTIONS(what);                                                        \
    } while (0)

static tether_client *connected_client(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    return c;
}

/* Takes whatever is queued right now, so a following poll really blocks. */
static void drain(tether_client *c) {
    for (int i = 0; i < 10000; i++) {
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, 0, &ev);
        if (s == TETHER_TIMEOUT) return;
        CHECK_OK(s);
        tether_event_free(ev);
    }
    th_fail(__FILE__, __LINE__, "the queue never drained");
}

static int64_t echo(tether_client *c) {
    int64_t id = 0;
    CHECK_OK(tether_client_request(c, "echo", (const uint8_t *)"{\"x\":1}", 7, &id));
    tether_event *ev = th_wait_response(c, id, 10000);
    CHECK_STATUS(tether_event_status(ev), TETHER_OK);
    CHECK(th_data_is(ev, "{\"x\":1}"));
    tether_event_free(ev);
    return id;
}

static tether_config *rwws_config(void) {
    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_url(cfg, backend.http));
    CHECK_OK(tether_config_set_protocol(cfg, TETHER_PROTOCOL_RWWS));
    CHECK_OK(tether_config_set_token(cfg, rwws_key));
    CHECK_OK(tether_config_set_reconnect_backoff_ms(cfg, 20, 100));
    return cfg;
}

/* tether_client_new must refuse `cfg` with TETHER_ERR_CONFIG naming `what`, leave *out alone,
 * and then free the config. */
static void expect_config_error(tether_config *cfg, const char *what, int line) {
    tether_client *sentinel = (tether_client *)&backend;
    tether_client *c = sentinel;
    reset_last_error(what);
    tether_status s = tether_client_new(cfg, &c);
    if (s != TETHER_ERR_CONFIG)
        th_fail(__FILE__, line, "tether_client_new returned %d (%s), expected TETHER_ERR_CONFIG",
                (int)s, tether_status_str(s));
    if (c != sentinel) th_fail(__FILE__, line, "*out was written on failure");
    if (strstr(tether_last_error(), what) == NULL)
        th_fail(__FILE__, line, "last error does not mention \"%s\"", what);
    tether_config_free(cfg);
}
#define EXPECT_CONFIG_ERROR(cfg, what) expect_config_error((cfg), (what), __LINE__)

/* ---------------------------------------------------------------------------------------- */
/* NULL handles and pointers not covered by test_api.c                                      */

static tether_status never_resolve(void *ctx, const char *url, tether_proxy_answer *answer) {
    (void)ctx, (void)url, (void)answer;
    th_fail(__FILE__, __LINE__, "a resolver was asked without a client");
    return TETHER_ERR_CONNECT;
}

static void count_ctx_destroy(void *ctx) { ++*(int *)ctx; }

static void test_every_config_setter_rejects_null_config(void) {
    const uint8_t pem[] = "-----BEGIN CERTIFICATE-----";
    CHECK_FAILS(tether_config_set_protocol(NULL, TETHER_PROTOCOL_GOMUKS), TETHER_ERR_NULL,
                "config");
    CHECK_FAILS(tether_config_set_token(NULL, "t"), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_basic_auth(NULL, "u", "p"), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_ping_interval_ms(NULL, 1000), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_receive_timeout_ms(NULL, 1000), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_request_timeout_ms(NULL, 1000), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_connect_timeout_ms(NULL, 1000), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_reconnect_backoff_ms(NULL, 1, 2), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_max_message_bytes(NULL, 4096), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_queue_capacity(NULL, 16), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_max_unsent_bytes(NULL, 16), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_resume_state(NULL, "r", -1), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_last_server_ts(NULL, 1), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_prev_listener_id(NULL, true), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_add_header(NULL, "Origin", "x"), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_ca_pem(NULL, pem, sizeof pem), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_crl_pem(NULL, pem, sizeof pem), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_allow_insecure_credentials(NULL, true), TETHER_ERR_NULL,
                "config");
    CHECK_FAILS(tether_config_set_proxy(NULL, "http://127.0.0.1:3128"), TETHER_ERR_NULL,
                "config");
    CHECK_FAILS(tether_config_add_pin_sha256(NULL, "sha256/x"), TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_client_cert_pem(NULL, pem, sizeof pem, pem, sizeof pem),
                TETHER_ERR_NULL, "config");
    CHECK_FAILS(tether_config_set_use_os_trust(NULL, true), TETHER_ERR_NULL, "config");
    /* The resolver's context is the app's again at once: destroy ran. */
    int gone = 0;
    CHECK_FAILS(tether_config_set_proxy_resolver(NULL, never_resolve, &gone, count_ctx_destroy),
                TETHER_ERR_NULL, "config");
    CHECK(gone == 1);
    CHECK_FAILS(tether_proxy_answer_set(NULL, "direct"), TETHER_ERR_NULL, "answer");
}

/* Removing a resolver (cb NULL) runs the destroy given with the call at once, and replacing or
 * freeing the config runs the old one's; none is ever asked. */
static void test_proxy_resolver_contexts_are_destroyed_once(void) {
    int a = 0, b = 0, none = 0;
    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_proxy_resolver(cfg, never_resolve, &a, count_ctx_destroy));
    CHECK(a == 0);
    CHECK_OK(tether_config_set_proxy_resolver(cfg, never_resolve, &b, count_ctx_destroy));
    CHECK(a == 1 && b == 0);
    CHECK_OK(tether_config_set_proxy_resolver(cfg, NULL, &none, count_ctx_destroy));
    CHECK(b == 1 && none == 1);
    CHECK_OK(tether_config_set_proxy_resolver(cfg, never_resolve, &a, count_ctx_destroy));
    tether_config_free(cfg);
    CHECK(a == 2 && b == 1 && none == 1);
}

/* A replaced resolver's destroy(ctx) runs inside the call that replaced it, and may call back
 * into that same config: set an option, make a client from it. */
static tether_config *reentered_cfg;

static void destroy_reentering_its_config(void *ctx) {
    ++*(int *)ctx;
    CHECK_OK(tether_config_set_url(reentered_cfg, "ws://127.0.0.1:9/second"));
    tether_client *c = NULL;
    CHECK_OK(tether_client_new(reentered_cfg, &c));
    tether_client_free(c);
}

static void test_a_resolver_destroy_may_call_into_its_config(void) {
    int destroyed = 0;
    CHECK_OK(tether_config_new(&reentered_cfg));
    CHECK_OK(tether_config_set_url(reentered_cfg, "ws://127.0.0.1:9/first"));
    CHECK_OK(tether_config_set_proxy_resolver(reentered_cfg, never_resolve, &destroyed,
                                              destroy_reentering_its_config));
    CHECK_OK(tether_config_set_proxy_resolver(reentered_cfg, NULL, NULL, NULL));
    CHECK(destroyed == 1);
    CHECK_OK(tether_config_set_url(reentered_cfg, "ws://127.0.0.1:9/third"));
    tether_config_free(reentered_cfg);
}

static void test_client_calls_reject_null_client_and_keep_outputs(void) {
    int64_t id = 55;
    CHECK_FAILS(tether_client_request_with_timeout(NULL, "echo", NULL, 0, 1000, &id),
                TETHER_ERR_NULL, "client");
    CHECK(id == 55);
    CHECK_FAILS(tether_client_send_packet(NULL, (const uint8_t *)"x", 1), TETHER_ERR_NULL,
                "client");
    tether_settings *s = NULL;
    CHECK_OK(tether_settings_new(&s));
    CHECK_FAILS(tether_client_send_settings(NULL, s), TETHER_ERR_NULL, "client");
    tether_settings_free(s);
    /* poll on a NULL client leaves a non-NULL *out alone. */
    tether_event *sentinel = (tether_event *)&backend;
    tether_event *ev = sentinel;
    CHECK_FAILS(tether_client_poll(NULL, 0, &ev), TETHER_ERR_NULL, "client");
    CHECK(ev == sentinel);
    size_t len = 9;
    int64_t last = 9;
    char buf[8] = "keep";
    CHECK_FAILS(tether_client_resume_state(NULL, buf, sizeof buf, &len, &last), TETHER_ERR_NULL,
                "client");
    CHECK(len == 9 && last == 9 && strcmp(buf, "keep") == 0);
    CHECK_FAILS(tether_client_auth_token(NULL, buf, sizeof buf, &len), TETHER_ERR_NULL, "client");
    CHECK(len == 9 && strcmp(buf, "keep") == 0);
}

static void test_settings_reject_null_list_and_null_value(void) {
    CHECK_FAILS(tether_settings_new(NULL), TETHER_ERR_NULL, "out");
    CHECK_FAILS(tether_settings_add(NULL, 5, (const uint8_t *)"a", 1), TETHER_ERR_NULL,
                "settings");
    tether_settings *s = NULL;
    CHECK_OK(tether_settings_new(&s));
    CHECK(s != NULL);
    CHECK_FAILS(tether_settings_add(s, 6, NULL, 3), TETHER_ERR_NULL, "value");
    CHECK_OK(tether_settings_add(s, 7, NULL, 0)); /* documented: NULL with 0 is empty */
    tether_settings_free(s);
}

static void test_event_accessors_on_null_and_null_outputs(void) {
    CHECK(tether_event_server_time_ms(NULL) == 0);
    CHECK(tether_event_attempt(NULL) == 0);
    /* With a NULL event, non-NULL outputs stay as they were. */
    const uint8_t keep = 0;
    const uint8_t *p = &keep;
    size_t n = 42;
    CHECK_FAILS(tether_event_data(NULL, &p, &n), TETHER_ERR_NULL, "event");
    CHECK(p == &keep && n == 42);
    /* A real event with one NULL output: the other output is not written either. */
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_close(c));
    tether_event *ev = th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000);
    CHECK_FAILS(tether_event_data(ev, NULL, &n), TETHER_ERR_NULL, "ptr");
    CHECK(n == 42);
    CHECK_FAILS(tether_event_data(ev, &p, NULL), TETHER_ERR_NULL, "len");
    CHECK(p == &keep);
    CHECK(tether_event_attempt(ev) == 0 && tether_event_server_time_ms(ev) == 0);
    tether_event_free(ev);
    tether_client_free(c);
}

static void test_status_str_of_undefined_values(void) {
    /* Gaps between the defined ranges, just past both ends, and the extremes. */
    const tether_status undefined[] = {3,  -13, -19, -25, -29, -38, -44, -49, -52, -59, -63,
                                       1000, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof undefined / sizeof undefined[0]; i++) {
        const char *s = tether_status_str(undefined[i]);
        CHECK(s != NULL && strcmp(s, "unknown status") == 0);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Argument misuse with real handles                                                        */

/* Failed setters leave the config as it was: afterwards it still builds a client that
 * authenticates, and the resume state set before is the one the client reports. */
static void test_failed_setters_leave_config_unchanged(void) {
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_resume_state(cfg, "run-before", 0));
    CHECK_FAILS(tether_config_set_basic_auth(cfg, NULL, "wrong"), TETHER_ERR_NULL, "user");
    CHECK_FAILS(tether_config_set_basic_auth(cfg, bad_utf8, "wrong"), TETHER_ERR_INVALID_UTF8,
                "user");
    CHECK_FAILS(tether_config_set_basic_auth(cfg, "tether", bad_utf8), TETHER_ERR_INVALID_UTF8,
                "password");
    CHECK_FAILS(tether_config_set_token(cfg, NULL), TETHER_ERR_NULL, "token");
    CHECK_FAILS(tether_config_set_token(cfg, bad_utf8), TETHER_ERR_INVALID_UTF8, "token");
    CHECK_FAILS(tether_config_add_header(cfg, NULL, "v"), TETHER_ERR_NULL, "name");
    CHECK_FAILS(tether_config_add_header(cfg, "X-A", NULL), TETHER_ERR_NULL, "value");
    CHECK_FAILS(tether_config_add_header(cfg, bad_utf8, "v"), TETHER_ERR_INVALID_UTF8, "name");
    CHECK_FAILS(tether_config_add_header(cfg, "X-A", bad_utf8), TETHER_ERR_INVALID_UTF8, "value");
    CHECK_FAILS(tether_config_set_protocol(cfg, 0), TETHER_ERR_INVALID_ARGUMENT, "protocol");
    CHECK_FAILS(tether_config_set_ca_pem(cfg, (const uint8_t *)"x", 0),
                TETHER_ERR_INVALID_ARGUMENT, "PEM");
    CHECK_FAILS(tether_config_set_crl_pem(cfg, (const uint8_t *)"x", 0),
                TETHER_ERR_INVALID_ARGUMENT, "PEM");
    CHECK_FAILS(tether_config_set_crl_pem(cfg, NULL, 5), TETHER_ERR_NULL, "pem");
    CHECK_FAILS(tether_config_add_pin_sha256(cfg, NULL), TETHER_ERR_NULL, "pin");
    CHECK_FAILS(tether_config_add_pin_sha256(cfg, bad_utf8), TETHER_ERR_INVALID_UTF8, "pin");
    CHECK_FAILS(tether_config_set_client_cert_pem(cfg, NULL, 5, (const uint8_t *)"k", 1),
                TETHER_ERR_NULL, "cert");
    CHECK_FAILS(tether_config_set_client_cert_pem(cfg, (const uint8_t *)"c", 1, NULL, 5),
                TETHER_ERR_NULL, "key");
    CHECK_FAILS(tether_config_set_client_cert_pem(cfg, (const uint8_t *)"c", 1,
                                                  (const uint8_t *)"k", 0),
                TETHER_ERR_INVALID_ARGUMENT, "PEM");
    CHECK_FAILS(tether_config_set_resume_state(cfg, NULL, -3), TETHER_ERR_NULL, "run_id");
    CHECK_FAILS(tether_config_set_resume_state(cfg, bad_utf8, -3), TETHER_ERR_INVALID_UTF8,
                "run_id");
    tether_client *c = th_client_from(cfg);
    char run_id[32];
    size_t len = 0;
    int64_t last = 1;
    CHECK_OK(tether_client_resume_state(c, run_id, sizeof run_id, &len, &last));
    CHECK(strcmp(run_id, "run-before") == 0 && len == 10 && last == 0);
    /* Credentials intact (a failed setter did not clear or replace them), no header added,
     * still gomuks: it connects and serves requests. */
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    echo(c);
    th_close_and_free(c);
}

/* Documented: a last_received_event above 0 is refused (by tether_client_new); the previous
 * resume point survives a rejected run_id. */
static void test_resume_state_setter_rejects_bad_values(void) {
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_resume_state(cfg, "run-A", -5));
    CHECK_FAILS(tether_config_set_resume_state(cfg, NULL, -7), TETHER_ERR_NULL, "run_id");
    CHECK_FAILS(tether_config_set_resume_state(cfg, bad_utf8, -9), TETHER_ERR_INVALID_UTF8,
                "run_id");
    tether_client *c = NULL;
    CHECK_OK(tether_client_new(cfg, &c));
    char run_id[16];
    size_t len = 0;
    int64_t last = 0;
    CHECK_OK(tether_client_resume_state(c, run_id, sizeof run_id, &len, &last));
    CHECK(strcmp(run_id, "run-A") == 0 && len == 5 && last == -5);
    tether_client_free(c);
    CHECK_OK(tether_config_set_resume_state(cfg, "run-B", 3));
    EXPECT_CONFIG_ERROR(cfg, "last_received_event");
}

/* A run_id buffer that is too small: BUFFER_TOO_SMALL, the needed length reported, and
 * nothing written to the buffer or to the event id. */
static void test_resume_state_getter_with_small_or_null_buffer(void) {
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_resume_state(cfg, "run-0123456789", -42)); /* 14 bytes */
    tether_client *c = th_client_from(cfg);
    char buf[32];
    size_t caps[] = {1, 13, 14};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        memset(buf, 'Z', sizeof buf);
        size_t len = 0;
        int64_t last = 99;
        CHECK_FAILS(tether_client_resume_state(c, buf, caps[i], &len, &last),
                    TETHER_ERR_BUFFER_TOO_SMALL, "needs 15 bytes");
        CHECK(len == 14);
        CHECK(last == 99);
        for (size_t j = 0; j < sizeof buf; j++) CHECK(buf[j] == 'Z');
    }
    /* A capacity but no buffer (enough room or not): TETHER_ERR_NULL, and nothing written,
     * neither the length nor the event id. */
    int64_t last = 99;
    size_t untouched = 7;
    CHECK_FAILS(tether_client_resume_state(c, NULL, 100, &untouched, &last), TETHER_ERR_NULL,
                "run_id");
    CHECK_FAILS(tether_client_resume_state(c, NULL, 3, &untouched, &last), TETHER_ERR_NULL,
                "run_id");
    CHECK(last == 99 && untouched == 7);
    CHECK_FAILS(tether_client_auth_token(c, NULL, 100, &untouched), TETHER_ERR_NULL, "token");
    CHECK(untouched == 7);
    /* Exactly enough: written with its NUL. */
    memset(buf, 'Z', sizeof buf);
    size_t len = 0;
    CHECK_OK(tether_client_resume_state(c, buf, 15, &len, &last));
    CHECK(len == 14 && last == -42 && strcmp(buf, "run-0123456789") == 0 && buf[15] == 'Z');
    tether_client_free(c);

    /* No run_id yet: "" needs 1 byte, and (NULL, 0) asks for the size. */
    c = th_client_from(th_config(&backend));
    len = 7;
    CHECK_STATUS(tether_client_resume_state(c, NULL, 0, &len, NULL), TETHER_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 0);
    CHECK_OK(tether_client_resume_state(c, buf, 1, &len, &last));
    CHECK(buf[0] == 0 && last == 0);
    tether_client_free(c);
}

/* Documented for tether_config_add_header: invalid names or values are reported by
 * tether_client_new. */
static void test_add_header_with_crlf_or_bad_name_fails_client_new(void) {
    const char *const bad[][2] = {
        {"X-Test", "a\r\nInjected: 1"}, {"X-Test", "a\nb"}, {"X-Test", "a\rb"},
        {"Bad Name", "v"},              {"X:Y", "v"},       {"", "v"},
        {"X-Test\r\nInjected", "v"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tether_config *cfg = th_config(&backend);
        CHECK_OK(tether_config_add_header(cfg, bad[i][0], bad[i][1]));
        EXPECT_CONFIG_ERROR(cfg, "header");
    }
    /* A valid header (a tab is allowed in a value) is accepted and the client works. */
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_add_header(cfg, "X-Tether-Test", "ok value\twith tab"));
    tether_client *c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    th_close_and_free(c);
}

/* Values a setter takes but tether_client_new refuses, with a reason; the same config,
 * corrected, then builds a client (a failed tether_client_new does not spoil it). */
/* A self-signed client certificate, its key, and a key of another certificate (test data
 * only, made with openssl for this file). */
static const char CLIENT_CERT[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBhzCCAS2gAwIBAgIUAsTvoR7qkHP2UD0O7GZhzWZ4FN4wCgYIKoZIzj0EAwIw\n"
    "GDEWMBQGA1UEAwwNdGV0aGVyLWMtdGVzdDAgFw0yNjEyMDIwMjIzMThaGA8yMTI2\n"
    "MTEwODAyMjMxOFowGDEWMBQGA1UEAwwNdGV0aGVyLWMtdGVzdDBZMBMGByqGSM49\n"
    "AgEGCCqGSM49AwEHA0IABH7+DephGSzmM1xENPXClSO41Gju6lrZ4oAS+FE4DTA9\n"
    "bbxePh6Od2QOHQ19hWTvzIAOIrRTygCHIO3VqIw0wDyjUzBRMB0GA1UdDgQWBBT0\n"
    "PDoqKuAIEOlr7bvrwDeNaxGaeDAfBgNVHSMEGDAWgBT0PDoqKuAIEOlr7bvrwDeN\n"
    "axGaeDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIA882o6P5jKu\n"
    "uN5FYG7IZS9qwTygKZg20TL7F5yI8rjFAiEAyGSeOHoWl2MJZJhbWiD7hCC8rL8i\n"
    "hS2jTXR8HvYlXjw=\n"
    "-----END CERTIFICATE-----\n"
;
static const char CLIENT_KEY[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQf6NDpV7muar1pjg\n"
    "7pxkllwoHxJcBt87nWcjThm4UxehRANCAAR+/g3qYRks5jNcRDT1wpUjuNRo7upa\n"
    "2eKAEvhROA0wPW28Xj4ejndkDh0NfYVk78yADiK0U8oAhyDt1aiMNMA8\n"
    "-----END PRIVATE KEY-----\n"
;
static const char OTHER_KEY[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5EW8YFGb/EtbOleG\n"
    "ONs6Mqs4xicG37q3xYbKbCo8/66hRANCAASOFKkTau+abVTgNnQSBTGqOdfbHkhr\n"
    "zj3mUv2ffwPeX1bRDc9xOVar5MuSN0Uvree213M7UAhVyHXaXdX4wOvp\n"
    "-----END PRIVATE KEY-----\n"
;
#define BYTES(s) (const uint8_t *)(s), strlen(s)

/* Trust settings are parsed by tether_client_new: a malformed pin, a pin over plain ws://
 * (it would check nothing), a client key that is no key or belongs to another certificate,
 * a client certificate over plain ws:// (nobody would be shown it). The key's text never
 * appears in the error. */
static void test_trust_settings_are_checked_by_client_new(void) {
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_add_pin_sha256(cfg, "sha256/too-short"));
    EXPECT_CONFIG_ERROR(cfg, "pin");
    cfg = th_config(&backend); /* http://127.0.0.1:... */
    CHECK_OK(tether_config_add_pin_sha256(cfg, "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));
    EXPECT_CONFIG_ERROR(cfg, "wss://");
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_client_cert_pem(cfg, BYTES(CLIENT_CERT),
                                               BYTES("-----BEGIN PRIVATE KEY-----\nSEKRIT\n")));
    EXPECT_CONFIG_ERROR(cfg, "client key");
    CHECK(strstr(tether_last_error(), "SEKRIT") == NULL);
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_client_cert_pem(cfg, BYTES(CLIENT_CERT), BYTES(OTHER_KEY)));
    EXPECT_CONFIG_ERROR(cfg, "does not belong");
    /* A good pair over plain http: nobody would be shown it. */
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_client_cert_pem(cfg, BYTES(CLIENT_CERT), BYTES(CLIENT_KEY)));
    EXPECT_CONFIG_ERROR(cfg, "client certificate needs a wss://");
    /* Well-formed: both forms of a pin over https, a matching key, the OS store. */
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_url(cfg, "https://localhost:1"));
    CHECK_OK(tether_config_add_pin_sha256(cfg, "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));
    CHECK_OK(tether_config_add_pin_sha256(cfg, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));
    CHECK_OK(tether_config_set_client_cert_pem(cfg, BYTES(CLIENT_CERT), BYTES(CLIENT_KEY)));
    CHECK_OK(tether_config_set_use_os_trust(cfg, true));
    tether_client *c = th_client_from(cfg);
    tether_client_free(c);
}

static void test_out_of_range_config_values_fail_client_new(void) {
    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_reconnect_backoff_ms(cfg, 200, 100)); /* min > max */
    EXPECT_CONFIG_ERROR(cfg, "backoff");
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_reconnect_backoff_ms(cfg, 0, 100));
    EXPECT_CONFIG_ERROR(cfg, "backoff");
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_max_message_bytes(cfg, 0));
    EXPECT_CONFIG_ERROR(cfg, "max message bytes");
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_max_message_bytes(cfg, 1023));
    EXPECT_CONFIG_ERROR(cfg, "at least 1024");
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_queue_capacity(cfg, 0));
    EXPECT_CONFIG_ERROR(cfg, "queue capacity");
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_request_timeout_ms(cfg, 0));
    EXPECT_CONFIG_ERROR(cfg, "timeouts must be positive");
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_connect_timeout_ms(cfg, 0));
    EXPECT_CONFIG_ERROR(cfg, "timeouts must be positive");
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_receive_timeout_ms(cfg, 0));
    EXPECT_CONFIG_ERROR(cfg, "receive timeout");
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_ping_interval_ms(cfg, 5000));
    CHECK_OK(tether_config_set_receive_timeout_ms(cfg, 5000)); /* must exceed the ping */
    EXPECT_CONFIG_ERROR(cfg, "receive timeout must exceed");
    cfg = rwws_config();
    CHECK_OK(tether_config_set_ping_interval_ms(cfg, 30000));
    CHECK_OK(tether_config_set_receive_timeout_ms(cfg, 60000));
    EXPECT_CONFIG_ERROR(cfg, "30 s");
    cfg = rwws_config();
    CHECK_OK(tether_config_set_token(cfg, ""));
    EXPECT_CONFIG_ERROR(cfg, "1-127 bytes");
    /* A revocation list that is not one is refused when the client is made. */
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_crl_pem(cfg, (const uint8_t *)"garbage", 7));
    EXPECT_CONFIG_ERROR(cfg, "CRL");
    /* A proxy URL tether cannot use: the message names the option, never the URL. */
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_proxy(cfg, "ftp://u:hunter2@127.0.0.1:21"));
    EXPECT_CONFIG_ERROR(cfg, "unsupported proxy scheme");
    CHECK(strstr(tether_last_error(), "hunter2") == NULL);
    cfg = th_config(&backend);
    CHECK_FAILS(tether_config_set_proxy(cfg, "http://\xff@h:1"), TETHER_ERR_INVALID_UTF8, "url");
    /* NULL and "" restore the default, "direct" is accepted. */
    CHECK_OK(tether_config_set_proxy(cfg, NULL));
    CHECK_OK(tether_config_set_proxy(cfg, ""));
    CHECK_OK(tether_config_set_proxy(cfg, "direct"));
    tether_config_free(cfg);

    /* The smallest accepted values, on one config that failed first. */
    cfg = th_config(&backend);
    CHECK_OK(tether_config_set_queue_capacity(cfg, 0));
    tether_client *c = NULL;
    CHECK_STATUS(tether_client_new(cfg, &c), TETHER_ERR_CONFIG);
    CHECK(c == NULL);
    CHECK_OK(tether_config_set_queue_capacity(cfg, 1));
    CHECK_OK(tether_config_set_max_message_bytes(cfg, 1024 * 1024));
    CHECK_OK(tether_config_set_reconnect_backoff_ms(cfg, 1, 1));
    CHECK_OK(tether_config_set_request_timeout_ms(cfg, 1));
    CHECK_OK(tether_config_set_connect_timeout_ms(cfg, 10000));
    c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    /* Queue capacity 1 still delivers everything, in order, nothing dropped. */
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    int64_t newest = th_push(&backend, 20);
    for (int64_t expect = newest + 19; expect >= newest;) {
        tether_event *ev = th_wait(c, TETHER_EVENT_MESSAGE, NULL, 10000);
        int64_t id = tether_event_request_id(ev);
        tether_event_free(ev);
        if (id > newest + 19 || id >= 0) continue; /* replayed at connect */
        CHECK(id == expect);
        expect--;
    }
    th_close_and_free(c);
}

/* The config is copied by tether_client_new: it can build a second client, changing or
 * freeing it afterwards does not reach the clients, and both work. */
static void test_config_reused_changed_and_freed_after_client_new(void) {
    tether_config *cfg = th_config(&backend);
    tether_client *a = NULL, *b = NULL;
    CHECK_OK(tether_client_new(cfg, &a));
    CHECK_OK(tether_client_new(cfg, &b));
    CHECK(a != NULL && b != NULL && a != b);
    /* Would break both clients if they shared the config. */
    CHECK_OK(tether_config_set_basic_auth(cfg, "tether", "wrong-password"));
    CHECK_OK(tether_config_set_url(cfg, "http://127.0.0.1:1"));
    CHECK_OK(tether_config_add_header(cfg, "Bad Name", "v"));
    tether_config_free(cfg);
    CHECK_OK(tether_client_connect(a));
    CHECK_OK(tether_client_connect(b));
    tether_event_free(th_wait(a, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    tether_event_free(th_wait(b, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    echo(a);
    echo(b);
    th_close_and_free(a);
    th_close_and_free(b);
}

static void test_connect_twice_is_state_error_and_session_survives(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    CHECK_FAILS(tether_client_connect(c), TETHER_ERR_STATE, "already");
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    CHECK_FAILS(tether_client_connect(c), TETHER_ERR_STATE, "already");
    echo(c);
    th_close_and_free(c);

    /* Closed before it ever connected: connect is refused too. */
    c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_close(c));
    CHECK_FAILS(tether_client_connect(c), TETHER_ERR_STATE, "closed");
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    tether_client_free(c);
}

/* send_packet and send_settings are rwws-only; the gomuks client keeps working. */
static void test_rwws_only_calls_on_gomuks_client(void) {
    tether_client *c = connected_client();
    tether_settings *s = NULL;
    CHECK_OK(tether_settings_new(&s));
    CHECK_OK(tether_settings_add(s, 5, (const uint8_t *)"\x01", 1));
    CHECK_FAILS(tether_client_send_settings(c, s), TETHER_ERR_STATE, "send_settings is for rwws");
    CHECK_FAILS(tether_client_send_packet(c, (const uint8_t *)"\x42", 1), TETHER_ERR_STATE,
                "send_packet is for rwws");
    tether_settings_free(s);
    echo(c);
    th_close_and_free(c);
}

/* gomuks requests on an rwws client, and bad packets and settings: refused, and the server
 * receives exactly what was accepted, nothing of what was refused. */
static void test_gomuks_requests_and_bad_packets_on_rwws_client(void) {
    tether_client *c = th_client_from(rwws_config());
    int64_t id = 31;
    CHECK_FAILS(tether_client_request_with_timeout(c, "echo", NULL, 0, 1000, &id), TETHER_ERR_STATE,
                "rwws");
    CHECK(id == 31);
    CHECK_FAILS(tether_client_send_packet(c, NULL, 3), TETHER_ERR_NULL, "bytes");
    CHECK_FAILS(tether_client_send_packet(c, (const uint8_t *)"x", 0), TETHER_ERR_INVALID_ARGUMENT,
                "empty");
    tether_settings *s = NULL;
    CHECK_OK(tether_settings_new(&s));
    CHECK_OK(tether_settings_add(s, 5, (const uint8_t *)"\x01\x02", 2));
    CHECK_FAILS(tether_settings_add(s, 6, NULL, 3), TETHER_ERR_NULL, "value");
    CHECK_FAILS(tether_settings_add(s, 0x00, (const uint8_t *)"\x09", 1),
                TETHER_ERR_INVALID_ARGUMENT, "reserved");
    CHECK_FAILS(tether_settings_add(s, 0xff, NULL, 0), TETHER_ERR_INVALID_ARGUMENT, "reserved");
    CHECK_OK(tether_settings_add(s, 7, NULL, 0));
    /* Queued before connecting; sent once connected. */
    CHECK_OK(tether_client_send_settings(c, s));
    tether_settings_free(s); /* copied: freeing it right away is fine */
    CHECK_OK(tether_client_send_packet(c, (const uint8_t *)"\x42\x43", 2));
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_CONNECTED, NULL, 10000));
    char body[4096];
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (;;) {
        CHECK(th_now_ms() < deadline);
        CHECK(th_control(&backend, "GET", "/_testkit/rwws/stats", body, sizeof body) == 200);
        if (strstr(body, "\"unknown\":[\"4243\"]")) break;
        usleep(10000);
    }
    if (!strstr(body, "\"settings\":[\"0105010207ff\"]"))
        th_fail(__FILE__, __LINE__, "server saw other settings: %s", body);
    th_close_and_free(c);
}

static void test_request_timeout_zero_is_invalid_and_max_is_accepted(void) {
    tether_client *c = connected_client();
    int64_t id = 17;
    CHECK_FAILS(tether_client_request_with_timeout(c, "echo", NULL, 0, 0, &id),
                TETHER_ERR_INVALID_ARGUMENT, "timeout");
    CHECK(id == 17);
    CHECK_FAILS(tether_client_request_with_timeout(c, "echo", NULL, 5, 1000, &id), TETHER_ERR_NULL,
                "data");
    CHECK_FAILS(tether_client_request_with_timeout(c, NULL, NULL, 0, 1000, &id), TETHER_ERR_NULL,
                "command");
    /* The pointers are checked first, as in every call: a NULL is ERR_NULL whatever else. */
    CHECK_FAILS(tether_client_request_with_timeout(c, NULL, NULL, 0, 0, &id), TETHER_ERR_NULL,
                "command");
    CHECK_FAILS(tether_client_request_with_timeout(c, "echo", NULL, 5, 0, &id), TETHER_ERR_NULL,
                "data");
    /* A length no object can have (a garbage size_t) is refused before anything is read. */
    CHECK_FAILS(tether_client_request(c, "echo", (const uint8_t *)"x", SIZE_MAX, &id),
                TETHER_ERR_INVALID_ARGUMENT, "larger than any object");
    CHECK(id == 17);
    /* ~49.7 days: no overflow into an instant timeout; the reply is a success. */
    CHECK_OK(tether_client_request_with_timeout(c, "echo", (const uint8_t *)"[1]", 3, UINT32_MAX,
                                                &id));
    CHECK(id != 17 && id > 0);
    tether_event *ev = th_wait_response(c, id, 10000);
    CHECK_STATUS(tether_event_status(ev), TETHER_OK);
    CHECK(th_data_is(ev, "[1]"));
    tether_event_free(ev);
    th_close_and_free(c);
}

/* Cancelling a request that already completed (or twice) is accepted, as the reply may win
 * the race, but never produces a second RESPONSE. Ids never issued are refused. */
static void test_cancel_of_completed_or_cancelled_request_adds_no_response(void) {
    tether_client *c = connected_client();
    int64_t done = echo(c);
    CHECK_OK(tether_client_cancel(c, done));
    CHECK_OK(tether_client_cancel(c, done));
    int64_t slow = 0;
    CHECK_OK(tether_client_request(c, "sleep", (const uint8_t *)"{\"ms\":5000}", 11, &slow));
    CHECK_OK(tether_client_cancel(c, slow));
    CHECK_OK(tether_client_cancel(c, slow));
    CHECK_FAILS(tether_client_cancel(c, 0), TETHER_ERR_INVALID_ARGUMENT, "request id");
    CHECK_FAILS(tether_client_cancel(c, -1), TETHER_ERR_INVALID_ARGUMENT, "request id");
    CHECK_FAILS(tether_client_cancel(c, INT64_MAX), TETHER_ERR_INVALID_ARGUMENT, "request id");
    /* Commands are handled in order, so anything the cancels produced is queued before the
     * reply to this request; afterwards, give late server replies a moment too. */
    int64_t last = 0;
    CHECK_OK(tether_client_request(c, "echo", NULL, 0, &last));
    int cancelled = 0;
    int64_t quiet_until = 0;
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (;;) {
        CHECK(th_now_ms() < deadline);
        int wait_ms = quiet_until ? (int)(quiet_until - th_now_ms()) : 1000;
        if (quiet_until && wait_ms <= 0) break;
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, wait_ms, &ev);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        if (tether_event_kind(ev) == TETHER_EVENT_RESPONSE) {
            int64_t id = tether_event_request_id(ev);
            CHECK(id != done);
            if (id == slow) {
                CHECK_STATUS(tether_event_status(ev), TETHER_ERR_CANCELLED);
                cancelled++;
            }
            if (id == last) {
                CHECK(cancelled == 1);
                quiet_until = th_now_ms() + 300 * th_scale();
            }
        }
        tether_event_free(ev);
    }
    CHECK(cancelled == 1);
    th_close_and_free(c);
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

/* poll and poll_batch with a NULL output take no event and do not choose poll mode. */
static void test_poll_with_null_output_takes_nothing_and_sets_no_mode(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_close(c)); /* queues CLOSED */
    size_t count = 5;
    CHECK_FAILS(tether_client_poll(c, 0, NULL), TETHER_ERR_NULL, "out");
    CHECK_FAILS(tether_client_poll_batch(c, 0, NULL, &count), TETHER_ERR_NULL, "batch");
    CHECK(count == 5);
    tether_event *ev = NULL;
    CHECK_OK(tether_client_poll(c, 0, &ev)); /* CLOSED is still there */
    CHECK(tether_event_kind(ev) == TETHER_EVENT_CLOSED);
    tether_event_free(ev);
    tether_client_free(c);

    c = th_client_from(th_config(&backend));
    CHECK_FAILS(tether_client_poll(c, 0, NULL), TETHER_ERR_NULL, "out");
    CHECK_FAILS(tether_client_poll_batch(c, 0, NULL, NULL), TETHER_ERR_NULL, "batch");
    destroyed = 0;
    CHECK_OK(tether_client_set_event_callback(c, ignore_event, NULL, count_destroy));
    tether_client_free(c);
    CHECK(destroyed == 1);
}

/* A refused event callback gives its context back as every function taking a destroy does,
 * also when the client is NULL (test_api covers the refusals of a live client). */
static void test_event_callback_on_null_client_runs_destroy(void) {
    int gone = 0;
    CHECK_FAILS(tether_client_set_event_callback(NULL, ignore_event, &gone, count_ctx_destroy),
                TETHER_ERR_NULL, "client");
    CHECK(gone == 1);
}

static void test_batch_misuse_keeps_outputs(void) {
    tether_batch *sentinel = (tether_batch *)&backend;
    tether_batch *b = sentinel;
    CHECK_FAILS(tether_batch_new(0, &b), TETHER_ERR_INVALID_ARGUMENT, "max_events");
    CHECK(b == sentinel);
    /* A NULL output is TETHER_ERR_NULL whatever else is wrong, as everywhere. */
    CHECK_FAILS(tether_batch_new(0, NULL), TETHER_ERR_NULL, "out");
    CHECK_FAILS(tether_batch_new_lending(0, NULL), TETHER_ERR_NULL, "out");
    CHECK_OK(tether_batch_new(1, &b));
    /* An empty batch views as 0 entries with non-NULL pointers. */
    const tether_batch_entry *e = NULL;
    const uint8_t *bytes = NULL;
    size_t n = 7, len = 7;
    CHECK_OK(tether_batch_view(b, &e, &n, &bytes, &len));
    CHECK(e != NULL && bytes != NULL && n == 0 && len == 0);
    /* One NULL output: none of the others is written. */
    const tether_batch_entry *e_keep = (const tether_batch_entry *)&backend;
    const uint8_t *bytes_keep = (const uint8_t *)&backend;
    e = e_keep;
    bytes = bytes_keep;
    n = 7;
    len = 7;
    CHECK_FAILS(tether_batch_view(b, &e, &n, NULL, &len), TETHER_ERR_NULL, "bytes");
    CHECK(e == e_keep && n == 7 && len == 7);
    CHECK_FAILS(tether_batch_view(b, NULL, &n, &bytes, &len), TETHER_ERR_NULL, "entries");
    CHECK(bytes == bytes_keep && n == 7 && len == 7);
    /* The payload view of both kinds: NULL fails and writes nothing; empty is not NULL. */
    tether_batch *lending = NULL;
    CHECK_FAILS(tether_batch_new_lending(0, &lending), TETHER_ERR_INVALID_ARGUMENT, "max_events");
    CHECK(lending == NULL);
    CHECK_OK(tether_batch_new_lending(1, &lending));
    const tether_bytes *data_keep = (const tether_bytes *)&backend, *data = data_keep;
    CHECK_FAILS(tether_batch_payloads(lending, &data, NULL), TETHER_ERR_NULL, "count");
    CHECK(data == data_keep);
    CHECK_FAILS(tether_batch_payloads(lending, NULL, &n), TETHER_ERR_NULL, "payloads");
    CHECK(n == 7);
    CHECK_FAILS(tether_batch_payloads(NULL, &data, &n), TETHER_ERR_NULL, "batch");
    CHECK(data == data_keep && n == 7);
    CHECK_OK(tether_batch_payloads(lending, &data, &n));
    CHECK(data != NULL && n == 0);
    CHECK_OK(tether_batch_payloads(b, &data, &n));
    CHECK(data != NULL && n == 0);
    tether_batch_free(lending);
    /* A batch of capacity 1 still gets every event, one per call. */
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    int kinds_seen = 0;
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (;;) {
        CHECK(th_now_ms() < deadline);
        size_t count = 0;
        tether_status s = tether_client_poll_batch(c, 1000, b, &count);
        if (s == TETHER_TIMEOUT) continue;
        CHECK_OK(s);
        CHECK(count == 1);
        CHECK_OK(tether_batch_view(b, &e, &n, &bytes, &len));
        CHECK(n == 1);
        if (e[0].kind == TETHER_EVENT_CONNECTING) kinds_seen |= 1;
        if (e[0].kind == TETHER_EVENT_CONNECTED) kinds_seen |= 2;
        if (e[0].kind == TETHER_EVENT_MESSAGE && e[0].command_len == strlen("init_complete") &&
            memcmp(bytes + e[0].command_offset, "init_complete", e[0].command_len) == 0)
            break;
    }
    CHECK(kinds_seen == 3);
    /* A poll into it for a client in callback mode fails and leaves it as it was: the
     * event it holds (and what it lends) stays. */
    tether_client *cb = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_set_event_callback(cb, ignore_event, NULL, NULL));
    size_t count = 9;
    CHECK_FAILS(tether_client_poll_batch(cb, 0, b, &count), TETHER_ERR_WRONG_MODE, "callback");
    CHECK(count == 9);
    CHECK_OK(tether_batch_view(b, &e, &n, &bytes, &len));
    CHECK(n == 1 && e[0].kind == TETHER_EVENT_MESSAGE);
    CHECK(memcmp(bytes + e[0].command_offset, "init_complete", e[0].command_len) == 0);
    tether_client_free(cb);
    th_close_and_free(c);
    tether_batch_free(b);
}

/* A failing call from a pthread key destructor, which glibc runs after the thread's Rust
 * thread-locals (the last error among them) are gone: a status, not an abort. */
static pthread_key_t late_key;
static tether_status late_status = TETHER_OK;
static const char *late_error = NULL;

static void call_from_key_destructor(void *c) {
    late_status = tether_client_close((tether_client *)c);
    late_error = tether_last_error();
}

static void *fail_then_exit(void *c) {
    CHECK(pthread_setspecific(late_key, c) == 0);
    CHECK_FAILS(tether_client_close((tether_client *)c), TETHER_ERR_STATE, "closed");
    return NULL;
}

static void test_failing_call_from_a_thread_exit_destructor(void) {
    CHECK(pthread_key_create(&late_key, call_from_key_destructor) == 0);
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_close(c));
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fail_then_exit, c) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(late_status == TETHER_ERR_STATE);
    CHECK(late_error != NULL);
    CHECK(pthread_key_delete(late_key) == 0);
    tether_client_free(c);
}

/* ---------------------------------------------------------------------------------------- */
/* Close from another thread while a poll is blocked                                        */

typedef struct {
    tether_client *c;
    int done_fd;           /* written once the poller has seen the end */
    int saw_disconnected;  /* a DISCONNECTED event came before CLOSED */
    int events_after_closed;
    int saw_closed;
    tether_status after;   /* what poll said after CLOSED */
} poller_state;

/* Polls without a timeout until CLOSED, then once more (must say TETHER_CLOSED at once). */
static void *poll_until_closed(void *arg) {
    poller_state *p = (poller_state *)arg;
    for (;;) {
        tether_event *ev = NULL;
        CHECK_OK(tether_client_poll(p->c, -1, &ev));
        uint32_t kind = tether_event_kind(ev);
        tether_event_free(ev);
        if (kind == TETHER_EVENT_DISCONNECTED) p->saw_disconnected = 1;
        if (kind == TETHER_EVENT_CLOSED) break;
    }
    tether_event *ev = (tether_event *)&backend;
    p->after = tether_client_poll(p->c, -1, &ev);
    if (ev != (tether_event *)&backend) p->events_after_closed++;
    CHECK(write(p->done_fd, "x", 1) == 1);
    return NULL;
}

/* Waits up to `ms` (scaled) for a poller's signal; fails the test if it does not come. */
static void wait_for_poller(int fd, int ms) {
    struct pollfd pfd = {fd, POLLIN, 0};
    int r = poll(&pfd, 1, ms * th_scale());
    if (r != 1) th_fail(__FILE__, __LINE__, "a poll blocked without timeout did not return");
    char x;
    CHECK(read(fd, &x, 1) == 1);
}

static void check_calls_after_close(tether_client *c) {
    int64_t id = 66;
    CHECK_FAILS(tether_client_request(c, "echo", NULL, 0, &id), TETHER_ERR_STATE, "closed");
    CHECK_FAILS(tether_client_request_with_timeout(c, "echo", NULL, 0, 100, &id), TETHER_ERR_STATE,
                "closed");
    CHECK(id == 66);
    CHECK_FAILS(tether_client_send_packet(c, (const uint8_t *)"x", 1), TETHER_ERR_STATE, "closed");
    tether_settings *s = NULL;
    CHECK_OK(tether_settings_new(&s));
    CHECK_FAILS(tether_client_send_settings(c, s), TETHER_ERR_STATE, "closed");
    tether_settings_free(s);
    CHECK_FAILS(tether_client_connect(c), TETHER_ERR_STATE, "closed");
    CHECK_FAILS(tether_client_close(c), TETHER_ERR_STATE, "closed");
    CHECK_FAILS(tether_client_close_keep_resume(c), TETHER_ERR_STATE, "closed");
    CHECK_FAILS(tether_client_set_event_callback(c, ignore_event, NULL, count_destroy),
                TETHER_ERR_WRONG_MODE, "poll mode");
}

static void close_while_blocked_in_poll(tether_client *c, int connected) {
    drain(c); /* also puts the client in poll mode before the poller thread starts */
    int fds[2];
    CHECK(pipe(fds) == 0);
    poller_state p;
    memset(&p, 0, sizeof p);
    p.c = c;
    p.done_fd = fds[1];
    p.after = TETHER_OK;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, poll_until_closed, &p) == 0);
    usleep(100000); /* let it block (not needed for correctness) */
    CHECK_OK(tether_client_close(c));
    /* The poller is blocked or taking the last events meanwhile. */
    check_calls_after_close(c);
    wait_for_poller(fds[0], 5000); /* bounded: a poll that stays blocked fails here */
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_STATUS(p.after, TETHER_CLOSED);
    CHECK(p.events_after_closed == 0);
    CHECK(p.saw_disconnected == connected);
    check_calls_after_close(c);
    /* Everything that reads state still works after the end. */
    tether_event *ev = NULL;
    CHECK_STATUS(tether_client_poll(c, 0, &ev), TETHER_CLOSED);
    CHECK(ev == NULL);
    size_t len = 0;
    CHECK_STATUS(tether_client_resume_state(c, NULL, 0, &len, NULL), TETHER_ERR_BUFFER_TOO_SMALL);
    CHECK(connected ? len > 0 : len == 0);
    close(fds[0]);
    close(fds[1]);
    tether_client_free(c);
}

static void test_close_from_other_thread_wakes_blocked_poll_connected(void) {
    close_while_blocked_in_poll(connected_client(), 1);
}

static void test_close_from_other_thread_wakes_blocked_poll_never_connected(void) {
    close_while_blocked_in_poll(th_client_from(th_config(&backend)), 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Regression tests for bugs found here. */

/* Header: pending requests complete with TETHER_ERR_CLIENT_CLOSED before CLOSED, including a
 * request made before connect (it used to vanish with the unused command channel). */
static void test_request_before_connect_answered_on_close(void) {
    tether_client *c = th_client_from(th_config(&backend));
    int64_t id = 0;
    CHECK_OK(tether_client_request(c, "echo", NULL, 0, &id));
    CHECK_OK(tether_client_close(c));
    tether_event *ev = NULL;
    CHECK_OK(tether_client_poll(c, 1000 * th_scale(), &ev));
    CHECK(tether_event_kind(ev) == TETHER_EVENT_RESPONSE);
    CHECK(tether_event_request_id(ev) == id);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_CLIENT_CLOSED);
    tether_event_free(ev);
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    tether_client_free(c);
}

/* Header: cancel returns TETHER_ERR_INVALID_ARGUMENT for an id this client never issued. Ids
 * start at a random value; every id below it used to count as issued. */
static void test_cancel_of_never_issued_low_id(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_STATUS(tether_client_cancel(c, 1), TETHER_ERR_INVALID_ARGUMENT);
    tether_client_free(c);
}

/* Polls once without a timeout. */
static void *poll_once(void *arg) {
    poller_state *q = (poller_state *)arg;
    tether_event *ev = NULL;
    q->after = tether_client_poll(q->c, -1, &ev);
    if (ev && tether_event_kind(ev) == TETHER_EVENT_CLOSED) q->saw_closed = 1;
    tether_event_free(ev);
    CHECK(write(q->done_fd, "x", 1) == 1);
    return NULL;
}

/* Two threads blocked in poll without timeout; close. One takes CLOSED, the other must then
 * return TETHER_CLOSED at once (it used to sleep on until its timeout, or for ever). */
static void test_second_blocked_poller_woken_by_close(void) {
    tether_client *c = th_client_from(th_config(&backend));
    int fds[2];
    CHECK(pipe(fds) == 0);
    poller_state p[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        memset(&p[i], 0, sizeof p[i]);
        p[i].c = c;
        p[i].done_fd = fds[1];
        CHECK(pthread_create(&t[i], NULL, poll_once, &p[i]) == 0);
    }
    usleep(100000);
    CHECK_OK(tether_client_close(c));
    wait_for_poller(fds[0], 2000);
    wait_for_poller(fds[0], 2000);
    for (int i = 0; i < 2; i++) CHECK(pthread_join(t[i], NULL) == 0);
    CHECK(p[0].saw_closed + p[1].saw_closed == 1);
    CHECK(p[0].after == TETHER_CLOSED || p[1].after == TETHER_CLOSED);
    close(fds[0]);
    close(fds[1]);
    tether_client_free(c);
}

/* Header: invalid header values are reported by tether_client_new. A control character or a
 * non-ASCII value used to pass and fail only at connect (\x01: DISCONNECTED
 * TETHER_ERR_CONFIG; UTF-8: reconnected for ever with TETHER_ERR_PROTOCOL). The handshake's
 * own headers and the framing headers are refused too. */
static void test_header_value_checked_by_client_new(void) {
    const char *const values[] = {"a\x01" "b", "caf\xc3\xa9", "a\x7f"};
    for (size_t i = 0; i < 3; i++) {
        tether_config *cfg = th_config(&backend);
        CHECK_OK(tether_config_add_header(cfg, "X-Test", values[i]));
        EXPECT_CONFIG_ERROR(cfg, "header");
    }
    /* Framing headers too: an app's Content-Length would leave the login's POST unfinished. */
    const char *const reserved[] = {"Host", "sec-websocket-key", "Upgrade", "content-length",
                                    "Transfer-Encoding"};
    for (size_t i = 0; i < 5; i++) {
        tether_config *cfg = th_config(&backend);
        CHECK_OK(tether_config_add_header(cfg, reserved[i], "x"));
        EXPECT_CONFIG_ERROR(cfg, "handshake");
    }
}

int main(void) {
    th_backend_start(&backend, NULL);
    TH_RUN(test_every_config_setter_rejects_null_config);
    TH_RUN(test_proxy_resolver_contexts_are_destroyed_once);
    TH_RUN(test_a_resolver_destroy_may_call_into_its_config);
    TH_RUN(test_event_callback_on_null_client_runs_destroy);
    TH_RUN(test_client_calls_reject_null_client_and_keep_outputs);
    TH_RUN(test_settings_reject_null_list_and_null_value);
    TH_RUN(test_event_accessors_on_null_and_null_outputs);
    TH_RUN(test_status_str_of_undefined_values);
    TH_RUN(test_failed_setters_leave_config_unchanged);
    TH_RUN(test_resume_state_setter_rejects_bad_values);
    TH_RUN(test_resume_state_getter_with_small_or_null_buffer);
    TH_RUN(test_add_header_with_crlf_or_bad_name_fails_client_new);
    TH_RUN(test_trust_settings_are_checked_by_client_new);
    TH_RUN(test_out_of_range_config_values_fail_client_new);
    TH_RUN(test_config_reused_changed_and_freed_after_client_new);
    TH_RUN(test_connect_twice_is_state_error_and_session_survives);
    TH_RUN(test_rwws_only_calls_on_gomuks_client);
    TH_RUN(test_gomuks_requests_and_bad_packets_on_rwws_client);
    TH_RUN(test_request_timeout_zero_is_invalid_and_max_is_accepted);
    TH_RUN(test_cancel_of_completed_or_cancelled_request_adds_no_response);
    TH_RUN(test_poll_with_null_output_takes_nothing_and_sets_no_mode);
    TH_RUN(test_batch_misuse_keeps_outputs);
    TH_RUN(test_failing_call_from_a_thread_exit_destructor);
    TH_RUN(test_close_from_other_thread_wakes_blocked_poll_connected);
    TH_RUN(test_close_from_other_thread_wakes_blocked_poll_never_connected);
    TH_RUN(test_request_before_connect_answered_on_close);
    TH_RUN(test_cancel_of_never_issued_low_id);
    TH_RUN(test_second_blocked_poller_woken_by_close);
    TH_RUN(test_header_value_checked_by_client_new);
    th_backend_stop(&backend);
    return 0;
}
