/* unpack.h - safe extraction of flow artifacts and dependency packages (zip, tar, tar.gz; format
 * detected by content) with libarchive.
 *
 * libarchive's secure-extract flags stop `..` and absolute paths and writing through symlinks,
 * but not where a symlink or hardlink entry points; this module adds its own checks: link targets
 * stay inside the destination, no device/FIFO/socket entries, setuid/setgid/sticky bits dropped,
 * limits on total size, entry count and compression ratio. On any violation nothing is left: the
 * destination directory is removed. Synchronous (runs before the DAG starts, or in a worker). */
#ifndef DAGY_UNPACK_H
#define DAGY_UNPACK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#define UNPACK_ERR_MAX 512

typedef struct {
    uint64_t max_total_bytes; /* sum of uncompressed entry sizes; env DAGY_UNPACK_MAX_BYTES,
                                 default 8 GiB */
    uint64_t max_entries;     /* env DAGY_UNPACK_MAX_ENTRIES, default 100000 */
    double max_ratio;         /* uncompressed / archive size; env DAGY_UNPACK_MAX_RATIO,
                                 default 200 (applies once output exceeds 1 MiB) */
} unpack_limits;

typedef struct {
    uint64_t entries;
    uint64_t bytes;  /* uncompressed bytes written */
    char format[32]; /* "zip", "tar", "tar.gz" (the detected format) */
    /* The code digest (proto/taskhash.h, proto_code_digest_*) of the extracted tree, from the
     * bytes as they were written: the same as walking the tree afterwards would give. ""
     * when it is not known: on failure, or when the archive has a hardlink, a sparse entry or
     * a file shorter than it declares (the tree must then be walked). */
    char code_digest[65];
} unpack_stats;

/* Defaults, overridden by the environment variables above. Bad values in the environment are
 * an error: returns -EINVAL with err naming the variable. */
int unpack_limits_from_env(unpack_limits *out, char *err);

/* Extracts `archive_path` into `dest_dir`, which must not exist yet (it is created, mode 0755).
 * Returns 0, or -EINVAL for an unsafe/corrupt/oversized archive (err names the entry and the
 * rule it broke; dest_dir removed), or another -errno for I/O trouble (dest_dir removed).
 * `stats` may be NULL. -EEXIST if dest_dir exists (left untouched); its parent must exist.
 * err does not repeat archive_path: callers prefix it (the URI, say).
 *
 * Rules beyond the ones above: entry names must be valid UTF-8 without control characters;
 * a name may appear only once, except directories (a repeated directory is ignored); "./" is
 * skipped; nothing is written through a symlink an earlier entry made; a symlink target is
 * relative and may use ".." only as leading components that stay inside; a hardlink names a
 * regular file extracted earlier; permission bits are limited to 0777, directories get at
 * least u+rwx and files u+r; no owners, ACLs, xattrs or file flags are restored. Memory use is
 * bounded by the limits, not by the archive's size (zip central directories are counted
 * before libarchive loads them). Thread-safe: never changes the working directory. */
int unpack_archive(const char *archive_path, const char *dest_dir, const unpack_limits *lim,
                   unpack_stats *stats, char *err);

/* unpack_archive that another thread can stop: once *cancel is true (it is read before every
 * entry and every data block, so within one block's write), extraction stops, dest_dir is
 * removed and the call returns -ECANCELED. cancel may be NULL (never cancelled). The caller
 * must still wait for the call to return before releasing anything it passed. */
int unpack_archive_cancellable(const char *archive_path, const char *dest_dir,
                               const unpack_limits *lim, const atomic_bool *cancel,
                               unpack_stats *stats, char *err);

/* An archive file that another thread is still writing (a download): bytes [0, avail) are
 * final, and so are [tail_from, size) once tail_from is set (a downloader that fetched the end
 * of a zip early, for its central directory). The writer raises avail (and sets size, the final
 * length, as soon as it is known) under mu and broadcasts cv; it sets done once the whole file
 * is there and verified, or failed (a -errno) when it never will be. Initialise with
 * unpack_source_init. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t avail, size; /* size 0: not known yet */
    uint64_t tail_from;   /* 0: no tail; else [tail_from, size) is final (size is known) */
    bool done;
    int failed;
} unpack_source;

int unpack_source_init(unpack_source *src);
void unpack_source_destroy(unpack_source *src);
/* The writer's side: records progress (avail, size), the end (done) or a failure. */
void unpack_source_update(unpack_source *src, uint64_t avail, uint64_t size, bool done, int failed);
/* The writer's side: bytes [from, size) are final (size > from > 0, the file's final length). */
void unpack_source_tail(unpack_source *src, uint64_t from, uint64_t size);

/* unpack_archive_cancellable on an archive that is still arriving through `src`, each read
 * waiting for the bytes it needs (the reader stops with src->failed as soon as that is set:
 * dest_dir removed, that -errno returned). A tar or tar.gz is extracted in order while it
 * downloads. A zip (of known size) is read the way libarchive reads a whole one: its end and
 * central directory first (waiting for the tail, or for the prefix to reach them), then its
 * entries in the order of their offsets, each as soon as its bytes are in the prefix; with the
 * tail early, the entries come out while the rest downloads. A file of unknown length is
 * extracted once whole. The file counts as whole once the final bytes (the prefix, with the
 * tail once they meet) reach a known size, without waiting for `done`: the caller decides
 * whether the result may be used (it extracts into a staging directory it renames only once
 * the download is verified). */
int unpack_archive_growing(const char *archive_path, const char *dest_dir, const unpack_limits *lim,
                           const atomic_bool *cancel, unpack_source *src, unpack_stats *stats,
                           char *err);

/* Writes "; 12.0 KiB free on that file system" (or "...free but no inode left...") for the file
 * system holding `path` into out ("" if it cannot be found out): the tail of every message
 * about a full disk. */
void unpack_free_space_note(const char *path, char *out, size_t cap);

/* Removes a directory tree without following symlinks. Returns 0 or -errno. */
int unpack_rmtree(const char *path);

#endif
