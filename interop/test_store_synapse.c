/*
 * tether's native gomuks store (tether_store_*) against the real gomuks backend logged in to
 * a throwaway Synapse (interop/synapse/hs.py): the room list after login ordered by activity,
 * local echo turning into the synced event, pagination of real history, mark_read clearing
 * the unread count, a network cut and resume that leave the store equal to a fresh client's,
 * and a backend restart that clears the store visibly and rebuilds it. Along the way the real
 * backend's payloads are recorded as fixtures when $TETHER_RECORD_FIXTURES names a directory.
 *
 * Environment (set by interop/run.sh): TETHER_BACKEND, GOMUKS_ROOT, SYNAPSE_HS, SYNAPSE_ROOM,
 * SYNAPSE_USER, SYNAPSE_PASSWORD, BOB_HS and SYNAPSE_DIR (bob through hs.py), optionally
 * TETHER_RECORD_FIXTURES.
 */
#include "store_peer.h"

static w_relay relay;
/* alice's client through the relay (so it can be cut), with its store. */
static sp_peer alice = {"alice", NULL, NULL, 0, 0, 0, 0, 0};
static char room_a[128], room_b[128], room_c[128], room_h[128];

static tether_client *client_at(const char *url) {
    tether_config *cfg = gomuks_config(url);
    CHECK_OK(tether_config_set_ping_interval_ms(cfg, 250));
    return th_client_from(cfg);
}

/* A fresh client with a store, straight to the backend, through its initial sync. */
static void fresh_peer(sp_peer *p, const char *name) {
    memset(p, 0, sizeof *p);
    p->name = name;
    p->c = client_at(NULL);
    CHECK_OK(tether_store_new(p->c, NULL, &p->s));
    CHECK_OK(tether_client_connect(p->c));
    sp_wait_init(p, 60000);
}

static void close_peer(sp_peer *p) {
    th_close_and_free(p->c);
    p->c = NULL;
    if (p->s) tether_store_free(p->s);
    p->s = NULL;
}

/* alice joins a room bob invited her to; the store then holds it. */
static void alice_joins(const char *room) {
    char params[256];
    snprintf(params, sizeof params, "{\"room_id_or_alias\":\"%s\"}", room);
    sp_call(&alice, "join_room", params, 60000);
    sp_until(&alice, sp_knows_room, room, 30000, "the joined room in the store");
}

static void wait_preview(sp_peer *p, const char *room, const char *body) {
    sp_preview pv = {room, body};
    char what[256];
    snprintf(what, sizeof what, "preview %s in %s", body, room);
    sp_until(p, sp_shows_preview, &pv, 60000, what);
}

/* After login the store's room_list holds the rooms bob created, most recently active first:
 * bob posts in B, then C, then A, so the list reads A, C, B (before any other room), with
 * strictly decreasing sorting_timestamp and each preview the last message. */
