/*
 * The native gomuks store through the C API (docs/store.md): attach before connect, STORE
 * events in the poll stream, snapshot reads with the size-query convention, an action whose
 * RESPONSE follows its change, the store outliving its client, and every misuse refused.
 */
#include "harness.h"

static th_backend backend;

/* Reads `what` into a malloc'd NUL-terminated buffer (owned by the caller), looping on
 * TETHER_ERR_BUFFER_TOO_SMALL as the header asks. */
static char *read_json(const tether_store *s, const char *what, const char *args) {
    size_t len = 0;
    CHECK_STATUS(tether_store_read(s, what, args, NULL, 0, &len), TETHER_ERR_BUFFER_TOO_SMALL);
    for (;;) {
        char *buf = (char *)malloc(len + 1);
        CHECK(buf != NULL);
        tether_status st = tether_store_read(s, what, args, buf, len + 1, &len);
        if (st == TETHER_OK) {
            CHECK(strlen(buf) == len);
            return buf;
        }
        CHECK_STATUS(st, TETHER_ERR_BUFFER_TOO_SMALL);
        free(buf);
    }
}

/* An event's data as a malloc'd NUL-terminated string (owned by the caller). */
static char *data_text(const tether_event *ev) {
    const uint8_t *p = NULL;
    size_t n = 0;
    CHECK_OK(tether_event_data(ev, &p, &n));
    char *text = (char *)malloc(n + 1);
    CHECK(text != NULL);
    memcpy(text, p, n);
    text[n] = 0;
    return text;
}

static tether_client *new_client(void) { return th_client_from(th_config(&backend)); }

/* §4.2 initial sync through the store: the list is there once init_complete is taken, a
 * STORE event follows each applied MESSAGE, and paginate's RESPONSE comes after its STORE
 * event. */
static void test_store_follows_the_stream(void) {
    tether_client *c = new_client();
    tether_store *s = NULL;
    CHECK_OK(tether_store_new(c, "{\"evict_after_ms\": 60000}", &s));
    CHECK(s != NULL);
    CHECK_OK(tether_client_connect(c));
    int stores = 0;
    for (;;) {
        tether_event *ev = th_next(c, 20000);
        uint32_t k = tether_event_kind(ev);
        if (k == TETHER_EVENT_STORE) {
            stores++;
            CHECK(strcmp(tether_event_command(ev), "") == 0);
        }
        int done = k == TETHER_EVENT_MESSAGE && strcmp(tether_event_command(ev), "init_complete") == 0;
        tether_event_free(ev);
        if (done) break;
    }
    CHECK(stores >= 3);
    char *list = read_json(s, "room_list", "{\"invites\": false, \"favourites_first\": false}");
    CHECK(strstr(list, "\"name\":\"Room 3\"") != NULL);
    CHECK(strstr(list, "\"name\":\"Room 3\"") < strstr(list, "\"name\":\"Room 0\""));
    free(list);

    int64_t id = 0;
    CHECK_OK(tether_store_paginate(s, "!r1:example.org", 10, &id));
    CHECK(id > 0);
    int64_t again = -1;
    CHECK_STATUS(tether_store_paginate(s, "!r1:example.org", 10, &again), TETHER_ERR_IN_USE);
    CHECK(again == -1);
    int saw_change = 0;
    for (;;) {
        tether_event *ev = th_wait(c, TETHER_EVENT_STORE, NULL, 10000);
        char want[64];
        snprintf(want, sizeof want, "\"request_id\":%lld", (long long)id);
        char *text = data_text(ev);
        if (strstr(text, want)) saw_change = 1;
        free(text);
        tether_event_free(ev);
        if (saw_change) break;
    }
    tether_event *resp = th_wait_response(c, id, 10000);
    CHECK(tether_event_status(resp) == TETHER_OK);
    tether_event_free(resp);
    /* A NULL out-pointer sends nothing: were it sent, the next pagination of the room would
     * be refused as running. */
    CHECK_STATUS(tether_store_paginate(s, "!r2:example.org", 10, NULL), TETHER_ERR_NULL);
    int64_t other = 0;
    CHECK_OK(tether_store_paginate(s, "!r2:example.org", 10, &other));
    tether_event_free(th_wait_response(c, other, 10000));
    char *tl = read_json(s, "timeline", "{\"room_id\": \"!r1:example.org\", \"limit\": 100}");
    CHECK(strstr(tl, "\"has_more\":true") != NULL);
    int rows = 0;
    for (const char *q = tl; (q = strstr(q, "\"timeline_rowid\":")) != NULL; q++) rows++;
    /* Each item names its row once at the top and once inside the event. */
    CHECK(rows == 20);
    free(tl);

    /* A buffer one byte short is refused and reports the length. */
    size_t len = 0;
    CHECK_STATUS(tether_store_read(s, "session", NULL, NULL, 0, &len), TETHER_ERR_BUFFER_TOO_SMALL);
    char *small = (char *)malloc(len);
    size_t len2 = 0;
    CHECK_STATUS(tether_store_read(s, "session", NULL, small, len, &len2), TETHER_ERR_BUFFER_TOO_SMALL);
    CHECK(len2 >= len);
    free(small);

    /* The store outlives its client: reads work, actions are refused. */
    th_close_and_free(c);
    char *session = read_json(s, "session", NULL);
    CHECK(strstr(session, "\"init_complete\":true") != NULL);
    free(session);
    CHECK_STATUS(tether_store_load_state(s, "!r1:example.org", true, &id), TETHER_ERR_STATE);
    tether_store_free(s);
}

