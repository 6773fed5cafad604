/* isobox guest agent: PID 1 of an isobox micro-VM (see README.md next to this file).
 *
 * Boot duties: mount /proc /sys /dev /dev/pts, load the modules listed in /modules, mount the
 * root disk /dev/vda at /rootfs, set the hostname. Then it serves the framed protocol on the
 * virtio-serial control ports (isobox.ctl0..3), runs the main workload on isobox.stdio /
 * isobox.stderr, reports its exit code on isobox.status and powers the VM off.
 *
 * Frame: type u8 | session u32 BE | length u32 BE | payload (at most 1 MiB).
 * `agent --test --ctl PATH...` runs the same loop on the host (no mounts, no power-off):
 * each --ctl PATH is a unix socket the agent listens on (one host connection at a time, as
 * QEMU's chardev socket server), --stdio/--stderr/--status are opened (a unix socket is
 * connected to, anything else opened, files created).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* systemd's "power off" signal is SIGRTMIN+4 as glibc numbers it (34 + 4): a literal, since
 * the agent may be built with musl, whose SIGRTMIN is 35: its SIGRTMIN + 4 is 39, which
 * systemd reads as SIGRTMIN+5, "reboot". */
#define SYSTEMD_POWEROFF 38

#define PROTO_VERSION 2 /* 2: EXEC "user" */
#define MAX_FRAME (1u << 20)
#define READ_CHUNK (128u * 1024)
#define OUT_HIGH (4u << 20)   /* outbound backlog of a port that pauses session output */
#define STDIN_HIGH (8u << 20) /* stdin backlog of a session that pauses reading its port */
#define DRAIN_GRACE_MS 250    /* output still open this long after the exit: stop waiting */
#define MAX_PORTS 16
#define ROOTFS "/rootfs"

enum {
    F_EXEC = 1, F_STARTED = 2, F_ERROR = 3, F_STDIN = 4, F_STDIN_EOF = 5, F_STDOUT = 6,
    F_STDERR = 7, F_EXIT = 8, F_SIGNAL = 9, F_RESIZE = 10, F_PING = 11, F_PONG = 12,
};

extern char **environ;

static bool pid1;
static volatile sig_atomic_t got_chld, got_term;