static void test_room_list_after_login_ordered_by_activity(void) {
    w_relay_start(&relay, backend.port);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", relay.port);
    alice.c = client_at(url);
    CHECK_OK(tether_store_new(alice.c, NULL, &alice.s));
    CHECK_OK(tether_client_connect(alice.c));
    tether_event_free(sp_wait(&alice, TETHER_EVENT_CONNECTED, NULL, 15000));
    int64_t t0 = th_now_ms();
    login_and_verify(alice.c);
    sp_wait_init(&alice, 120000);
    fprintf(stderr, "     logged in, first sync done in %lld ms (%d STORE events so far)\n",
            (long long)(th_now_ms() - t0), alice.store_events);
    char *session = sp_read(alice.s, "session", NULL);
    CHECK_HAS(session, "\"init_complete\":true");
    free(session);

    bob_creates_room("store-a", room_a, sizeof room_a);
    bob_creates_room("store-b", room_b, sizeof room_b);
    bob_creates_room("store-c", room_c, sizeof room_c);
    alice_joins(room_a);
    alice_joins(room_b);
    alice_joins(room_c);
    bob_sends_to(room_b, 1, "act-b");
    bob_sends_to(room_c, 1, "act-c");
    bob_sends_to(room_a, 1, "act-a");
    wait_preview(&alice, room_b, "act-b-0");
    wait_preview(&alice, room_c, "act-c-0");
    wait_preview(&alice, room_a, "act-a-0");

    /* Invites come first in a list; these are joined rooms. */
    char *list = sp_read(alice.s, "room_list", "{\"invites\":false}");
    const char *a = sp_entry(list, room_a), *b = sp_entry(list, room_b), *c = sp_entry(list, room_c);
    if (!(a && b && c && a < c && c < b))
        th_fail(__FILE__, __LINE__, "expected A, C, B in %.3000s", list);
    /* They are the three most recent: nothing comes before A. */
    CHECK_PREFIX(strstr(list, "\"rooms\":["), "\"rooms\":[{\"room_id\":");
    CHECK(strstr(list, "\"rooms\":[") + strlen("\"rooms\":[") == a);
    int64_t ta = sp_entry_int(list, room_a, "sorting_timestamp");
    int64_t tb = sp_entry_int(list, room_b, "sorting_timestamp");
    int64_t tc = sp_entry_int(list, room_c, "sorting_timestamp");
    CHECK(ta > tc && tc > tb && tb > 0);
    char entry[8192];
    CHECK_HAS(sp_entry_copy(list, room_a, entry, sizeof entry), "\"name\":\"store-a\"");
    CHECK_HAS(sp_entry_copy(list, room_c, entry, sizeof entry), "\"name\":\"store-c\"");
    fprintf(stderr, "     room_list: A, C, B first (sorting_timestamp %lld > %lld > %lld)\n",
            (long long)ta, (long long)tc, (long long)tb);
    free(list);
}

/* Where `needle` is in the `pending` part of a timeline read (NULL: not there). */
static const char *in_pending(const char *tl, const char *needle) {
    const char *p = strstr(tl, "],\"pending\":[");
    CHECK(p != NULL);
    return strstr(p, needle);
}

/* Where `needle` is in the `events` part of a timeline read (NULL: not there). */
static const char *in_events(const char *tl, const char *needle) {
    const char *end = strstr(tl, "],\"pending\":[");
    CHECK(end != NULL);
    const char *f = strstr(tl, needle);
    return f && f < end ? f : NULL;
}

/* The event_id of the event whose content holds `at` (the last one before it). */
static void event_id_before(const char *start, const char *at, char *out, size_t cap) {
    const char *best = NULL;
    for (const char *q = start; (q = strstr(q, "\"event_id\":\"")) != NULL && q < at; q++) best = q;
    CHECK(best != NULL);
    best += strlen("\"event_id\":\"");
    snprintf(out, cap, "%.*s", (int)strcspn(best, "\""), best);
}

typedef struct {
    const char *room;
    const char *body;
} synced_arg;

/* The message is in `events` with a real ($) event ID and `pending` is empty. */
static int synced(sp_peer *p, const void *arg) {
    const synced_arg *s = (const synced_arg *)arg;
    char *tl = sp_read_room(p->s, "timeline", s->room, ",\"limit\":1000");
    const char *at = in_events(tl, s->body);
    int ok = 0;
    if (at && strstr(tl, "],\"pending\":[],")) {
        char id[256];
        event_id_before(tl, at, id, sizeof id);
        ok = id[0] == '$';
    }
    free(tl);
    return ok;
}

/* tether_store_send_message: a STORE event with the echo precedes the RESPONSE; read right
 * after the RESPONSE, the timeline's `pending` holds the local echo (a `~` ID, not sent yet),
 * `events` not; then send_complete and the homeserver's echo put it in `events` with its real
 * `$` ID, and `pending` is empty. */
