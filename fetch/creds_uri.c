/* creds_uri.c - the container credentials URI policy of the AWS SDKs
 * (AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI), checked with libcurl's URL API, the
 * parser that then makes the connection, so that the host checked is the host connected to:
 * https anywhere, plain http only to loopback or the ECS/EKS agents, never user info. */
#include "fetch/creds.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "proto/util.h"

/* The ECS agent and the EKS Pod Identity agent (IPv4 and IPv6), as the AWS SDKs list them. */
static const char *const agent_v4[] = {"169.254.170.2", "169.254.170.23"};
static const char *const agent_v6[] = {"fd00:ec2::23"};

/* Whether an address literal, as libcurl normalised it ("127.0.0.1", "[::1]"), is loopback or
 * one of the agents. Only dotted-quad IPv4 reaches here as an address: libcurl has already
 * rewritten "2130706433", "0x7f.1" and "127.1" to it, and anything else (say "127.0.0.1.") is a
 * name that would go to the resolver. */
static bool address_allowed(const char *host)
{
    unsigned char a[16];
    char v6[64];
    size_t n = strlen(host);
    if (host[0] == '[' && n > 2 && n - 2 < sizeof v6 && host[n - 1] == ']') {
        memcpy(v6, host + 1, n - 2);
        v6[n - 2] = '\0';
        if (inet_pton(AF_INET6, v6, a) != 1)
            return false;
        if (IN6_IS_ADDR_LOOPBACK((struct in6_addr *)a))
            return true;
        /* ::ffff:127.x.y.z reaches 127.x.y.z over IPv4: loopback, as Go's and Java's SDKs say. */
        if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a) && a[12] == 127)
            return true;
        for (size_t i = 0; i < sizeof agent_v6 / sizeof agent_v6[0]; i++) {
            unsigned char b[16];
            if (inet_pton(AF_INET6, agent_v6[i], b) == 1 && memcmp(a, b, 16) == 0)
                return true;
        }
        return false;
    }
    if (inet_pton(AF_INET, host, a) != 1)
        return false;
    if (a[0] == 127)
        return true;
    for (size_t i = 0; i < sizeof agent_v4 / sizeof agent_v4[0]; i++)
        if (strcmp(host, agent_v4[i]) == 0)
            return true;
    return false;
}

/* "localhost" is allowed by name only where libcurl resolves it itself, to ::1 and 127.0.0.1,
 * without asking DNS (libcurl 7.78.0 and later); "localhost." and "x.localhost" are not. */
static bool localhost_allowed(const char *host)
{
    return strcasecmp(host, "localhost") == 0 &&
           curl_version_info(CURLVERSION_NOW)->version_num >= 0x074e00;
}

/* Formats the refusal of an http:// host; the host is cleaned for the message. */
static void refuse_host(const char *var, const char *host, char *err)
{
    char *h = proto_utf8_clean(host, strlen(host), 120);
    snprintf(err, FETCH_ERR_MAX,
             "%s: http:// to host %s is not allowed: plain http may only go to a loopback address "
             "(127.0.0.0/8, [::1], localhost) or the ECS/EKS agent (169.254.170.2, "
             "169.254.170.23, [fd00:ec2::23]); use https:// for any other host",
             var, h ? h : "?");
    free(h);
}

/* Scheme, user info and host checks on a parsed URL; 0 or -EINVAL with err set. */
static int check_parsed_uri(CURLU *u, const char *var, bool *plain_http, char *err)
{
    char *scheme = NULL, *host = NULL, *part = NULL;
    int rc = -EINVAL;
    bool userinfo = false;
    static const CURLUPart info[] = {CURLUPART_USER, CURLUPART_PASSWORD, CURLUPART_OPTIONS};
    for (size_t i = 0; i < sizeof info / sizeof info[0]; i++) {
        userinfo |= curl_url_get(u, info[i], &part, 0) == CURLUE_OK;
        curl_free(part);
        part = NULL;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(err, FETCH_ERR_MAX, "%s is not an http:// or https:// URL with a host", var);
    } else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        snprintf(err, FETCH_ERR_MAX, "%s must be an http:// or https:// URL, not %.16s://", var,
                 scheme);
    } else if (userinfo) {
        /* Never echoed: it may hold a password. */
        snprintf(err, FETCH_ERR_MAX,
                 "%s must not contain user information (\"user:password@\"); the token goes in "
                 "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                 var);
    } else if ((*plain_http = strcmp(scheme, "http") == 0) &&
               curl_url_get(u, CURLUPART_ZONEID, &part, 0) == CURLUE_OK) {
        snprintf(err, FETCH_ERR_MAX, "%s: an IPv6 zone id is not allowed", var);
    } else if (*plain_http && !address_allowed(host) && !localhost_allowed(host)) {
        refuse_host(var, host, err);
    } else {
        rc = 0;
    }
    curl_free(part);
    curl_free(scheme);
    curl_free(host);
    return rc;
}

int fetch_creds_check_uri(const char *var, const char *uri, char **url_out, bool *plain_http,
                          char *err)
{
    CURLU *u = curl_url();
    char *url = NULL;
    bool http = false;
    int rc = -EINVAL;
    *url_out = NULL;
    if (!u)
        return -ENOMEM;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, uri, 0);
    if (uc != CURLUE_OK)
        snprintf(err, FETCH_ERR_MAX, "%s is not a valid URL: %s", var, curl_url_strerror(uc));
    else if ((rc = check_parsed_uri(u, var, &http, err)) == 0 &&
             curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK)
        rc = -ENOMEM;
    /* The request goes to libcurl's own serialisation of what was checked, so the host checked
     * is the host connected to. */
    if (rc == 0 && !(*url_out = strdup(url)))
        rc = -ENOMEM;
    if (plain_http)
        *plain_http = http;
    curl_free(url);
    curl_url_cleanup(u);
    return rc;
}

bool fetch_creds_uri_allowed(const char *uri)
{
    char err[FETCH_ERR_MAX], *url = NULL;
    int rc = fetch_creds_check_uri("URI", uri, &url, NULL, err);
    free(url);
    return rc == 0;
}
