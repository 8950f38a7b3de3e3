/*
 * tether against the real gomuks backend, through the C API.
 *
 * The backend is interop/gomuks (the pinned go.mau.fi/gomuks module started headless in
 * desktop mode, not logged in to any homeserver: gomuks-rpc.md §13.2). $TETHER_BACKEND points
 * at its binary; $GOMUKS_DESKTOP_KEY is set here and inherited by it.
 * Spec references are to docs/protocol/gomuks-rpc.md.
 */
#include "gomuks_peer.h"

/* The four request_id-0 events every fresh connection gets (§6 steps 3-4, §6.2); returns the
 * run_id event's data in run_data. */
static void expect_connect_snapshot(tether_client *c, char *run_data, size_t cap) {
    int seen_run = 0, seen_state = 0, seen_sync = 0, seen_image = 0;
    char buf[4096];
    while (!(seen_run && seen_state && seen_sync && seen_image)) {
        tether_event *ev = th_wait(c, TETHER_EVENT_MESSAGE, NULL, 15000);
        const char *cmd = tether_event_command(ev);
        CHECK(tether_event_request_id(ev) == 0);
        data_str(ev, buf, sizeof buf);
        if (strcmp(cmd, "run_id") == 0) {
            /* A decimal string (nanoseconds, > 2^53) plus etag and vapid_key (§4.2). */
            CHECK_HAS(buf, "\"run_id\":\"");
            CHECK_HAS(buf, "\"etag\":\"\""); /* no frontend built in (§13.1) */
            CHECK_HAS(buf, "\"vapid_key\":\"");
            snprintf(run_data, cap, "%s", buf);
            seen_run = 1;
        } else if (strcmp(cmd, "client_state") == 0) {
            CHECK_HAS(buf, "\"is_initialized\":true");
            CHECK_HAS(buf, "\"is_logged_in\":false");
            CHECK_HAS(buf, "\"is_verified\":false");
            seen_state = 1;
        } else if (strcmp(cmd, "sync_status") == 0) {
            CHECK_HAS(buf, "\"type\":\"waiting\"");
            CHECK_HAS(buf, "\"error_count\":0");
            seen_sync = 1;
        } else if (strcmp(cmd, "image_auth_token") == 0) {
            /* A bare JSON string: the image-only token (§1.2). */
            CHECK(buf[0] == '"' && strlen(buf) > 20 && buf[strlen(buf) - 1] == '"');
            seen_image = 1;
        } else {
            th_fail(__FILE__, __LINE__, "unexpected event %s before the snapshot ended", cmd);
        }
        tether_event_free(ev);
    }
}

/* No server event for ms milliseconds (pongs and state events may pass): a not-logged-in
 * backend sends no sync_complete / init_complete (§6.2). */
static void expect_quiet(tether_client *c, int ms) {
    int64_t deadline = th_now_ms() + ms;
    for (;;) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) return;
        tether_event *ev = NULL;
        tether_status s = tether_client_poll(c, left, &ev);
        if (s == TETHER_TIMEOUT) return;
        CHECK_OK(s);
        if (tether_event_kind(ev) == TETHER_EVENT_MESSAGE)
            th_fail(__FILE__, __LINE__, "unexpected event %s", tether_event_command(ev));
        tether_event_free(ev);
    }
}

static tether_client *connect_client(tether_config *cfg, char *run_data, size_t cap) {
    tether_client *c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    tether_event *ev = th_wait(c, TETHER_EVENT_CONNECTED, NULL, 15000);
    CHECK(!tether_event_resume_attempted(ev));
    tether_event_free(ev);
    char scratch[4096];
    expect_connect_snapshot(c, run_data ? run_data : scratch, run_data ? cap : sizeof scratch);
    return c;
}