static void test_send_message_local_echo_then_synced_event(void) {
    char text[64], body[96], params[512];
    snprintf(text, sizeof text, "echo-%d", (int)getpid());
    snprintf(body, sizeof body, "\"body\":\"%s\"", text);
    snprintf(params, sizeof params, "{\"room_id\":\"%s\",\"text\":\"%s\"}", room_a, text);
    int64_t id = 0;
    int64_t t0 = th_now_ms();
    CHECK_OK(tether_store_send_message(alice.s, params, &id));
    CHECK(id > 0);
    int stores = 0;
    tether_event *ev = sp_response(&alice, id, 30000, &stores);
    if (tether_event_status(ev) != TETHER_OK) th_fail(__FILE__, __LINE__, "send: %.500s", sp_data);
    tether_event_free(ev);
    char *tl = sp_read_room(alice.s, "timeline", room_a, ",\"limit\":1000");
    const char *echo = in_pending(tl, body);
    if (!echo) th_fail(__FILE__, __LINE__, "no local echo in pending right after the RESPONSE: %.3000s", tl);
    CHECK(in_events(tl, body) == NULL);
    char eid[256];
    event_id_before(strstr(tl, "],\"pending\":["), echo, eid, sizeof eid);
    if (eid[0] != '~') th_fail(__FILE__, __LINE__, "the echo's ID is %s", eid);
    CHECK(stores == 1);
    free(tl);
    /* The order the backend's two reports of the message come in (the homeserver's echo in a
     * sync_complete, and send_complete) is a race inside gomuks; noted for the report. */
    synced_arg arg = {room_a, body};
    char order[64] = "";
    int64_t deadline = th_now_ms() + 30000 * th_scale();
    int got_sync = 0, got_send = 0;
    while (!got_sync || !got_send || !synced(&alice, &arg)) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0)
            th_fail(__FILE__, __LINE__, "the sent message never synced (seen: %s)", order);
        ev = sp_take(&alice, left);
        if (!ev) continue;
        if (tether_event_kind(ev) == TETHER_EVENT_MESSAGE && strstr(sp_data, body)) {
            const char *cmd = tether_event_command(ev);
            if (strcmp(cmd, "send_complete") == 0 && !got_send++) strcat(order, "send_complete ");
            if (strcmp(cmd, "sync_complete") == 0 && !got_sync++) {
                strcat(order, "sync_complete ");
                sp_record("sync_own_echo", sp_data);
            }
        }
        tether_event_free(ev);
    }
    tl = sp_read_room(alice.s, "timeline", room_a, ",\"limit\":1000");
    const char *at = in_events(tl, body);
    CHECK(at != NULL);
    CHECK(strstr(at + 1, body) == NULL || strstr(at + 1, body) > strstr(tl, "],\"pending\":["));
    event_id_before(tl, at, eid, sizeof eid);
    fprintf(stderr, "     echo in pending after the RESPONSE, then synced as %s in %lld ms (%s)\n", eid,
            (long long)(th_now_ms() - t0), order);
    /* Sent without error. v0.2607.0 keeps the echo's "send_error":"not sent" on the event in
     * send_complete and even in the sync_complete that brings it back (with timeline_rowid
     * -1 and the local unsigned {}): the web client shows an error only for any other text. */
    char args[512];
    snprintf(args, sizeof args, "{\"room_id\":\"%s\",\"event_id\":\"%s\"}", room_a, eid);
    char *item = sp_read(alice.s, "event", args);
    const char *se = strstr(item, "\"send_error\":");
    if (se && strncmp(se, "\"send_error\":\"not sent\"", strlen("\"send_error\":\"not sent\"")) != 0)
        th_fail(__FILE__, __LINE__, "the synced message reads as %.1500s", item);
    free(item);
    free(tl);
}

/* The rows of a timeline read, checked: timeline_rowid ascending, event IDs unique, and the
 * bodies "hist-i" each once, in order. */
typedef struct {
    char ids[1024][80];
    int rows; /* rows in the read */
    int hist; /* of them "hist-i" messages */
    int has_more;
} rows_t;

static void check_rows(const char *tl, rows_t *r) {
    const char *end = strstr(tl, "],\"pending\":[");
    CHECK(end != NULL);
    int next_hist = -1;
    int64_t prev = INT64_MIN;
    r->rows = r->hist = 0;
    for (const char *q = tl; (q = strstr(q, "{\"timeline_rowid\":")) != NULL && q < end; q++) {
        int64_t tr = strtoll(q + strlen("{\"timeline_rowid\":"), NULL, 10);
        if (tr <= prev) th_fail(__FILE__, __LINE__, "timeline_rowid %lld after %lld", (long long)tr, (long long)prev);
        prev = tr;
        const char *next = strstr(q + 1, "{\"timeline_rowid\":");
        if (!next || next > end) next = end;
        const char *e = strstr(q, "\"event_id\":\"");
        CHECK(e != NULL && e < next);
        e += strlen("\"event_id\":\"");
        CHECK(r->rows < 1024);
        char *id = r->ids[r->rows];
        snprintf(id, sizeof r->ids[0], "%.*s", (int)strcspn(e, "\""), e);
        for (int i = 0; i < r->rows; i++)
            if (strcmp(r->ids[i], id) == 0) th_fail(__FILE__, __LINE__, "%s twice", id);
        r->rows++;
        const char *h = strstr(q, "\"body\":\"hist-");
        if (h && h < next) {
            int n = atoi(h + strlen("\"body\":\"hist-"));
            if (n != next_hist + 1 && next_hist >= 0)
                th_fail(__FILE__, __LINE__, "hist-%d after hist-%d", n, next_hist);
            next_hist = n;
            r->hist++;
        }
    }
    r->has_more = strstr(end, "\"has_more\":true") != NULL;
}