static void logmsg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("isobox-agent: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void die(const char *what) {
    logmsg("fatal: %s: %s", what, strerror(errno));
    if (pid1) {
        sync();
        reboot(RB_POWER_OFF);
    }
    exit(1);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *xrealloc(void *p, size_t n) {
    void *r = realloc(p, n ? n : 1);
    if (!r) die("out of memory");
    return r;
}

/* ---- byte buffers ------------------------------------------------------------------------ */

struct buf {
    char *data;
    size_t start, len, cap;
};

static void buf_append(struct buf *b, const void *d, size_t n) {
    if (b->start && b->start + b->len + n > b->cap) {
        memmove(b->data, b->data + b->start, b->len);
        b->start = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->start + b->len, d, n);
    b->len += n;
}

static void buf_consume(struct buf *b, size_t n) {
    b->start += n;
    b->len -= n;
    if (!b->len) b->start = 0;
}

static void buf_clear(struct buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Write as much of b as fd takes now: 0 (done or would block) or -1 (errno: broken). */
static int buf_flush(int fd, struct buf *b) {
    while (b->len) {
        ssize_t n = write(fd, b->data + b->start, b->len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 0;
            return -1;
        }
        buf_consume(b, (size_t)n);
    }
    return 0;
}

/* Blocking-style write with a deadline, for the status line and the final flushes. */
static void write_all_deadline(int fd, const char *d, size_t n, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    while (n) {
        ssize_t w = write(fd, d, n);
        if (w > 0) {
            d += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EINTR && errno != EAGAIN) return;
        int64_t left = end - now_ms();
        if (left <= 0) return;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, (int)left);
    }
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- minimal JSON reader (objects, arrays, strings, integers, booleans, null) ------------ */

struct jp {
    const char *p, *e;
    bool err;
};

static int jpeek(struct jp *j) {
    while (j->p < j->e && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
    return j->p < j->e ? (unsigned char)*j->p : -1;
}

static bool jlit(struct jp *j, const char *lit) {
    size_t n = strlen(lit);
    jpeek(j);
    if ((size_t)(j->e - j->p) >= n && !memcmp(j->p, lit, n)) {
        j->p += n;
        return true;
    }
    return false;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static long jhex4(struct jp *j) {
    if (j->e - j->p < 4) return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)j->p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    j->p += 4;
    return v;
}

/* A JSON string as a malloc'd NUL-terminated UTF-8 string (NUL characters refused). */
static char *jstring(struct jp *j) {
    if (jpeek(j) != '"') {
        j->err = true;
        return NULL;
    }
    j->p++;
    struct buf b = {0};
    while (j->p < j->e && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p++;
        if (c != '\\') {
            if (c < 0x20) goto bad;
            buf_append(&b, &c, 1);
            continue;
        }
        if (j->p >= j->e) goto bad;
        c = (unsigned char)*j->p++;
        const char *simple = strchr("\"\\/bfnrt", c);
        if (simple && c) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            buf_append(&b, &map[simple - "\"\\/bfnrt"], 1);
            continue;
        }
        if (c != 'u') goto bad;
        long cp = jhex4(j);
        if (cp < 0) goto bad;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (j->e - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') goto bad;
            j->p += 2;
            long lo = jhex4(j);
            if (lo < 0xDC00 || lo > 0xDFFF) goto bad;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            goto bad;
        }
        if (cp == 0) goto bad;
        unsigned char u[4];
        size_t n;
        if (cp < 0x80) {
            u[0] = (unsigned char)cp;
            n = 1;
        } else if (cp < 0x800) {
            u[0] = (unsigned char)(0xC0 | (cp >> 6));
            u[1] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 2;
        } else if (cp < 0x10000) {
            u[0] = (unsigned char)(0xE0 | (cp >> 12));
            u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            u[2] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 3;
        } else {
            u[0] = (unsigned char)(0xF0 | (cp >> 18));
            u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            u[3] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 4;
        }
        buf_append(&b, u, n);
    }
    if (j->p >= j->e) goto bad;
    j->p++;
    buf_append(&b, "", 1);
    char *s = xrealloc(NULL, b.len);
    memcpy(s, b.data + b.start, b.len);
    buf_clear(&b);
    return s;
bad:
    buf_clear(&b);
    j->err = true;
    return NULL;
}

static long long jint(struct jp *j) {
    jpeek(j);
    const char *s = j->p;
    if (s < j->e && *s == '-') s++;
    const char *d = s;
    while (s < j->e && *s >= '0' && *s <= '9') s++;
    if (s == d || s - j->p > 19 || (s < j->e && strchr(".eE", *s) && *s)) {
        j->err = true;
        return 0;
    }
    char tmp[24];
    memcpy(tmp, j->p, (size_t)(s - j->p));
    tmp[s - j->p] = 0;
    j->p = s;
    return strtoll(tmp, NULL, 10);
}

static bool jbool(struct jp *j) {
    if (jlit(j, "true")) return true;
    if (!jlit(j, "false")) j->err = true;
    return false;
}

static void jskip(struct jp *j, int depth) {
    int c = jpeek(j);
    if (depth > 32 || c < 0) {
        j->err = true;
    } else if (c == '"') {
        free(jstring(j));
    } else if (c == '{' || c == '[') {
        int close = c == '{' ? '}' : ']';
        j->p++;
        if (jpeek(j) == close) {
            j->p++;
            return;
        }
        while (!j->err) {
            if (c == '{') {
                free(jstring(j));
                if (jpeek(j) != ':') {
                    j->err = true;
                    return;
                }
                j->p++;
            }
            jskip(j, depth + 1);
            int n = jpeek(j);
            j->p++;
            if (n == close) return;
            if (n != ',') j->err = true;
        }
    } else if (!jlit(j, "true") && !jlit(j, "false") && !jlit(j, "null")) {
        while (j->p < j->e && strchr("-+.0123456789eE", *j->p) && *j->p) j->p++;
    }
}

/* Iterate an object's members: field() must consume the value (or call jskip). */
typedef void (*jfield_fn)(struct jp *, const char *key, void *ctx);

static void jobject(struct jp *j, jfield_fn field, void *ctx) {
    if (jpeek(j) != '{') {
        j->err = true;
        return;
    }
    j->p++;
    if (jpeek(j) == '}') {
        j->p++;
        return;
    }
    while (!j->err) {
        char *key = jstring(j);
        if (!key || jpeek(j) != ':') {
            free(key);
            j->err = true;
            return;
        }
        j->p++;
        if (jlit(j, "null")) {
            /* null: the field's default */
        } else {
            field(j, key, ctx);
        }
        free(key);
        int n = jpeek(j);
        j->p++;
        if (n == '}') return;
        if (n != ',') j->err = true;
    }
}

static void jarray(struct jp *j, void (*item)(struct jp *, void *), void *ctx) {
    if (jpeek(j) != '[') {
        j->err = true;
        return;
    }
    j->p++;
    if (jpeek(j) == ']') {
        j->p++;
        return;
    }
    while (!j->err) {
        item(j, ctx);
        int n = jpeek(j);
        j->p++;
        if (n == ']') return;
        if (n != ',') j->err = true;
    }
}

struct strv {
    char **v;
    size_t n;
};

static void strv_item(struct jp *j, void *ctx) {
    struct strv *s = ctx;
    char *str = jstring(j);
    if (!str) return;
    s->v = xrealloc(s->v, (s->n + 2) * sizeof *s->v);
    s->v[s->n++] = str;
    s->v[s->n] = NULL;
}

static void strv_free(struct strv *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

struct gidv {
    gid_t *v;
    size_t n;
};

static void gid_item(struct jp *j, void *ctx) {
    struct gidv *g = ctx;
    long long v = jint(j);
    if (v < 0 || v > 0xFFFFFFFELL || g->n >= 65536) {
        j->err = true;
        return;
    }
    g->v = xrealloc(g->v, (g->n + 1) * sizeof *g->v);
    g->v[g->n++] = (gid_t)v;
}

/* JSON string literal of s (escaped) appended to b. */
static void json_str(struct buf *b, const char *s) {
    buf_append(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_append(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            buf_append(b, e, 6);
        } else {
            buf_append(b, &c, 1);
        }
    }
    buf_append(b, "\"", 1);
}

/* ---- the EXEC request ---------------------------------------------------------------------- */

struct net_req {
    char *mac, *address, *gateway;
    long long mtu;
};

struct exec_req {
    struct strv args, env;
    char *cwd;
    char *user; /* "name[:group]" or "uid[:gid]": resolved in the guest's own files */
    long long uid, gid, rows, cols;
    struct gidv gids;
    bool terminal, main, stdin_closed, has_net;
    bool no_chroot, busybox; /* vmops: run in the agent's root / run the agent's busybox */
    struct strv files; /* path, content, path, content, ... */
    struct strv mounts; /* 9p shares: tag, target, "ro"|"rw", ... (main only) */
    struct net_req net;
};

static void net_field(struct jp *j, const char *k, void *ctx) {
    struct net_req *n = ctx;
    char **dst = !strcmp(k, "mac") ? &n->mac : !strcmp(k, "address") ? &n->address
               : !strcmp(k, "gateway") ? &n->gateway : NULL;
    if (dst) {
        free(*dst);
        *dst = jstring(j);
    } else if (!strcmp(k, "mtu")) {
        n->mtu = jint(j);
    } else {
        jskip(j, 0);
    }
}

static void files_field(struct jp *j, const char *k, void *ctx) {
    struct strv *f = ctx;
    char *content = jstring(j);
    if (!content) return;
    f->v = xrealloc(f->v, (f->n + 3) * sizeof *f->v);
    f->v[f->n++] = strdup(k);
    f->v[f->n++] = content;
    f->v[f->n] = NULL;
}

static void exec_field(struct jp *j, const char *k, void *ctx) {
    struct exec_req *r = ctx;
    if (!strcmp(k, "args")) jarray(j, strv_item, &r->args);
    else if (!strcmp(k, "env")) jarray(j, strv_item, &r->env);
    else if (!strcmp(k, "cwd")) { free(r->cwd); r->cwd = jstring(j); }
    else if (!strcmp(k, "user")) { free(r->user); r->user = jstring(j); }
    else if (!strcmp(k, "uid")) r->uid = jint(j);
    else if (!strcmp(k, "gid")) r->gid = jint(j);
    else if (!strcmp(k, "rows")) r->rows = jint(j);
    else if (!strcmp(k, "cols")) r->cols = jint(j);
    else if (!strcmp(k, "additional_gids")) jarray(j, gid_item, &r->gids);
    else if (!strcmp(k, "terminal")) r->terminal = jbool(j);
    else if (!strcmp(k, "main")) r->main = jbool(j);
    else if (!strcmp(k, "stdin")) r->stdin_closed = !jbool(j);
    else if (!strcmp(k, "chroot")) r->no_chroot = !jbool(j);   /* vmops */
    else if (!strcmp(k, "busybox")) r->busybox = jbool(j);     /* vmops */
    else if (!strcmp(k, "files")) jobject(j, files_field, &r->files);
    else if (!strcmp(k, "mounts")) jarray(j, strv_item, &r->mounts);
    else if (!strcmp(k, "net")) { r->has_net = true; jobject(j, net_field, &r->net); }
    else jskip(j, 0);
}

static void exec_req_free(struct exec_req *r) {
    strv_free(&r->args);
    strv_free(&r->env);
    free(r->cwd);
    free(r->user);
    free(r->gids.v);
    strv_free(&r->files);
    strv_free(&r->mounts);
    free(r->net.mac);
    free(r->net.address);
    free(r->net.gateway);
}

/* NULL when valid, else what is wrong. */
static const char *exec_req_parse(struct exec_req *r, const char *d, size_t n) {
    struct jp j = {d, d + n, false};
    jobject(&j, exec_field, r);
    if (j.err || jpeek(&j) != -1) return "EXEC: malformed JSON payload";
    if (!r->args.n && !(r->files.n && !r->main))  /* files alone: an update, no process */
        return "EXEC: args must not be empty";
    if (r->args.n && !r->args.v[0][0]) return "EXEC: args[0] must not be empty";
    if (r->uid < 0 || r->uid > 0xFFFFFFFELL) return "EXEC: uid out of range";
    if (r->gid < 0 || r->gid > 0xFFFFFFFELL) return "EXEC: gid out of range";
    if (r->rows < 0 || r->rows > 65535 || r->cols < 0 || r->cols > 65535)
        return "EXEC: rows/cols out of range";
    if (r->cwd && r->cwd[0] != '/') return "EXEC: cwd must be an absolute path";
    if (r->user && (!r->user[0] || strlen(r->user) > 256 || strpbrk(r->user, "\n\r")))
        return "EXEC: user must be 1-256 characters on one line";
    for (size_t i = 0; i < r->files.n; i += 2) {
        const char *f = r->files.v[i];
        if (f[0] != '/' || strstr(f, "/../") || !strcmp(f + strlen(f) - 3 * (strlen(f) >= 3), "/..")
            || f[strlen(f) - 1] == '/')
            return "EXEC: files: paths must be absolute file paths without '..'";
    }
    if (r->mounts.n % 3) return "EXEC: mounts: expected tag, target, ro|rw triples";
    for (size_t i = 0; i < r->mounts.n; i += 3) {
        const char *t = r->mounts.v[i + 1];
        if (t[0] != '/' || strstr(t, "/../") || !strcmp(t + strlen(t) - 3 * (strlen(t) >= 3), "/.."))
            return "EXEC: mounts: targets must be absolute paths without '..'";
    }
    if (r->has_net && (!r->net.address || (r->net.mtu && (r->net.mtu < 68 || r->net.mtu > 65535))))
        return "EXEC: net: address missing or mtu out of range";
    if (!r->env.v) {
        r->env.v = xrealloc(NULL, sizeof *r->env.v);
        r->env.v[0] = NULL;
    }
    return NULL;
}

struct sig_req {
    long long a, b;
    const char *ka, *kb;
};

static void pair_field(struct jp *j, const char *k, void *ctx) {
    struct sig_req *s = ctx;
    if (!strcmp(k, s->ka)) s->a = jint(j);
    else if (s->kb && !strcmp(k, s->kb)) s->b = jint(j);
    else jskip(j, 0);
}

/* ---- ports and sessions -------------------------------------------------------------------- */

enum port_kind { PK_DEVICE, PK_LISTEN };

struct port {
    int kind;
    char *path;
    int fd;  /* device fd, or the accepted connection (-1: none) */
    int lfd; /* PK_LISTEN: the listening socket */
    bool up; /* a host is connected */
    unsigned gen;
    struct buf out;
    unsigned char hdr[9];
    size_t hlen;
    uint8_t ftype;
    uint32_t fsess, flen, fgot;
    bool skip; /* discarding an oversized payload */
    char *payload;
};

struct session {
    struct session *next;
    struct port *port;
    unsigned gen;
    uint32_t id;
    bool attached; /* its host connection is still there */
    bool main, terminal, started, exit_sent;
    pid_t pid;
    int exec_fd; /* exec status pipe: EOF = exec succeeded */
    int in_fd, out_fd, err_fd;
    struct buf in;
    bool in_eof;
    bool reaped;
    int code;
    int64_t reap_ms;
    char *cmd, *cwd, *user; /* for an exec failure message */
};

static struct port ports[MAX_PORTS];
static int nports;
static struct session *sessions;
static int stdio_fd = -1, stderr_fd = -1, status_fd = -1;
/* Without a terminal the host gives stdin and stdout separate ports: QEMU closes a port at
   the end of its input, and a closed port blocks the guest's writes. */
static int stdin_port_fd = -1, stdout_port_fd = -1;
static struct buf stdio_out; /* main terminal output relayed to the stdio port */
static bool stdio_in_open = true;
static bool main_used;
static enum { ROOT_NONE, ROOT_OK, ROOT_FAILED } root_state = ROOT_NONE;
static const char *rootfs_dir; /* chroot of the workloads (NULL: none, test mode) */
static bool allow_net;         /* test mode: --allow-net (only inside a throwaway netns) */
static char root_error[256];
static char **rootfs_mounts;
static size_t n_rootfs_mounts;

static void send_frame(struct port *p, uint8_t type, uint32_t sess, const void *d, size_t n) {
    if (!p || !p->up) return;
    unsigned char h[9] = {type, (unsigned char)(sess >> 24), (unsigned char)(sess >> 16),
                          (unsigned char)(sess >> 8), (unsigned char)sess,
                          (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 8), (unsigned char)n};
    buf_append(&p->out, h, sizeof h);
    if (n) buf_append(&p->out, d, n);
}

static void send_json(struct port *p, uint8_t type, uint32_t sess, struct buf *b) {
    send_frame(p, type, sess, b->data + b->start, b->len);
    buf_clear(b);
}

/* code >= 0: a process was started and failed before execve; its EXIT (with code) follows. */
static void send_error_code(struct port *p, uint32_t sess, const char *msg, int code) {
    struct buf b = {0};
    buf_append(&b, "{\"message\":", 11);
    json_str(&b, msg);
    if (code >= 0) {
        char tmp[32];
        int l = snprintf(tmp, sizeof tmp, ",\"code\":%d", code);
        buf_append(&b, tmp, (size_t)l);
    }
    buf_append(&b, "}", 1);
    send_json(p, F_ERROR, sess, &b);
}

static void send_error(struct port *p, uint32_t sess, const char *msg) {
    send_error_code(p, sess, msg, -1);
}

static void send_int(struct port *p, uint8_t type, uint32_t sess, const char *key, long long v) {
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, "{\"%s\":%lld}", key, v);
    send_frame(p, type, sess, tmp, (size_t)n);
}

static bool sess_live(struct session *s) {
    return s->attached && s->port->up && s->port->gen == s->gen;
}

static void sess_send(struct session *s, uint8_t type, const void *d, size_t n) {
    if (sess_live(s)) send_frame(s->port, type, s->id, d, n);
}

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

static struct session *find_session(struct port *p, uint32_t id) {
    for (struct session *s = sessions; s; s = s->next) {
        if (id == 0 ? s->main && !s->exit_sent
                    : s->attached && s->port == p && s->gen == p->gen && s->id == id)
            return s;
    }
    return NULL;
}

/* The host went away: its sessions keep running, their output is dropped, stdin closes. */
static void port_down(struct port *p) {
    if (!p->up) return;
    p->up = false;
    p->gen++;
    buf_clear(&p->out);
    free(p->payload);
    p->payload = NULL;
    p->hlen = 0;
    p->skip = false;
    if (p->kind == PK_LISTEN) close_fd(&p->fd);
    for (struct session *s = sessions; s; s = s->next) {
        if (s->port != p || !s->attached) continue;
        s->attached = false;
        if (!s->main && !s->terminal) close_fd(&s->in_fd);
        buf_clear(&s->in);
    }
}

static void port_up(struct port *p) {
    p->up = true;
    p->hlen = 0;
    p->skip = false;
}

static bool port_paused(struct port *p) {
    for (struct session *s = sessions; s; s = s->next)
        if (s->port == p && s->attached && s->in.len > STDIN_HIGH) return true;
    return false;
}

/* ---- EXEC ---------------------------------------------------------------------------------- */

struct exec_fail {
    int stage, err;
};
enum { ST_CHROOT = 1, ST_CHDIR, ST_GROUPS, ST_GID, ST_UID, ST_EXEC, ST_TTY, ST_NOUSER,
       ST_NOGROUP };

/* Docker's convention: 127 command not found, 126 found but not runnable. */
static int fail_code(const struct exec_fail *f) {
    return f->stage == ST_EXEC && (f->err == ENOENT || f->err == ENOTDIR) ? 127 : 126;
}

static void child_fail(int fd, int stage) {
    struct exec_fail f = {stage, errno};
    ssize_t r = write(fd, &f, sizeof f);
    (void)r;
    _exit(fail_code(&f));
}

static void move_fd(int from, int to) {
    if (from == to) {
        fcntl(to, F_SETFD, 0);
    } else {
        dup2(from, to);
    }
}

/* ---- -u NAME: the guest's own /etc/passwd and /etc/group (Docker's rules) ------------------ */

#define MAX_GIDS 64

static bool all_digits(const char *t) {
    if (!*t) return false;
    for (; *t; t++)
        if (*t < '0' || *t > '9') return false;
    return true;
}

/* A ':'-separated line split in place into at most `max` fields; how many there are. */
static int split_fields(char *line, char **f, int max) {
    line[strcspn(line, "\n")] = 0;
    int n = 0;
    for (char *p = line; n < max; n++) {
        f[n] = p;
        p = strchr(p, ':');
        if (!p) return n + 1;
        *p++ = 0;
    }
    return n;
}

/* The passwd entry whose name (or, for digits, uid) is `who`: its uid, gid and name. */
static bool passwd_entry(const char *who, long long *uid, long long *gid, char *name, size_t n) {
    FILE *f = fopen("/etc/passwd", "re");
    if (!f) return false;
    char *line = NULL, *fl[7];
    size_t cap = 0;
    bool found = false;
    while (!found && getline(&line, &cap, f) >= 0) {
        if (split_fields(line, fl, 7) < 4 || !all_digits(fl[2]) || !all_digits(fl[3])) continue;
        if (all_digits(who) ? !strcmp(fl[2], who) : !strcmp(fl[0], who)) {
            *uid = atoll(fl[2]);
            *gid = atoll(fl[3]);
            snprintf(name, n, "%s", fl[0]);
            found = true;
        }
    }
    free(line);
    fclose(f);
    return found;
}

/* Group `want` (name or gid; may be NULL) -> *gid; every group listing `member` -> gids. */
static bool scan_groups(const char *want, long long *gid, const char *member, gid_t *gids,
                        size_t *ngids) {
    FILE *f = fopen("/etc/group", "re");
    if (!f) return false;
    char *line = NULL, *fl[4];
    size_t cap = 0;
    bool found = false;
    while (getline(&line, &cap, f) >= 0) {
        int nf = split_fields(line, fl, 4);
        if (nf < 3 || !all_digits(fl[2])) continue;
        if (want && !found && (all_digits(want) ? !strcmp(fl[2], want) : !strcmp(fl[0], want))) {
            *gid = atoll(fl[2]);
            found = true;
        }
        if (!member || nf < 4 || *ngids >= MAX_GIDS) continue;
        for (char *save = NULL, *m = strtok_r(fl[3], ",", &save); m;
             m = strtok_r(NULL, ",", &save))
            if (!strcmp(m, member)) {
                gids[(*ngids)++] = (gid_t)atoll(fl[2]);
                break;
            }
    }
    free(line);
    fclose(f);
    return found;
}

/* r->user in the current root: uid, gid and supplementary groups into r (after chroot). */
static void resolve_user(struct exec_req *r, int errw) {
    char spec[260], name[256] = "";
    snprintf(spec, sizeof spec, "%s", r->user);
    char *group = strchr(spec, ':');
    if (group) *group++ = 0;
    long long uid = 0, gid = 0;
    bool known = spec[0] && passwd_entry(spec, &uid, &gid, name, sizeof name);
    if (!known) {
        if (!all_digits(spec)) {
            errno = ENOENT;
            child_fail(errw, ST_NOUSER);
        }
        uid = atoll(spec);
        gid = 0;
    }
    gid_t gids[MAX_GIDS];
    size_t ngids = 0;
    if (group && *group) { /* explicit group: no supplementary ones (libcontainer's rule) */
        if (!scan_groups(group, &gid, NULL, gids, &ngids)) {
            if (!all_digits(group)) {
                errno = ENOENT;
                child_fail(errw, ST_NOGROUP);
            }
            gid = atoll(group);
        }
    } else if (known) {
        scan_groups(NULL, NULL, name, gids, &ngids);
    }
    if (uid > 0xFFFFFFFELL || gid > 0xFFFFFFFELL) {
        errno = EINVAL;
        child_fail(errw, ST_NOUSER);
    }
    r->uid = uid;
    r->gid = gid;
    r->gids.n = 0;
    for (size_t i = 0; i < ngids; i++) {
        r->gids.v = xrealloc(r->gids.v, (r->gids.n + 1) * sizeof *r->gids.v);
        r->gids.v[r->gids.n++] = gids[i];
    }
}

static void child_run(struct exec_req *r, int fin, int fout, int ferr, int tty, int errw) {
    sigset_t none;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    if (tty >= 0) {
        if (ioctl(tty, TIOCSCTTY, 0) < 0) child_fail(errw, ST_TTY);
        fin = fout = ferr = tty;
    } else if (r->stdin_closed && r->main) {
        fin = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fin < 0) child_fail(errw, ST_TTY);
    }
    /* Sources are never 0..2 unless equal to their target (the agent keeps 0..2 busy). */
    move_fd(fin, 0);
    move_fd(fout, 1);
    move_fd(ferr, 2);
    umask(022);
    /* vmops: "busybox": the agent's own static busybox runs the applet args[0] (cp, top and
       stats work on images without tar or ps); opened before the chroot hides it. */
    int tool = r->busybox ? open("/bin/busybox", O_PATH | O_CLOEXEC) : -1;
    if (r->busybox && tool < 0) child_fail(errw, ST_EXEC);
    if (rootfs_dir && !r->no_chroot && chroot(rootfs_dir) < 0) child_fail(errw, ST_CHROOT);
    if (chdir(r->cwd ? r->cwd : "/") < 0) child_fail(errw, ST_CHDIR);
    if (r->user) resolve_user(r, errw);
    if (setgroups(r->gids.n, r->gids.v) < 0 && !(errno == EPERM && !pid1 && !r->gids.n))
        child_fail(errw, ST_GROUPS);
    if (setgid((gid_t)r->gid) < 0) child_fail(errw, ST_GID);
    if (setuid((uid_t)r->uid) < 0) child_fail(errw, ST_UID);
    environ = r->env.v; /* execvp looks the command up in this environment's PATH */
    if (tool >= 0) syscall(SYS_execveat, tool, "", r->args.v, environ, AT_EMPTY_PATH);
    else execvp(r->args.v[0], r->args.v);
    child_fail(errw, ST_EXEC);
}

static void exec_failure_message(struct session *s, struct exec_fail *f, char *out, size_t n,
                                 const char *cwd) {
    const char *e = strerror(f->err);
    switch (f->stage) {
    case ST_EXEC:
        if (f->err == ENOENT && !strchr(s->cmd, '/'))
            snprintf(out, n, "exec: \"%s\": executable file not found in $PATH", s->cmd);
        else
            snprintf(out, n, "exec: \"%s\": %s", s->cmd, e);
        break;
    case ST_CHDIR:
        snprintf(out, n, "chdir to cwd (\"%s\") failed: %s", cwd, e);
        break;
    case ST_CHROOT: snprintf(out, n, "chroot to %s failed: %s", rootfs_dir, e); break;
    case ST_GROUPS: snprintf(out, n, "setgroups failed: %s", e); break;
    case ST_GID: snprintf(out, n, "setgid failed: %s", e); break;
    case ST_UID: snprintf(out, n, "setuid failed: %s", e); break;
    case ST_NOUSER:
        snprintf(out, n, "unable to find user %s: no matching entries in passwd file",
                 s->user ? s->user : "?");
        break;
    case ST_NOGROUP:
        snprintf(out, n, "unable to find group %s: no matching entries in group file",
                 s->user && strchr(s->user, ':') ? strchr(s->user, ':') + 1 : "?");
        break;
    default: snprintf(out, n, "setting up the stdio/terminal failed: %s", e); break;
    }
}

static struct session *session_new(struct port *p, uint32_t id) {
    struct session *s = xrealloc(NULL, sizeof *s);
    memset(s, 0, sizeof *s);
    s->port = p;
    s->gen = p->gen;
    s->id = id;
    s->attached = true;
    s->exec_fd = s->in_fd = s->out_fd = s->err_fd = -1;
    s->next = sessions;
    sessions = s;
    return s;
}

static void session_free(struct session *s) {
    for (struct session **pp = &sessions; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    close_fd(&s->exec_fd);
    close_fd(&s->in_fd);
    close_fd(&s->out_fd);
    close_fd(&s->err_fd);
    buf_clear(&s->in);
    free(s->cmd);
    free(s->cwd);
    free(s->user);
    free(s);
}

/* The engine's /etc/hosts, resolv.conf, hostname: written into the root before the workload.
   A symlink in the image's place is replaced (the guest is its own sandbox: following it
   could only touch the guest). */
static void add_rootfs_mount(const char *path);
#define MAX_SHARES 64

/* The host directories shared with virtio-9p (`-v` for a VM), mounted in the workload's root. */
/* Paths of the image resolve inside the workload's root (an absolute symlink such as
   /var/run -> /run stays in it): chroot into it for the lookup, then come back through an fd
   of the agent's own root. The agent is single-threaded, so nothing else sees the switch. */
static int enter_root(void) {
    int old = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (old < 0) return -1;
    if (chroot(rootfs_dir) < 0 || chdir("/") < 0) {
        int e = errno;
        close(old);
        errno = e;
        return -1;
    }
    return old;
}

static void leave_root(int old) {
    if (fchdir(old) < 0 || chroot(".") < 0 || chdir("/") < 0) die("cannot return to the agent's root");
    close(old);
}

static bool mount_shares(struct strv *m, char *why, size_t n) {
    if (!rootfs_dir) {
        snprintf(why, n, "EXEC: mounts: no root filesystem to mount them in");
        return false;
    }
    int held[MAX_SHARES], nheld = 0;
    int old = enter_root();
    if (old < 0) {
        snprintf(why, n, "EXEC: mounts: entering the root: %s", strerror(errno));
        return false;
    }
    bool ok = true;
    for (size_t i = 0; ok && i < m->n && nheld < MAX_SHARES; i += 3) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s", m->v[i + 1]);
        for (char *c = path + 1; *c; c++) {
            if (*c != '/') continue;
            *c = 0;
            mkdir(path, 0755);
            *c = '/';
        }
        mkdir(path, 0755);
        unsigned long fl = strcmp(m->v[i + 2], "ro") ? 0 : MS_RDONLY;
        if (mount(m->v[i], path, "9p", fl,
                  "trans=virtio,version=9p2000.L,msize=524288,access=client") < 0) {
            snprintf(why, n, "EXEC: mounts: 9p %s on %s: %s", m->v[i], m->v[i + 1],
                     strerror(errno));
            ok = false;
        } else {
            held[nheld++] = open(path, O_PATH | O_CLOEXEC);
        }
    }
    leave_root(old);
    for (int k = 0; k < nheld; k++) { /* the mount points as the agent sees them */
        char link[64], real[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", held[k]);
        ssize_t len = held[k] >= 0 ? readlink(link, real, sizeof real - 1) : -1;
        if (len > 0) {
            real[len] = 0;
            add_rootfs_mount(real);
        }
        if (held[k] >= 0) close(held[k]);
    }
    return ok;
}

static bool write_files(struct strv *f, char *why, size_t n) {
    if (!rootfs_dir) {
        snprintf(why, n, "EXEC: files: no root filesystem to write them into");
        return false;
    }
    int old = enter_root();
    if (old < 0) {
        snprintf(why, n, "EXEC: files: entering the root: %s", strerror(errno));
        return false;
    }
    bool all = true;
    for (size_t i = 0; all && i < f->n; i += 2) {
        const char *path = f->v[i];
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) unlink(path);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
        size_t len = strlen(f->v[i + 1]);
        bool ok = fd >= 0;
        for (size_t off = 0; ok && off < len;) {
            ssize_t w = write(fd, f->v[i + 1] + off, len - off);
            if (w < 0 && errno == EINTR) continue;
            ok = w > 0;
            if (ok) off += (size_t)w;
        }
        int err = errno;
        if (fd >= 0) close(fd);
        if (!ok) {
            snprintf(why, n, "EXEC: files: writing %s: %s", path, strerror(err));
            all = false;
        }
    }
    leave_root(old);
    return all;
}

/* By ioctl, not /sys/class/net: sysfs shows the netns of whoever mounted it. */
static bool find_iface(int s, const char *mac, char *name, size_t n) {
    struct if_nameindex *all = if_nameindex();
    bool found = false;
    for (struct if_nameindex *i = all; i && i->if_index && !found; i++) {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", i->if_name);
        if (!mac) {
            found = !strcmp(i->if_name, "eth0");
        } else if (ioctl(s, SIOCGIFHWADDR, &ifr) == 0) {
            const unsigned char *h = (const unsigned char *)ifr.ifr_hwaddr.sa_data;
            char addr[24];
            snprintf(addr, sizeof addr, "%02x:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3],
                     h[4], h[5]);
            found = !strcasecmp(addr, mac);
        }
        if (found) snprintf(name, n, "%s", i->if_name);
    }
    if (all) if_freenameindex(all);
    return found;
}

static bool set_up(int s, const char *ifname) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) return false;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
}

