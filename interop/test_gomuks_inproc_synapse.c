/*
 * tether's in-process transport (libgomuksffi, gomuks-rpc.md §12) logged in to a real
 * homeserver (Synapse on loopback, interop/synapse/hs.py): login and verification through the
 * FFI, the first sync, live events from another user, a message sent and seen coming back,
 * the FFI-only account info and media upload with progress, and a restart of the logged-in
 * backend from its data root.
 *
 * Environment (set by interop/run.sh): TETHER_GOMUKS_FFI, GOMUKS_ROOT, GOMUKS_INTEROP_LOG,
 * SYNAPSE_HS, SYNAPSE_ROOM, SYNAPSE_USER, SYNAPSE_PASSWORD, BOB_SEND.
 */
#include "gomuks_peer.h"

static char big[1 << 20];

/* Takes events until `n` MESSAGE events whose command is `command` (NULL: any) contain the
 * needles (each needle at least once); every MESSAGE has request_id 0 (in-process there is no
 * event buffer, §12.3). Counts the sync_complete events taken on the way into *syncs (may be
 * NULL). */
static void wait_messages(tether_client *c, const char *command, const char *const *needles, int n,
                          int ms, int *syncs) {
    int found[16] = {0};
    int missing = n;
    CHECK(n <= 16);
    int64_t deadline = th_now_ms() + (int64_t)ms * th_scale();
    while (missing > 0) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) th_fail(__FILE__, __LINE__, "%d of %d never arrived (first: %s)", missing, n, needles[0]);
        tether_event *ev = NULL;
        tether_status st = tether_client_poll(c, left, &ev);
        if (st == TETHER_TIMEOUT) continue;
        CHECK_OK(st);
        if (tether_event_kind(ev) == TETHER_EVENT_MESSAGE) {
            const char *cmd = tether_event_command(ev);
            CHECK(tether_event_request_id(ev) == 0);
            if (syncs && strcmp(cmd, "sync_complete") == 0) (*syncs)++;
            if (!command || strcmp(cmd, command) == 0) {
                data_str(ev, big, sizeof big);
                for (int i = 0; i < n; i++) {
                    if (!found[i] && strstr(big, needles[i])) {
                        found[i] = 1;
                        missing--;
                    }
                }
            }
        }
        tether_event_free(ev);
    }
}

static void wait_message(tether_client *c, const char *command, const char *needle, int ms,
                         int *syncs) {
    const char *needles[] = {needle};
    wait_messages(c, command, needles, 1, ms, syncs);
}

/* bob's "tag-0".."tag-(n-1)" arrive as sync_complete events. */
static void bob_sends_and_arrives(tether_client *c, int n, const char *tag) {
    char bodies[8][64];
    const char *needles[8];
    CHECK(n <= 8);
    for (int i = 0; i < n; i++) {
        snprintf(bodies[i], sizeof bodies[i], "\"body\":\"%s-%d\"", tag, i);
        needles[i] = bodies[i];
    }
    bob_sends(n, tag);
    wait_messages(c, "sync_complete", needles, n, 60000, NULL);
}

/* send_message `json`: the RESPONSE (the local event), send_complete once the homeserver took
 * it, and the homeserver's echo in a sync_complete, in whatever order they come. */
