/* unpack.c - safe extraction of zip / tar / tar.gz archives with libarchive.
 *
 * libarchive reads the archive and writes it to disk with its secure-extract flags; before each
 * header reaches the writer this file checks the entry itself (names, types, link targets,
 * duplicates, limits) against the tree extracted so far, so that a hostile archive can write
 * nothing outside the destination and leaves nothing behind when it is refused. */
#include "fetch/unpack.h"
#include "proto/sha256.h"
#include "proto/taskhash.h"
#include "proto/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <nettle/sha2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define RATIO_FLOOR (1ULL << 20) /* the ratio limit applies above 1 MiB of output */
#define QUOTE_MAX   160          /* bytes of an entry name shown in a message */
#define READ_BLOCK  65536
/* libarchive's ARCHIVE_ERRNO_FILE_FORMAT ("unrecognized archive format") on Linux; the name
 * itself is in a private header. */
#define LA_ERRNO_FILE_FORMAT EILSEQ

/* Writer flags. SECURE_NOABSOLUTEPATHS is deliberately absent: every pathname handed to the
 * writer is dest_dir + "/" + entry, which is absolute by construction; absolute entry names
 * are refused by our own check before the rewrite. NO_OVERWRITE means libarchive never unlinks
 * anything; duplicates are refused by our own check first (see check_entry_path). */
#define WRITE_FLAGS                                                                                \
    (ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_PERM |    \
     ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_NO_OVERWRITE)

/* State of one extraction. */
typedef struct {
    struct archive *ar; /* reader */
    struct archive *aw; /* disk writer */
    const unpack_limits *lim;
    const atomic_bool *cancel; /* set by another thread to stop; may be NULL */
    uint64_t archive_size;     /* bytes of the archive file, for the ratio */
    uint64_t entries;
    uint64_t bytes;         /* uncompressed bytes charged so far */
    uint64_t entry_charged; /* bytes charged for the current entry */
    int64_t declared;       /* the current entry's claimed size, or -1 when it claims none */
    int root_fd;            /* the destination directory */
    char root[PATH_MAX];    /* its canonical path (no symlinks, no ..) */
    char rel[PATH_MAX];     /* current entry, normalised, relative to root */
    char full[PATH_MAX];    /* root + "/" + rel */
    char link_rel[PATH_MAX];
    char link_full[PATH_MAX];
    char qname[QUOTE_MAX * 4 + 8]; /* current entry name, quoted for messages */
    char format[32];
    char *err;
    unpack_source *src; /* a growing archive (unpack_archive_growing), or NULL */
    int src_fd;
    uint64_t src_off;
    int src_rc;        /* why reading the growing archive stopped (-errno), 0 if it did not */
    bool src_seekable; /* a zip read through source_seek too, not in order from its start */
    unsigned char *src_buf;
    /* The code digest of the tree, from the bytes as they are written (unpack_stats). */
    proto_code_digest *digest; /* NULL once something made it unknowable (a hardlink, say) */
    bool file_hashed;          /* the current entry is a regular file that counts */
    uint64_t file_off;         /* bytes of it hashed so far */
    struct sha256_ctx file_sha;
} unpacker;

/* Formats an error message into err (UNPACK_ERR_MAX bytes). */
static void set_err(char *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, UNPACK_ERR_MAX, fmt, ap);
    va_end(ap);
}

/* The valid UTF-8 sequence at s of a NUL-terminated string (1-4 bytes), or 0. */
static size_t utf8_seq(const unsigned char *s)
{
    return proto_utf8_seq(s, strnlen((const char *)s, 4));
}

/* Quotes a name for an error message: valid printable UTF-8 passes, control characters, quotes,
 * backslashes and invalid bytes become \xHH, so no entry name can forge a log line. Long names
 * are cut with "...". */
static void quote_name(char *out, size_t cap, const char *name)
{
    const unsigned char *s = (const unsigned char *)name;
    size_t o = 0, shown = 0;
    out[o++] = '"';
    while (*s && o + 8 < cap) {
        size_t n = utf8_seq(s);
        if (shown >= QUOTE_MAX) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        bool ctl = n == 1 && (*s < 0x20 || *s == 0x7f || *s == '"' || *s == '\\');
        bool c1 = n == 2 && s[0] == 0xc2 && s[1] < 0xa0;
        if (n == 0 || ctl || c1) {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", *s);
            s++;
            shown++;
            continue;
        }
        memcpy(out + o, s, n);
        o += n;
        s += n;
        shown += n;
    }
    out[o++] = '"';
    out[o] = '\0';
}

/* Why a name is unusable, or NULL if it is valid UTF-8 without control characters. */
static const char *name_charset_problem(const char *name)
{
    for (const unsigned char *s = (const unsigned char *)name; *s;) {
        size_t n = utf8_seq(s);
        if (n == 0)
            return "is not valid UTF-8";
        if ((n == 1 && (*s < 0x20 || *s == 0x7f)) || (n == 2 && s[0] == 0xc2 && s[1] < 0xa0))
            return "contains a control character";
        s += n;
    }
    return NULL;
}

/* Normalises an archive path into out: drops "." and empty components; refuses absolute paths,
 * "..", bad characters and overlong names. Returns NULL or the reason. An empty result (the
 * archive's root, e.g. "./") is allowed here; callers decide. */
