/* fuzz_logline.c - libFuzzer harness for the agent's log line encoder (agent/log.c): any bytes
 * as a message, a task's output line and identity fields. Checks: exactly one line comes out,
 * it is valid UTF-8 (proto_utf8_valid) and parses as one JSON object (cJSON) with the always-
 * present fields; a value without NUL bytes reads back as proto_utf8_clean of the input (invalid
 * bytes become U+FFFD, nothing else changes). The pretty view must not crash either. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "agent/log.h"
#include "proto/util.h"

static const char *const always[] = {"timestamp", "level",     "event_type",    "message",
                                     "run_id",    "flow_name", "correlation_id"};

/* Reads what the logger wrote to fd since the last rewind, then rewinds it. */
static char *drain(int fd, size_t *len)
{
    off_t end = lseek(fd, 0, SEEK_CUR);
    char *buf = malloc((size_t)end + 1);
    if (!buf || pread(fd, buf, (size_t)end, 0) != end)
        abort();
    buf[end] = '\0';
    *len = (size_t)end;
    if (ftruncate(fd, 0) || lseek(fd, 0, SEEK_SET))
        abort();
    return buf;
}

/* Aborts unless out holds exactly one valid JSON line whose "stream" field reads back right. */
static void check_line(const char *out, size_t len, const uint8_t *val, size_t n)
{
    if (len == 0 || out[len - 1] != '\n' || memchr(out, '\n', len - 1))
        abort(); /* one line, one newline */
    if (!proto_utf8_valid(out, len - 1))
        abort();
    cJSON *j = cJSON_ParseWithLength(out, len - 1);
    if (!cJSON_IsObject(j))
        abort();
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++)
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, always[i])))
            abort();
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "stream");
    if (!cJSON_IsString(s))
        abort();
    if (!memchr(val, '\0', n)) {
        char *want = proto_utf8_clean((const char *)val, n, 0);
        if (!want || strcmp(want, s->valuestring) != 0)
            abort(); /* the value did not survive the encoding */
        free(want);
    }
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    if (fd < 0 && (fd = memfd_create("fuzz_logline", 0)) < 0)
        abort();
    char *cstr = malloc(size + 1);
    if (!cstr)
        return 0;
    memcpy(cstr, data, size);
    cstr[size] = '\0';
    size_t half = strlen(cstr) / 2;
    char *ident = strndup(cstr, half);

    agent_log_init(LOG_FORMAT_JSON, LOG_DEBUG, fd);
    agent_log_context(ident, cstr + half, NULL, NULL, ident);
    log_line *l = agent_log_begin(LOG_INFO, "task_output", "%s", cstr);
    agent_log_str(l, "task_name", ident);
    agent_log_strn(l, "stream", (const char *)data, size);
    agent_log_int(l, "bytes", (int64_t)size);
    agent_log_end(l);
    size_t len;
    char *out = drain(fd, &len);
    check_line(out, len, data, size);
    free(out);

    agent_log_init(LOG_FORMAT_PRETTY, LOG_DEBUG, fd);
    agent_log_progress(cstr);
    l = agent_log_begin(LOG_WARNING, "task_end", "%s", cstr);
    agent_log_strn(l, "status", (const char *)data, size);
    agent_log_strn(l, "duration_seconds", (const char *)data, size);
    agent_log_end(l);
    agent_log_progress(NULL);
    free(drain(fd, &len));

    free(ident);
    free(cstr);
    return 0;
}
