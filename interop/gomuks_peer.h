/*
 * The real gomuks backend as a test peer: started from $TETHER_BACKEND (interop/gomuks) with a
 * fresh desktop key, or loaded in-process from $TETHER_GOMUKS_FFI (libgomuksffi), plus the
 * helpers the interop test programs share.
 */
#ifndef TETHER_INTEROP_GOMUKS_PEER_H
#define TETHER_INTEROP_GOMUKS_PEER_H

#include "wire.h"

#include <fcntl.h>

/* Fails with the text when `needle` is missing from it. */
#define CHECK_HAS(text, needle)                                                            \
    do {                                                                                   \
        if (!strstr((text), (needle)))                                                     \
            th_fail(__FILE__, __LINE__, "%s not in %.600s", (needle), (text));             \
    } while (0)

#define CHECK_PREFIX(text, prefix)                                                         \
    do {                                                                                   \
        if (strncmp((text), (prefix), strlen(prefix)) != 0)                                \
            th_fail(__FILE__, __LINE__, "expected %s... got %.600s", (prefix), (text));    \
    } while (0)

static th_backend backend;
static char desktop_key[64];
static char basic_header[320]; /* "Authorization: Basic ...\r\n" for the hand-rolled checks */
static char cookie_header[700]; /* "Cookie: gomuks_auth=...\r\n", likewise */

static inline tether_config *gomuks_config(const char *url) {
    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_url(cfg, url ? url : backend.http));
    CHECK_OK(tether_config_set_basic_auth(cfg, "desktop-key", desktop_key));
    CHECK_OK(tether_config_set_reconnect_backoff_ms(cfg, 50, 500));
    return cfg;
}

/* Data of an event as a NUL-terminated copy (truncated to cap). */
static inline const char *data_str(const tether_event *ev, char *buf, size_t cap) {
    const uint8_t *p = NULL;
    size_t n = 0;
    CHECK_OK(tether_event_data(ev, &p, &n));
    if (n >= cap) n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

static inline int64_t request(tether_client *c, const char *command, const char *json) {
    int64_t id = 0;
    CHECK_OK(tether_client_request(c, command, (const uint8_t *)json, strlen(json), &id));
    return id;
}

/* Sends get_login_flows with `params` naming the silent homeserver listening on `hs` (with its
 * own timeout when `timeout_ms` > 0) and returns the backend's connection to that homeserver
 * once the backend's request is fully out: cancelled earlier, Go's HTTP transport may keep the
 * fresh connection idle instead of closing it. `*id` receives the request id. */
/* Waits up to 15 s for the backend to call the silent homeserver listening on `hs`, accepts
 * that connection and reads its request head into `head`; returns the connection. */
static inline int accept_homeserver_call(int hs, char *head, size_t cap) {
    if (!w_readable(hs, 15000)) th_fail(__FILE__, __LINE__, "backend never called the homeserver");
    int conn = accept(hs, NULL, NULL);
    CHECK(conn >= 0);
    w_read_head(conn, head, cap);
    return conn;
}

static inline int blocked_login_flows(tether_client *c, int hs, const char *params,
                                      uint32_t timeout_ms, int64_t *id) {
    if (timeout_ms == 0) {
        *id = request(c, "get_login_flows", params);
    } else {
        CHECK_OK(tether_client_request_with_timeout(c, "get_login_flows", (const uint8_t *)params,
                                                    strlen(params), timeout_ms, id));
    }
    char head[4096];
    int conn = accept_homeserver_call(hs, head, sizeof head);
    CHECK_PREFIX(head, "GET /_matrix/client/versions ");
    return conn;
}

/* Whether the peer closes `conn` within `ms`, reading and dropping what it sends meanwhile. */
static inline int w_wait_eof(int conn, int64_t ms) {
    int64_t deadline = th_now_ms() + ms;
    while (th_now_ms() < deadline) {
        if (!w_readable(conn, 200)) continue;
        char junk[4096];
        if (read(conn, junk, sizeof junk) <= 0) return 1;
    }
    return 0;
}

/* POST /auth?output=json with `auth_header`; returns the status, the token in `token`. */
static inline int fetch_token(const char *auth_header, char *token, size_t cap) {
    char resp[8192];
    int code = w_http(backend.port, "POST",
                      "/_gomuks/auth?output=json&no_prompt=true&insecure_cookie=true", auth_header,
                      resp, sizeof resp);
    token[0] = 0;
    const char *t = strstr(w_body(resp), "{\"token\":\"");
    if (t) {
        t += strlen("{\"token\":\"");
        size_t n = strcspn(t, "\"");
        CHECK(n < cap);
        memcpy(token, t, n);
        token[n] = 0;
    }
    return code;
}

/* Starts the backend with a desktop key of this process's own (§13.1 desktop mode). */
static inline void peer_start(void) {
    const char *bin = getenv("TETHER_BACKEND");
    if (!bin || !*bin) th_fail(__FILE__, __LINE__, "TETHER_BACKEND must name gomuks-interop");
    snprintf(desktop_key, sizeof desktop_key, "interop-%ld-%lld", (long)getpid(),
             (long long)th_now_ms());
    CHECK(setenv("GOMUKS_DESKTOP_KEY", desktop_key, 1) == 0);
    char cred[128], b64[256];
    snprintf(cred, sizeof cred, "desktop-key:%s", desktop_key);
    w_base64(cred, b64, sizeof b64);
    snprintf(basic_header, sizeof basic_header, "Authorization: Basic %s\r\n", b64);
    int64_t t0 = th_now_ms();
    th_backend_start(&backend, NULL);
    fprintf(stderr, "     gomuks up at %s in %lld ms\n", backend.http,
            (long long)(th_now_ms() - t0));
    char token[600];
    CHECK(fetch_token(basic_header, token, sizeof token) == 201);
    snprintf(cookie_header, sizeof cookie_header, "Cookie: gomuks_auth=%s\r\n", token);
}

/* A required environment variable (set by interop/run.sh). */
static inline const char *env_or_fail(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) th_fail(__FILE__, __LINE__, "%s is not set", name);
    return v;
}