/* The guest NIC: the one with the given MAC (else eth0) gets the address, MTU and default
   route the engine gave the container's eth0; lo comes up too. Idempotent. */
static bool configure_net(struct net_req *nr, char *why, size_t n) {
    if (!pid1 && !allow_net) {
        snprintf(why, n, "EXEC: net: refused in test mode without --allow-net");
        return false;
    }
    char ifname[IFNAMSIZ] = "?", addr[64];
    snprintf(addr, sizeof addr, "%s", nr->address);
    char *slash = strchr(addr, '/');
    long prefix = slash ? strtol(slash + 1, NULL, 10) : 32;
    if (slash) *slash = 0;
    struct in_addr ip, gw = {0};
    if (inet_pton(AF_INET, addr, &ip) != 1 || prefix < 0 || prefix > 32 ||
        (nr->gateway && nr->gateway[0] && inet_pton(AF_INET, nr->gateway, &gw) != 1)) {
        snprintf(why, n, "EXEC: net: bad address %s or gateway", nr->address);
        return false;
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const char *step = "socket";
    if (s < 0) goto fail;
    if (!find_iface(s, nr->mac, ifname, sizeof ifname)) {
        snprintf(why, n, "EXEC: net: no network interface with MAC %s",
                 nr->mac ? nr->mac : "(none) named eth0");
        close(s);
        return false;
    }
    step = "lo up";
    if (!set_up(s, "lo")) goto fail;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    step = "set mtu";
    ifr.ifr_mtu = (int)nr->mtu;
    if (nr->mtu && ioctl(s, SIOCSIFMTU, &ifr) < 0) goto fail;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    memset(sin, 0, sizeof *sin);
    sin->sin_family = AF_INET;
    sin->sin_addr = ip;
    step = "set address";
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0) goto fail;
    sin->sin_addr.s_addr = prefix ? htonl(0xFFFFFFFFu << (32 - prefix)) : 0;
    step = "set netmask";
    if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) goto fail;
    step = "link up";
    if (!set_up(s, ifname)) goto fail;
    if (gw.s_addr) {
        struct rtentry rt;
        memset(&rt, 0, sizeof rt);
        ((struct sockaddr_in *)&rt.rt_dst)->sin_family = AF_INET;
        ((struct sockaddr_in *)&rt.rt_genmask)->sin_family = AF_INET;
        struct sockaddr_in *g = (struct sockaddr_in *)&rt.rt_gateway;
        g->sin_family = AF_INET;
        g->sin_addr = gw;
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        rt.rt_dev = ifname;
        step = "add default route";
        if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST) goto fail;
    }
    close(s);
    return true;
