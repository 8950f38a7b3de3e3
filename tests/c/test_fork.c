/*
 * Fork guard (ARCHITECTURE.md "Runtime and threads"): after fork() in a process that created a
 * client, every call in the child fails with TETHER_ERR_FORKED and touches nothing; the
 * parent keeps working.
 */
#include "harness.h"

static th_backend backend;

static int child_checks(tether_client *c) {
    int bad = 0;
    tether_config *cfg = NULL;
    tether_event *ev = NULL;
    int64_t id = 0;
#define EXPECT(cond)                                                                       \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "child: %s failed\n", #cond);                                  \
            bad = 1;                                                                       \
        }                                                                                  \
    } while (0)
    EXPECT(tether_client_request(c, "echo", NULL, 0, &id) == TETHER_ERR_FORKED);
    EXPECT(id == 0);
    EXPECT(tether_client_poll(c, 0, &ev) == TETHER_ERR_FORKED);
    EXPECT(tether_client_close(c) == TETHER_ERR_FORKED);
    EXPECT(tether_config_new(&cfg) == TETHER_ERR_FORKED);
    EXPECT(cfg == NULL);
    EXPECT(tether_client_event_fd(c) == -1);
    EXPECT(strstr(tether_last_error(), "fork") != NULL);
    /* Pure functions keep working. */
    EXPECT(strcmp(tether_status_str(TETHER_ERR_FORKED), "used after fork()") == 0);
    EXPECT(strcmp(tether_version(), TETHER_VERSION_STRING) == 0);
    tether_client_free(c); /* does nothing in the child */
#undef EXPECT
    return bad;
}

static void test_child_gets_forked_error(void) {
    tether_client *c = th_client_from(th_config(&backend));
    CHECK_OK(tether_client_connect(c));
    tether_event_free(th_wait(c, TETHER_EVENT_MESSAGE, "init_complete", 10000));
    /* The verdict travels through a pipe, not the exit code: under valgrind the child's exit
     * code reports the parent's memory it inherited and, by design, never frees. */
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        const char *verdict = child_checks(c) ? "bad" : "ok!";
        if (write(fds[1], verdict, 3) != 3) _exit(3);
        _exit(0);
    }
    close(fds[1]);
    char verdict[4] = {0};
    CHECK(read(fds[0], verdict, 3) == 3);
    close(fds[0]);
    CHECK(strcmp(verdict, "ok!") == 0);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    /* The parent is unaffected. */
    int64_t id = 0;
    CHECK_OK(tether_client_request(c, "echo", (const uint8_t *)"{}", 2, &id));
    tether_event *ev = th_wait_response(c, id, 10000);
    CHECK(tether_event_status(ev) == TETHER_OK);
    tether_event_free(ev);
    th_close_and_free(c);
}

int main(void) {
    th_backend_start(&backend, NULL);
    TH_RUN(test_child_gets_forked_error);
    th_backend_stop(&backend);
    return 0;
}