static void read_rows(sp_peer *p, const char *room, rows_t *r) {
    char *tl = sp_read_room(p->s, "timeline", room, ",\"limit\":1000");
    check_rows(tl, r);
    CHECK_HAS(tl, "\"paginating\":false");
    free(tl);
}

/* The RESPONSE of pagination `id`, which follows the one STORE event of its request. */
static void take_page(sp_peer *p, int64_t id, const char *fixture) {
    int stores = 0;
    tether_event *ev = sp_response(p, id, 60000, &stores);
    if (tether_event_status(ev) != TETHER_OK) th_fail(__FILE__, __LINE__, "paginate: %.500s", sp_data);
    if (strstr(sp_data, "\"events\":[{")) sp_record(fixture, sp_data);
    tether_event_free(ev);
    CHECK(stores == 1);
}

/* tether_store_paginate (limit 0: the store's choice) until the room's timeline holds all
 * `n` hist messages or has_more is false; every RESPONSE follows the one STORE event of its
 * request, and a second pagination meanwhile is refused. Returns the pages taken. */
static int paginate_all(sp_peer *p, const char *room, int n, rows_t *r, const char *fixture) {
    int pages = 0;
    read_rows(p, room, r);
    while (r->hist < n && r->has_more) {
        CHECK(pages < 40);
        int64_t id = 0;
        CHECK_OK(tether_store_paginate(p->s, room, 0, &id));
        int64_t busy = 0;
        tether_status second = tether_store_paginate(p->s, room, 0, &busy);
        take_page(p, id, fixture);
        pages++;
        if (second == TETHER_OK) {
            /* The first was answered and applied between the two calls (gomuks reads its own
             * database in well under a millisecond; a loaded machine may pause this thread
             * longer): the second is a pagination of its own. */
            take_page(p, busy, fixture);
            pages++;
        } else {
            CHECK_STATUS(second, TETHER_ERR_IN_USE);
        }
        read_rows(p, room, r);
    }
    return pages;
}

/* History: bob posts 150 messages in a new room before alice joins, so the join sync brings
 * only the newest 100 timeline rows (gomuks' sync filter); tether_store_paginate until all
 * 150 are there, the older ones fetched from Synapse, then on until has_more is false. Then a fresh
 * client's store, which starts with no timeline at all, paginates the same room from gomuks'
 * database. Both: rows ordered, no duplicates, bodies in order, each once; the fresh store's
 * rows are the newest rows of alice's. */
