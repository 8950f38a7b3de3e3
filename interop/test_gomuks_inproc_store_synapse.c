/*
 * tether's native gomuks store on the in-process transport (libgomuksffi, gomuks-rpc.md §12)
 * logged in to the throwaway Synapse (interop/synapse/hs.py): a store attached before
 * connect follows the FFI's events (all request_id 0) through login and the first sync; the
 * room list then shows bob's invite, the joined room after join_room, bob's message as its
 * preview, and a message sent through the store goes from local echo to synced event.
 *
 * Environment (set by interop/run.sh): TETHER_GOMUKS_FFI, GOMUKS_ROOT, GOMUKS_INTEROP_LOG,
 * SYNAPSE_HS, SYNAPSE_ROOM, SYNAPSE_USER, SYNAPSE_PASSWORD, BOB_HS, SYNAPSE_DIR.
 */
#include "store_peer.h"

static int has_invite(sp_peer *p, const void *room) {
    char *list = sp_read(p->s, "room_list", NULL);
    static char entry[1 << 16];
    sp_entry_copy(list, (const char *)room, entry, sizeof entry);
    int ok = strstr(entry, "\"invite\":true") && strstr(entry, "\"inviter\":\"@bob:localhost\"");
    free(list);
    return ok;
}

static int echo_synced(sp_peer *p, const void *arg) {
    const char *const *a = (const char *const *)arg; /* room, body */
    char *tl = sp_read_room(p->s, "timeline", a[0], ",\"limit\":1000");
    const char *pending = strstr(tl, "],\"pending\":[],");
    const char *at = strstr(tl, a[1]);
    int ok = pending && at && at < pending;
    free(tl);
    return ok;
}

/* The store on an in-process client: attached before connect, it sees the start events,
 * login, the first sync (the room list has the interop room bob invited alice to, and the
 * room created for this test as an invite from bob), a join (the invite becomes a named
 * room), bob's message (the preview) and a send through the store (echo, then synced). */
static void test_inproc_store_room_list_after_login(void) {
    char root[512], room[128], params[512];
    bob_creates_room("inproc-store", room, sizeof room);
    sp_peer p;
    memset(&p, 0, sizeof p);
    p.name = "in-process";
    p.c = inproc_client(inproc_root("alice-store", root, sizeof root));
    CHECK_OK(tether_store_new(p.c, NULL, &p.s));
    CHECK_OK(tether_client_connect(p.c));
    tether_event_free(sp_wait(&p, TETHER_EVENT_CONNECTED, NULL, 60000));
    tether_event_free(sp_wait(&p, TETHER_EVENT_MESSAGE, "sync_status", 15000));
    char *session = sp_read(p.s, "session", NULL);
    CHECK_HAS(session, "\"is_logged_in\":false");
    free(session);
    int64_t t0 = th_now_ms();
    login_and_verify(p.c);
    sp_wait_init(&p, 120000);
    fprintf(stderr, "     logged in, first sync done in %lld ms (%d STORE events)\n",
            (long long)(th_now_ms() - t0), p.store_events);
    sp_until(&p, has_invite, room, 30000, "bob's invite in the room list");
    char *list = sp_read(p.s, "room_list", NULL);
    /* The interop room: joined by the earlier programs, or still an invite. */
    CHECK(sp_entry(list, env_or_fail("SYNAPSE_ROOM")) != NULL);
    free(list);

    snprintf(params, sizeof params, "{\"room_id_or_alias\":\"%s\"}", room);
    sp_call(&p, "join_room", params, 60000);
    sp_until(&p, sp_knows_room, room, 30000, "the joined room");
    bob_sends_to(room, 2, "inproc");
    sp_preview pv = {room, "inproc-1"};
    sp_until(&p, sp_shows_preview, &pv, 60000, "bob's message as the preview");
    /* Joined, it is no longer an invite: one entry. */
    list = sp_read(p.s, "room_list", NULL);
    const char *once = sp_entry(list, room);
    CHECK(once != NULL && sp_entry(once + 1, room) == NULL);
    free(list);
    list = sp_read(p.s, "room_list", "{\"invites\":false}");
    char entry[8192];
    sp_entry_copy(list, room, entry, sizeof entry);
    CHECK_HAS(entry, "\"name\":\"inproc-store\"");
    CHECK_HAS(entry, "\"invite\":false");
    /* The most recently active room comes first. */
    CHECK(strstr(list, "\"rooms\":[") + strlen("\"rooms\":[") == sp_entry(list, room));
    free(list);

    char body[96];
    snprintf(body, sizeof body, "\"body\":\"inproc-echo-%d\"", (int)getpid());
    snprintf(params, sizeof params, "{\"room_id\":\"%s\",\"text\":\"inproc-echo-%d\"}", room, (int)getpid());
    int64_t id = 0;
    CHECK_OK(tether_store_send_message(p.s, params, &id));
    int stores = 0;
    tether_event *ev = sp_response(&p, id, 30000, &stores);
    CHECK_OK(tether_event_status(ev));
    CHECK(tether_event_request_id(ev) == id);
    tether_event_free(ev);
    CHECK(stores == 1);
    char *tl = sp_read_room(p.s, "timeline", room, ",\"limit\":1000");
    const char *pend = strstr(tl, "],\"pending\":[");
    CHECK(pend != NULL && strstr(pend, body) != NULL);
    free(tl);
    const char *arg[2] = {room, body};
    sp_until(&p, echo_synced, arg, 30000, "the sent message synced");
    inproc_close(p.c, 5000);
    /* The store outlives its client: reads work, actions are refused. */
    list = sp_read(p.s, "room_list", NULL);
    CHECK(sp_entry(list, room) != NULL);
    free(list);
    CHECK_STATUS(tether_store_paginate(p.s, room, 0, &id), TETHER_ERR_STATE);
    tether_store_free(p.s);
}

int main(void) {
    inproc_stdout_to_log();
    TH_RUN(test_inproc_store_room_list_after_login);
    return 0;
}