/* The DISCONNECTED event that ends a refused connection: status, HTTP code, no retry. */
static void expect_refused(tether_client *c, tether_status want, int http) {
    tether_event *ev = th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, 15000);
    CHECK_STATUS(tether_event_status(ev), want);
    CHECK(tether_event_close_code(ev) == http);
    CHECK(tether_event_retry_in_ms(ev) == -1);
    tether_event_free(ev);
    tether_event_free(th_wait(c, TETHER_EVENT_CLOSED, NULL, 5000));
    tether_client_free(c);
}

/* §1.2 desktop mode: Basic desktop-key:<GOMUKS_DESKTOP_KEY> gets a token, the token is sent as
 * the gomuks_auth cookie on the upgrade; §6 / §6.2 connect snapshot and nothing more. */
static void test_desktop_key_auth_and_connect_snapshot(void) {
    char run_data[4096];
    tether_client *c = connect_client(gomuks_config(NULL), run_data, sizeof run_data);
    expect_quiet(c, 1500);
    /* The library reports the run_id it stored for resume (§7.2). */
    char run_id[64];
    size_t len = 0;
    int64_t last = 1;
    CHECK_OK(tether_client_resume_state(c, run_id, sizeof run_id, &len, &last));
    char want[96];
    snprintf(want, sizeof want, "\"run_id\":\"%s\"", run_id);
    CHECK(strstr(run_data, want) != NULL);
    CHECK(last == 0); /* no negative-ID event seen: nothing to resume from */
    th_close_and_free(c);
}

/* §1.2 cookie flow: a token from POST /auth (output=json) alone is enough; re-POSTing /auth
 * with the cookie renews it (200, not 201); a token is ≤ 500 chars, two base64url parts. */
static void test_cookie_token_flow(void) {
    char resp[8192], token[600];
    CHECK(fetch_token(basic_header, token, sizeof token) == 201);
    size_t n = strlen(token);
    CHECK(n > 10 && n <= 500);
    CHECK(strchr(token, '.') != NULL);

    char cookie[700];
    snprintf(cookie, sizeof cookie, "Cookie: gomuks_auth=%s\r\n", token);
    int code = w_http(backend.port, "POST", "/_gomuks/auth?output=json&no_prompt=true", cookie, resp,
                  sizeof resp);
    CHECK(code == 200);
    CHECK_HAS(w_body(resp), "{\"token\":\"");

    /* Without output=json the token comes as a cookie: HttpOnly, SameSite=Lax, no Path. */
    code = w_http(backend.port, "POST", "/_gomuks/auth?no_prompt=true&insecure_cookie=true",
                  basic_header, resp, sizeof resp);
    CHECK(code == 201);
    const char *sc = strstr(resp, "Set-Cookie: gomuks_auth=");
    CHECK(sc != NULL);
    char line[1024];
    snprintf(line, sizeof line, "%.*s", (int)strcspn(sc, "\r"), sc);
    CHECK_HAS(line, "HttpOnly");
    CHECK_HAS(line, "SameSite=Lax");
    CHECK(strstr(line, "Path=") == NULL);
    CHECK(strstr(line, "Secure") == NULL); /* insecure_cookie honoured: no Sec-Fetch-Site */

    /* The library with only that token (no password) connects. */
    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_url(cfg, backend.http));
    CHECK_OK(tether_config_set_token(cfg, token));
    tether_client *c = connect_client(cfg, NULL, 0);
    th_close_and_free(c);
}

/* §1.2: the token the library got from the desktop-key login is handed back
 * (tether_client_auth_token), and a client with only that token plus an app cookie (merged
 * into one Cookie header after gomuks_auth) is authorized by the real backend. */
static void test_auth_token_handed_back_and_app_cookie(void) {
    tether_client *c = connect_client(gomuks_config(NULL), NULL, 0);
    char token[600];
    size_t len = 0;
    CHECK_OK(tether_client_auth_token(c, token, sizeof token, &len));
    CHECK(len > 10 && strlen(token) == len && strchr(token, '.') != NULL);
    th_close_and_free(c);

    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_url(cfg, backend.http));
    CHECK_OK(tether_config_set_token(cfg, token));
    CHECK_OK(tether_config_add_header(cfg, "Cookie", "theme=dark; lb=node-2"));
    c = connect_client(cfg, NULL, 0);
    th_close_and_free(c);
}

