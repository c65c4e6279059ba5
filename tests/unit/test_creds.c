/* test_creds.c - credential-file and container-JSON parsing, expiry times and refresh planning,
 * container URI policy, region and endpoint selection from the environment. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fetch/creds.h"

static void credentials_file_picks_the_profile(void **state)
{
    const char *text = "# comment\n[default]\naws_access_key_id = AKDEF\n"
                       "aws_secret_access_key = SDEF\n\n[dagy]\r\n"
                       "  aws_access_key_id=AKDAGY  \r\n; another comment\n"
                       "aws_secret_access_key = S/D+AGY=\naws_session_token = TOK==\n"
                       "region = eu-west-1\n[other]\naws_access_key_id = AKO\n";
    fetch_creds c = {0};
    char err[FETCH_ERR_MAX] = "";
    assert_int_equal(fetch_creds_parse_file(text, "dagy", &c, err), 0);
    assert_string_equal(c.key, "AKDAGY");
    assert_string_equal(c.secret, "S/D+AGY=");
    assert_string_equal(c.token, "TOK==");
    assert_int_equal(c.expires, 0);
    fetch_creds_clear(&c);
    assert_int_equal(fetch_creds_parse_file(text, "default", &c, err), 0);
    assert_string_equal(c.key, "AKDEF");
    assert_null(c.token);
    fetch_creds_clear(&c);
}

static void credentials_file_errors(void **state)
{
    fetch_creds c = {0};
    char err[FETCH_ERR_MAX] = "";
    assert_int_equal(fetch_creds_parse_file("[a]\naws_access_key_id=x\n", "b", &c, err), -ENOENT);
    assert_int_equal(fetch_creds_parse_file("", "default", &c, err), -ENOENT);
    assert_int_equal(fetch_creds_parse_file("[a]\naws_access_key_id=x\n", "a", &c, err), -EINVAL);
    assert_non_null(strstr(err, "aws_secret_access_key"));
    assert_int_equal(fetch_creds_parse_file("[r]\nrole_arn=arn:aws:iam::1:role/x\n", "r", &c, err),
                     -EINVAL);
    assert_non_null(strstr(err, "role_arn"));
    assert_null(c.key);
}

static void container_json(void **state)
{
    fetch_creds c = {0};
    char err[FETCH_ERR_MAX] = "";
    const char *j = "{\"AccessKeyId\":\"ASIA1\",\"SecretAccessKey\":\"SEC\",\"Token\":\"TOK\","
                    "\"Expiration\":\"2026-03-14T09:00:00Z\",\"RoleArn\":\"x\"}";
    assert_int_equal(fetch_creds_parse_container_json(j, &c, err), 0);
    assert_string_equal(c.key, "ASIA1");
    assert_string_equal(c.secret, "SEC");
    assert_string_equal(c.token, "TOK");
    assert_int_equal(c.expires, 1773478800);
    fetch_creds_clear(&c);
    assert_int_equal(fetch_creds_parse_container_json("{\"AccessKeyId\":\"A\"}", &c, err), -EINVAL);
    assert_non_null(strstr(err, "SecretAccessKey"));
    assert_int_equal(fetch_creds_parse_container_json("not json", &c, err), -EINVAL);
    assert_int_equal(fetch_creds_parse_container_json(
                         "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"SECRETVALUE\","
                         "\"Expiration\":\"soon\"}",
                         &c, err),
                     -EINVAL);
    assert_null(strstr(err, "SECRETVALUE"));
}

static void iso8601_times(void **state)
{
    assert_int_equal(fetch_parse_iso8601("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(fetch_parse_iso8601("2013-05-24T00:00:00Z"), 1369353600);
    assert_int_equal(fetch_parse_iso8601("2013-05-24T00:00:00.123Z"), 1369353600);
    assert_int_equal(fetch_parse_iso8601("2013-05-24T02:00:00+02:00"), 1369353600);
    assert_int_equal(fetch_parse_iso8601("yesterday"), -1);
    assert_int_equal(fetch_parse_iso8601("2013-05-24T00:00:00Q"), -1);
}

static void refresh_planning(void **state)
{
    /* an hour left: 5 minutes before expiry */
    assert_int_equal(fetch_creds_refresh_delay_ms(1000, 1000 + 3600), (3600 - 300) * 1000ull);
    /* 8 s left: at half the remaining lifetime */
    assert_int_equal(fetch_creds_refresh_delay_ms(1000, 1008), 4000);
    /* expired or about to: soon, but never a tight loop */
    assert_int_equal(fetch_creds_refresh_delay_ms(1000, 900), 1000);
    assert_int_equal(fetch_creds_refresh_delay_ms(1000, 1001), 1000);
}

