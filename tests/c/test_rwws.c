/*
 * The rwws dialect through the C API (rwws-binary.md §2.4 handshake, §2.7 keepalive, §2.8
 * settings, §4 close codes) against the backend's /api/ws.
 */
#include "harness.h"

static th_backend backend;

static tether_client *rwws_client(const char *key) {
    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_url(cfg, backend.http));
    CHECK_OK(tether_config_set_protocol(cfg, TETHER_PROTOCOL_RWWS));
    CHECK_OK(tether_config_set_token(cfg, key));
    CHECK_OK(tether_config_set_ping_interval_ms(cfg, 200));
    CHECK_OK(tether_config_set_reconnect_backoff_ms(cfg, 20, 100));
    return th_client_from(cfg);
}

/* §2.4 + §2.7: CONNECTED after the auth Pong, then pongs with the server clock and an rtt. */
static void test_handshake_pongs_packets_settings(void) {
    tether_client *c = rwws_client("dGV0aGVyLXRlc3Qta2V5");
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_CONNECTED, NULL, 10000));
    int64_t deadline = th_now_ms() + 10000 * th_scale();
    for (;;) {
        CHECK(th_now_ms() < deadline);
        tether_event *ev = th_wait(c, TETHER_EVENT_PONG, NULL, 10000);
        int64_t rtt = tether_event_rtt_us(ev), server = tether_event_server_time_ms(ev);
        tether_event_free(ev);
        CHECK(server > 1700000000000LL);
        if (rtt >= 0) break; /* the answer to our first ping */
    }
    /* Requests do not exist on rwws; packets and settings do. */
    CHECK_STATUS(tether_client_request(c, "echo", NULL, 0, NULL), TETHER_ERR_STATE);
    tether_settings *s = NULL;
    CHECK_OK(tether_settings_new(&s));
    CHECK_OK(tether_settings_add(s, 5, (const uint8_t *)"\x01\x02", 2));
    CHECK_STATUS(tether_settings_add(s, 0xff, NULL, 0), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_settings_add(s, 0x00, NULL, 0), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_OK(tether_client_send_settings(c, s));
    tether_settings_free(s);
    tether_settings_free(NULL);
    CHECK_STATUS(tether_client_send_settings(c, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_client_send_packet(c, NULL, 0), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_OK(tether_client_send_packet(c, (const uint8_t *)"\x42\x43", 2));
    char body[4096];
    deadline = th_now_ms() + 10000 * th_scale();
    for (;;) {
        CHECK(th_now_ms() < deadline);
        CHECK(th_control(&backend, "GET", "/_testkit/rwws/stats", body, sizeof body) == 200);
        if (strstr(body, "\"01050102ff\"") && strstr(body, "\"4243\"")) break;
        usleep(10000);
    }
    /* An unknown server packet reaches the app as PACKET; the connection stays. */
    CHECK(th_control(&backend, "POST", "/_testkit/rwws/fault?kind=unknown_packet", NULL, 0) == 200);
    tether_event *ev = th_wait(c, TETHER_EVENT_PACKET, NULL, 10000);
    const uint8_t *p = NULL;
    size_t n = 0;
    CHECK_OK(tether_event_data(ev, &p, &n));
    CHECK(n == 3 && p[0] == 0x7f && p[1] == 1 && p[2] == 2);
    tether_event_free(ev);
    th_close_and_free(c);
}

/* §4: a rejected key (3001) and a revoked one (3004) end the client without a retry. */
static void test_close_codes_that_stop(void) {
    tether_client *c = rwws_client("d3Jvbmcta2V5");
    CHECK_OK(tether_client_connect(c));
    tether_event *ev = th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, 10000);
    CHECK(tether_event_close_code(ev) == 3001);
    CHECK(tether_event_status(ev) == TETHER_ERR_UNAUTHORIZED);
    CHECK(tether_event_retry_in_ms(ev) == -1);
    tether_event_free(ev);
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    tether_client_free(c);

    c = rwws_client("dGV0aGVyLXRlc3Qta2V5");
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_CONNECTED, NULL, 10000));
    /* 3003 (the server missed our pings) reconnects at once. */
    CHECK(th_control(&backend, "POST", "/_testkit/rwws/close?code=3003&reason=late", NULL, 0) ==
          200);
    ev = th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, 10000);
    CHECK(tether_event_close_code(ev) == 3003 && tether_event_retry_in_ms(ev) == 0);
    CHECK(th_data_is(ev, "late"));
    tether_event_free(ev);
    tether_event_free(th_wait(c, TETHER_EVENT_CONNECTED, NULL, 10000));
    tether_event_free(th_wait(c, TETHER_EVENT_PONG, NULL, 10000));
    CHECK(th_control(&backend, "POST", "/_testkit/rwws/revoke", NULL, 0) == 200);
    ev = th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, 10000);
    CHECK(tether_event_close_code(ev) == 3004);
    CHECK(tether_event_status(ev) == TETHER_ERR_KEY_REVOKED);
    CHECK(tether_event_retry_in_ms(ev) == -1);
    tether_event_free(ev);
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 10000));
    tether_client_free(c);
}