/* The rowid in an event's JSON data (the echo a send answers with). */
static int64_t data_rowid(const tether_event *ev) {
    char *text = data_text(ev);
    const char *at = strstr(text, "\"rowid\":");
    CHECK(at != NULL);
    int64_t rowid = strtoll(at + 8, NULL, 10);
    free(text);
    return rowid;
}

/* §4.3 a failed send resent (it fails again) and then discarded; both refused for anything
 * but a failed send in the pending tail, and a NULL out-pointer sends nothing. */
static void test_store_resend_and_discard(void) {
    tether_client *c = new_client();
    tether_store *s = NULL;
    CHECK_OK(tether_store_new(c, NULL, &s));
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 20000));
    const char *room = "!r1:example.org";
    int64_t id = 0;
    CHECK_OK(tether_store_send_message(s, "{\"room_id\": \"!r1:example.org\", \"text\": \"fail\"}", &id));
    tether_event *resp = th_wait_response(c, id, 10000);
    int64_t rowid = data_rowid(resp);
    tether_event_free(resp);
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "send_complete", 10000));
    const char *args = "{\"room_id\": \"!r1:example.org\"}";
    char *tl = read_json(s, "timeline", args);
    CHECK(strstr(tl, "\"send_status\":\"failed\"") != NULL);
    free(tl);

    CHECK_STATUS(tether_store_resend(s, room, rowid, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_resend(NULL, room, rowid, &id), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_resend(s, NULL, rowid, &id), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_resend(s, room, rowid + 1000, &id), TETHER_ERR_INVALID_ARGUMENT);
    tl = read_json(s, "timeline", args);
    CHECK(strstr(tl, "\"send_status\":\"failed\"") != NULL);
    free(tl);
    CHECK_OK(tether_store_resend(s, room, rowid, &id));
    tl = read_json(s, "timeline", args);
    CHECK(strstr(tl, "\"send_status\":\"sending\"") != NULL);
    free(tl);
    /* The testkit's homeserver refuses "fail" at once: the outcome comes before the answer,
     * and the answer leaves it failed. */
    tether_event_free(th_wait_response(c, id, 10000));
    tl = read_json(s, "timeline", args);
    CHECK(strstr(tl, "\"send_status\":\"failed\"") != NULL);
    free(tl);

    CHECK_STATUS(tether_store_discard(NULL, room, rowid), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_discard(s, NULL, rowid), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_discard(s, "!nope:x", rowid), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_OK(tether_store_discard(s, room, rowid));
    tether_event *ev = th_wait(c, TETHER_EVENT_STORE, NULL, 10000);
    char *change = data_text(ev);
    CHECK(strstr(change, "\"command\":\"discard\"") != NULL);
    free(change);
    tether_event_free(ev);
    tl = read_json(s, "timeline", args);
    CHECK(strstr(tl, "\"pending\":[]") != NULL);
    free(tl);
    CHECK_STATUS(tether_store_discard(s, room, rowid), TETHER_ERR_INVALID_ARGUMENT);
    th_close_and_free(c);
    /* Discarding is local: a store whose client is gone still answers it. */
    CHECK_STATUS(tether_store_discard(s, room, rowid), TETHER_ERR_INVALID_ARGUMENT);
    tether_store_free(s);
}

/* Freeing the store first detaches it and leaves the client working. */
static void test_store_freed_before_client(void) {
    int64_t id = 0;
    tether_client *c = new_client();
    tether_store *s = NULL;
    CHECK_OK(tether_store_new(c, NULL, &s));
    tether_store_free(s);
    CHECK_OK(tether_client_connect(c));
    /* No STORE event anywhere up to init_complete. */
    for (;;) {
        tether_event *ev = th_next(c, 10000);
        CHECK(tether_event_kind(ev) != TETHER_EVENT_STORE);
        int done = strcmp(tether_event_command(ev), "init_complete") == 0;
        tether_event_free(ev);
        if (done) break;
    }
    CHECK_OK(tether_client_request(c, "echo", (const uint8_t *)"{}", 2, &id));
    tether_event_free(th_wait_response(c, id, 10000));
    th_close_and_free(c);
}

/* Every misuse returns a status and changes nothing. */
static void test_store_misuse(void) {
    tether_store *s = NULL;
    int64_t id = 7;
    size_t n = 0;
    CHECK_STATUS(tether_store_new(NULL, NULL, &s), TETHER_ERR_NULL);
    tether_client *c = new_client();
    CHECK_STATUS(tether_store_new(c, NULL, NULL), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_new(c, "{\"nope\": 1}", &s), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_store_new(c, "\xff", &s), TETHER_ERR_INVALID_UTF8);
    CHECK(s == NULL);
    CHECK_OK(tether_store_new(c, NULL, &s));
    tether_store *twice = NULL;
    CHECK_STATUS(tether_store_new(c, NULL, &twice), TETHER_ERR_IN_USE);
    CHECK(twice == NULL);

    CHECK_STATUS(tether_store_read(NULL, "session", NULL, NULL, 0, &n), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_read(s, NULL, NULL, NULL, 0, &n), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_read(s, "nope", NULL, NULL, 0, &n), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_store_read(s, "timeline", "{", NULL, 0, &n), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_store_read(s, "session", NULL, NULL, 1 << 20, &n), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_paginate(NULL, "!r1:example.org", 0, &id), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_paginate(s, NULL, 0, &id), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_paginate(s, "!nope:x", 0, &id), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_store_load_state(s, "\xff", false, &id), TETHER_ERR_INVALID_UTF8);
    CHECK_STATUS(tether_store_send_message(s, "{\"text\": \"x\"}", &id), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_store_send_message(s, NULL, &id), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_mark_read(s, "!nope:x", NULL, &id), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_store_request_members(s, "!nope:x", "not json", &id), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_store_request_members(s, "!r1:example.org", "[\"@x:y\"]", NULL), TETHER_ERR_NULL);
    /* A NULL is ERR_NULL whatever the other arguments hold. */
    CHECK_STATUS(tether_store_request_members(NULL, "!r1:example.org", "not json", &id), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_request_members(s, NULL, "not json", &id), TETHER_ERR_NULL);
    CHECK(id == 7);
    CHECK_STATUS(tether_store_set_open(s, "!nope:x", true), TETHER_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tether_store_set_open(NULL, "!nope:x", true), TETHER_ERR_NULL);
    CHECK_STATUS(tether_store_watch(NULL, NULL, true), TETHER_ERR_NULL);
    CHECK_OK(tether_store_watch(s, NULL, false));
    CHECK_OK(tether_store_watch(s, NULL, true));
    CHECK_STATUS(tether_store_collect_garbage(NULL, NULL), TETHER_ERR_NULL);
    size_t evicted = 9;
    CHECK_OK(tether_store_collect_garbage(s, &evicted));
    CHECK(evicted == 0);
    tether_store_free(NULL);

    /* After connect, a new store would miss events. */
    CHECK_OK(tether_client_connect(c));
    tether_client *c2 = new_client();
    CHECK_OK(tether_client_connect(c2));
    tether_store *late = NULL;
    CHECK_STATUS(tether_store_new(c2, NULL, &late), TETHER_ERR_STATE);
    CHECK(late == NULL);
    CHECK(strstr(tether_last_error(), "before connect") != NULL);
    th_close_and_free(c2);
    /* Closed without ever connecting: the message says so, not "before connect". */
    tether_client *closed = new_client();
    CHECK_OK(tether_client_close(closed));
    CHECK_STATUS(tether_store_new(closed, NULL, &late), TETHER_ERR_STATE);
    CHECK(strstr(tether_last_error(), "closed") != NULL);
    tether_client_free(closed);

    tether_config *cfg = th_config(&backend);
    CHECK_OK(tether_config_set_protocol(cfg, TETHER_PROTOCOL_RWWS));
    CHECK_OK(tether_config_set_url(cfg, "ws://127.0.0.1:9/api/ws"));
    CHECK_OK(tether_config_set_token(cfg, "AAECAw=="));
    tether_client *rw = th_client_from(cfg);
    CHECK_STATUS(tether_store_new(rw, NULL, &late), TETHER_ERR_UNSUPPORTED);
    tether_client_free(rw);

    tether_store_free(s);
    th_close_and_free(c);
}

int main(void) {
    const char *const args[] = {"--rooms", "4", "--history", "30", NULL};
    th_backend_start(&backend, args);
    TH_RUN(test_store_follows_the_stream);
    TH_RUN(test_store_resend_and_discard);
    TH_RUN(test_store_freed_before_client);
    TH_RUN(test_store_misuse);
    th_backend_stop(&backend);
    return 0;
}