static const char *normalise_path(const char *name, char *out, size_t cap)
{
    const char *why = name_charset_problem(name);
    if (why)
        return why;
    if (name[0] == '\0')
        return "has an empty name";
    if (name[0] == '/')
        return "has an absolute path";
    size_t o = 0;
    for (const char *p = name; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return "has \"..\" in its path";
        if (n > NAME_MAX)
            return "has a path component longer than 255 bytes";
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (o + n + 2 > cap)
                return "has a path that is too long";
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
        while (*p == '/')
            p++;
    }
    out[o] = '\0';
    return NULL;
}

/* Checks a symlink target for the entry at rel. Only leading ".." components are allowed, and
 * they may not climb above the root: a ".." after a name could be resolved *through* another
 * symlink, which a purely lexical check cannot see (d/up -> ../.., x -> d/up/..). With this rule
 * every link resolves inside the root, whatever the other links are. */
static const char *symlink_target_problem(const char *rel, const char *target)
{
    if (target[0] == '\0')
        return "is empty";
    if (target[0] == '/')
        return "is absolute";
    if (name_charset_problem(target))
        return "is not valid UTF-8 or contains a control character";
    long depth = 0; /* directories above the link, below the root */
    for (const char *p = rel; (p = strchr(p, '/')); p++)
        depth++;
    bool seen_name = false;
    for (const char *p = target; *p;) {
        size_t n = strcspn(p, "/");
        bool dotdot = n == 2 && p[0] == '.' && p[1] == '.';
        if (dotdot && seen_name)
            return "has \"..\" after a name (only leading \"..\" are allowed)";
        if (dotdot && --depth < 0)
            return "points outside the archive";
        if (n > 0 && !dotdot && !(n == 1 && p[0] == '.'))
            seen_name = true;
        p += n;
        while (*p == '/')
            p++;
    }
    return NULL;
}

/* Whether errno e is the file system's trouble (full, over quota, read-only, failing), as
 * opposed to libarchive refusing the entry. */
static bool io_errno(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
    case EIO:
    case EROFS:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EACCES:
        return true;
    default:
        return false;
    }
}

/* Reports a failed libarchive write step ("write", "extract", "finish") of the current entry
 * and returns the code to fail with: file-system errors keep their errno and name the path
 * (and, for a full disk, the room left), anything else is an archive problem (-EINVAL). */
static int write_failed(unpacker *u, const char *step)
{
    int e = archive_errno(u->aw);
    const char *why = archive_error_string(u->aw);
    if (!io_errno(e) && !strcmp(step, "write")) {
        /* libarchive's "Too much data": more bytes than the header declared. */
        set_err(u->err, "corrupt archive at entry %s: %s", u->qname, why ? why : "write refused");
        return -EINVAL;
    }
    if (!io_errno(e)) {
        set_err(u->err, "cannot %s entry %s: %s", step, u->qname, why ? why : "unknown error");
        return -EINVAL;
    }
    const char *where = u->rel[0] ? u->full : u->root;
    char room[96] = "";
    if (e == ENOSPC || e == EDQUOT)
        unpack_free_space_note(u->root, room, sizeof room);
    set_err(u->err, "cannot %s %s (entry %s): %s%s", step, where, u->qname, strerror(e), room);
    return -e;
}

/* The outcome of a libarchive write step: a failure, or a warning that hides one (libarchive
 * reports a failed write(2) as ARCHIVE_WARN; "can't restore time" and the like stay
 * warnings). 0 or the code write_failed chose. */
static int write_step(unpacker *u, int r, const char *step)
{
    if (r == ARCHIVE_OK || (r == ARCHIVE_WARN && !io_errno(archive_errno(u->aw))))
        return 0;
    return write_failed(u, step);
}

/* Charges the current entry's output up to byte `end` against the limits. */
static int charge_to(unpacker *u, uint64_t end)
{
    if (end <= u->entry_charged)
        return 0;
    u->bytes += end - u->entry_charged;
    u->entry_charged = end;
    if (u->bytes > u->lim->max_total_bytes) {
        set_err(u->err,
                "archive expands to more than %" PRIu64
                " bytes (DAGY_UNPACK_MAX_BYTES) at entry %s",
                u->lim->max_total_bytes, u->qname);
        return -EINVAL;
    }
    if (u->bytes > RATIO_FLOOR && (double)u->bytes > u->lim->max_ratio * (double)u->archive_size) {
        set_err(u->err, "archive expands more than %gx (zip bomb?) at entry %s", u->lim->max_ratio,
                u->qname);
        return -EINVAL;
    }
    return 0;
}

/* Walks the parents of rel (relative to the root) without following anything: each must be
 * missing (libarchive creates it) or a real directory, never a symlink or file an earlier
 * entry made. Returns the type of rel itself (0 if absent) in *type, or -errno. */