static void test_history_paginates_in_order_without_duplicates(void) {
    enum { N = 150 };
    static rows_t r, f;
    bob_creates_room("store-history", room_h, sizeof room_h);
    bob_sends_to(room_h, N, "hist");
    alice_joins(room_h);
    wait_preview(&alice, room_h, "hist-149");
    read_rows(&alice, room_h, &r);
    fprintf(stderr, "     after the join: %d rows, %d of the %d messages\n", r.rows, r.hist, N);
    CHECK(r.hist < N);
    int64_t t0 = th_now_ms();
    int pages = paginate_all(&alice, room_h, N, &r, "paginate");
    fprintf(stderr, "     %d paginations (server) in %lld ms: %d rows, %d of %d messages, has_more %d\n",
            pages, (long long)(th_now_ms() - t0), r.rows, r.hist, N, r.has_more);
    CHECK(r.hist == N && pages >= 1);
    /* On to the start of the room: the last page is empty and has_more turns false. */
    int rows = r.rows, more = 0;
    while (r.has_more) {
        CHECK(more++ < 5);
        int64_t id = 0;
        CHECK_OK(tether_store_paginate(alice.s, room_h, 0, &id));
        tether_event *ev = sp_response(&alice, id, 60000, NULL);
        CHECK_OK(tether_event_status(ev));
        if (strstr(sp_data, "\"has_more\":false")) sp_record("paginate_end", sp_data);
        tether_event_free(ev);
        read_rows(&alice, room_h, &r);
    }
    fprintf(stderr, "     %d more pagination(s) to has_more false, %d rows more\n", more, r.rows - rows);
    CHECK(r.hist == N);

    sp_peer fresh;
    fresh_peer(&fresh, "fresh-history");
    read_rows(&fresh, room_h, &f);
    CHECK(f.rows == 0);
    t0 = th_now_ms();
    pages = paginate_all(&fresh, room_h, N, &f, "paginate_db");
    fprintf(stderr, "     fresh store: %d paginations (database) in %lld ms: %d rows, %d of %d messages\n",
            pages, (long long)(th_now_ms() - t0), f.rows, f.hist, N);
    CHECK(f.hist == N && pages >= 3);
    CHECK(f.rows <= r.rows);
    for (int i = 0; i < f.rows; i++) {
        const char *mine = r.ids[r.rows - f.rows + i];
        if (strcmp(f.ids[i], mine) != 0)
            th_fail(__FILE__, __LINE__, "row %d of the fresh store is %s, alice's %s", i, f.ids[i], mine);
    }
    close_peer(&fresh);
}

typedef struct {
    const char *room;
    const char *user; /* NULL: nobody types */
} typing_arg;

static int typing_is(sp_peer *p, const void *arg) {
    const typing_arg *t = (const typing_arg *)arg;
    char *r = sp_read_room(p->s, "typing", t->room, NULL);
    int ok;
    if (t->user) {
        char want[128];
        snprintf(want, sizeof want, "\"%s\"", t->user);
        ok = strstr(r, want) != NULL;
    } else {
        ok = strcmp(r, "{\"user_ids\":[]}") == 0;
    }
    free(r);
    return ok;
}

/* tether_store_load_state with members: the RESPONSE (get_room_state) follows the STORE
 * event; the room's name state, both members with their power levels (the creator above
 * all), and the room read
 * says state and members are loaded. bob typing shows in the `typing` read, and stops. */
static void test_room_state_members_and_typing(void) {
    int64_t id = 0;
    CHECK_OK(tether_store_load_state(alice.s, room_a, true, &id));
    int stores = 0;
    tether_event *ev = sp_response(&alice, id, 30000, &stores);
    if (tether_event_status(ev) != TETHER_OK) th_fail(__FILE__, __LINE__, "get_room_state: %.500s", sp_data);
    sp_record("get_room_state", sp_data);
    tether_event_free(ev);
    CHECK(stores == 1);
    char args[256];
    snprintf(args, sizeof args, "{\"room_id\":\"%s\",\"type\":\"m.room.name\",\"state_key\":\"\"}", room_a);
    char *r = sp_read(alice.s, "state", args);
    CHECK_HAS(r, "\"name\":\"store-a\"");
    free(r);
    r = sp_read_room(alice.s, "members", room_a, NULL);
    CHECK_HAS(r, "\"user_id\":\"@bob:localhost\",\"membership\":\"join\"");
    CHECK_HAS(r, "\"user_id\":\"@alice:localhost\",\"membership\":\"join\"");
    CHECK_HAS(r, "\"complete\":true");
    /* bob created the room, which is room version 12 (Synapse 1.163's default): a creator,
     * above every level (null), listed first. */
    CHECK(strstr(r, "@bob:localhost") < strstr(r, "@alice:localhost"));
    CHECK_HAS(r, "\"displayname\":\"bob\",\"avatar_url\":null,\"power_level\":null}");
    CHECK_HAS(r, "\"displayname\":\"alice\",\"avatar_url\":null,\"power_level\":0}");
    free(r);
    r = sp_read_room(alice.s, "room", room_a, NULL);
    CHECK_HAS(r, "\"state_loaded\":true");
    CHECK_HAS(r, "\"members_loaded\":true");
    free(r);

    typing_arg on = {room_a, "@bob:localhost"}, off = {room_a, NULL};
    bob_types(room_a, 20000);
    sp_until(&alice, typing_is, &on, 30000, "bob typing");
    bob_types(room_a, 0);
    sp_until(&alice, typing_is, &off, 30000, "bob no longer typing");
}