/* The next event is an UNSENT handing back the packet `want`. */
static void expect_unsent(tether_client *c, const char *want) {
    tether_event *ev = th_next(c, 10000);
    CHECK(tether_event_kind(ev) == TETHER_EVENT_UNSENT);
    CHECK(tether_event_status(ev) == TETHER_ERR_CLIENT_CLOSED);
    CHECK(th_data_is(ev, want));
    tether_event_free(ev);
}

/* §2.8 with §4: packets the client never wrote come back as UNSENT, each once and in order,
 * after the DISCONNECTED that stops it for good (3001) and before CLOSED; a close before
 * connect hands them back the same way. */
static void test_unsent_packets_come_back(void) {
    tether_client *c = rwws_client("d3Jvbmcta2V5");
    CHECK_OK(tether_client_send_packet(c, (const uint8_t *)"\x42\x01", 2));
    CHECK_OK(tether_client_send_packet(c, (const uint8_t *)"\x42\x02\x03", 3));
    CHECK_OK(tether_client_connect(c));
    tether_event *ev = th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, 10000);
    CHECK(tether_event_close_code(ev) == 3001 && tether_event_retry_in_ms(ev) == -1);
    tether_event_free(ev);
    expect_unsent(c, "\x42\x01");
    expect_unsent(c, "\x42\x02\x03");
    ev = th_next(c, 10000);
    CHECK(tether_event_kind(ev) == TETHER_EVENT_CLOSED);
    tether_event_free(ev);
    tether_client_free(c);

    c = rwws_client("dGV0aGVyLXRlc3Qta2V5");
    CHECK_OK(tether_client_send_packet(c, (const uint8_t *)"\x42\x09", 2));
    CHECK_OK(tether_client_close(c));
    expect_unsent(c, "\x42\x09");
    ev = th_next(c, 10000);
    CHECK(tether_event_kind(ev) == TETHER_EVENT_CLOSED);
    tether_event_free(ev);
    tether_client_free(c);
}

/* A key that is not base64 is a configuration error that does not echo the key. */
static void test_bad_key_is_config_error(void) {
    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_url(cfg, backend.http));
    CHECK_OK(tether_config_set_protocol(cfg, TETHER_PROTOCOL_RWWS));
    CHECK_OK(tether_config_set_token(cfg, "not*base64*secret"));
    tether_client *c = NULL;
    CHECK_STATUS(tether_client_new(cfg, &c), TETHER_ERR_CONFIG);
    CHECK(strstr(tether_last_error(), "secret") == NULL);
    CHECK(c == NULL);
    tether_config_free(cfg);
}

int main(void) {
    th_backend_start(&backend, NULL);
    TH_RUN(test_handshake_pongs_packets_settings);
    TH_RUN(test_close_codes_that_stop);
    TH_RUN(test_unsent_packets_come_back);
    TH_RUN(test_bad_key_is_config_error);
    th_backend_stop(&backend);
    return 0;
}
