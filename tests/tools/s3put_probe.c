/* s3put_probe.c - streams a file to S3 with fetch_s3_put_fd (single PutObject) or
 * fetch_s3_put_fd_parts (multipart, explicit part size) and prints the result as one JSON line,
 * for the multipart integration test.
 *
 *   s3put_probe BUCKET KEY PATH [PART_BYTES]     (no PART_BYTES: fetch_s3_put_fd)
 *
 * Exit status: 0 success, 1 failed result, 2 usage or setup error, 3 the loop did not close
 * cleanly (a leaked handle). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "fetch/aws.h"
#include "proto/sigv4.h"

static int failed = -1;

static void on_done(void *ud, const fetch_aws_result *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "err", r->err);
    cJSON_AddNumberToObject(o, "http_status", (double)r->http_status);
    if (r->error_code)
        cJSON_AddStringToObject(o, "error_code", r->error_code);
    if (r->message)
        cJSON_AddStringToObject(o, "message", r->message);
    char *s = cJSON_PrintUnformatted(o);
    printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(o);
    failed = r->err || r->http_status / 100 != 2;
    fetch_aws_free(ud);
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: s3put_probe BUCKET KEY PATH [PART_BYTES]\n");
        return 2;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    fetch_aws *a = NULL;
    char err[FETCH_ERR_MAX];
    if (fetch_aws_new(&loop, &a, err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int fd = open(argv[3], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        perror(argv[3]);
        return 2;
    }
    int rc;
    if (argc == 5) {
        rc = fetch_s3_put_fd_parts(a, argv[1], argv[2], fd, (uint64_t)st.st_size,
                                   strtoull(argv[4], NULL, 10), "application/json", on_done, a);
    } else {
        char *buf = malloc((size_t)st.st_size + 1), hex[65];
        ssize_t n = read(fd, buf, (size_t)st.st_size);
        sigv4_sha256_hex(buf, n > 0 ? (size_t)n : 0, hex);
        free(buf);
        rc = fetch_s3_put_fd(a, argv[1], argv[2], fd, (uint64_t)st.st_size, hex, "application/json",
                             on_done, a);
    }
    close(fd); /* the upload holds its own duplicate */
    if (rc) {
        printf("{\"call_error\": %d}\n", rc);
        fetch_aws_free(a);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop))
        return 3;
    return rc ? 1 : failed ? 1 : 0;
}