static int walk_parents(unpacker *u, const char *rel, const char *what, mode_t *type)
{
    char prefix[PATH_MAX], q[sizeof u->qname];
    struct stat st;
    size_t len = strlen(rel);
    memcpy(prefix, rel, len + 1);
    for (size_t i = 0; i <= len; i++) {
        if (rel[i] != '/' && rel[i] != '\0')
            continue;
        prefix[i] = '\0';
        int rc = fstatat(u->root_fd, prefix, &st, AT_SYMLINK_NOFOLLOW);
        prefix[i] = rel[i];
        if (rc && errno == ENOENT) {
            *type = 0;
            return 0;
        }
        if (rc) {
            int e = errno;
            set_err(u->err, "entry %s: cannot check %s: %s", u->qname, what, strerror(e));
            return -e;
        }
        if (rel[i] == '\0')
            break;
        prefix[i] = '\0';
        quote_name(q, sizeof q, prefix);
        prefix[i] = '/';
        if (S_ISLNK(st.st_mode)) {
            set_err(u->err, "entry %s: %s goes through symlink %s (made by an earlier entry)",
                    u->qname, what, q);
            return -EINVAL;
        }
        if (!S_ISDIR(st.st_mode)) {
            set_err(u->err, "entry %s: %s goes through %s, which is not a directory", u->qname,
                    what, q);
            return -EINVAL;
        }
    }
    *type = st.st_mode & S_IFMT;
    return 0;
}

/* The entry's own path: parents must be real directories, and the name must be new, except
 * that a directory may be listed again (or after libarchive made it for a file inside). A
 * duplicate file is refused: tar would let the last one win, zip tools disagree, and either
 * way an archive that says two things about one name is not one we want to guess about. */
static int check_entry_path(unpacker *u, bool is_dir)
{
    mode_t type;
    int rc = walk_parents(u, u->rel, "its path", &type);
    if (rc || !type)
        return rc;
    if (is_dir && type == S_IFDIR)
        return 0;
    set_err(u->err, "entry %s: duplicate name (an earlier entry already extracted it)", u->qname);
    return -EINVAL;
}

/* A hardlink's target must be a regular file that an earlier entry extracted, reached
 * without passing through a symlink. */
static int check_hardlink(unpacker *u, const char *target)
{
    char q[sizeof u->qname];
    quote_name(q, sizeof q, target);
    const char *why = normalise_path(target, u->link_rel, sizeof u->link_rel);
    if (!why && !u->link_rel[0])
        why = "names the archive root";
    if (why) {
        set_err(u->err, "entry %s: hardlink target %s %s", u->qname, q, why);
        return -EINVAL;
    }
    mode_t type;
    int rc = walk_parents(u, u->link_rel, "its hardlink target", &type);
    if (rc)
        return rc;
    if (type != S_IFREG) {
        set_err(u->err, "entry %s: hardlink target %s is not a file extracted earlier", u->qname,
                q);
        return -EINVAL;
    }
    int n = snprintf(u->link_full, sizeof u->link_full, "%s/%s", u->root, u->link_rel);
    if (n < 0 || (size_t)n >= sizeof u->link_full) {
        set_err(u->err, "entry %s: hardlink target %s: path too long", u->qname, q);
        return -EINVAL;
    }
    return 0;
}

/* A symlink's target is kept as it is (relative), so it must be safe wherever it is read. */
static int check_symlink(unpacker *u, const char *target)
{
    const char *why = symlink_target_problem(u->rel, target);
    if (!why)
        return 0;
    char q[sizeof u->qname];
    quote_name(q, sizeof q, target);
    set_err(u->err, "entry %s: symlink target %s %s", u->qname, q, why);
    return -EINVAL;
}

/* Refuses entry types that have no business in a flow artifact. */
static int check_type(unpacker *u, struct archive_entry *e)
{
    const char *what = NULL;
    switch (archive_entry_filetype(e)) {
    case AE_IFREG:
    case AE_IFDIR:
    case AE_IFLNK:
        return 0;
    case AE_IFCHR:
        what = "a character device";
        break;
    case AE_IFBLK:
        what = "a block device";
        break;
    case AE_IFIFO:
        what = "a FIFO";
        break;
    case AE_IFSOCK:
        what = "a socket";
        break;
    default:
        if (archive_entry_hardlink(e))
            return 0;
        what = "of an unknown type";
        break;
    }
    set_err(u->err, "entry %s is %s (not allowed)", u->qname, what);
    return -EINVAL;
}

/* Checks one entry and rewrites it for the writer: absolute pathname under the root, link
 * targets checked, permission bits limited to rwx. Sets *skip for an entry naming the root
 * itself ("./"), which is left alone. */