fail:
    snprintf(why, n, "EXEC: net: %s on %s: %s", step, ifname, strerror(errno));
    if (s >= 0) close(s);
    return false;
}

static void on_signal(int sig);

/* ---- system VMs (isobox vm …): the disk's own init as PID 1 -------------------------------- */

#ifndef EXT4_IOC_RESIZE_FS
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)
#endif

static bool system_mode; /* isobox.system=1: the main EXEC boots the disk's init */

/* Grow the root ext4 to its disk (the host grew the overlay to --disk-size): online resize,
   no e2fsprogs needed. The block count comes from the superblock (statfs hides overhead). */
static void grow_rootfs(void) {
    if (root_state != ROOT_OK) return;
    unsigned char sb[1024];
    uint64_t bytes = 0;
    int dev = open("/dev/vda", O_RDONLY | O_CLOEXEC);
    if (dev < 0) return;
    bool ok = ioctl(dev, BLKGETSIZE64, &bytes) == 0 && pread(dev, sb, sizeof sb, 1024) == 1024;
    close(dev);
    if (!ok || sb[0x38] != 0x53 || sb[0x39] != 0xEF) return; /* ext magic */
    uint32_t lo, hi = 0, log_bs, incompat;
    memcpy(&lo, sb + 4, 4);
    memcpy(&log_bs, sb + 24, 4);
    memcpy(&incompat, sb + 0x60, 4);
    if (incompat & 0x80) memcpy(&hi, sb + 0x150, 4); /* 64bit */
    uint64_t bs = 1024ull << log_bs, have = ((uint64_t)hi << 32) | lo, want = bytes / bs;
    if (want <= have) return;
    int fd = open(ROOTFS, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ioctl(fd, EXT4_IOC_RESIZE_FS, &want) < 0)
        logmsg("grow root filesystem to %llu blocks: %s", (unsigned long long)want,
               strerror(errno));
    if (fd >= 0) close(fd);
}