static void send_and_see_it_back(tether_client *c, const char *json, const char *needle) {
    int64_t t0 = th_now_ms();
    int64_t id = request(c, "send_message", json);
    int response = 0, send_complete = 0, sync_complete = 0;
    int64_t deadline = th_now_ms() + 60000 * th_scale();
    while (!response || !send_complete || !sync_complete) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0)
            th_fail(__FILE__, __LINE__, "response %d, send_complete %d, sync_complete %d", response,
                    send_complete, sync_complete);
        tether_event *ev = NULL;
        tether_status st = tether_client_poll(c, left, &ev);
        if (st == TETHER_TIMEOUT) continue;
        CHECK_OK(st);
        uint32_t kind = tether_event_kind(ev);
        if (kind == TETHER_EVENT_RESPONSE && tether_event_request_id(ev) == id) {
            data_str(ev, big, sizeof big);
            if (tether_event_status(ev) != TETHER_OK)
                th_fail(__FILE__, __LINE__, "send_message failed: %.500s", big);
            CHECK_HAS(big, "\"type\":\"m.room.message\"");
            response++;
        } else if (kind == TETHER_EVENT_MESSAGE) {
            CHECK(tether_event_request_id(ev) == 0);
            const char *cmd = tether_event_command(ev);
            int is_send = strcmp(cmd, "send_complete") == 0;
            int is_sync = strcmp(cmd, "sync_complete") == 0;
            if ((is_send || is_sync) && strstr(data_str(ev, big, sizeof big), needle)) {
                send_complete += is_send;
                sync_complete += is_sync;
            }
        }
        tether_event_free(ev);
    }
    fprintf(stderr, "     sent: RESPONSE, send_complete and the echo in a sync_complete in %lld ms\n",
            (long long)(th_now_ms() - t0));
}

/* §13.3 through the FFI: login, then verification; the first sync delivers the room list in
 * sync_complete events and init_complete, all request_id 0. bob's messages arrive live; a
 * message sent with send_message comes back. get_account_info (FFI-only) now has the
 * account. */
static void test_login_first_sync_live_events_and_send(void) {
    char root[512], buf[65536], params[1024];
    tether_client *c = inproc_connect(inproc_root("alice", root, sizeof root), 0);
    int64_t t0 = th_now_ms();
    login_and_verify(c);
    int syncs = 0;
    wait_message(c, "init_complete", "", 120000, &syncs);
    CHECK(syncs >= 1);
    fprintf(stderr, "     logged in and verified, first sync (%d sync_complete) done in %lld ms\n",
            syncs, (long long)(th_now_ms() - t0));

    snprintf(params, sizeof params, "{\"room_id_or_alias\":\"%s\"}", env_or_fail("SYNAPSE_ROOM"));
    call_ok(c, "join_room", params, buf, sizeof buf, 60000);
    bob_sends_and_arrives(c, 3, "live");

    char body[64], needle[96];
    snprintf(body, sizeof body, "alice-in-process-%d", (int)getpid());
    snprintf(needle, sizeof needle, "\"body\":\"%s\"", body);
    snprintf(params, sizeof params, "{\"room_id\":\"%s\",\"text\":\"%s\"}", env_or_fail("SYNAPSE_ROOM"), body);
    send_and_see_it_back(c, params, needle);

    call_ok(c, "get_account_info", "{}", buf, sizeof buf, 15000);
    snprintf(needle, sizeof needle, "\"user_id\":\"@%s:localhost\"", env_or_fail("SYNAPSE_USER"));
    CHECK_HAS(buf, needle);
    CHECK_HAS(buf, "\"access_token\":\""); /* a secret: not printed */
    snprintf(needle, sizeof needle, "\"homeserver_url\":\"%s\"", env_or_fail("SYNAPSE_HS"));
    CHECK_HAS(buf, needle);
    int64_t took = inproc_close(c, 5000);
    fprintf(stderr, "     closed (logged in, syncing) in %lld ms\n", (long long)took);
}

/* Uploads through `upload_media` with progress (bytes, or the file at `path` in the params
 * when bytes is NULL; §12.2 GomuksUploadMediaBytes / GomuksUploadMediaPath): PROGRESS events
 * for the request, never decreasing, ending at 1, then the RESPONSE with the content to send,
 * copied to out. */