static int prepare_entry(unpacker *u, struct archive_entry *e, bool *skip)
{
    const char *name = archive_entry_pathname(e);
    if (!name) {
        set_err(u->err, "entry #%" PRIu64 " has a name that cannot be decoded", u->entries + 1);
        return -EINVAL;
    }
    quote_name(u->qname, sizeof u->qname, name);
    int rc = check_type(u, e);
    if (rc)
        return rc;
    if (archive_entry_is_encrypted(e)) {
        set_err(u->err, "entry %s is encrypted (not supported)", u->qname);
        return -EINVAL;
    }
    const char *why = normalise_path(name, u->rel, sizeof u->rel);
    if (why) {
        if (!strcmp(why, "is not valid UTF-8"))
            set_err(u->err, "entry name is not valid UTF-8: %s", u->qname);
        else
            set_err(u->err, "entry %s %s", u->qname, why);
        return -EINVAL;
    }
    const char *hardlink = archive_entry_hardlink(e);
    const char *symlink = archive_entry_symlink(e);
    bool is_dir = !hardlink && !symlink && archive_entry_filetype(e) == AE_IFDIR;
    *skip = !u->rel[0];
    if (*skip && is_dir)
        return 0;
    if (*skip) {
        set_err(u->err, "entry %s names the archive root but is not a directory", u->qname);
        return -EINVAL;
    }
    int n = snprintf(u->full, sizeof u->full, "%s/%s", u->root, u->rel);
    if (n < 0 || (size_t)n >= sizeof u->full) {
        /* Also keeps libarchive away from its chdir()-based deep-path code (not thread-safe). */
        set_err(u->err, "entry %s: path too long", u->qname);
        return -EINVAL;
    }
    if ((rc = check_entry_path(u, is_dir)))
        return rc;
    if (hardlink) {
        if ((rc = check_hardlink(u, hardlink)))
            return rc;
        archive_entry_set_hardlink(e, u->link_full);
    } else if (symlink || archive_entry_filetype(e) == AE_IFLNK) {
        if ((rc = check_symlink(u, symlink ? symlink : "")))
            return rc;
    }
    /* No setuid/setgid/sticky; directories stay enterable and writable by us so extraction
     * (and removal) can continue; files stay readable by us. */
    mode_t perm = archive_entry_perm(e) & 0777;
    archive_entry_set_perm(e, perm | (is_dir ? 0700 : 0400));
    archive_entry_set_pathname(e, u->full);
    return 0;
}

/* Whether another thread asked to stop; sets the error if so. */
static bool cancelled(unpacker *u)
{
    if (!u->cancel || !atomic_load_explicit(u->cancel, memory_order_relaxed))
        return false;
    set_err(u->err, "unpacking cancelled");
    return true;
}

/* Gives up on the code digest: the tree will have to be walked (agent/resume.c). */
static void digest_drop(unpacker *u)
{
    if (!u->digest)
        return;
    char scratch[PROTO_HASH_HEX];
    proto_code_digest_finish(u->digest, scratch);
    u->digest = NULL;
    u->file_hashed = false;
}

/* Starts the current entry's part of the code digest: a regular file is hashed as its data
 * is written, a symlink by its target text; a hardlink (a second name for content that the
 * digest would count twice) gives up on the digest. Names proto_code_digest_skip leaves out
 * are not hashed. */
static void digest_entry_begin(unpacker *u, struct archive_entry *e)
{
    u->file_hashed = false;
    if (!u->digest || proto_code_digest_skip(u->rel))
        return;
    const char *symlink = archive_entry_symlink(e);
    if (archive_entry_hardlink(e)) {
        digest_drop(u);
    } else if (symlink || archive_entry_filetype(e) == AE_IFLNK) {
        char hex[PROTO_HASH_HEX], *name = NULL;
        proto_sha256_hex(symlink ? symlink : "", symlink ? strlen(symlink) : 0, hex);
        if (asprintf(&name, "%s -> (link)", u->rel) < 0 ||
            proto_code_digest_add(u->digest, name, hex))
            digest_drop(u);
        free(name);
    } else if (archive_entry_filetype(e) == AE_IFREG) {
        u->file_hashed = true;
        u->file_off = 0;
        sha256_init(&u->file_sha);
    }
}

/* Hashes one data block of the current file; a hole (a sparse tar entry) gives up. */
static void digest_block(unpacker *u, const void *buf, size_t size, uint64_t off)
{
    if (!u->file_hashed)
        return;
    if (off != u->file_off) {
        digest_drop(u);
        return;
    }
    sha256_update(&u->file_sha, size, buf);
    u->file_off += size;
}

/* Adds the finished file; one shorter than its declared size (which the writer pads with
 * zeros) gives up. */
static void digest_entry_end(unpacker *u)
{
    if (!u->file_hashed)
        return;
    u->file_hashed = false;
    if (u->declared >= 0 && u->file_off != (uint64_t)u->declared) {
        digest_drop(u);
        return;
    }
    unsigned char md[SHA256_DIGEST_SIZE];
    char hex[PROTO_HASH_HEX];
    sha256_digest(&u->file_sha, sizeof md, md);
    proto_hex(md, sizeof md, hex);
    if (proto_code_digest_add(u->digest, u->rel, hex))
        digest_drop(u);
}

/* Streams the current entry's data from reader to writer, charging every block (never the
 * header's claimed size alone) against the limits. Memory: one libarchive block at a time. */
static int copy_data(unpacker *u)
{
    for (;;) {
        const void *buf;
        size_t size;
        la_int64_t off;
        if (cancelled(u))
            return -ECANCELED;
        int r = archive_read_data_block(u->ar, &buf, &size, &off);
        if (r == ARCHIVE_EOF)
            return 0;
        if (r < ARCHIVE_WARN) {
            set_err(u->err, "corrupt archive at entry %s: %s", u->qname,
                    archive_error_string(u->ar));
            return -EINVAL;
        }
        if (off < 0 || (uint64_t)off > UINT64_MAX - size) {
            set_err(u->err, "corrupt archive at entry %s: bad data offset", u->qname);
            return -EINVAL;
        }
        /* An entry never gets more data than it claims: libarchive 3.6's zip reader hands back
         * blocks that run past its own buffer when a deflate stream outgrows the declared size
         * (valgrind: write() of unaddressable bytes), so such a block is refused unread. */
        if (u->declared >= 0 && (uint64_t)off + size > (uint64_t)u->declared) {
            set_err(u->err,
                    "corrupt archive at entry %s: more data than its declared size of %" PRId64
                    " bytes",
                    u->qname, u->declared);
            return -EINVAL;
        }
        /* Charged up to the block's end, so holes of sparse entries count too. */
        int rc = charge_to(u, (uint64_t)off + size);
        if (rc)
            return rc;
        /* Every data block must be written whole: any warning here is a short or failed
         * write, which would leave the file zero-filled by the finishing truncate. */
        if (archive_write_data_block(u->aw, buf, size, off) != ARCHIVE_OK)
            return write_failed(u, "write");
        digest_block(u, buf, size, (uint64_t)off);
    }
}