/* §1.2: 401 at /auth (wrong desktop key) and at the upgrade (bad cookie, no password) ends the
 * client with TETHER_ERR_UNAUTHORIZED and no retry; a bad cookie with good credentials is
 * re-authenticated once and connects. */
static void test_unauthorized(void) {
    tether_config *cfg = gomuks_config(NULL);
    CHECK_OK(tether_config_set_basic_auth(cfg, "desktop-key", "wrong-key"));
    tether_client *c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    expect_refused(c, TETHER_ERR_UNAUTHORIZED, 401);

    const char *bad = "eyJ1c2VybmFtZSI6IiIsImV4cGlyeSI6MX0.AAAA";
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_url(cfg, backend.http));
    CHECK_OK(tether_config_set_token(cfg, bad));
    c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    expect_refused(c, TETHER_ERR_UNAUTHORIZED, 401);

    cfg = gomuks_config(NULL);
    CHECK_OK(tether_config_set_token(cfg, bad));
    c = connect_client(cfg, NULL, 0);
    th_close_and_free(c);

    /* What the library met on the wire (§1.2): the upgrade's 401 carries a JSON errcode. */
    char resp[4096], hdr[256];
    snprintf(hdr, sizeof hdr, "Cookie: gomuks_auth=%s\r\n", bad);
    CHECK(w_http(backend.port, "GET", "/_gomuks/websocket", hdr, resp, sizeof resp) == 401);
    CHECK_HAS(w_body(resp), "\"errcode\":\"FI.MAU.GOMUKS.INVALID_COOKIE\"");
    CHECK(w_http(backend.port, "GET", "/_gomuks/websocket", "", resp, sizeof resp) == 401);
    CHECK_HAS(w_body(resp), "\"errcode\":\"FI.MAU.GOMUKS.MISSING_COOKIE\"");
    /* v0.2607.0 takes no Basic credentials on the upgrade itself, unlike the §1.2 fallback
     * (interop/FINDINGS.md): the library's POST /auth first is what makes it work. */
    CHECK(w_http(backend.port, "GET", "/_gomuks/websocket", basic_header, resp, sizeof resp) == 401);
    CHECK_HAS(w_body(resp), "\"errcode\":\"FI.MAU.GOMUKS.MISSING_COOKIE\"");
}

/* §1.3: an Origin that matches neither Host nor origin_patterns → 403 before the upgrade;
 * the library stops with TETHER_ERR_FORBIDDEN. A matching pattern (localhost:*) passes. */
static void test_forbidden_origin(void) {
    tether_config *cfg = gomuks_config(NULL);
    CHECK_OK(tether_config_add_header(cfg, "Origin", "http://evil.example"));
    tether_client *c = th_client_from(cfg);
    CHECK_OK(tether_client_connect(c));
    expect_refused(c, TETHER_ERR_FORBIDDEN, 403);

    cfg = gomuks_config(NULL);
    CHECK_OK(tether_config_add_header(cfg, "Origin", "http://localhost:1234"));
    c = connect_client(cfg, NULL, 0);
    th_close_and_free(c);
}

/* §3.4, §4.1: requests that need no account, unknown commands and bad params (decoding
 * fails before the handler runs). */