/* The main EXEC of a system VM: the disk becomes / (as switch_root, keeping the initramfs,
   which the agent still stands on in memory) and PID 1 execs the disk's init; a forked child
   carries on as the agent, its root the new one, so later EXECs run in the booted system. */
static void boot_system(struct port *p, uint32_t id, struct exec_req *r) {
    if (!pid1 || root_state != ROOT_OK) {
        send_error(p, id, "EXEC: a system boot needs the agent as PID 1 and a root disk");
        exec_req_free(r);
        return;
    }
    sync();
    if (chdir(ROOTFS) < 0 || mount(ROOTFS, "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
        chdir("/") < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "EXEC: switch to the root disk: %s", strerror(errno));
        send_error(p, id, msg);
        exec_req_free(r);
        return;
    }
    n_rootfs_mounts = 0; /* they moved with the root: init owns them now */
    rootfs_dir = "/";
    pid_t pid = fork();
    if (pid != 0) { /* PID 1 (or a failed fork): become init */
        sigset_t none;
        sigemptyset(&none);
        for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setsid();
        execve(r->args.v[0], r->args.v, r->env.v);
        logmsg("exec %s: %s; trying /sbin/init", r->args.v[0], strerror(errno));
        char *argv[] = {"/sbin/init", NULL};
        execve(argv[0], argv, r->env.v);
        die("exec /sbin/init");
    }
    pid1 = false;
    main_used = true;
    /* SIGIO and SIGTERM (systemd's final kill) now reach this process */
    for (int i = 0; i < nports; i++)
        if (ports[i].fd >= 0) fcntl(ports[i].fd, F_SETOWN, getpid());
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    prctl(PR_SET_NAME, "isobox-agent");
    send_int(p, F_STARTED, id, "pid", 1);
    exec_req_free(r);
}

static void handle_exec(struct port *p, uint32_t id, const char *d, size_t n) {
    struct exec_req r;
    memset(&r, 0, sizeof r);
    const char *bad = exec_req_parse(&r, d, n);
    if (!bad && id == 0 && !r.main) bad = "EXEC: session 0 is reserved for the main process";
    if (!bad && r.main && main_used) bad = "EXEC: the main process was started already";
    if (!bad && find_session(p, id)) bad = "EXEC: session id already in use";
    if (!bad && r.main && ((stdio_fd < 0 && stdout_port_fd < 0) ||
                           (!r.terminal && stderr_fd < 0)))
        bad = "EXEC: main=true needs the isobox.stdio and isobox.stderr ports";
    if (!bad && root_state == ROOT_FAILED) bad = root_error;
    char why[512];
    if (!bad && r.files.n && !write_files(&r.files, why, sizeof why)) bad = why;
    if (!bad && r.mounts.n && !mount_shares(&r.mounts, why, sizeof why)) bad = why;
    if (!bad && r.has_net && !configure_net(&r.net, why, sizeof why)) bad = why;
    if (bad) {
        send_error(p, id, bad);
        exec_req_free(&r);
        return;
    }
    if (!r.args.n) { /* the host refreshed /etc/hosts & co.: done, nothing to run */
        send_int(p, F_STARTED, id, "pid", 0);
        send_int(p, F_EXIT, id, "code", 0);
        exec_req_free(&r);
        return;
    }
    if (r.main && system_mode) { /* system VM: the disk's init becomes PID 1 */
        boot_system(p, id, &r);
        return;
    }
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1}, pst[2] = {-1, -1};
    int master = -1, slave = -1;
    if (pipe2(pst, O_CLOEXEC) < 0) goto sys_fail;
    if (r.terminal) {
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        char name[64];
        if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0 ||
            ptsname_r(master, name, sizeof name) != 0)
            goto sys_fail;
        slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0) goto sys_fail;
        if (r.rows && r.cols) {
            struct winsize ws = {.ws_row = (unsigned short)r.rows,
                                 .ws_col = (unsigned short)r.cols};
            ioctl(master, TIOCSWINSZ, &ws);
        }
    } else if (!r.main) {
        if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 ||
            pipe2(perr, O_CLOEXEC) < 0)
            goto sys_fail;
        fcntl(pout[0], F_SETPIPE_SZ, 256 * 1024);
        fcntl(perr[0], F_SETPIPE_SZ, 256 * 1024);
    }
    int fin = r.main ? stdio_fd : pin[0], fout = r.main ? stdio_fd : pout[1];
    if (r.main && !r.terminal) {
        if (stdin_port_fd >= 0) fin = stdin_port_fd;
        if (stdout_port_fd >= 0) fout = stdout_port_fd;
    }
    int ferr = r.main ? stderr_fd : perr[1];
    pid_t pid = fork();
    if (pid < 0) goto sys_fail;
    if (pid == 0) {
        close(pst[0]);
        child_run(&r, fin, fout, ferr, slave, pst[1]);
    }
    struct session *s = session_new(p, id);
    s->pid = pid;
    s->main = r.main;
    s->terminal = r.terminal;
    s->cmd = strdup(r.args.v[0]);
    if (!s->cmd) die("out of memory");
    s->exec_fd = pst[0];
    set_nonblock(s->exec_fd);
    close(pst[1]);
    if (r.terminal) {
        close(slave);
        set_nonblock(master);
        s->out_fd = master;
        s->in_fd = fcntl(master, F_DUPFD_CLOEXEC, 3);
        if (r.main) set_nonblock(stdio_fd);
    } else if (!r.main) {
        close(pin[0]);
        close(pout[1]);
        close(perr[1]);
        s->in_fd = pin[1];
        s->out_fd = pout[0];
        s->err_fd = perr[0];
        set_nonblock(s->in_fd);
        set_nonblock(s->out_fd);
        set_nonblock(s->err_fd);
        if (r.stdin_closed) s->in_eof = true;
    }
    if (r.main) main_used = true;
    s->cwd = r.cwd;
    r.cwd = NULL;
    s->user = r.user;
    r.user = NULL;
    exec_req_free(&r);
    return;