/* Records the detected format after the first header, refusing combinations we do not accept
 * (a gzipped zip, for one). */
static int detect_format(unpacker *u)
{
    int fmt = archive_format(u->ar) & ARCHIVE_FORMAT_BASE_MASK;
    int filter = archive_filter_code(u->ar, 0);
    const char *name = NULL;
    if (fmt == ARCHIVE_FORMAT_ZIP && filter == ARCHIVE_FILTER_NONE)
        name = "zip";
    else if (fmt == ARCHIVE_FORMAT_TAR && filter == ARCHIVE_FILTER_NONE)
        name = "tar";
    else if (fmt == ARCHIVE_FORMAT_TAR && filter == ARCHIVE_FILTER_GZIP)
        name = "tar.gz";
    if (!name) {
        set_err(u->err, "not a zip, tar or tar.gz archive");
        return -EINVAL;
    }
    snprintf(u->format, sizeof u->format, "%s", name);
    return 0;
}

/* Reads the next header; distinguishes "not an archive at all" from a damaged one. */
static int next_header(unpacker *u, struct archive_entry **e, bool *eof)
{
    int r = archive_read_next_header(u->ar, e);
    *eof = r == ARCHIVE_EOF;
    if (*eof && !u->format[0] && !(archive_format(u->ar) & ARCHIVE_FORMAT_BASE_MASK)) {
        set_err(u->err, "not a zip, tar or tar.gz archive");
        return -EINVAL;
    }
    if (*eof)
        return u->format[0] ? 0 : detect_format(u);
    if (r < ARCHIVE_WARN) {
        if (!u->format[0] && (archive_errno(u->ar) == LA_ERRNO_FILE_FORMAT ||
                              !(archive_format(u->ar) & ARCHIVE_FORMAT_BASE_MASK)))
            set_err(u->err, "not a zip, tar or tar.gz archive");
        else if (u->entries)
            set_err(u->err, "corrupt archive after entry %s: %s", u->qname,
                    archive_error_string(u->ar));
        else
            set_err(u->err, "corrupt archive: %s", archive_error_string(u->ar));
        return -EINVAL;
    }
    return u->format[0] ? 0 : detect_format(u);
}

/* Extracts one entry: checks, header, data, finish. */
static int extract_entry(unpacker *u, struct archive_entry *e)
{
    bool skip = false;
    int rc = prepare_entry(u, e, &skip);
    if (rc)
        return rc;
    if (++u->entries > u->lim->max_entries) {
        set_err(u->err,
                "archive has more than %" PRIu64 " entries (DAGY_UNPACK_MAX_ENTRIES) at entry %s",
                u->lim->max_entries, u->qname);
        return -EINVAL;
    }
    if (skip)
        return 0;
    u->entry_charged = 0;
    u->declared = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
    /* A claimed size can only make us fail earlier, never let more through. */
    if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0 &&
        (rc = charge_to(u, (uint64_t)archive_entry_size(e))))
        return rc;
    digest_entry_begin(u, e);
    if ((rc = write_step(u, archive_write_header(u->aw, e), "extract")))
        return rc;
    if ((rc = copy_data(u)))
        return rc;
    if ((rc = write_step(u, archive_write_finish_entry(u->aw), "finish")))
        return rc;
    digest_entry_end(u);
    return 0;
}

/* Little-endian field readers for the zip pre-scan. */
static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static ssize_t src_pread(unpacker *u, int fd, void *buf, size_t n, uint64_t off);

/* Offset of the first zip central-directory signature at or after `from` (libarchive searches
 * forward the same way, to allow for data prepended to the archive), or UINT64_MAX. */
static uint64_t zip_find_cd(unpacker *u, int fd, uint64_t from, uint64_t end)
{
    unsigned char buf[4096];
    while (from + 4 <= end) {
        ssize_t n = src_pread(u, fd, buf, sizeof buf, from);
        if (n < 4)
            return UINT64_MAX;
        for (ssize_t i = 0; i + 4 <= n; i++)
            if (buf[i] == 'P' && buf[i + 1] == 'K' &&
                ((buf[i + 2] == 1 && buf[i + 3] == 2) || (buf[i + 2] == 5 && buf[i + 3] == 6) ||
                 (buf[i + 2] == 6 && buf[i + 3] == 6)))
                return from + (uint64_t)i;
        from += (uint64_t)n - 3;
    }
    return UINT64_MAX;
}

/* libarchive's seekable zip reader loads the whole central directory into memory before the
 * first entry comes out, so the entry limit would act too late: count the records here first,
 * in constant memory. Only for files that look like zip (not tar, not gzip). A growing archive
 * is read through src_pread, which waits for each range to be final. */