static void container_uri_policy(void **state)
{
    assert_true(fetch_creds_uri_allowed("http://169.254.170.2/v2/credentials/abc"));
    assert_true(fetch_creds_uri_allowed("http://127.0.0.1:1234/creds"));
    assert_true(fetch_creds_uri_allowed("http://localhost/creds"));
    assert_true(fetch_creds_uri_allowed("http://169.254.170.23/v1/credentials"));
    assert_true(fetch_creds_uri_allowed("https://creds.example.com/x"));
    assert_false(fetch_creds_uri_allowed("http://example.com/creds"));
    assert_false(fetch_creds_uri_allowed("http://169.254.170.2.evil.com/creds"));
    assert_false(fetch_creds_uri_allowed("http://localhost.evil.com/"));
    assert_false(fetch_creds_uri_allowed("file:///etc/passwd"));
}

/* Every way to dress up another host as a loopback or agent address is refused: user info,
 * names that start like an address, trailing dots, encodings that decode to a name, zones,
 * addresses next to the allowed ones. */
static void container_uri_bypasses_are_refused(void **state)
{
    static const char *const bad[] = {
        "http://127.0.0.1@192.0.2.2:18777/creds",
        "http://127.evil.example.com/",
        "http://127.0.0.1.evil.example.com/",
        "http://169.254.170.2.evil.com/creds",
        "http://localhost.evil.com/",
        "http://localhost./",
        "http://a.localhost/",
        "http://127.0.0.1./",
        "http://user:pw@127.0.0.1/",
        "http://:@127.0.0.1/",
        "https://user:secret@creds.example.com/",
        "http://127.0.0.1%2f@evil.example.com/",
        "http://127.0.0.1;x@evil.example.com/",
        "http://evil.example.com\\@127.0.0.1/",
        "http://127.0.0.1%2eevil.example.com/",
        "http://127.0.0.256/",
        "http://12\xef\xbc\x97.0.0.1/",
        "http://0/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://[::1%25lo]/",
        "http://[::ffff:192.0.2.2]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.170.3/",
        "http://[fd00:ec2::24]/",
        "http://192.0.2.2/",
        "http://127.0.0.1 /",
        "http:127.0.0.1/x",
        "127.0.0.1/creds",
        "//127.0.0.1/creds",
        "ftp://127.0.0.1/creds",
        "file:///etc/passwd",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (fetch_creds_uri_allowed(bad[i]))
            fail_msg("accepted %s", bad[i]);
    }
}

/* What the AWS SDKs allow: https anywhere, http to 127.0.0.0/8, [::1], localhost and the
 * ECS/EKS agent addresses, whatever spelling libcurl (which makes the connection) reads as one
 * of those addresses. */