static void upload(tether_client *c, const char *params, const uint8_t *bytes, size_t len,
                   char *out, size_t cap) {
    int64_t id = 0;
    int64_t t0 = th_now_ms();
    CHECK_OK(tether_client_upload_media(c, (const uint8_t *)params, strlen(params), bytes, len,
                                        0, &id));
    int count = 0;
    double first = -1, last = -1;
    int64_t deadline = th_now_ms() + 60000 * th_scale();
    for (;;) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0) th_fail(__FILE__, __LINE__, "upload not answered in time");
        tether_event *ev = NULL;
        tether_status st = tether_client_poll(c, left, &ev);
        if (st == TETHER_TIMEOUT) continue;
        CHECK_OK(st);
        uint32_t kind = tether_event_kind(ev);
        if (kind == TETHER_EVENT_PROGRESS) {
            CHECK(tether_event_request_id(ev) == id);
            double p = tether_event_progress(ev);
            char num[64];
            CHECK(strtod(data_str(ev, num, sizeof num), NULL) == p); /* the same number as JSON */
            CHECK(p >= 0 && p <= 100 && p >= last);
            if (count++ == 0) first = p;
            last = p;
        } else if (kind == TETHER_EVENT_RESPONSE && tether_event_request_id(ev) == id) {
            data_str(ev, out, cap);
            if (tether_event_status(ev) != TETHER_OK)
                th_fail(__FILE__, __LINE__, "upload failed: %.500s", out);
            tether_event_free(ev);
            break;
        }
        tether_event_free(ev);
    }
    /* The pinned FFI reports a fraction, 0 to 1 (gomuks' progressReader: read / total), not
     * the 0 to 100 its header promises; the last report is the whole file. */
    CHECK(count >= 1 && last == 1.0);
    fprintf(stderr, "     upload (%s): %d PROGRESS events, first %g, last %g; answered in %lld ms\n",
            bytes ? "bytes" : "path", count, first, last, (long long)(th_now_ms() - t0));
}

/* The mxc:// URL in an upload's response, as the needle `"url":"mxc://..."`. */
static void url_needle(const char *content, char *needle, size_t cap) {
    const char *u = strstr(content, "\"url\":\"mxc://localhost/");
    if (!u) th_fail(__FILE__, __LINE__, "no mxc URL in %.500s", content);
    snprintf(needle, cap, "%.*s\"", (int)(strchr(u + strlen("\"url\":\""), '"') - u), u);
}

/* §12.2, §12.3: a new client on the logged-in data root starts logged in (GomuksStart checks
 * the homeserver), and its own goroutine delivers the initial sync (sync_complete batches,
 * then init_complete, request_id 0); live events follow. Media uploads with progress, from
 * bytes and from a file, answer with the content to send; sent, it comes back. */
static void test_restart_logged_in_and_upload_media(void) {
    char root[512], buf[65536], params[70000], needle[256];
    inproc_root("alice", root, sizeof root);
    int64_t t0 = th_now_ms();
    tether_client *c = inproc_connect(root, 1);
    int syncs = 0;
    wait_message(c, "init_complete", "", 60000, &syncs);
    CHECK(syncs >= 1);
    fprintf(stderr, "     restarted logged in: initial sync (%d sync_complete) done in %lld ms\n",
            syncs, (long long)(th_now_ms() - t0));
    bob_sends_and_arrives(c, 2, "again");

    static uint8_t blob[300 * 1024];
    for (size_t i = 0; i < sizeof blob; i++) blob[i] = (uint8_t)(i * 7 + i / 251);
    upload(c, "{\"filename\":\"blob.bin\"}", blob, sizeof blob, buf, sizeof buf);
    CHECK_HAS(buf, "\"msgtype\":\"m.file\"");
    CHECK_HAS(buf, "\"body\":\"blob.bin\"");
    CHECK_HAS(buf, "\"size\":307200");
    url_needle(buf, needle, sizeof needle);
    snprintf(params, sizeof params, "{\"room_id\":\"%s\",\"base_content\":%s,\"text\":\"\"}",
             env_or_fail("SYNAPSE_ROOM"), buf);
    send_and_see_it_back(c, params, needle);

    char path[600];
    snprintf(path, sizeof path, "%s.upload.txt", root);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs("hello from a file\n", f);
    fclose(f);
    snprintf(params, sizeof params, "{\"path\":\"%s\"}", path);
    upload(c, params, NULL, 0, buf, sizeof buf);
    CHECK_HAS(buf, "\"body\":\"alice.upload.txt\"");
    url_needle(buf, needle, sizeof needle);
    inproc_close(c, 5000);
}

int main(void) {
    inproc_stdout_to_log();
    TH_RUN(test_login_first_sync_live_events_and_send);
    TH_RUN(test_restart_logged_in_and_upload_media);
    return 0;
}