typedef struct {
    const char *room;
    int changes; /* STORE events naming the room, counted by unread_zero */
} unread_arg;

static int unread_positive(sp_peer *p, const void *arg) {
    const char *room = (const char *)arg;
    char *list = sp_read(p->s, "room_list", NULL);
    int ok = sp_entry(list, room) && sp_entry_int(list, room, "unread_messages") > 0;
    free(list);
    return ok;
}

/* tether_store_mark_read clears the unread count: bob posts, the room's unread_messages is
 * above 0; mark read (the newest event the store holds), and after the following STORE
 * changes of that room it is 0 again. */
static void test_mark_read_clears_unread_count(void) {
    bob_sends_to(room_b, 2, "unread");
    wait_preview(&alice, room_b, "unread-1");
    sp_until(&alice, unread_positive, room_b, 30000, "unread messages in B");
    char *list = sp_read(alice.s, "room_list", NULL);
    int64_t before = sp_entry_int(list, room_b, "unread_messages");
    free(list);
    int64_t id = 0;
    CHECK_OK(tether_store_mark_read(alice.s, room_b, NULL, &id));
    tether_event *ev = sp_response(&alice, id, 30000, NULL);
    if (tether_event_status(ev) != TETHER_OK) th_fail(__FILE__, __LINE__, "mark_read: %.500s", sp_data);
    tether_event_free(ev);
    /* The count changes with the backend's next sync (the receipt coming back). */
    char key[160];
    snprintf(key, sizeof key, "\"%s\":{", room_b);
    int changes = 0;
    int64_t t0 = th_now_ms();
    int64_t deadline = t0 + 30000 * th_scale();
    int64_t after = -1;
    for (;;) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) th_fail(__FILE__, __LINE__, "unread_messages of B stayed %lld after %d changes", (long long)after, changes);
        ev = sp_take(&alice, left);
        if (!ev) continue;
        int mine = tether_event_kind(ev) == TETHER_EVENT_STORE && strstr(sp_data, key);
        tether_event_free(ev);
        if (!mine) continue;
        changes++;
        list = sp_read(alice.s, "room_list", NULL);
        after = sp_entry_int(list, room_b, "unread_messages");
        free(list);
        if (after == 0) break;
    }
    fprintf(stderr, "     unread_messages %lld -> 0 after %d STORE change(s) of the room, %lld ms\n",
            (long long)before, changes, (long long)(th_now_ms() - t0));
    CHECK(before >= 2);
}

/* room_list without its leading {"gen":N, (malloc'd). */
static char *list_without_gen(const tether_store *s) {
    char *list = sp_read(s, "room_list", NULL);
    CHECK_PREFIX(list, "{\"gen\":");
    char *comma = strchr(list, ',');
    CHECK(comma != NULL);
    memmove(list + 1, comma + 1, strlen(comma + 1) + 1);
    return list;
}

/* Drops every `"timeline_rowid":N,` in place: an event object's own timeline_rowid is not
 * stable in v0.2607.0 (0 in a live sync_complete, -1 in the initial sync's preview events
 * and in sync_complete/send_complete for one's own message; the timeline tuples carry the
 * real one), so a preview's raw event differs by route. Returns how many were dropped. */
static int drop_event_timeline_rowids(char *doc) {
    static const char key[] = "\"timeline_rowid\":";
    int n = 0;
    for (char *q; (q = strstr(doc, key)) != NULL;) {
        char *e = q + strlen(key);
        if (*e == '-') e++;
        while (*e >= '0' && *e <= '9') e++;
        if (*e == ',') e++;
        memmove(q, e, strlen(e) + 1);
        n++;
    }
    return n;
}

/* Prints where two documents first differ and fails. */
static void same_or_fail(const char *what, const char *x, const char *y) {
    if (strcmp(x, y) == 0) return;
    size_t i = 0;
    while (x[i] && x[i] == y[i]) i++;
    size_t from = i > 300 ? i - 300 : 0;
    th_fail(__FILE__, __LINE__, "%s differ at byte %zu:\n  resumed: %.700s\n  fresh:   %.700s", what, i,
            x + from, y + from);
}

