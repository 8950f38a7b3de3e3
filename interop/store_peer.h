/*
 * Helpers for the interop programs that drive tether's native gomuks store (tether_store_*)
 * against the real backend: a client with its store and what its stream showed, waiting on
 * store reads, bob's extra commands (rooms, messages to a room, typing), and recording the
 * real backend's payloads as fixtures ($TETHER_RECORD_FIXTURES).
 */
#ifndef TETHER_INTEROP_STORE_PEER_H
#define TETHER_INTEROP_STORE_PEER_H

#include "gomuks_peer.h"

/* One client, its store (may be NULL: a plain observer) and what its stream showed. */
typedef struct {
    const char *name;
    tether_client *c;
    tether_store *s;
    int in_initial;       /* between a clear_state sync_complete and the next init_complete */
    int cleared;          /* STORE events with "cleared":true */
    int init_completes;   /* init_complete events */
    int64_t last_gen;     /* the newest STORE event's gen (strictly increasing) */
    int store_events;
} sp_peer;

/* One event's data, NUL-terminated (the interop payloads stay well below this). */
static char sp_data[4 << 20];

/* --- Fixtures ------------------------------------------------------------------------ */

/* Set by the one program that records (test_store_synapse), so the others do not overwrite
 * its files. */
static int sp_recording;

/* $TETHER_RECORD_FIXTURES names a directory: the first payload of each kind the real backend
 * sends is written there as recorded_v0.2607_<name>.json, exactly as it came (compact JSON),
 * with only access tokens redacted. */
static inline void sp_record(const char *name, const char *data) {
    static char done[16][48];
    static int ndone;
    const char *dir = getenv("TETHER_RECORD_FIXTURES");
    if (!sp_recording || !dir || !*dir) return;
    for (int i = 0; i < ndone; i++)
        if (strcmp(done[i], name) == 0) return;
    CHECK(ndone < 16);
    snprintf(done[ndone++], sizeof done[0], "%s", name);
    char path[1024];
    snprintf(path, sizeof path, "%s/recorded_v0.2607_%s.json", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) th_fail(__FILE__, __LINE__, "cannot write %s", path);
    static const char key[] = "\"access_token\":\"";
    const char *p = data;
    for (const char *t; (t = strstr(p, key)) != NULL;) {
        t += strlen(key);
        fwrite(p, 1, (size_t)(t - p), f);
        fputs("REDACTED", f);
        p = t + strcspn(t, "\"");
    }
    fputs(p, f);
    fputc('\n', f);
    CHECK(fclose(f) == 0);
    fprintf(stderr, "     recorded %s (%zu bytes)\n", path, strlen(data));
}

/* --- Events ---------------------------------------------------------------------------- */

static inline int64_t sp_gen(const char *store_data) {
    CHECK_PREFIX(store_data, "{\"gen\":");
    return strtoll(store_data + strlen("{\"gen\":"), NULL, 10);
}

/* Takes the next event within `ms` (NULL on timeout): keeps count of what the stream showed,
 * checks STORE events' gen and records fixtures. The event's data is left in sp_data. */
static inline tether_event *sp_take(sp_peer *p, int ms) {
    tether_event *ev = NULL;
    tether_status st = tether_client_poll(p->c, ms < 0 ? 0 : ms, &ev);
    if (st == TETHER_TIMEOUT) return NULL;
    CHECK_OK(st);
    uint32_t kind = tether_event_kind(ev);
    data_str(ev, sp_data, sizeof sp_data);
    if (kind == TETHER_EVENT_STORE) {
        int64_t gen = sp_gen(sp_data);
        if (gen <= p->last_gen)
            th_fail(__FILE__, __LINE__, "%s: STORE gen %lld after %lld", p->name, (long long)gen,
                    (long long)p->last_gen);
        p->last_gen = gen;
        p->store_events++;
        if (strstr(sp_data, "\"cleared\":true")) p->cleared++;
    } else if (kind == TETHER_EVENT_MESSAGE) {
        const char *cmd = tether_event_command(ev);
        if (strcmp(cmd, "sync_complete") == 0) {
            if (strstr(sp_data, "\"invited_rooms\":[{")) sp_record("sync_invite", sp_data);
            if (strstr(sp_data, "\"clear_state\":true")) {
                p->in_initial = 1;
                sp_record("sync_clear_state", sp_data);
            } else if (p->in_initial && strstr(sp_data, "\"rooms\":{\"!")) {
                sp_record("sync_room_batch", sp_data);
            } else if (!p->in_initial && strstr(sp_data, "\"sender\":\"@bob:localhost\"") &&
                       strstr(sp_data, "\"type\":\"m.room.message\"") &&
                       strstr(sp_data, "\"timeline\":[{")) {
                sp_record("sync_live_message", sp_data);
            }
        } else if (strcmp(cmd, "init_complete") == 0) {
            p->in_initial = 0;
            p->init_completes++;
        } else if (strcmp(cmd, "send_complete") == 0) {
            sp_record("send_complete", sp_data);
        } else if (strcmp(cmd, "typing") == 0 && strstr(sp_data, "\"@bob:localhost\"")) {
            sp_record("typing", sp_data);
        }
    }
    return ev;
}