static void test_requests_without_account(void) {
    tether_client *c = connect_client(gomuks_config(NULL), NULL, 0);
    char buf[8192];

    int64_t id = request(c, "generate_recovery_key", "{\"passphrase\":\"\"}");
    tether_event *ev = th_wait_response(c, id, 15000);
    CHECK_OK(tether_event_status(ev));
    data_str(ev, buf, sizeof buf);
    /* v0.2607.0 answers {"recovery_key":"EsT5 VBZs ... (12 groups of 4)"} only; the
     * cross_signing_keys of §4.1 came later (interop/FINDINGS.md). */
    CHECK_HAS(buf, "{\"recovery_key\":\"");
    CHECK(strlen(buf) == strlen("{\"recovery_key\":\"\"}") + 12 * 4 + 11);
    tether_event_free(ev);

    id = request(c, "get_state", "{}");
    ev = th_wait_response(c, id, 15000);
    CHECK_OK(tether_event_status(ev));
    CHECK_HAS(data_str(ev, buf, sizeof buf), "\"is_logged_in\":false");
    tether_event_free(ev);

    id = request(c, "no_such_command", "{}");
    ev = th_wait_response(c, id, 15000);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_REMOTE);
    CHECK(th_data_is(ev, "\"unknown command \\\"no_such_command\\\"\""));
    tether_event_free(ev);

    /* FFI-only commands are unknown over the websocket (§3.4). */
    id = request(c, "get_account_info", "{}");
    ev = th_wait_response(c, id, 15000);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_REMOTE);
    CHECK_HAS(data_str(ev, buf, sizeof buf), "unknown command");
    tether_event_free(ev);

    id = request(c, "get_login_flows", "\"not an object\"");
    ev = th_wait_response(c, id, 15000);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_REMOTE);
    data_str(ev, buf, sizeof buf);
    if (!strstr(buf, "json: cannot unmarshal string into Go value of type"))
        th_fail(__FILE__, __LINE__, "unexpected bad-params error: %s", buf);
    tether_event_free(ev);

    /* cancel of an ID nothing runs under → false (§3.5). */
    id = request(c, "cancel", "{\"request_id\":987654321}");
    ev = th_wait_response(c, id, 15000);
    CHECK_OK(tether_event_status(ev));
    CHECK(th_data_is(ev, "false"));
    tether_event_free(ev);
    th_close_and_free(c);
}

/* §9 1011 (FINDINGS F8): calculate_room_id is not account-free in v0.2607.0 (it reads the
 * logged-in user's ID, nil here), so its handler would panic and the backend close with 1011
 * "Command handler panicked", failing every request in flight. Since the backend's
 * client_state says it is not logged in, the library refuses it at the call (ERR_STATE): the
 * request in flight is answered and the connection stays up. */
static void test_account_command_refused_while_logged_out(void) {
    tether_client *c = connect_client(gomuks_config(NULL), NULL, 0);
    int64_t before = request(c, "get_state", "{}");
    const char *body = "{\"timestamp\":1700000000000,\"content\":{\"room_version\":\"12\"}}";
    int64_t id = 0;
    CHECK_STATUS(tether_client_request(c, "calculate_room_id", (const uint8_t *)body, strlen(body),
                                       &id),
                 TETHER_ERR_STATE);
    CHECK_HAS(tether_last_error(), "logged-in backend");
    tether_event *ev = th_wait_response(c, before, 15000);
    CHECK_OK(tether_event_status(ev));
    tether_event_free(ev);
    int64_t after = request(c, "get_state", "{}");
    ev = th_wait_response(c, after, 15000);
    CHECK_OK(tether_event_status(ev));
    tether_event_free(ev);
    tether_stats st = {.size = sizeof st};
    CHECK_OK(tether_client_stats(c, &st));
    CHECK(st.connections == 1);
    th_close_and_free(c);
}

/* §3.5: a request the backend is really running (get_login_flows against a homeserver that
 * accepts and never answers) is cancelled by tether_client_cancel and by the per-request
 * timeout; the backend aborts its outgoing HTTP request (our silent peer sees EOF), and the
 * library reports one RESPONSE per request, never a second one when the backend's own error
 * reply arrives. */
