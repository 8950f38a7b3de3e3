/*
 * The real gomuks backend as a test peer: started from $TETHER_BACKEND (interop/gomuks) with a
 * fresh desktop key, plus the helpers both interop test programs use.
 */
#ifndef TETHER_INTEROP_GOMUKS_PEER_H
#define TETHER_INTEROP_GOMUKS_PEER_H

#include "wire.h"

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

/* SIGTERM, not the harness's SIGKILL: gomuks shuts down and the launcher cleans up. */
static inline void peer_stop(void) {
    kill(backend.pid, SIGTERM);
    CHECK(waitpid(backend.pid, NULL, 0) == backend.pid);
    th_backend_pid = 0;
}

#endif