static int zip_prescan(unpacker *u, int fd)
{
    unsigned char head[262], *tail;
    uint64_t size = u->archive_size, max_entries = u->lim->max_entries;
    char *err = u->err;
    if (size < 22 || src_pread(u, fd, head, sizeof head, 0) < 2 ||
        (head[0] == 0x1f && head[1] == 0x8b))
        return 0;
    if (size >= sizeof head && !memcmp(head + 257, "ustar", 5))
        return 0;
    size_t n = size < 65557 ? (size_t)size : 65557;
    if (!(tail = malloc(n))) {
        set_err(err, "out of memory");
        return -ENOMEM;
    }
    uint64_t base = size - n, cd = UINT64_MAX, total = 0;
    if (src_pread(u, fd, tail, n, base) == (ssize_t)n) {
        for (size_t i = n - 22 + 1; i-- > 0;) {
            if (memcmp(tail + i, "PK\5\6", 4))
                continue;
            total = le(tail + i + 10, 2);
            cd = le(tail + i + 16, 4);
            unsigned char z[56];
            if (i >= 20 && !memcmp(tail + i - 20, "PK\6\7", 4) &&
                src_pread(u, fd, z, sizeof z, le(tail + i - 12, 8)) == sizeof z &&
                !memcmp(z, "PK\6\6", 4)) {
                total = le(z + 32, 8);
                cd = le(z + 48, 8);
            }
            break;
        }
    }
    free(tail);
    if (cd == UINT64_MAX)
        return 0;
    uint64_t count = total, pos = zip_find_cd(u, fd, cd, size);
    unsigned char rec[46];
    /* Walk the records exactly as libarchive will: until a signature that is not PK\1\2. */
    for (uint64_t walked = 0; count <= max_entries && pos != UINT64_MAX; walked++) {
        if (src_pread(u, fd, rec, sizeof rec, pos) != sizeof rec || memcmp(rec, "PK\1\2", 4))
            break;
        count = walked + 1 > count ? walked + 1 : count;
        pos += 46 + le(rec + 28, 2) + le(rec + 30, 2) + le(rec + 32, 2);
    }
    if (count > max_entries) {
        set_err(err, "archive has more than %" PRIu64 " entries (DAGY_UNPACK_MAX_ENTRIES)",
                max_entries);
        return -EINVAL;
    }
    return 0;
}

/* Creates dest_dir (it must not exist) and opens it; fills u->root with its canonical path so
 * that the pathnames given to libarchive contain neither symlinks nor "..". */
static int make_root(unpacker *u, const char *dest_dir)
{
    if (mkdir(dest_dir, 0755)) {
        int e = errno;
        char room[96] = "";
        if (e == ENOSPC || e == EDQUOT) {
            /* The note is about the parent's file system: dest_dir does not exist. */
            char parent[PATH_MAX];
            snprintf(parent, sizeof parent, "%s", dest_dir);
            char *slash = strrchr(parent, '/');
            if (slash && slash != parent)
                *slash = '\0';
            unpack_free_space_note(slash ? parent : ".", room, sizeof room);
        }
        if (e == EEXIST)
            set_err(u->err, "destination %s already exists", dest_dir);
        else
            set_err(u->err, "cannot create destination %s: %s%s", dest_dir, strerror(e), room);
        return -e;
    }
    /* mkdir's mode passes through the umask; the documented mode is 0755. */
    if (!realpath(dest_dir, u->root) || chmod(u->root, 0755) ||
        (u->root_fd = open(u->root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        int e = errno;
        set_err(u->err, "cannot open destination %s: %s", dest_dir, strerror(e));
        unpack_rmtree(dest_dir);
        return -e;
    }
    return 0;
}

/* ---- growing archives ----------------------------------------------------------------------- */

/* End of the run of final bytes that starts at `off` (off itself when that byte is not final
 * yet): the prefix, the tail, or both once they meet. Under src->mu. */
static uint64_t final_end(const unpack_source *s, uint64_t off)
{
    uint64_t end = s->avail;
    bool whole = s->done || (s->size && s->avail >= s->size);
    bool in_tail = s->tail_from && (off >= s->tail_from || s->avail >= s->tail_from);
    if ((whole || in_tail) && s->size > end)
        end = s->size;
    return end > off ? end : off;
}

/* Waits until the bytes [off, off + n) are final (n cut at the end of a file of known size),
 * the file is whole, it failed, or *cancel: 0 with *end = final_end(off), or -errno. Wakes
 * every 100 ms to look at *cancel (an atomic, not signalled). */
static int source_wait_range(unpacker *u, uint64_t off, uint64_t n, uint64_t *end)
{
    unpack_source *src = u->src;
    pthread_mutex_lock(&src->mu);
    for (;;) {
        uint64_t want = n > UINT64_MAX - off ? UINT64_MAX : off + n;
        if (src->size && want > src->size)
            want = src->size > off ? src->size : off;
        bool whole = src->done || (src->size && src->avail >= src->size);
        if (src->failed || (u->cancel && atomic_load(u->cancel)) || whole ||
            final_end(src, off) >= want)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L)
            ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&src->cv, &src->mu, &ts);
    }
    int rc = src->failed ? src->failed : (u->cancel && atomic_load(u->cancel)) ? -ECANCELED : 0;
    *end = final_end(src, off);
    pthread_mutex_unlock(&src->mu);
    return rc;
}