/* A successful response to `command`, its data copied to `out`. */
static inline void call_ok(tether_client *c, const char *command, const char *json, char *out,
                           size_t cap, int ms) {
    int64_t id = request(c, command, json);
    tether_event *ev = th_wait_response(c, id, ms);
    data_str(ev, out, cap);
    if (tether_event_status(ev) != TETHER_OK)
        th_fail(__FILE__, __LINE__, "%s failed: %.500s", command, out);
    tether_event_free(ev);
}

/* §13.3 with $SYNAPSE_HS, $SYNAPSE_USER and $SYNAPSE_PASSWORD: login, then a new recovery key
 * and reset_encryption (UIA with the password) verify the device. The first sync follows,
 * ending with init_complete; the caller waits for it (its request_id differs by transport). */
static inline void login_and_verify(tether_client *c) {
    char buf[65536], params[1024];
    snprintf(params, sizeof params,
             "{\"homeserver_url\":\"%s\",\"username\":\"%s\",\"password\":\"%s\"}",
             env_or_fail("SYNAPSE_HS"), env_or_fail("SYNAPSE_USER"),
             env_or_fail("SYNAPSE_PASSWORD"));
    call_ok(c, "login", params, buf, sizeof buf, 60000);
    call_ok(c, "generate_recovery_key", "{\"passphrase\":\"\"}", buf, sizeof buf, 15000);
    const char *k = strstr(buf, "\"recovery_key\":\"");
    CHECK(k != NULL);
    char key[128];
    k += strlen("\"recovery_key\":\"");
    snprintf(key, sizeof key, "%.*s", (int)strcspn(k, "\""), k);
    snprintf(params, sizeof params, "{\"recovery_key\":\"%s\",\"account_password\":\"%s\"}", key,
             env_or_fail("SYNAPSE_PASSWORD"));
    call_ok(c, "reset_encryption", params, buf, sizeof buf, 120000);
}

/* The second Matrix user sends n messages "TAG-0".."TAG-(n-1)" to the room ($BOB_SEND). */
static inline void bob_sends(int n, const char *tag) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %d %s", env_or_fail("BOB_SEND"), n, tag);
    if (system(cmd) != 0) th_fail(__FILE__, __LINE__, "bob could not send: %s", cmd);
}

/* --- In-process (libgomuksffi, gomuks-rpc.md §12) ------------------------------------- */

/* The FFI logs at debug level, pretty-printed, to stdout (§12.2: not configurable). The tests
 * print to stderr; stdout goes to $GOMUKS_INTEROP_LOG, where run.sh shows it on failure. */
static inline void inproc_stdout_to_log(void) {
    const char *path = getenv("GOMUKS_INTEROP_LOG");
    if (!path || !*path) return;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0 || dup2(fd, 1) != 1) th_fail(__FILE__, __LINE__, "cannot send stdout to %s", path);
    close(fd);
}