/* Takes events until one of `kind` (and `command`, if not NULL) and returns it (owned). */
static inline tether_event *sp_wait(sp_peer *p, uint32_t kind, const char *command, int ms) {
    int64_t deadline = th_now_ms() + (int64_t)ms * th_scale();
    for (;;) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0)
            th_fail(__FILE__, __LINE__, "%s: no event of kind %u (%s) in %d ms", p->name, kind,
                    command ? command : "-", ms);
        tether_event *ev = sp_take(p, left);
        if (!ev) continue;
        if (tether_event_kind(ev) == kind &&
            (!command || strcmp(tether_event_command(ev), command) == 0))
            return ev;
        tether_event_free(ev);
    }
}

/* Takes events until the RESPONSE to `id`; its data is in sp_data. Counts the STORE events
 * caused by this request (cause.request_id) that came before it into *stores (may be NULL). */
static inline tether_event *sp_response(sp_peer *p, int64_t id, int ms, int *stores) {
    char cause[64];
    snprintf(cause, sizeof cause, "\"request_id\":%lld}", (long long)id);
    int64_t deadline = th_now_ms() + (int64_t)ms * th_scale();
    for (;;) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) th_fail(__FILE__, __LINE__, "%s: no RESPONSE to %lld", p->name, (long long)id);
        tether_event *ev = sp_take(p, left);
        if (!ev) continue;
        uint32_t kind = tether_event_kind(ev);
        if (kind == TETHER_EVENT_STORE && stores && strstr(sp_data, cause)) (*stores)++;
        if (kind == TETHER_EVENT_RESPONSE && tether_event_request_id(ev) == id) return ev;
        tether_event_free(ev);
    }
}

/* A plain request through the peer's client; fails unless it succeeds. Data in sp_data. */
static inline void sp_call(sp_peer *p, const char *command, const char *json, int ms) {
    int64_t id = request(p->c, command, json);
    tether_event *ev = sp_response(p, id, ms, NULL);
    if (tether_event_status(ev) != TETHER_OK)
        th_fail(__FILE__, __LINE__, "%s failed: %.500s", command, sp_data);
    tether_event_free(ev);
}

/* Takes events until an init_complete arrives after this call. */
static inline void sp_wait_init(sp_peer *p, int ms) {
    int before = p->init_completes;
    int64_t deadline = th_now_ms() + (int64_t)ms * th_scale();
    while (p->init_completes == before) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) th_fail(__FILE__, __LINE__, "%s: no init_complete in %d ms", p->name, ms);
        tether_event *ev = sp_take(p, left);
        if (ev) tether_event_free(ev);
    }
}

/* --- Store reads ------------------------------------------------------------------------ */

/* Reads `what` into a malloc'd NUL-terminated buffer (owned by the caller), looping on
 * TETHER_ERR_BUFFER_TOO_SMALL as the header asks. */
static inline char *sp_read(const tether_store *s, const char *what, const char *args) {
    size_t len = 0;
    tether_status st = tether_store_read(s, what, args, NULL, 0, &len);
    if (st != TETHER_ERR_BUFFER_TOO_SMALL)
        th_fail(__FILE__, __LINE__, "read %s %s: %d (%s)", what, args ? args : "", (int)st,
                tether_status_str(st));
    for (;;) {
        char *buf = (char *)malloc(len + 1);
        CHECK(buf != NULL);
        st = tether_store_read(s, what, args, buf, len + 1, &len);
        if (st == TETHER_OK) {
            CHECK(strlen(buf) == len);
            return buf;
        }
        CHECK_STATUS(st, TETHER_ERR_BUFFER_TOO_SMALL);
        free(buf);
    }
}

/* Reads `what` with {"room_id": room} plus `extra` (e.g. ",\"limit\":1000"; may be NULL). */
static inline char *sp_read_room(const tether_store *s, const char *what, const char *room,
                                 const char *extra) {
    char args[512];
    snprintf(args, sizeof args, "{\"room_id\":\"%s\"%s}", room, extra ? extra : "");
    return sp_read(s, what, args);
}

/* A condition on the store, checked before and after each event. */
typedef int (*sp_cond)(sp_peer *p, const void *arg);