static void test_cancel_in_flight(void) {
    int hs_port = 0;
    int hs = w_listen(&hs_port);
    tether_client *c = connect_client(gomuks_config(NULL), NULL, 0);
    char params[128];
    snprintf(params, sizeof params, "{\"homeserver_url\":\"http://127.0.0.1:%d\"}", hs_port);

    for (int round = 0; round < 2; round++) {
        int64_t id = 0;
        int conn = blocked_login_flows(c, hs, params, round == 0 ? 0 : 300, &id);
        if (round == 0) CHECK_OK(tether_client_cancel(c, id));
        tether_event *ev = th_wait_response(c, id, 15000);
        CHECK_STATUS(tether_event_status(ev),
                     round == 0 ? TETHER_ERR_CANCELLED : TETHER_ERR_REQUEST_TIMEOUT);
        tether_event_free(ev);
        /* The backend gives up on the homeserver: its connection closes. */
        if (!w_wait_eof(conn, 10000 * th_scale()))
            th_fail(__FILE__, __LINE__, "backend kept its homeserver request open");
        close(conn);
        /* No second reply for the same ID (the backend answers the cancelled request with an
         * error of its own): a ping round trip later, the queue holds only the pong. */
        int64_t echo = request(c, "get_state", "{}");
        for (;;) {
            ev = th_wait(c, TETHER_EVENT_RESPONSE, NULL, 15000);
            CHECK(tether_event_request_id(ev) != id);
            int done = tether_event_request_id(ev) == echo;
            tether_event_free(ev);
            if (done) break;
        }
    }
    th_close_and_free(c);
    close(hs);
}

/* §8, §5: pings get pongs with an RTT, acking nothing while no negative-ID event exists
 * (§7.3); with compression the backend's frames are binary raw deflate and still decode
 * (the relay sees opcode 2, the library yields the JSON events); without, text (opcode 1).
 * Closing sends 1001 (§7.1, §9), which the relay reads off the wire. */
static void test_ping_pong_compression_and_close_1001(void) {
    for (int compress = 1; compress >= 0; compress--) {
        static w_relay relay;
        w_relay_start(&relay, backend.port);
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d", relay.port);
        tether_config *cfg = gomuks_config(url);
        CHECK_OK(tether_config_set_compression(cfg, compress != 0));
        CHECK_OK(tether_config_set_ping_interval_ms(cfg, 150));
        tether_client *c = connect_client(cfg, NULL, 0);
        for (int i = 0; i < 3; i++) {
            tether_event *ev = th_wait(c, TETHER_EVENT_PONG, NULL, 5000);
            CHECK(tether_event_rtt_us(ev) >= 0);
            CHECK(tether_event_acked_id(ev) == 0);
            CHECK(tether_event_request_id(ev) > 0);
            tether_event_free(ev);
        }
        /* A response also travels compressed. */
        int64_t id = request(c, "get_state", "{}");
        tether_event *ev = th_wait_response(c, id, 15000);
        CHECK_OK(tether_event_status(ev));
        tether_event_free(ev);
        CHECK(w_relay_get(&relay, &relay.first_server_opcode) == (compress ? 2 : 1));
        th_close_and_free(c);
        int64_t deadline = th_now_ms() + 5000;
        while (w_relay_get(&relay, &relay.client_close_code) == 0 && th_now_ms() < deadline)
            usleep(20000);
        CHECK(w_relay_get(&relay, &relay.client_close_code) == 1001);
        CHECK(w_relay_get(&relay, &relay.ws_connections) == 1);
        w_relay_stop(&relay);
    }
}

/* §3.1, §9: what the library never sends, sent by hand: a binary frame → 1003
 * "Non-text message"; undecodable JSON → 1003 "Invalid JSON". */
static void test_close_1003(void) {
    char reason[128];
    int s = w_ws_open(backend.port, cookie_header);
    w_ws_send(s, 2, "\x01\x02", 2);
    CHECK(w_ws_wait_close(s, reason, sizeof reason) == 1003);
    CHECK(strcmp(reason, "Non-text message") == 0);
    close(s);

    s = w_ws_open(backend.port, cookie_header);
    w_ws_send(s, 1, "{\"command\":1}", 13);
    CHECK(w_ws_wait_close(s, reason, sizeof reason) == 1003);
    CHECK(strcmp(reason, "Invalid JSON") == 0);
    close(s);
}

