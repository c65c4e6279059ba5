/* graph.c - `dagy-agent --graph`: print the flow's DAG as Graphviz DOT without running it. A
 * local archive is unpacked (with the same safety checks as a run) into a temporary directory
 * that is removed afterwards. */
#include "agent/agent.h"
#include "fetch/unpack.h"
#include "proto/flowspec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int agent_graph(agent_config *c)
{
    char err[AGENT_ERR_MAX > UNPACK_ERR_MAX ? AGENT_ERR_MAX : UNPACK_ERR_MAX];
    struct stat st;
    if (!c->flow || !strncmp(c->flow, "s3://", 5)) {
        fprintf(stderr, "dagy-agent: --graph needs a local artifact or directory (--flow PATH)\n");
        return AGENT_EXIT_INVALID;
    }
    if (stat(c->flow, &st)) {
        fprintf(stderr, "dagy-agent: cannot read %s: %s\n", c->flow, strerror(errno));
        return AGENT_EXIT_INVALID;
    }
    char tmp[] = "/tmp/dagy-graph-XXXXXX", dest[sizeof tmp + 8], path[4200];
    bool unpacked = !S_ISDIR(st.st_mode);
    if (unpacked) {
        unpack_limits lim;
        if (!mkdtemp(tmp)) {
            fprintf(stderr, "dagy-agent: cannot create a temporary directory: %s\n",
                    strerror(errno));
            return AGENT_EXIT_INFRA;
        }
        snprintf(dest, sizeof dest, "%s/flow", tmp);
        int rc = unpack_limits_from_env(&lim, err);
        if (!rc)
            rc = unpack_archive(c->flow, dest, &lim, NULL, err);
        if (rc) {
            fprintf(stderr, "dagy-agent: cannot unpack %s: %s\n", c->flow, err);
            rmdir(tmp);
            return rc == -EINVAL ? AGENT_EXIT_INVALID : AGENT_EXIT_INFRA;
        }
        snprintf(path, sizeof path, "%s/flow_spec.json", dest);
    } else {
        snprintf(path, sizeof path, "%s/flow_spec.json", c->flow);
    }
    flowspec *spec = NULL;
    int rc = flowspec_load(path, &spec, err);
    if (unpacked)
        unpack_rmtree(tmp);
    if (rc) {
        fprintf(stderr, "dagy-agent: %s\n", err);
        return AGENT_EXIT_INVALID;
    }
    flowspec_write_dot(spec, stdout);
    flowspec_free(spec);
    return fflush(stdout) ? AGENT_EXIT_INFRA : AGENT_EXIT_OK;
}