sys_fail: {
        char msg[256];
        snprintf(msg, sizeof msg, "EXEC: cannot start the process: %s", strerror(errno));
        int fds[] = {pin[0], pin[1], pout[0], pout[1], perr[0], perr[1], pst[0], pst[1],
                     master, slave};
        for (size_t i = 0; i < sizeof fds / sizeof *fds; i++)
            if (fds[i] >= 0) close(fds[i]);
        send_error(p, id, msg);
        exec_req_free(&r);
    }
}

/* The exec status pipe is readable: EOF means execve succeeded. */
static void exec_status(struct session *s) {
    struct exec_fail f;
    ssize_t n;
    do n = read(s->exec_fd, &f, sizeof f);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) return;
    close_fd(&s->exec_fd);
    if (n == (ssize_t)sizeof f) {
        char msg[1024];
        exec_failure_message(s, &f, msg, sizeof msg, s->cwd ? s->cwd : "/");
        if (sess_live(s)) send_error_code(s->port, s->id, msg, fail_code(&f));
        else logmsg("%s", msg);
        if (s->main && stderr_fd >= 0 && !sess_live(s)) {
            char line[1100];
            int l = snprintf(line, sizeof line, "isobox-agent: %s\n", msg);
            write_all_deadline(stderr_fd, line, (size_t)l, 1000);
        }
        return;
    }
    s->started = true;
    char tmp[48];
    int l = snprintf(tmp, sizeof tmp, "{\"pid\":%d}", (int)s->pid);
    sess_send(s, F_STARTED, tmp, (size_t)l);
}

/* ---- frames from the host ------------------------------------------------------------------ */

static void handle_frame(struct port *p, uint8_t type, uint32_t id, char *d, size_t n) {
    struct session *s;
    switch (type) {
    case F_EXEC: handle_exec(p, id, d, n); break;
    case F_STDIN:
        s = find_session(p, id);
        if (s && s->in_fd >= 0 && !s->in_eof) buf_append(&s->in, d, n);
        break;
    case F_STDIN_EOF:
        s = find_session(p, id);
        if (s && !s->terminal) s->in_eof = true;
        break;
    case F_SIGNAL: {
        struct sig_req q = {0, 0, "signal", NULL};
        struct jp j = {d, d + n, false};
        jobject(&j, pair_field, &q);
        s = find_session(p, id);
        if (j.err || q.a <= 0 || q.a >= NSIG) send_error(p, id, "SIGNAL: bad signal number");
        else if (s && s->pid > 0 && !s->reaped) kill(s->pid, (int)q.a);
        else if (system_mode && !pid1 && id == 0) /* system VM: to the guest's init; */
            kill(1, q.a == SIGTERM ? SYSTEMD_POWEROFF : (int)q.a);
        break;
    }
    case F_RESIZE: {
        struct sig_req q = {0, 0, "rows", "cols"};
        struct jp j = {d, d + n, false};
        jobject(&j, pair_field, &q);
        s = find_session(p, id);
        if (j.err || q.a < 0 || q.a > 65535 || q.b < 0 || q.b > 65535) {
            send_error(p, id, "RESIZE: bad rows/cols");
        } else if (s && s->terminal && s->out_fd >= 0) {
            struct winsize ws = {.ws_row = (unsigned short)q.a, .ws_col = (unsigned short)q.b};
            ioctl(s->out_fd, TIOCSWINSZ, &ws);
        }
        break;
    }
    case F_PING: {
        char tmp[32];
        int l = snprintf(tmp, sizeof tmp, "{\"version\":%d}", PROTO_VERSION);
        send_frame(p, F_PONG, id, tmp, (size_t)l);
        break;
    }
    default: {
        char msg[64];
        snprintf(msg, sizeof msg, "unknown frame type %u", type);
        send_error(p, id, msg);
    }
    }
}

static void port_feed(struct port *p, const unsigned char *d, size_t n) {
    while (n) {
        if (p->hlen < sizeof p->hdr) {
            size_t k = sizeof p->hdr - p->hlen;
            if (k > n) k = n;
            memcpy(p->hdr + p->hlen, d, k);
            p->hlen += k;
            d += k;
            n -= k;
            if (p->hlen < sizeof p->hdr) return;
            p->ftype = p->hdr[0];
            p->fsess = (uint32_t)p->hdr[1] << 24 | (uint32_t)p->hdr[2] << 16 |
                       (uint32_t)p->hdr[3] << 8 | p->hdr[4];
            p->flen = (uint32_t)p->hdr[5] << 24 | (uint32_t)p->hdr[6] << 16 |
                      (uint32_t)p->hdr[7] << 8 | p->hdr[8];
            p->fgot = 0;
            p->skip = p->flen > MAX_FRAME;
            if (p->skip) {
                send_error(p, p->fsess, "frame larger than 1 MiB discarded");
            } else {
                p->payload = xrealloc(NULL, p->flen + 1);
            }
        }
        size_t k = p->flen - p->fgot;
        if (k > n) k = n;
        if (!p->skip) memcpy(p->payload + p->fgot, d, k);
        p->fgot += (uint32_t)k;
        d += k;
        n -= k;
        if (p->fgot == p->flen) {
            unsigned gen = p->gen;
            if (!p->skip) {
                p->payload[p->flen] = 0;
                char *pl = p->payload;
                p->payload = NULL;
                handle_frame(p, p->ftype, p->fsess, pl, p->flen);
                free(pl);
            }
            p->hlen = 0;
            p->skip = false;
            if (p->gen != gen) return;
        }
    }
}

static void port_read(struct port *p) {
    static unsigned char tmp[READ_CHUNK];
    ssize_t n = read(p->fd, tmp, sizeof tmp);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
        port_down(p);
        return;
    }
    port_feed(p, tmp, (size_t)n);
}

/* ---- session output ------------------------------------------------------------------------ */

static bool can_take_output(struct session *s) {
    if (s->main) return s->terminal ? stdio_out.len < OUT_HIGH : true;
    return sess_live(s) ? s->port->out.len < OUT_HIGH : true;
}

/* Read one chunk from *fd; false at EOF (fd closed) or when nothing is there. */
static bool read_output(struct session *s, int *fd, uint8_t type) {
    static char tmp[READ_CHUNK];
    ssize_t n;
    do n = read(*fd, tmp, sizeof tmp);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) return false;
    if (n <= 0) { /* EOF, or EIO on a pty master whose slave is closed everywhere */
        if (s->terminal && fd == &s->out_fd) {
            close_fd(&s->in_fd);
            buf_clear(&s->in);
        }
        close_fd(fd);
        return false;
    }
    if (s->main) buf_append(&stdio_out, tmp, (size_t)n);
    else sess_send(s, type, tmp, (size_t)n);
    return true;
}

static void reap_children(void) {
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (struct session *s = sessions; s; s = s->next) {
            if (s->pid != pid || s->reaped) continue;
            s->reaped = true;
            s->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            s->reap_ms = now_ms();
            break;
        }
    }
}

static void finish_main(int code);

/* Sessions whose process is reaped and output drained: EXIT, then forget them. */
static void check_sessions(void) {
    struct session *s = sessions, *next;
    for (; s; s = next) {
        next = s->next;
        if (!s->reaped || s->exec_fd >= 0) continue;
        if (s->out_fd >= 0 || s->err_fd >= 0) {
            if (now_ms() - s->reap_ms < DRAIN_GRACE_MS || !can_take_output(s)) continue;
            /* a background process keeps the output open: take what is there and stop */
            for (int i = 0; i < 16 && s->out_fd >= 0 && read_output(s, &s->out_fd, F_STDOUT);)
                i++;
            for (int i = 0; i < 16 && s->err_fd >= 0 && read_output(s, &s->err_fd, F_STDERR);)
                i++;
            close_fd(&s->out_fd);
            close_fd(&s->err_fd);
        }
        if (sess_live(s)) send_int(s->port, F_EXIT, s->id, "code", s->code);
        if (s->main) {
            int code = s->code;
            s->exit_sent = true;
            session_free(s);
            finish_main(code);
            return;
        }
        session_free(s);
    }
}

/* ---- shutdown ------------------------------------------------------------------------------ */

static void flush_outputs(int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        struct pollfd pf[MAX_PORTS + 1];
        int n = 0;
        for (int i = 0; i < nports; i++) {
            struct port *p = &ports[i];
            if (!p->up || !p->out.len) continue;
            if (buf_flush(p->fd, &p->out) < 0) {
                buf_clear(&p->out);
                continue;
            }
            if (p->out.len) pf[n++] = (struct pollfd){.fd = p->fd, .events = POLLOUT};
        }
        if (stdio_out.len && stdio_fd >= 0) {
            if (buf_flush(stdio_fd, &stdio_out) < 0) buf_clear(&stdio_out);
            if (stdio_out.len) pf[n++] = (struct pollfd){.fd = stdio_fd, .events = POLLOUT};
        }
        int64_t left = end - now_ms();
        if (!n || left <= 0) return;
        poll(pf, (nfds_t)n, (int)left);
    }
}

static void reap_all_until(int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r < 0 && errno == ECHILD) return;
        if (r > 0) continue;
        if (now_ms() >= end) return;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Test mode: signal every child of the agent (a subreaper, so orphans of finished
   sessions are its children too) and their process groups; the number signalled. */