/* Reads messages until one contains `needle`; returns it in buf. Messages passed over must be
 * in `allowed` (a substring each may contain), or the test fails. */
static void raw_expect(int s, const char *needle, char *buf, size_t cap) {
    for (int i = 0; i < 8; i++) {
        w_ws_read_text(s, buf, cap);
        if (strstr(buf, needle)) return;
        if (!strstr(buf, "\"image_auth_token\""))
            th_fail(__FILE__, __LINE__, "expected %s, got %s", needle, buf);
    }
    th_fail(__FILE__, __LINE__, "no message with %s", needle);
}

static void raw_send(int s, const char *text) { w_ws_send(s, 1, text, strlen(text)); }



/* §3.1-§3.5 on the wire, where the library's own framing cannot go: the exact text of the
 * connect snapshot, trailing bytes after the JSON, a request without request_id or data,
 * cancel of an unknown and of a running request (order and text of both replies), and a
 * request_id of the wrong type (1003). tests/interop_parity.rs holds the testkit to the same. */
static void test_envelope_on_the_wire(void) {
    char buf[65536];
    int s = w_ws_open(backend.port, cookie_header);
    const char *first[] = {"{\"command\":\"run_id\",\"request_id\":0,\"data\":{\"run_id\":\"",
                           "{\"command\":\"client_state\",\"request_id\":0,\"data\":"
                           "{\"is_initialized\":true,\"is_logged_in\":false,\"is_verified\":false,"
                           "\"verification_state\":{\"is_verified\":false,\"state_checked\":false,"
                           "\"has_cross_signing\":false,\"has_ssss\":false}}}\n",
                           "{\"command\":\"sync_status\",\"request_id\":0,\"data\":"
                           "{\"type\":\"waiting\",\"error_count\":0,\"last_sync\":0}}\n"};
    for (int i = 0; i < 3; i++) {
        w_ws_read_text(s, buf, sizeof buf);
        if (getenv("INTEROP_VERBOSE")) fprintf(stderr, "     wire: %s", buf);
        if (i == 0) {
            CHECK_PREFIX(buf, first[0]);
            CHECK_HAS(buf, "\"etag\":\"\",\"vapid_key\":\"");
            CHECK(strstr(buf, "listener_id") == NULL); /* added after v0.2607.0 */
        } else if (strcmp(buf, first[i]) != 0) {
            th_fail(__FILE__, __LINE__, "snapshot message %d differs: %s", i, buf);
        }
    }
    raw_send(s, "{\"command\":\"ping\",\"request_id\":7,\"data\":{\"last_received_id\":0}} trailing");
    raw_expect(s, "\"pong\"", buf, sizeof buf);
    CHECK(strcmp(buf, "{\"command\":\"pong\",\"request_id\":7,\"data\":null}\n") == 0);

    raw_send(s, "{\"command\":\"get_state\"}");
    raw_expect(s, "\"response\"", buf, sizeof buf);
    CHECK_PREFIX(buf, "{\"command\":\"response\",\"request_id\":0,\"data\":{");

    raw_send(s, "{\"command\":\"cancel\",\"request_id\":8,\"data\":{\"request_id\":99}}\n");
    raw_expect(s, "\"request_id\":8", buf, sizeof buf);
    CHECK(strcmp(buf, "{\"command\":\"response\",\"request_id\":8,\"data\":false}\n") == 0);

    int hs_port = 0;
    int hs = w_listen(&hs_port);
    char req[256];
    snprintf(req, sizeof req,
             "{\"command\":\"get_login_flows\",\"request_id\":9,\"data\":{\"homeserver_url\":"
             "\"http://127.0.0.1:%d\"}}",
             hs_port);
    raw_send(s, req);
    char head[4096];
    int conn = accept_homeserver_call(hs, head, sizeof head);
    raw_send(s, "{\"command\":\"cancel\",\"request_id\":10,\"data\":{\"request_id\":9,\"reason\":\"bye\"}}");
    char a[4096], b[4096];
    raw_expect(s, "\"request_id\":", a, sizeof a);
    raw_expect(s, "\"request_id\":", b, sizeof b);
    const char *cancel_reply = "{\"command\":\"response\",\"request_id\":10,\"data\":true}\n";
    const char *err_reply = strstr(a, "\"request_id\":9") ? a : b;
    CHECK(strcmp(err_reply == a ? b : a, cancel_reply) == 0);
    if (getenv("INTEROP_VERBOSE"))
        fprintf(stderr, "     wire: first %s     wire: then %s", a, b);
    CHECK_PREFIX(err_reply, "{\"command\":\"error\",\"request_id\":9,\"data\":\"");
    /* The reason is the context's cause and ends the handler's own error text; the §3.5
     * "context canceled: <reason>" form appears only when nothing wraps it. */
    CHECK_HAS(err_reply, ": bye\"}\n");
    close(conn);
    close(hs);

    raw_send(s, "{\"command\":\"get_state\",\"request_id\":\"5\"}");
    char reason[128];
    CHECK(w_ws_wait_close(s, reason, sizeof reason) == 1003);
    CHECK(strcmp(reason, "Invalid JSON") == 0);
    close(s);
}

