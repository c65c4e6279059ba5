/* table.h - the interface between dagy-agent-core and its two modules: dagy-agent-aws.so (the
 * functions of fetch/aws.h, which need libcurl and OpenSSL) and dagy-agent-unpack.so (those of
 * fetch/unpack.h, which need libarchive).
 *
 * Why a module: libcurl and libarchive pull ~40 shared libraries (OpenSSL's TLS side, gnutls,
 * p11-kit, Kerberos, LDAP, libxml2, ICU...) whose loading and constructors cost a local run most
 * of its start-up. The core links neither; fetch/module/lazy.c defines these functions in the
 * core and loads the module, with dlopen, the first time one is called (a run that needs AWS or
 * unpacks an archive). Two modules, not one: a run that talks to AWS but unpacks nothing (a
 * DynamoDB-status run from a directory) does not map libarchive and the ten libraries it pulls
 * (libxml2, ICU, libstdc++, compressors: ~2.7 MiB of resident pages on Debian 12), and an
 * unpacking local run no libcurl. Each module exports one symbol, its table. */
#ifndef DAGY_FETCH_MODULE_TABLE_H
#define DAGY_FETCH_MODULE_TABLE_H

#include "fetch/aws.h"
#include "fetch/unpack.h"

#define DAGY_FETCH_MODULE_NAME    "dagy-agent-aws.so"
#define DAGY_FETCH_TABLE_SYMBOL   "dagy_fetch_table"
#define DAGY_FETCH_TABLE_VERSION  4 /* raise on any change to the struct below */
#define DAGY_UNPACK_MODULE_NAME   "dagy-agent-unpack.so"
#define DAGY_UNPACK_TABLE_SYMBOL  "dagy_unpack_table"
#define DAGY_UNPACK_TABLE_VERSION 2 /* raise on any change to the struct below */

/* The first member of each table: what the core checks before using the rest. */
typedef struct {
    int version;       /* DAGY_FETCH_TABLE_VERSION or DAGY_UNPACK_TABLE_VERSION */
    size_t size;       /* sizeof the whole table */
    const char *build; /* DAGY_VERSION of the module: must equal the core's */
} dagy_module_head;

typedef struct {
    dagy_module_head head;
    int (*aws_new)(uv_loop_t *loop, fetch_aws **out, char *err);
    void (*aws_free)(fetch_aws *a);
    int (*aws_json_opts)(fetch_aws *a, const char *service, const char *target, const char *body,
                         const fetch_json_opts *opts, fetch_aws_cb cb, void *ud);
    int (*s3_get_file)(fetch_aws *a, const char *uri, const char *path, fetch_progress_cb progress,
                       fetch_aws_cb cb, void *ud);
    int (*s3_get_file_streaming)(fetch_aws *a, const char *uri, const char *path,
                                 fetch_progress_cb progress, fetch_progress_cb prefix,
                                 fetch_progress_cb tail, fetch_aws_cb cb, void *ud);
    int (*s3_put)(fetch_aws *a, const char *bucket, const char *key, const void *data, size_t len,
                  const char *content_type, fetch_aws_cb cb, void *ud);
    int (*s3_put_fd)(fetch_aws *a, const char *bucket, const char *key, int fd, uint64_t len,
                     const char *sha256_hex, const char *content_type, fetch_aws_cb cb, void *ud);
    int (*http_get)(fetch_aws *a, const char *url, fetch_aws_cb cb, void *ud);
} dagy_fetch_module;

typedef struct {
    dagy_module_head head;
    int (*unpack_cancellable)(const char *archive_path, const char *dest_dir,
                              const unpack_limits *lim, const atomic_bool *cancel,
                              unpack_stats *stats, char *err);
    int (*unpack_growing)(const char *archive_path, const char *dest_dir, const unpack_limits *lim,
                          const atomic_bool *cancel, unpack_source *src, unpack_stats *stats,
                          char *err);
} dagy_unpack_module;

#endif