/* The relay cuts alice's connection and refuses new ones while bob posts 3 messages "TAG-i"
 * to C; an observer on its own connection (connected before the cut) sees them reach gomuks
 * (acking them when `observer_acks`, else never pinging, as test_gomuks_synapse's observer). Then alice
 * reconnects and her store's room_list (gen aside) must equal a fresh client+store's.
 * Returns whether the resume succeeded (no clear_state, the missed events replayed). */
static int cut_and_compare(const char *tag, int observer_acks) {
    /* The observer is connected first, so it gets bob's messages live (negative IDs). */
    sp_peer obs;
    memset(&obs, 0, sizeof obs);
    obs.name = "observer";
    tether_config *ocfg = gomuks_config(NULL);
    CHECK_OK(tether_config_set_ping_interval_ms(ocfg, observer_acks ? 100 : 600000));
    CHECK_OK(tether_config_set_receive_timeout_ms(ocfg, 1200000));
    obs.c = th_client_from(ocfg);
    CHECK_OK(tether_client_connect(obs.c));
    sp_wait_init(&obs, 60000);

    relay.refuse = 1;
    w_relay_cut(&relay);
    tether_event_free(sp_wait(&alice, TETHER_EVENT_DISCONNECTED, NULL, 15000));
    int cleared = alice.cleared;
    bob_sends_to(room_c, 3, tag);
    char last[64];
    snprintf(last, sizeof last, "\"body\":\"%s-2\"", tag);
    int seen = 0;
    int64_t newest = 0;
    int64_t deadline = th_now_ms() + 60000 * th_scale();
    while (!seen) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) th_fail(__FILE__, __LINE__, "the observer never saw %s", last);
        tether_event *ev = sp_take(&obs, left);
        if (!ev) continue;
        if (tether_event_request_id(ev) < newest) newest = tether_event_request_id(ev);
        if (tether_event_kind(ev) == TETHER_EVENT_MESSAGE &&
            strcmp(tether_event_command(ev), "sync_complete") == 0 && strstr(sp_data, last))
            seen = 1;
        tether_event_free(ev);
    }
    if (observer_acks) {
        /* The observer's ack of what it saw (gomuks' buffer gc runs with every ack). */
        CHECK(newest < 0);
        for (;;) {
            tether_event *ev = sp_wait(&obs, TETHER_EVENT_PONG, NULL, 10000);
            int64_t acked = tether_event_acked_id(ev);
            tether_event_free(ev);
            if (acked != 0 && acked <= newest) break;
            CHECK(th_now_ms() < deadline);
        }
    }
    relay.refuse = 0;
    for (;;) {
        tether_event *ev = sp_wait(&alice, TETHER_EVENT_CONNECTED, NULL, 30000);
        int attempted = tether_event_resume_attempted(ev);
        tether_event_free(ev);
        if (attempted) break;
    }
    sp_wait_init(&alice, 30000);
    int resumed = alice.cleared == cleared;
    if (!resumed) CHECK(alice.cleared == cleared + 1);
    char body[64];
    snprintf(body, sizeof body, "%s-2", tag);
    wait_preview(&alice, room_c, body);

    sp_peer fresh;
    fresh_peer(&fresh, "fresh");
    CHECK(fresh.cleared == 1);
    /* Whatever is still on its way (receipts, previews) settles first. */
    int64_t settle = th_now_ms() + 1000;
    while (th_now_ms() < settle) {
        tether_event *ev = sp_take(&alice, 50);
        if (ev) tether_event_free(ev);
        ev = sp_take(&fresh, 50);
        if (ev) tether_event_free(ev);
    }
    char *x = list_without_gen(alice.s);
    char *y = list_without_gen(fresh.s);
    if (strcmp(x, y) != 0) {
        drop_event_timeline_rowids(x);
        drop_event_timeline_rowids(y);
        fprintf(stderr, "     room_lists equal only without the previews' event timeline_rowid\n");
    }
    same_or_fail("room_list", x, y);
    fprintf(stderr, "     %s: alice's store's room_list equals a fresh store's (%zu bytes)\n",
            resumed ? "resumed" : "resume refused, store cleared and rebuilt", strlen(x));
    free(x);
    free(y);
    close_peer(&fresh);
    close_peer(&obs);
    return resumed;
}