/* Takes events until `cond` holds; fails after `ms` with `what`. */
static inline void sp_until(sp_peer *p, sp_cond cond, const void *arg, int ms, const char *what) {
    int64_t deadline = th_now_ms() + (int64_t)ms * th_scale();
    while (!cond(p, arg)) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) th_fail(__FILE__, __LINE__, "%s: never: %s", p->name, what);
        tether_event *ev = sp_take(p, left);
        if (ev) tether_event_free(ev);
    }
}

/* The room_list entry of `room` in `list` (its opening brace), or NULL. */
static inline const char *sp_entry(const char *list, const char *room) {
    char key[200];
    snprintf(key, sizeof key, "{\"room_id\":\"%s\"", room);
    return strstr(list, key);
}

/* The room_list entry of `room` copied into `out` (up to the next entry), "" if absent. */
static inline const char *sp_entry_copy(const char *list, const char *room, char *out, size_t cap) {
    const char *e = sp_entry(list, room);
    out[0] = 0;
    if (!e) return out;
    const char *next = strstr(e + 1, "{\"room_id\":\"");
    size_t n = next ? (size_t)(next - e) : strlen(e);
    if (n >= cap) n = cap - 1;
    memcpy(out, e, n);
    out[n] = 0;
    return out;
}

/* An integer field of a room_list entry (its own fields come before its preview). */
static inline int64_t sp_entry_int(const char *list, const char *room, const char *field) {
    const char *e = sp_entry(list, room);
    if (!e) th_fail(__FILE__, __LINE__, "%s not in the room list %.800s", room, list);
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", field);
    const char *f = strstr(e, key);
    CHECK(f != NULL);
    return strtoll(f + strlen(key), NULL, 10);
}

/* Whether the store knows the (joined) room. */
static inline int sp_knows_room(sp_peer *p, const void *room) {
    char *r = sp_read_room(p->s, "room", (const char *)room, NULL);
    int known = strcmp(r, "null") != 0 && strstr(r, "\"meta\":") != NULL;
    free(r);
    return known;
}

/* A room list entry and the body its preview must show. */
typedef struct {
    const char *room;
    const char *body; /* "TAG-i" */
} sp_preview;

static inline int sp_shows_preview(sp_peer *p, const void *arg) {
    const sp_preview *pv = (const sp_preview *)arg;
    char *list = sp_read(p->s, "room_list", NULL);
    static char entry[1 << 16];
    sp_entry_copy(list, pv->room, entry, sizeof entry);
    char body[128];
    snprintf(body, sizeof body, "\"body\":\"%s\"", pv->body);
    int ok = strstr(entry, body) != NULL;
    free(list);
    return ok;
}

/* --- bob: the second Matrix user, through interop/synapse/hs.py ($BOB_HS, $SYNAPSE_DIR) ---- */

static inline void bob_run(const char *args, char *out, size_t cap) {
    /* hs.py takes the command first, then the directory, then the arguments. */
    char cmd[2048];
    const char *sp = strchr(args, ' ');
    CHECK(sp != NULL);
    snprintf(cmd, sizeof cmd, "%s %.*s %s%s", env_or_fail("BOB_HS"), (int)(sp - args), args,
             env_or_fail("SYNAPSE_DIR"), sp);
    FILE *f = popen(cmd, "r");
    if (!f) th_fail(__FILE__, __LINE__, "cannot run %s", cmd);
    size_t n = 0;
    if (out) {
        n = fread(out, 1, cap - 1, f);
        out[n] = 0;
        out[strcspn(out, "\n")] = 0;
    } else {
        char junk[256];
        while (fread(junk, 1, sizeof junk, f) > 0) {
        }
    }
    if (pclose(f) != 0) th_fail(__FILE__, __LINE__, "bob could not: %s", cmd);
}

/* bob creates a private room `name` and invites alice; its ID goes to `id`. */
static inline void bob_creates_room(const char *name, char *id, size_t cap) {
    char args[256];
    snprintf(args, sizeof args, "room %s", name);
    bob_run(args, id, cap);
    CHECK_PREFIX(id, "!");
}

/* bob sends "TAG-0".."TAG-(n-1)" to `room`. */
static inline void bob_sends_to(const char *room, int n, const char *tag) {
    char args[512];
    snprintf(args, sizeof args, "send-to %s %d %s", room, n, tag);
    bob_run(args, NULL, 0);
}

/* bob types in `room` for `ms` (0: stops). */
static inline void bob_types(const char *room, int ms) {
    char args[512];
    snprintf(args, sizeof args, "typing %s %d", room, ms);
    bob_run(args, NULL, 0);
}

#endif
