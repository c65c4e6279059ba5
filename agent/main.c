/* main.c - dagy-agent: parse the command line and environment, then print help, the version,
 * the DAG as DOT, or run the flow. */
#include "agent/agent.h"
#include "agent/log.h"

#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    agent_config cfg;
    char err[AGENT_ERR_MAX];
    int rc = agent_config_load(&cfg, argc, argv, err);
    if (rc) {
        fprintf(stderr, "dagy-agent: %s\n", err);
        agent_config_free(&cfg);
        return rc;
    }
    if (cfg.help) {
        agent_print_help();
    } else if (cfg.version) {
        printf("dagy-agent %s\n", DAGY_VERSION);
    } else if (cfg.graph) {
        rc = agent_graph(&cfg);
    } else {
        log_format fmt = cfg.log_format >= 0     ? (log_format)cfg.log_format
                         : isatty(STDOUT_FILENO) ? LOG_FORMAT_PRETTY
                                                 : LOG_FORMAT_JSON;
        agent_log_init(fmt, (log_level)cfg.log_level, STDOUT_FILENO);
        rc = agent_run(&cfg);
    }
    agent_config_free(&cfg);
    return rc;
}