static void container_uri_allowed_forms(void **state)
{
    static const char *const good[] = {
        "http://169.254.170.2/v2/credentials/abc",
        "http://169.254.170.2:80/v2/credentials/abc",
        "http://169.254.170.23/v1/credentials",
        "http://[fd00:ec2::23]/v1/credentials",
        "http://[fd00:ec2:0:0:0:0:0:23]:80/v1/credentials",
        "http://127.0.0.1:1234/creds",
        "http://127.1.2.3/creds",
        "http://127.255.255.254/creds",
        "HTTP://127.0.0.1/creds",
        "http://[::1]:8080/creds",
        "http://[0:0:0:0:0:0:0:1]/creds",
        "http://[::ffff:127.0.0.1]/creds",
        "http://localhost/creds",
        "http://LOCALHOST:8080/creds",
        "http://2130706433/creds",
        "http://0x7f.1/creds",
        "http://0177.0.0.1/creds",
        "http://127.1/creds",
        "http://%31%32%37.0.0.1/creds",
        "http://127.0.0.1/creds#@evil.example.com",
        "https://creds.example.com/x",
        "HTTPS://creds.example.com:8443/x",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!fetch_creds_uri_allowed(good[i]))
            fail_msg("refused %s", good[i]);
    }
}

/* A refused URI is an error naming the variable, found before any connection (no loop runs
 * here), and the message never repeats user info (it may hold a password). */
static void container_uri_refusal_names_the_variable(void **state)
{
    uv_loop_t loop;
    fetch_credsrc *s = NULL;
    char err[FETCH_ERR_MAX] = "";
    assert_int_equal(uv_loop_init(&loop), 0);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://admin:hunter2@192.0.2.2:18777/creds", 1);
    assert_int_equal(fetch_credsrc_new(&loop, &s, err), -EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "AWS_CONTAINER_CREDENTIALS_FULL_URI"));
    assert_null(strstr(err, "hunter2"));
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.evil.example.com/creds", 1);
    assert_int_equal(fetch_credsrc_new(&loop, &s, err), -EINVAL);
    assert_non_null(strstr(err, "AWS_CONTAINER_CREDENTIALS_FULL_URI"));
    assert_non_null(strstr(err, "127.evil.example.com"));
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/creds", 1);
    assert_int_equal(fetch_credsrc_new(&loop, &s, err), 0);
    fetch_credsrc_free(s);
    unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* The URL fetched is libcurl's normalised form of the one checked. */
static void container_uri_is_normalised(void **state)
{
    char err[FETCH_ERR_MAX], *url = NULL;
    bool http = false;
    assert_int_equal(fetch_creds_check_uri("V", "HTTP://2130706433:80/creds?x=1", &url, &http, err),
                     0);
    assert_string_equal(url, "http://127.0.0.1:80/creds?x=1");
    assert_true(http);
    free(url);
    assert_int_equal(fetch_creds_check_uri("V", "https://Creds.Example.com/x", &url, &http, err),
                     0);
    assert_false(http);
    free(url);
    assert_int_equal(fetch_creds_check_uri("V", "gopher://127.0.0.1/", &url, &http, err), -EINVAL);
    assert_null(url);
    assert_non_null(strstr(err, "V "));
}

/* Text built from a response never carries what an echoing endpoint sent back of the request. */
static void echoed_secrets_are_redacted(void **state)
{
    char m[FETCH_ERR_MAX];
    snprintf(m, sizeof m,
             "HTTP 403: Authorization: AWS4-HMAC-SHA256 Credential=AKID/x, SignedHeaders=host, "
             "Signature=abcdef0123456789 X-Amz-Security-Token=TOKVALUE0123&x=1 "
             "x-amz-security-token: TOKVALUE0123 again TOKVALUE0123. presigned "
             "?X-Amz-Signature=99887766&y=2 Authorization:bearer-secret-zz");
    fetch__redact_value(m, sizeof m, "TOKVALUE0123");
    fetch__redact(NULL, m, sizeof m);
    assert_null(strstr(m, "TOKVALUE0123"));
    assert_null(strstr(m, "abcdef0123456789"));
    assert_null(strstr(m, "99887766"));
    assert_null(strstr(m, "bearer-secret-zz"));
    assert_non_null(strstr(m, "Credential=AKID/x")); /* the key id is not a secret */
    assert_non_null(strstr(m, "[redacted]"));
    /* Short needles are not hunted (they would match everywhere); the buffer bound holds. */
    char small[24] = "abc secret-value-1 end";
    fetch__redact_value(small, sizeof small, "abc");
    assert_string_equal(small, "abc secret-value-1 end");
    fetch__redact_value(small, sizeof small, "secret-value-1");
    assert_string_equal(small, "abc [redacted] end");
    char tight[16] = "k: zzzzzzzz1234";
    fetch__redact_value(tight, sizeof tight, "zzzzzzzz1234");
    assert_true(strlen(tight) < sizeof tight);
    assert_null(strstr(tight, "zzzz"));
}