static int kill_children(int sig) {
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int n = 0;
    pid_t self = getpid();
    struct dirent *de;
    while ((de = readdir(d))) {
        pid_t pid = (pid_t)atoi(de->d_name);
        if (pid <= 0) continue;
        char path[64], st[512];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t k = read(fd, st, sizeof st - 1);
        close(fd);
        if (k <= 0) continue;
        st[k] = 0;
        char *rp = strrchr(st, ')'), state;
        int ppid, pgid;
        if (!rp || sscanf(rp + 1, " %c %d %d", &state, &ppid, &pgid) != 3) continue;
        if (ppid != self || state == 'Z') continue;
        if (pgid == pid) kill(-pgid, sig);
        kill(pid, sig);
        n++;
    }
    closedir(d);
    return n;
}

static void umount_rootfs(void) {
    for (size_t i = n_rootfs_mounts; i-- > 0;) {
        if (umount2(rootfs_mounts[i], 0) < 0) umount2(rootfs_mounts[i], MNT_DETACH);
    }
    if (root_state == ROOT_OK && umount2(ROOTFS, 0) < 0) {
        logmsg("umount %s: %s (remounting read-only)", ROOTFS, strerror(errno));
        mount(NULL, ROOTFS, NULL, MS_REMOUNT | MS_RDONLY, NULL);
    }
}

static void terminate(void) {
    if (pid1) {
        if (kill(-1, SIGTERM) == 0) reap_all_until(1000);
        kill(-1, SIGKILL);
        reap_all_until(2000);
        sync();
        umount_rootfs();
        sync();
        reboot(RB_POWER_OFF);
        die("reboot");
    }
    reap_children();
    if (kill_children(SIGTERM)) reap_all_until(500);
    for (int i = 0; i < 20 && kill_children(SIGKILL); i++) reap_all_until(100);
    reap_all_until(0);
    exit(0);
}

static void finish_main(int code) {
    if (status_fd >= 0) {
        char line[32];
        int l = snprintf(line, sizeof line, "exit=%d\n", code);
        write_all_deadline(status_fd, line, (size_t)l, 2000);
        fsync(status_fd);
    }
    flush_outputs(1000);
    terminate();
}

/* ---- the loop ------------------------------------------------------------------------------ */

enum ent_kind { E_PORT, E_LISTEN, E_STDIO, E_EXEC, E_IN, E_OUT, E_ERR };

struct ent {
    int kind;
    struct port *p;
    struct session *s;
};

static struct session *main_terminal(void) {
    for (struct session *s = sessions; s; s = s->next)
        if (s->main && s->terminal && s->started) return s;
    return NULL;
}

static void serve(void) {
    sigset_t unblocked;
    sigprocmask(SIG_SETMASK, NULL, &unblocked);
    sigdelset(&unblocked, SIGCHLD);
    sigdelset(&unblocked, SIGIO);
    sigdelset(&unblocked, SIGTERM);
    sigdelset(&unblocked, SIGINT);
    struct pollfd *pf = NULL;
    struct ent *en = NULL;
    size_t cap = 0;
    for (;;) {
        if (got_chld) {
            got_chld = 0;
            reap_children();
        }
        if (got_term && !pid1) {
            flush_outputs(200);
            terminate();
        }
        check_sessions();
        size_t need = (size_t)nports + 1;
        for (struct session *s = sessions; s; s = s->next) need += 4;
        if (need > cap) {
            cap = need * 2;
            pf = xrealloc(pf, cap * sizeof *pf);
            en = xrealloc(en, cap * sizeof *en);
        }
        size_t n = 0;
        int timeout = -1;
#define ADD(fd_, ev_, kind_, p_, s_)                                                         \
    do {                                                                                       \
        pf[n] = (struct pollfd){.fd = (fd_), .events = (short)(ev_)};                        \
        en[n++] = (struct ent){(kind_), (p_), (s_)};                                           \
    } while (0)
        for (int i = 0; i < nports; i++) {
            struct port *p = &ports[i];
            if (p->up && p->out.len && buf_flush(p->fd, &p->out) < 0) port_down(p);
            if (p->kind == PK_LISTEN) {
                if (p->up) ADD(p->fd, (port_paused(p) ? 0 : POLLIN) | (p->out.len ? POLLOUT : 0),
                               E_PORT, p, NULL);
                else ADD(p->lfd, POLLIN, E_LISTEN, p, NULL);
            } else if (p->up) {
                ADD(p->fd, (port_paused(p) ? 0 : POLLIN) | (p->out.len ? POLLOUT : 0), E_PORT,
                    p, NULL);
            } else {
                /* a virtio port reports POLLHUP while no host is connected: check it again
                   on SIGIO (the driver signals connection changes) or every 200 ms */
                struct pollfd t = {.fd = p->fd, .events = POLLIN};
                if (poll(&t, 1, 0) >= 0 && !(t.revents & (POLLHUP | POLLERR))) {
                    port_up(p);
                    ADD(p->fd, POLLIN, E_PORT, p, NULL);
                } else {
                    timeout = 200;
                }
            }
        }
        struct session *mt = main_terminal();
        if (stdio_out.len && buf_flush(stdio_fd, &stdio_out) < 0) buf_clear(&stdio_out);
        if (mt || stdio_out.len) {
            short ev = (short)((mt && stdio_in_open && mt->in.len < STDIN_HIGH ? POLLIN : 0) |
                               (stdio_out.len ? POLLOUT : 0));
            if (ev) ADD(stdio_fd, ev, E_STDIO, NULL, mt);
        }
        int64_t now = now_ms();
        for (struct session *s = sessions; s; s = s->next) {
            if (s->exec_fd >= 0) {
                ADD(s->exec_fd, POLLIN, E_EXEC, NULL, s);
                continue;
            }
            if (s->in_fd >= 0 && s->in.len && buf_flush(s->in_fd, &s->in) < 0) {
                close_fd(&s->in_fd);
                buf_clear(&s->in);
            }
            if (s->in_fd >= 0 && s->in_eof && !s->in.len) close_fd(&s->in_fd);
            if (s->in_fd >= 0 && s->in.len) ADD(s->in_fd, POLLOUT, E_IN, NULL, s);
            bool take = can_take_output(s);
            if (s->out_fd >= 0 && take) ADD(s->out_fd, POLLIN, E_OUT, NULL, s);
            if (s->err_fd >= 0 && take) ADD(s->err_fd, POLLIN, E_ERR, NULL, s);
            if (s->reaped && (s->out_fd >= 0 || s->err_fd >= 0)) {
                int64_t left = s->reap_ms + DRAIN_GRACE_MS - now;
                int t = left < 1 ? 1 : (int)left;
                if (timeout < 0 || t < timeout) timeout = t;
            }
        }
#undef ADD
        struct timespec ts = {timeout / 1000, (long)(timeout % 1000) * 1000000};
        int r = ppoll(pf, (nfds_t)n, timeout < 0 ? NULL : &ts, &unblocked);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("ppoll");
        }
        for (size_t i = 0; i < n; i++) {
            short ev = pf[i].revents;
            if (!ev) continue;
            struct ent *e = &en[i];
            switch (e->kind) {
            case E_LISTEN: {
                int c = accept4(e->p->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (c >= 0) {
                    e->p->fd = c;
                    port_up(e->p);
                }
                break;
            }
            case E_PORT:
                if (!e->p->up || e->p->fd != pf[i].fd) break;
                if (ev & POLLOUT && buf_flush(e->p->fd, &e->p->out) < 0) {
                    port_down(e->p);
                    break;
                }
                if (ev & POLLIN) port_read(e->p);
                else if (ev & (POLLHUP | POLLERR)) port_down(e->p);
                break;
            case E_STDIO:
                if (ev & POLLOUT && buf_flush(stdio_fd, &stdio_out) < 0) buf_clear(&stdio_out);
                if (e->s && ev & (POLLIN | POLLHUP | POLLERR)) {
                    static char tmp[READ_CHUNK];
                    ssize_t k = read(stdio_fd, tmp, sizeof tmp);
                    if (k > 0 && e->s->in_fd >= 0) buf_append(&e->s->in, tmp, (size_t)k);
                    else if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
                        stdio_in_open = false;
                }
                break;
            case E_EXEC: exec_status(e->s); break;
            case E_IN:
                if (e->s->in_fd >= 0 && buf_flush(e->s->in_fd, &e->s->in) < 0) {
                    close_fd(&e->s->in_fd);
                    buf_clear(&e->s->in);
                }
                break;
            case E_OUT:
                if (e->s->out_fd >= 0) read_output(e->s, &e->s->out_fd, F_STDOUT);
                break;
            case E_ERR:
                if (e->s->err_fd >= 0) read_output(e->s, &e->s->err_fd, F_STDERR);
                break;
            }
        }
    }
}

/* ---- boot (PID 1) -------------------------------------------------------------------------- */

static void try_mount(const char *src, const char *dst, const char *type, unsigned long fl,
                      const char *data) {
    mkdir(dst, 0755);
    if (mount(src, dst, type, fl, data) < 0)
        logmsg("mount %s on %s: %s", type ? type : src, dst, strerror(errno));
}