/* Waits until the first `need` bytes are final (the prefix, or the prefix and the tail once
 * they meet), the file is whole, it failed, or *cancel: 0 with *avail (the final bytes from
 * the start) and *size set, or -errno. */
static int source_wait(unpacker *u, uint64_t need, uint64_t *avail, uint64_t *size)
{
    int rc = source_wait_range(u, 0, need, avail);
    pthread_mutex_lock(&u->src->mu);
    *size = u->src->size;
    pthread_mutex_unlock(&u->src->mu);
    return rc;
}

/* pread of [off, off + n) of the archive; on a growing one once those bytes are final. The
 * byte count (short only at the end of the file), or -1 (errno set; u->src_rc when the
 * download failed or the unpack was cancelled). */
static ssize_t src_pread(unpacker *u, int fd, void *buf, size_t n, uint64_t off)
{
    uint64_t end;
    int rc = u->src ? source_wait_range(u, off, n, &end) : 0;
    if (rc) {
        u->src_rc = rc;
        errno = -rc;
        return -1;
    }
    ssize_t r;
    while ((r = pread(fd, buf, n, (off_t)off)) < 0 && errno == EINTR)
        ;
    return r;
}

/* libarchive's read callback on a growing archive: the final bytes at the read position (at
 * most one block), waiting for at least one; 0 at its end. */
static la_ssize_t source_read(struct archive *a, void *ud, const void **buf)
{
    unpacker *u = ud;
    uint64_t end;
    int rc = source_wait_range(u, u->src_off, 1, &end);
    if (rc) {
        u->src_rc = rc;
        archive_set_error(a, -rc, "%s", strerror(-rc));
        return -1;
    }
    if (end <= u->src_off)
        return 0;
    size_t want = end - u->src_off < READ_BLOCK ? (size_t)(end - u->src_off) : READ_BLOCK;
    ssize_t n;
    while ((n = pread(u->src_fd, u->src_buf, want, (off_t)u->src_off)) < 0 && errno == EINTR)
        ;
    if (n < 0) {
        u->src_rc = -errno;
        archive_set_error(a, errno, "cannot read back the download: %s", strerror(errno));
        return -1;
    }
    u->src_off += (uint64_t)n;
    *buf = u->src_buf;
    return n;
}

/* libarchive's seek callback on a growing zip of known size: only moves the read position
 * (source_read waits there for the bytes), so the reader can go to the central directory
 * before the bytes in between have arrived. */
static la_int64_t source_seek(struct archive *a, void *ud, la_int64_t off, int whence)
{
    unpacker *u = ud;
    int64_t base = whence == SEEK_SET   ? 0
                   : whence == SEEK_CUR ? (int64_t)u->src_off
                   : whence == SEEK_END ? (int64_t)u->archive_size
                                        : -1;
    if (base < 0 || (off < 0 && -off > base) || (off > 0 && off > INT64_MAX - base)) {
        archive_set_error(a, EINVAL, "seek outside the archive");
        return ARCHIVE_FATAL;
    }
    u->src_off = (uint64_t)(base + off);
    return (la_int64_t)u->src_off;
}

/* Opens the reader (zip, tar with gzip or nothing) and the disk writer. */
static int open_archives(unpacker *u, int fd)
{
    u->ar = archive_read_new();
    u->aw = archive_write_disk_new();
    if (!u->ar || !u->aw) {
        set_err(u->err, "out of memory");
        return -ENOMEM;
    }
    archive_read_support_format_zip(u->ar);
    archive_read_support_format_tar(u->ar);
    archive_read_support_filter_gzip(u->ar);
    archive_read_support_filter_none(u->ar);
    /* Format and filter bidding happens here already. A growing tar is read without a seek
     * callback, in order; a growing zip with one, so that libarchive uses its seekable zip
     * reader (central directory first, then the entries by their local-header offsets), as
     * it does for a whole file. */
    int r = ARCHIVE_FATAL;
    if (u->src && (u->src_buf = malloc(READ_BLOCK))) {
        u->src_fd = fd;
        archive_read_set_read_callback(u->ar, source_read);
        if (u->src_seekable)
            archive_read_set_seek_callback(u->ar, source_seek);
        archive_read_set_callback_data(u->ar, u);
        r = archive_read_open1(u->ar);
    } else if (!u->src) {
        r = archive_read_open_fd(u->ar, fd, READ_BLOCK);
    }
    if (r != ARCHIVE_OK) {
        if (archive_errno(u->ar) == LA_ERRNO_FILE_FORMAT)
            set_err(u->err, "not a zip, tar or tar.gz archive");
        else
            set_err(u->err, "cannot read archive: %s", archive_error_string(u->ar));
        return -EINVAL;
    }
    archive_write_disk_set_options(u->aw, WRITE_FLAGS);
    return 0;
}

/* Runs the entry loop and closes the writer (which applies deferred directory modes). */
static int extract_all(unpacker *u)
{
    for (;;) {
        struct archive_entry *e;
        bool eof;
        if (cancelled(u))
            return -ECANCELED;
        int rc = next_header(u, &e, &eof);
        if (rc)
            return rc;
        if (eof)
            break;
        if ((rc = extract_entry(u, e)))
            return rc;
    }
    u->rel[0] = '\0'; /* a failure now concerns the tree, not the last entry */
    snprintf(u->qname, sizeof u->qname, "(directory modes)");
    return write_step(u, archive_write_close(u->aw), "finish extraction into");
}

