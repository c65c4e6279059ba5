/* main.c - dagy-agent: parse the command line and environment, then print help, the version,
 * the DAG as DOT, or run the flow. */
#include "agent/agent.h"
#include "agent/log.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The log format asked for on the command line (json, pretty, or -1), read directly so that a
 * configuration error found before --log-format is parsed still comes out in that format. */
static int asked_format(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--log-format") && i + 1 < argc)
            v = argv[i + 1];
        else if (!strncmp(argv[i], "--log-format=", 13))
            v = argv[i] + 13;
        if (v && !strcmp(v, "json"))
            return LOG_FORMAT_JSON;
        if (v && !strcmp(v, "pretty"))
            return LOG_FORMAT_PRETTY;
    }
    return -1;
}

static log_format pick_format(int asked)
{
    if (asked >= 0)
        return (log_format)asked;
    return isatty(STDOUT_FILENO) ? LOG_FORMAT_PRETTY : LOG_FORMAT_JSON;
}

/* A configuration error: a JSON line (event config_error) on stdout in json mode, as every
 * other line of the run would be; plain text on stderr for a person at a terminal. */
static void config_error(int argc, char **argv, const agent_config *c, const char *err)
{
    if (pick_format(asked_format(argc, argv)) == LOG_FORMAT_PRETTY) {
        fprintf(stderr, "dagy-agent: %s\n", err);
        return;
    }
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, STDOUT_FILENO);
    /* What identity the environment and flags gave before the error (may be partial). */
    agent_log_context(c->run_id, c->flow_name, c->flow_version, c->org_id,
                      c->correlation_id ? c->correlation_id : c->run_id);
    log_line *l = agent_log_begin(LOG_ERROR, "config_error", "%s", err);
    agent_log_int(l, "exit_code", AGENT_EXIT_INVALID);
    agent_log_str(l, "error", err);
    agent_log_end(l);
}

int main(int argc, char **argv)
{
    /* Before anything else: SIGTERM/SIGINT wait, blocked, until the run's handlers exist
     * (agent_run unblocks them), so a stop request in the first milliseconds is not lost or
     * fatal. Children get an empty mask (sandbox/sbx.c sets it in every spawn). */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);

    agent_config cfg;
    char err[AGENT_ERR_MAX];
    int rc = agent_config_load(&cfg, argc, argv, err);
    if (rc) {
        config_error(argc, argv, &cfg, err);
        agent_config_free(&cfg);
        return rc;
    }
    if (cfg.help || cfg.version || cfg.graph) /* no run: a signal may end us as usual */
        sigprocmask(SIG_UNBLOCK, &stop, NULL);
    if (cfg.help) {
        agent_print_help();
    } else if (cfg.version) {
        printf("dagy-agent %s\n", DAGY_VERSION);
    } else if (cfg.graph) {
        rc = agent_graph(&cfg);
    } else {
        agent_log_init(pick_format(cfg.log_format), (log_level)cfg.log_level, STDOUT_FILENO);
        rc = agent_run(&cfg);
    }
    agent_config_free(&cfg);
    return rc;
}
