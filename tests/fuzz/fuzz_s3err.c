/* fuzz_s3err.c - libFuzzer harness for S3 error answers: the <Code> and <Message> of the XML
 * body (any bytes, any HTTP status). Checks: no crash or over-read (the body is an exact-size
 * heap copy, NUL-terminated as the HTTP engine delivers it); outputs are bounded C strings;
 * an answer without a <Code> gets one derived from 403/404/412. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/creds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = {400, 403, 404, 412, 500, 503, 200, 301};
    if (size < 1)
        return 0;
    char *body = malloc(size);
    if (!body)
        return 0;
    memcpy(body, data + 1, size - 1);
    body[size - 1] = '\0';
    fetch_http_resp r;
    memset(&r, 0, sizeof r);
    r.status = statuses[data[0] % 8];
    r.body = body;
    r.body_len = size - 1;
    r.content_length = -1;
    char code[64], msg[256];
    fetch__s3_error_code(&r, code, sizeof code, msg, sizeof msg);
    if (strnlen(code, sizeof code) == sizeof code || strnlen(msg, sizeof msg) == sizeof msg)
        abort();
    if (!strstr(body, "<Code>") && (r.status == 403 || r.status == 404 || r.status == 412) &&
        !code[0])
        abort();
    free(body);
    return 0;
}