int unpack_archive(const char *archive_path, const char *dest_dir, const unpack_limits *lim,
                   unpack_stats *stats, char *err)
{
    return unpack_archive_cancellable(archive_path, dest_dir, lim, NULL, stats, err);
}

/* The extraction, from a whole file (src NULL) or a growing one being streamed. */
static int unpack_from(const char *archive_path, const char *dest_dir, const unpack_limits *lim,
                       const atomic_bool *cancel, unpack_source *src, bool seekable,
                       unpack_stats *stats, char *err)
{
    struct stat st;
    int rc, fd;
    assert(archive_path && dest_dir && lim);
    unpacker *u = calloc(1, sizeof *u);
    if (!u) {
        set_err(err, "out of memory");
        return -ENOMEM;
    }
    u->lim = lim;
    u->cancel = cancel;
    u->err = err;
    u->root_fd = -1;
    u->src = src;
    u->src_seekable = seekable;
    u->digest = stats ? proto_code_digest_new() : NULL;
    if ((fd = open(archive_path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st)) {
        rc = -errno;
        set_err(err, "cannot open archive: %s", strerror(-rc));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        /* The ratio limit and the zip pre-scan need a size and random access. */
        set_err(err, "archive is not a regular file");
        rc = -EINVAL;
        goto out;
    }
    u->archive_size = src ? src->size : (uint64_t)st.st_size;
    if ((!src || seekable) && (rc = zip_prescan(u, fd)))
        goto out;
    if (u->src_rc) { /* the download stopped while the pre-scan waited for its bytes */
        rc = u->src_rc;
        set_err(err, rc == -ECANCELED ? "unpacking cancelled" : "the download stopped: %s",
                strerror(-rc));
        goto out;
    }
    if ((rc = make_root(u, dest_dir)))
        goto out;
    rc = open_archives(u, fd);
    if (!rc)
        rc = extract_all(u);
    if (rc && u->src_rc) { /* the download failed or was cancelled: that is the cause */
        rc = u->src_rc;
        if (rc == -ECANCELED)
            set_err(err, "unpacking cancelled");
        else
            set_err(err, "the download stopped: %s", strerror(-rc));
    } else if (!rc && src && !seekable && u->format[0] && !strcmp(u->format, "zip")) {
        rc = -EINVAL; /* only reachable through a zip without its signature at the start */
        set_err(err, "a zip archive must start with its first entry");
    }
    /* A stop asked for while the last entry was written still wins: the caller is leaving. */
    if (!rc && cancelled(u))
        rc = -ECANCELED;
    /* Free the writer before removing anything: closing it may still touch the tree. */
    if (u->aw)
        archive_write_free(u->aw);
    u->aw = NULL;
    if (rc) {
        int rm = unpack_rmtree(u->root);
        if (rm && err) {
            size_t len = strlen(err);
            snprintf(err + len, UNPACK_ERR_MAX - len, " (and removing %s failed: %s)", u->root,
                     strerror(-rm));
        }
    }
out:
    if (stats) {
        stats->entries = u->entries;
        stats->bytes = u->bytes;
        snprintf(stats->format, sizeof stats->format, "%s", u->format);
        stats->code_digest[0] = '\0';
    }
    if (stats && !rc && u->digest)
        proto_code_digest_finish(u->digest, stats->code_digest);
    else
        digest_drop(u);
    if (u->ar)
        archive_read_free(u->ar);
    if (u->aw)
        archive_write_free(u->aw);
    if (u->root_fd >= 0)
        close(u->root_fd);
    if (fd >= 0)
        close(fd);
    free(u->src_buf);
    free(u);
    return rc;
}

int unpack_archive_cancellable(const char *archive_path, const char *dest_dir,
                               const unpack_limits *lim, const atomic_bool *cancel,
                               unpack_stats *stats, char *err)
{
    return unpack_from(archive_path, dest_dir, lim, cancel, NULL, false, stats, err);
}

int unpack_archive_growing(const char *archive_path, const char *dest_dir, const unpack_limits *lim,
                           const atomic_bool *cancel, unpack_source *src, unpack_stats *stats,
                           char *err)
{
    unpacker w = {.cancel = cancel, .src = src};
    uint64_t avail, size;
    unsigned char magic[4] = {0};
    /* The first bytes say zip or not; a file of unknown length waits to be whole. */
    int rc = source_wait(&w, sizeof magic, &avail, &size);
    int fd = rc ? -1 : open(archive_path, O_RDONLY | O_CLOEXEC);
    bool read = fd >= 0 && pread(fd, magic, sizeof magic, 0) == (ssize_t)sizeof magic;
    bool zip = read && !memcmp(magic, "PK", 2);
    if (fd >= 0)
        close(fd);
    if (!rc && (!read || !size))
        rc = source_wait(&w, UINT64_MAX, &avail, &size); /* returns once whole (or failed) */
    if (rc) {
        set_err(err, rc == -ECANCELED ? "unpacking cancelled" : "the download stopped: %s",
                strerror(-rc));
        return rc;
    }
    if (!read || !size)
        return unpack_from(archive_path, dest_dir, lim, cancel, NULL, false, stats, err);
    return unpack_from(archive_path, dest_dir, lim, cancel, src, zip, stats, err);
}