/* Credentials go into request headers: a CR, LF, space or non-ASCII byte in a key, secret or
 * token is refused, naming the field and never showing the value. */
static void malformed_credentials_are_refused(void **state)
{
    fetch_creds c = {0};
    char err[FETCH_ERR_MAX] = "";
    assert_int_equal(
        fetch_creds_parse_container_json(
            "{\"AccessKeyId\":\"ASIA1\",\"SecretAccessKey\":\"SEC\\r\\nX-Evil: 1\"}", &c, err),
        -EINVAL);
    assert_non_null(strstr(err, "SecretAccessKey"));
    assert_null(strstr(err, "X-Evil"));
    assert_int_equal(fetch_creds_parse_container_json(
                         "{\"AccessKeyId\":\"AS IA\",\"SecretAccessKey\":\"SEC\"}", &c, err),
                     -EINVAL);
    assert_non_null(strstr(err, "AccessKeyId"));
    assert_int_equal(fetch_creds_parse_container_json("{\"AccessKeyId\":\"A\",\"SecretAccessKey\":"
                                                      "\"S\",\"Token\":\"T\\u00e9\"}",
                                                      &c, err),
                     -EINVAL);
    assert_non_null(strstr(err, "Token"));
    assert_int_equal(fetch_creds_parse_file("[p]\naws_access_key_id = AK\n"
                                            "aws_secret_access_key = S\x01X\n",
                                            "p", &c, err),
                     -EINVAL);
    assert_non_null(strstr(err, "aws_secret_access_key"));
    uv_loop_t loop;
    fetch_credsrc *src = NULL;
    assert_int_equal(uv_loop_init(&loop), 0);
    setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret\nvalue", 1);
    assert_int_equal(fetch_credsrc_new(&loop, &src, err), -EINVAL);
    assert_non_null(strstr(err, "AWS_SECRET_ACCESS_KEY"));
    assert_null(strstr(err, "secret\nvalue"));
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void region_from_env(void **state)
{
    char r[64], err[FETCH_ERR_MAX];
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    assert_int_equal(fetch_region_from_env(r, sizeof r, err), -EINVAL);
    assert_non_null(strstr(err, "AWS_REGION"));
    assert_non_null(strstr(err, "AWS_DEFAULT_REGION"));
    setenv("AWS_DEFAULT_REGION", "eu-west-1", 1);
    assert_int_equal(fetch_region_from_env(r, sizeof r, err), 0);
    assert_string_equal(r, "eu-west-1");
    setenv("AWS_REGION", "us-east-2", 1);
    assert_int_equal(fetch_region_from_env(r, sizeof r, err), 0);
    assert_string_equal(r, "us-east-2");
    setenv("AWS_REGION", "us-east-2/../x", 1);
    assert_int_equal(fetch_region_from_env(r, sizeof r, err), -EINVAL);
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
}

static void endpoint_selection(void **state)
{
    fetch_endpoint e;
    char err[FETCH_ERR_MAX];
    unsetenv("AWS_ENDPOINT_URL");
    unsetenv("AWS_ENDPOINT_URL_S3");
    unsetenv("AWS_ENDPOINT_URL_DYNAMODB");
    assert_int_equal(fetch_endpoint_from_env("dynamodb", "eu-west-1", &e, err), 0);
    assert_string_equal(e.base, "https://dynamodb.eu-west-1.amazonaws.com");
    assert_string_equal(e.host, "dynamodb.eu-west-1.amazonaws.com");
    assert_false(e.custom);
    fetch_endpoint_clear(&e);
    assert_int_equal(fetch_endpoint_from_env("s3", "cn-north-1", &e, err), 0);
    assert_string_equal(e.base, "https://s3.cn-north-1.amazonaws.com.cn");
    fetch_endpoint_clear(&e);
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/", 1);
    setenv("AWS_ENDPOINT_URL_S3", "https://minio.local:9000", 1);
    assert_int_equal(fetch_endpoint_from_env("dynamodb", "eu-west-1", &e, err), 0);
    assert_string_equal(e.base, "http://127.0.0.1:5000");
    assert_string_equal(e.host, "127.0.0.1:5000");
    assert_true(e.custom);
    fetch_endpoint_clear(&e);
    assert_int_equal(fetch_endpoint_from_env("s3", "eu-west-1", &e, err), 0);
    assert_string_equal(e.base, "https://minio.local:9000");
    assert_string_equal(e.host, "minio.local:9000");
    fetch_endpoint_clear(&e);
    setenv("AWS_ENDPOINT_URL_S3", "minio.local:9000", 1);
    assert_int_equal(fetch_endpoint_from_env("s3", "eu-west-1", &e, err), -EINVAL);
    assert_non_null(strstr(err, "AWS_ENDPOINT_URL_S3"));
    setenv("AWS_ENDPOINT_URL_S3", "http://h/some/path", 1);
    assert_int_equal(fetch_endpoint_from_env("s3", "eu-west-1", &e, err), -EINVAL);
    unsetenv("AWS_ENDPOINT_URL");
    unsetenv("AWS_ENDPOINT_URL_S3");
}

static void retry_policy(void **state)
{
    fetch_retry r = fetch__retry_or_default(NULL);
    assert_int_equal(r.max_attempts, 8);
    assert_int_equal(r.base_ms, 100);
    assert_int_equal(r.cap_ms, 5000);
    for (int i = 0; i < 200; i++) {
        assert_true(fetch__backoff_ms(&r, 1) <= 100);
        assert_true(fetch__backoff_ms(&r, 3) <= 400);
        assert_true(fetch__backoff_ms(&r, 30) <= 5000);
    }
    fetch_http_resp resp = {.status = 400};
    assert_true(fetch__retryable(&resp, "ThrottlingException"));
    assert_true(fetch__retryable(&resp, "ProvisionedThroughputExceededException"));
    assert_true(fetch__retryable(&resp, "SlowDown"));
    assert_false(fetch__retryable(&resp, "ConditionalCheckFailedException"));
    assert_false(fetch__retryable(&resp, NULL));
    resp.status = 503;
    assert_true(fetch__retryable(&resp, NULL));
    resp = (fetch_http_resp){.err = -ETIMEDOUT};
    assert_true(fetch__retryable(&resp, NULL));
    resp.err = -EPROTO; /* TLS verification failures are not transient */
    assert_false(fetch__retryable(&resp, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(credentials_file_picks_the_profile),
        cmocka_unit_test(credentials_file_errors),
        cmocka_unit_test(container_json),
        cmocka_unit_test(iso8601_times),
        cmocka_unit_test(refresh_planning),
        cmocka_unit_test(container_uri_policy),
        cmocka_unit_test(container_uri_bypasses_are_refused),
        cmocka_unit_test(container_uri_allowed_forms),
        cmocka_unit_test(container_uri_refusal_names_the_variable),
        cmocka_unit_test(container_uri_is_normalised),
        cmocka_unit_test(echoed_secrets_are_redacted),
        cmocka_unit_test(malformed_credentials_are_refused),
        cmocka_unit_test(region_from_env),
        cmocka_unit_test(endpoint_selection),
        cmocka_unit_test(retry_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