/* The very next event, whatever its kind (owned); fails after `ms`. */
static inline tether_event *next_event(tether_client *c, int ms) {
    tether_event *ev = NULL;
    tether_status s = tether_client_poll(c, ms * th_scale(), &ev);
    if (s == TETHER_TIMEOUT) th_fail(__FILE__, __LINE__, "no event in %d ms", ms);
    CHECK_OK(s);
    return ev;
}

/* `$GOMUKS_ROOT/name`: the data root of one in-process backend (created by tether). */
static inline const char *inproc_root(const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", env_or_fail("GOMUKS_ROOT"), name);
    return buf;
}

/* A client of the library in $TETHER_GOMUKS_FFI with its data under `root`. */
static inline tether_client *inproc_client(const char *root) {
    tether_config *cfg = NULL;
    CHECK_OK(tether_config_new(&cfg));
    CHECK_OK(tether_config_set_in_process(cfg, env_or_fail("TETHER_GOMUKS_FFI"), root));
    return th_client_from(cfg);
}

/* After CONNECTED: GomuksStart's own two events, in this order, with request_id 0 (§12.3);
 * checks `is_logged_in` against `logged_in`. */
static inline void inproc_expect_start_events(tether_client *c, int logged_in) {
    char buf[8192];
    tether_event *ev = next_event(c, 15000);
    CHECK(tether_event_kind(ev) == TETHER_EVENT_MESSAGE);
    CHECK(strcmp(tether_event_command(ev), "client_state") == 0);
    CHECK(tether_event_request_id(ev) == 0);
    data_str(ev, buf, sizeof buf);
    CHECK_HAS(buf, "\"is_initialized\":true");
    CHECK_HAS(buf, logged_in ? "\"is_logged_in\":true" : "\"is_logged_in\":false");
    tether_event_free(ev);
    ev = next_event(c, 15000);
    CHECK(tether_event_kind(ev) == TETHER_EVENT_MESSAGE);
    CHECK(strcmp(tether_event_command(ev), "sync_status") == 0);
    CHECK(tether_event_request_id(ev) == 0);
    if (!logged_in) CHECK(th_data_is(ev, "{\"type\":\"waiting\",\"error_count\":0,\"last_sync\":0}"));
    tether_event_free(ev);
}

/* The first events of a connect: CONNECTING and CONNECTED (attempt 1, no resume), then the
 * start events; nothing else comes between. */
static inline void inproc_expect_connect(tether_client *c, int logged_in) {
    tether_event *ev = next_event(c, 5000);
    CHECK(tether_event_kind(ev) == TETHER_EVENT_CONNECTING);
    CHECK(tether_event_attempt(ev) == 1);
    tether_event_free(ev);
    ev = next_event(c, 60000);
    CHECK(tether_event_kind(ev) == TETHER_EVENT_CONNECTED);
    CHECK(tether_event_attempt(ev) == 1);
    CHECK(!tether_event_resume_attempted(ev));
    tether_event_free(ev);
    inproc_expect_start_events(c, logged_in);
}

static inline tether_client *inproc_connect(const char *root, int logged_in) {
    tether_client *c = inproc_client(root);
    CHECK_OK(tether_client_connect(c));
    inproc_expect_connect(c, logged_in);
    return c;
}

/* Closes: DISCONNECTED with status OK and no retry, then CLOSED, within `bound_ms` (the
 * backend's GomuksDestroy ran by then, unless a call still blocks it); frees the client.
 * Returns how long it took. */
static inline int64_t inproc_close(tether_client *c, int bound_ms) {
    int64_t t0 = th_now_ms();
    CHECK_OK(tether_client_close(c));
    tether_event *ev = th_wait(c, TETHER_EVENT_DISCONNECTED, NULL, bound_ms);
    CHECK_OK(tether_event_status(ev));
    CHECK(tether_event_retry_in_ms(ev) == -1);
    tether_event_free(ev);
    ev = th_wait(c, TETHER_EVENT_CLOSED, NULL, bound_ms);
    tether_event_free(ev);
    int64_t took = th_now_ms() - t0;
    CHECK(took <= (int64_t)bound_ms * th_scale());
    ev = NULL;
    CHECK_STATUS(tether_client_poll(c, 0, &ev), TETHER_CLOSED);
    tether_client_free(c);
    return took;
}

/* SIGTERM, not the harness's SIGKILL: gomuks shuts down and the launcher cleans up. */
static inline void peer_stop(void) {
    kill(backend.pid, SIGTERM);
    CHECK(waitpid(backend.pid, NULL, 0) == backend.pid);
    th_backend_pid = 0;
}

#endif
