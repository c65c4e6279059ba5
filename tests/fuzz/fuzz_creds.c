/* fuzz_creds.c - libFuzzer harness for what the credential chain reads from outside: the ECS
 * container credentials endpoint's JSON, the shared credentials file, Expiration timestamps and
 * the FULL_URI check. Checks: no crash or leak; a refusal says why and never quotes the secret;
 * accepted credentials have a key and a secret. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "fetch/creds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[FETCH_ERR_MAX];
    char *in = malloc(size + 1);
    if (!in)
        return 0;
    memcpy(in, data, size);
    in[size] = '\0';

    fetch_creds c = {0};
    err[0] = '\0';
    if (fetch_creds_parse_container_json(in, &c, err) == 0) {
        if (!c.key || !*c.key || !c.secret || !*c.secret)
            abort();
        fetch_creds_clear(&c);
    } else if (!err[0] || strnlen(err, sizeof err) == sizeof err) {
        abort();
    } else {
        /* The message names the missing field, never a value. */
        cJSON *j = cJSON_Parse(in);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "SecretAccessKey");
        if (cJSON_IsString(s) && strlen(s->valuestring) >= 8 && strstr(err, s->valuestring))
            abort();
        cJSON_Delete(j);
    }

    err[0] = '\0';
    int rc = fetch_creds_parse_file(in, "default", &c, err);
    if (rc == 0) {
        if (!c.key || !c.secret)
            abort();
        fetch_creds_clear(&c);
    } else if (rc == -EINVAL && !err[0]) {
        abort();
    }

    (void)fetch_parse_iso8601(in);
    (void)fetch_creds_uri_allowed(in);
    if (fetch_creds_uri_allowed(in) && strncasecmp(in, "https://", 8) != 0 &&
        strncasecmp(in, "http://", 7) != 0)
        abort(); /* only http(s) URIs may be used */
    free(in);
    return 0;
}