static void keep_std_fds(void) {
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0) continue;
        int c = open("/dev/console", O_RDWR | O_NOCTTY);
        if (c < 0) c = open("/dev/null", O_RDWR);
        if (c >= 0 && c != fd) {
            dup2(c, fd);
            close(c);
        }
    }
}

static void load_modules_from(const char *list) {
    FILE *f = fopen(list, "re");
    if (!f) return;
    char line[PATH_MAX];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        int fd = open(line, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) < 0) {
            if (errno != EEXIST) logmsg("load module %s: %s", line, strerror(errno));
        }
        if (fd >= 0) close(fd);
    }
    fclose(f);
}

static char *cmdline_value(const char *key);

/* /modules at every boot; /modules.<group> for the devices this VM has (isobox.modules=…) */
static void load_modules(void) {
    load_modules_from("/modules");
    char *groups = cmdline_value("isobox.modules");
    for (char *g = groups ? strtok(groups, ",") : NULL; g; g = strtok(NULL, ",")) {
        if (strchr(g, '/') || strstr(g, "..")) continue;
        char list[128];
        snprintf(list, sizeof list, "/modules.%s", g);
        load_modules_from(list);
    }
    free(groups);
}

static char *cmdline_value(const char *key) {
    static char cmd[4096];
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    ssize_t n = read(fd, cmd, sizeof cmd - 1);
    close(fd);
    if (n <= 0) return NULL;
    cmd[n] = 0;
    size_t kl = strlen(key);
    for (char *t = strtok(cmd, " \n"); t; t = strtok(NULL, " \n"))
        if (!strncmp(t, key, kl) && t[kl] == '=') return strdup(t + kl + 1);
    return NULL;
}

static void add_rootfs_mount(const char *path) {
    rootfs_mounts = xrealloc(rootfs_mounts, (n_rootfs_mounts + 1) * sizeof *rootfs_mounts);
    rootfs_mounts[n_rootfs_mounts++] = strdup(path);
}

static void rootfs_sub(const char *src, const char *rel, const char *type, unsigned long fl,
                       const char *data) {
    char dst[PATH_MAX];
    snprintf(dst, sizeof dst, "%s%s", ROOTFS, rel);
    mkdir(dst, 0755);
    if (mount(src, dst, type, fl, data) < 0) {
        logmsg("mount %s on %s: %s", src, dst, strerror(errno));
        return;
    }
    add_rootfs_mount(dst);
}

static void mount_rootfs(void) {
    struct stat st;
    if (stat("/sys/block/vda", &st) < 0) return;
    for (int i = 0; i < 200 && stat("/dev/vda", &st) < 0; i++) usleep(10000);
    mkdir(ROOTFS, 0755);
    if (mount("/dev/vda", ROOTFS, "ext4", 0, NULL) < 0) {
        snprintf(root_error, sizeof root_error, "root disk: mount /dev/vda (ext4) on %s: %s",
                 ROOTFS, strerror(errno));
        logmsg("%s", root_error);
        root_state = ROOT_FAILED;
        return;
    }
    root_state = ROOT_OK;
    rootfs_dir = ROOTFS;
    rootfs_sub("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    rootfs_sub("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    rootfs_sub("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    /* the agent's devpts instance, so the ptys it opens exist inside the chroot too */
    rootfs_sub("/dev/pts", "/dev/pts", NULL, MS_BIND, NULL);
    rootfs_sub("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
}

static void boot(void) {
    try_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    try_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    try_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    try_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "gid=5,mode=0620,ptmxmode=0666");
    keep_std_fds();
    load_modules();
    char *host = cmdline_value("isobox.hostname");
    if (host && sethostname(host, strlen(host)) < 0)
        logmsg("sethostname %s: %s", host, strerror(errno));
    free(host);
    mount_rootfs();
    char *sys = cmdline_value("isobox.system");
    system_mode = sys && !strcmp(sys, "1");
    free(sys);
    if (system_mode) grow_rootfs();
}

/* /dev node of the virtio port called `name` (NULL: not there yet). */
static char *find_vport(const char *name) {
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d) return NULL;
    struct dirent *de;
    char *found = NULL;
    while (!found && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[PATH_MAX], v[256];
        snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", de->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, v, sizeof v - 1);
        close(fd);
        if (n <= 0) continue;
        v[n] = 0;
        v[strcspn(v, "\n")] = 0;
        if (strcmp(v, name)) continue;
        snprintf(p, sizeof p, "/dev/%s", de->d_name);
        found = strdup(p);
    }
    closedir(d);
    return found;
}

static int open_vport(const char *name, int flags, int wait_ms) {
    int64_t end = now_ms() + wait_ms;
    for (;;) {
        char *path = find_vport(name);
        int fd = path ? open(path, flags | O_CLOEXEC | O_NOCTTY) : -1;
        free(path);
        if (fd >= 0 || now_ms() >= end) return fd;
        usleep(5000);
    }
}

static void open_guest_ports(void) {
    /* virtio-serial announces ports (and their names) asynchronously after module load */
    char *nctl = cmdline_value("isobox.ctl_ports");
    int want = nctl ? atoi(nctl) : 4;
    free(nctl);
    if (want < 1 || want > MAX_PORTS) want = 4;
    for (int i = 0; i < want; i++) {
        char name[32];
        snprintf(name, sizeof name, "isobox.ctl%d", i);
        int fd = open_vport(name, O_RDWR | O_NONBLOCK, i == 0 ? 10000 : 2000);
        if (fd < 0) {
            logmsg("port %s: not found", name);
            continue;
        }
        struct port *p = &ports[nports++];
        p->kind = PK_DEVICE;
        p->path = strdup(name);
        p->fd = fd;
        p->lfd = -1;
        p->up = true; /* the first poll says otherwise if no host is connected */
        fcntl(fd, F_SETOWN, getpid());
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC);
    }
    /* ports are announced in the host's order, the ctl ports last: no more waiting */
    stdin_port_fd = open_vport("isobox.stdin", O_RDONLY, 0);
    stdout_port_fd = open_vport("isobox.stdout", O_WRONLY, 0);
    stdio_fd = open_vport("isobox.stdio", O_RDWR, stdout_port_fd >= 0 ? 0 : 2000);
    stderr_fd = open_vport("isobox.stderr", O_RDWR, 2000);
    status_fd = open_vport("isobox.status", O_RDWR | O_NONBLOCK, 2000);
    if (!nports) logmsg("no control port found: nothing to serve");
}

/* ---- test mode ------------------------------------------------------------------------------ */

static int open_test_path(const char *path, int flags) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die(path);
        return fd;
    }
    int fd = open(path, flags | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0) die(path);
    return fd;
}

static void listen_port(const char *path) {
    if (nports >= MAX_PORTS) {
        errno = E2BIG;
        die("--ctl");
    }
    struct port *p = &ports[nports++];
    p->kind = PK_LISTEN;
    p->path = strdup(path);
    p->fd = -1;
    p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) {
        errno = ENAMETOOLONG;
        die(path);
    }
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(p->lfd, 4) < 0)
        die(path);
}

static void on_signal(int sig) {
    if (sig == SIGCHLD) got_chld = 1;
    else if (sig == SIGTERM || sig == SIGINT) got_term = 1;
}

int main(int argc, char **argv) {
    bool test = false;
    const char *sstdio = NULL, *sstderr = NULL, *sstatus = NULL;
    for (int i = 1; i < argc; i++) {
        bool more = i + 1 < argc;
        if (!strcmp(argv[i], "--test")) test = true;
        else if (!strcmp(argv[i], "--ctl") && more) listen_port(argv[++i]);
        else if (!strcmp(argv[i], "--stdio") && more) sstdio = argv[++i];
        else if (!strcmp(argv[i], "--stderr") && more) sstderr = argv[++i];
        else if (!strcmp(argv[i], "--status") && more) sstatus = argv[++i];
        else if (!strcmp(argv[i], "--rootfs") && more) rootfs_dir = argv[++i];
        else if (!strcmp(argv[i], "--allow-net")) allow_net = true;
        else if (getpid() != 1) {
            fprintf(stderr, "usage: %s --test --ctl PATH... [--stdio PATH] [--stderr PATH] "
                            "[--status PATH] [--rootfs DIR] [--allow-net]\n", argv[0]);
            return 2;
        }
    }
    pid1 = getpid() == 1 && !test;
    if (!pid1 && !test) {
        fprintf(stderr, "isobox-agent: not PID 1: run with --test\n");
        return 2;
    }
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGIO);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGIO, &sa, NULL);
    if (!pid1) {
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
    }
    signal(SIGPIPE, SIG_IGN);
    if (pid1) {
        boot();
        open_guest_ports();
    } else {
        keep_std_fds();
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        if (sstdio) stdio_fd = open_test_path(sstdio, O_RDWR | O_CREAT);
        if (sstderr) stderr_fd = open_test_path(sstderr, O_WRONLY | O_CREAT | O_APPEND);
        if (sstatus) status_fd = open_test_path(sstatus, O_WRONLY | O_CREAT | O_APPEND);
        if (!nports) {
            fprintf(stderr, "isobox-agent: --test needs at least one --ctl PATH\n");
            return 2;
        }
    }
    serve();
    return 0;
}