/* A cut and the resume keep the store equal to a fresh client's view: while alice is cut
 * off, bob posts; back, tether resumes (the missed events replayed, no clear_state, no
 * "cleared" STORE event) and the store's room_list (gen aside) equals a fresh store's. Runs
 * before any other client connected to this backend (see the next test for why). */
static void test_cut_and_resume_equal_a_fresh_store(void) {
    CHECK(cut_and_compare("missed", 0));
}

/* The same cut later, after other clients came and went: the resume is refused and a
 * clear_state initial sync follows; the store announces "cleared":true, is rebuilt, and
 * again equals a fresh store. gomuks' buffer gc (run on every ack and every 1001 close, by any
 * connection) drops the entry of a connection whose last ack was the newest event then (the
 * off-by-one behind §7.4 item 2, triggered by another client), and once dropped it never
 * comes back on that connection: with no entry nothing is buffered, and each later ack is
 * dropped by the same check. The fresh clients of the earlier tests closed (1001) while alice
 * was caught up; here the observer also acks the missed events, which trims the buffer to its
 * own needs. */
static void test_refused_resume_clears_and_rebuilds_store(void) {
    CHECK(!cut_and_compare("missed2", 1));
}

static int lists_rooms(sp_peer *p, const void *arg) {
    (void)arg;
    char *list = sp_read(p->s, "room_list", NULL);
    int ok = sp_entry(list, room_a) && sp_entry(list, room_b) && sp_entry(list, room_c) &&
             sp_entry(list, room_h) && strstr(list, "\"body\":\"missed2-2\"");
    free(list);
    return ok;
}

/* A backend restart resets the store visibly: gomuks is stopped (SIGTERM) while the relay
 * refuses alice, and started again on the same data root (logged in, a new run_id); the
 * relay now leads to it. tether's resume fails, the backend sends a clear_state sync, the
 * store announces "cleared":true and the room list is rebuilt from the new initial sync;
 * live events follow. */
static void test_backend_restart_clears_and_rebuilds_store(void) {
    relay.refuse = 1;
    w_relay_cut(&relay);
    tether_event_free(sp_wait(&alice, TETHER_EVENT_DISCONNECTED, NULL, 15000));
    int64_t t0 = th_now_ms();
    peer_stop();
    th_backend_start(&backend, NULL);
    fprintf(stderr, "     gomuks restarted on the same root at %s in %lld ms\n", backend.http,
            (long long)(th_now_ms() - t0));
    pthread_mutex_lock(&relay.lock);
    relay.target_port = backend.port;
    pthread_mutex_unlock(&relay.lock);
    int cleared = alice.cleared;
    relay.refuse = 0;
    tether_event_free(sp_wait(&alice, TETHER_EVENT_CONNECTED, NULL, 30000));
    sp_wait_init(&alice, 60000);
    CHECK(alice.cleared == cleared + 1);
    sp_until(&alice, lists_rooms, NULL, 30000, "the rebuilt room list");
    char *session = sp_read(alice.s, "session", NULL);
    CHECK_HAS(session, "\"init_complete\":true");
    free(session);
    bob_sends_to(room_a, 1, "after-restart");
    wait_preview(&alice, room_a, "after-restart-0");
    char *list = sp_read(alice.s, "room_list", "{\"invites\":false}");
    const char *first = strstr(list, "\"rooms\":[") + strlen("\"rooms\":[");
    CHECK(first == sp_entry(list, room_a));
    free(list);
    fprintf(stderr, "     cleared and rebuilt in %lld ms after the restart\n",
            (long long)(th_now_ms() - t0));
}

int main(void) {
    sp_recording = 1;
    peer_start();
    TH_RUN(test_room_list_after_login_ordered_by_activity);
    TH_RUN(test_send_message_local_echo_then_synced_event);
    TH_RUN(test_cut_and_resume_equal_a_fresh_store);
    TH_RUN(test_history_paginates_in_order_without_duplicates);
    TH_RUN(test_room_state_members_and_typing);
    TH_RUN(test_mark_read_clears_unread_count);
    TH_RUN(test_refused_resume_clears_and_rebuilds_store);
    TH_RUN(test_backend_restart_clears_and_rebuilds_store);
    close_peer(&alice);
    w_relay_stop(&relay);
    peer_stop();
    return 0;
}