/* §8, §9: a client that never sends anything is closed with 4002 "Ping timeout" by the
 * backend's 60 s ticker (not configurable in gomuks, so this waits 60-120 s; it runs alongside
 * the other tests). The library reports it and reconnects. */
static tether_client *silent;
static int64_t silent_started;

static void start_silent_client(void) {
    tether_config *cfg = gomuks_config(NULL);
    CHECK_OK(tether_config_set_ping_interval_ms(cfg, 600000));
    CHECK_OK(tether_config_set_receive_timeout_ms(cfg, 1200000));
    silent = th_client_from(cfg);
    CHECK_OK(tether_client_connect(silent));
    tether_event_free(th_wait(silent, TETHER_EVENT_CONNECTED, NULL, 15000));
    silent_started = th_now_ms();
}

static void test_server_ping_timeout_4002(void) {
    tether_event *ev = th_wait(silent, TETHER_EVENT_DISCONNECTED, NULL, 130000);
    int64_t after = th_now_ms() - silent_started;
    CHECK(tether_event_close_code(ev) == 4002);
    CHECK_STATUS(tether_event_status(ev), TETHER_ERR_REMOTE_CLOSED);
    CHECK(tether_event_retry_in_ms(ev) >= 0);
    CHECK(after >= 55000 && after <= 125000);
    fprintf(stderr, "     4002 after %lld ms of silence\n", (long long)after);
    tether_event_free(ev);
    ev = th_wait(silent, TETHER_EVENT_CONNECTED, NULL, 15000);
    CHECK(tether_event_attempt(ev) >= 2);
    tether_event_free(ev);
    th_close_and_free(silent);
}

int main(void) {
    peer_start();
    start_silent_client();
    TH_RUN(test_desktop_key_auth_and_connect_snapshot);
    TH_RUN(test_cookie_token_flow);
    TH_RUN(test_auth_token_handed_back_and_app_cookie);
    TH_RUN(test_unauthorized);
    TH_RUN(test_forbidden_origin);
    TH_RUN(test_requests_without_account);
    TH_RUN(test_account_command_refused_while_logged_out);
    TH_RUN(test_cancel_in_flight);
    TH_RUN(test_ping_pong_compression_and_close_1001);
    TH_RUN(test_close_1003);
    TH_RUN(test_envelope_on_the_wire);
    TH_RUN(test_server_ping_timeout_4002);
    peer_stop();
    return 0;
}
