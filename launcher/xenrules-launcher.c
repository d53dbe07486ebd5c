/* xenrules-launcher: /etc/xen/scripts/<name> for every script xenrules handles.
 *
 * The compiled twin of bin/xenrules-launcher (issue 10): libxl (or udev) runs
 * it exactly as it ran the bash script. If the warm helper (xenrules/helper.py)
 * listens, the event runs there with this process's fds 0/1/2, cwd, network
 * namespace, umask, argv and environment, and this process exits with the
 * event's status (or dies by its signal). Otherwise (no helper, refused, not a
 * root helper, no "ready" within XENRULES_HELPER_TIMEOUT s, default 10, or no
 * answer as long after the request while the event's token is still ours) it
 * execs the Python in-process path, xenrules-inprocess, with the same argv and
 * environment. libc only.
 *
 * The conversation, unix SOCK_SEQPACKET, each message marshal-encoded
 * (Python's marshal, the subset below; see xenrules/helper.py):
 *   helper -> launcher  ("ready",)
 *   launcher -> helper  (2, argv, env, umask) + fds 0, 1, 2, cwd, netns, token
 *   helper -> launcher  ("decline", why) | ("exit", wait status)
 * The token is a pipe holding one byte: whoever reads it runs the event.
 * Strings go as Python would decode them: UTF-8, each byte that is not part
 * of valid UTF-8 as the lone surrogate U+DC80..U+DCFF (surrogateescape).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef XENRULES_PYTHON
#define XENRULES_PYTHON "/usr/bin/python3"
#endif
#ifndef XENRULES_INPROCESS
#define XENRULES_INPROCESS "/usr/libexec/xenrules/xenrules-inprocess"
#endif
#define HELPER_SOCKET "/run/xenrules/helper.sock" /* XENRULES_HELPER_SOCKET="" turns it off */
#define PROTOCOL 2
#define NOT_SERVED (-1)   /* via_helper: run the event in-process */

extern char **environ;

/* xenrules/fallback.py never execs a file carrying this mark in its first
 * 4096 bytes as "the original": an ELF note lands on the first page. */
__attribute__((used, section(".note.xenrules"), aligned(4)))
static const struct { uint32_t namesz, descsz, type; char name[20]; } mark = {
    18, 0, 1, "xenrules-launcher"};

/* ---- the request: a growing buffer in marshal's format ---- */
struct buf { unsigned char *p; size_t len, cap; int failed; };

static void put(struct buf *b, const void *data, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_u32(struct buf *b, uint32_t v)   /* marshal: little endian */
{
    unsigned char le[4] = {v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >> 24};
    put(b, le, 4);
}

static void put_int(struct buf *b, int32_t v)
{
    put(b, "i", 1);
    put_u32(b, (uint32_t)v);
}

/* Length of the valid UTF-8 sequence at s (as Python's strict decoder sees
 * it: no overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_valid(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* A str (marshal 'u': UTF-8 with surrogatepass) of the bytes s[0..n). */
static void put_str(struct buf *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t size = 0, i, k;
    for (i = 0; i < n; i += k)      /* the encoded length first */
        size += (k = utf8_valid(s + i)) ? k : (k = 1, 3);
    if (size > INT32_MAX) {
        b->failed = 1;
        return;
    }
    put(b, "u", 1);
    put_u32(b, (uint32_t)size);
    for (i = 0; i < n; i += k) {
        if ((k = utf8_valid(s + i))) {
            put(b, s + i, k);
        } else {                    /* U+DC00 + byte, as 3 bytes of UTF-8 */
            unsigned cp = 0xdc00 + s[i];
            unsigned char e[3] = {0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)};
            put(b, e, 3);
            k = 1;
        }
    }
}

/* (PROTOCOL, argv, env, umask), env as Python's os.environ has it: entries
 * without "=" left out, a repeated name keeps its first place and last value
 * (marshal's dict loading does the same). */
static int request(struct buf *b, const char *argv0, int argc, char **argv, mode_t umask_)
{
    put(b, ")\4", 2);
    put_int(b, PROTOCOL);
    put(b, "[", 1);
    put_u32(b, (uint32_t)(argc > 0 ? argc : 1));
    put_str(b, argv0, strlen(argv0));
    for (int i = 1; i < argc; i++)
        put_str(b, argv[i], strlen(argv[i]));
    put(b, "{", 1);
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        put_str(b, *e, (size_t)(eq - *e));
        put_str(b, eq + 1, strlen(eq + 1));
    }
    put(b, "0", 1);                 /* TYPE_NULL ends a dict */
    put_int(b, (int32_t)umask_);
    return b->failed ? -1 : 0;
}

/* ---- the replies: a tuple whose first item is a short string ---- */

/* Reads a str at *p (any of marshal's string types), 1 if it equals want. */
static int str_is(const unsigned char **p, const unsigned char *end, const char *want)
{
    if (*p >= end)
        return -1;
    unsigned char type = **p & 0x7f;   /* 0x80: FLAG_REF, a back reference may follow */
    size_t n;
    (*p)++;
    if (type == 'z' || type == 'Z') {
        if (*p >= end)
            return -1;
        n = *(*p)++;
    } else if (type == 'a' || type == 'A' || type == 'u' || type == 't') {
        if (end - *p < 4)
            return -1;
        n = (size_t)(*p)[0] | (size_t)(*p)[1] << 8 | (size_t)(*p)[2] << 16 | (size_t)(*p)[3] << 24;
        *p += 4;
    } else {
        return -1;
    }
    if ((size_t)(end - *p) < n)
        return -1;
    int same = n == strlen(want) && memcmp(*p, want, n) == 0;
    *p += n;
    return same;
}

enum reply { R_OTHER, R_READY, R_DECLINE, R_EXIT };

static enum reply parse(const unsigned char *p, size_t len, int *status)
{
    const unsigned char *end = p + len;
    size_t items;
    if (len < 2)
        return R_OTHER;
    if ((p[0] & 0x7f) == ')') {
        items = p[1];
        p += 2;
    } else if ((p[0] & 0x7f) == '(' && len >= 5) {
        items = (size_t)p[1] | (size_t)p[2] << 8 | (size_t)p[3] << 16 | (size_t)p[4] << 24;
        p += 5;
    } else {
        return R_OTHER;
    }
    if (items == 0)
        return R_OTHER;
    const unsigned char *q = p;
    if (items == 1 && str_is(&q, end, "ready") == 1 && q == end)
        return R_READY;
    q = p;
    if (str_is(&q, end, "decline") == 1)
        return R_DECLINE;
    q = p;
    if (items >= 2 && str_is(&q, end, "exit") == 1 && end - q >= 5 && (q[0] & 0x7f) == 'i') {
        *status = (int)((uint32_t)q[1] | (uint32_t)q[2] << 8 | (uint32_t)q[3] << 16 |
                        (uint32_t)q[4] << 24);
        return R_EXIT;
    }
    return R_OTHER;
}

/* ---- the conversation ---- */

/* XENRULES_HELPER_TIMEOUT: a number of seconds in (0, 1e9], else -1 (in-process). */
static double helper_timeout(void)
{
    const char *s = getenv("XENRULES_HELPER_TIMEOUT");
    if (!s || !*s)
        return 10;
    if (strpbrk(s, "xXpP"))
        return -1;                  /* no hex floats: Python's float() has none */
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ' || (*end >= '\t' && *end <= '\r'))
        end++;
    if (end == s || *end || isnan(v) || !(v > 0 && v <= 1e9))
        return -1;
    return v;
}

static int set_timeout(int sock, int opt, double seconds)
{
    struct timeval tv = {0, 0};     /* 0: wait for ever */
    if (seconds > 0) {
        tv.tv_sec = (time_t)seconds;
        tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
        if (tv.tv_sec == 0 && tv.tv_usec == 0)
            tv.tv_usec = 1;
    }
    return setsockopt(sock, SOL_SOCKET, opt, &tv, sizeof tv);
}

static ssize_t recv_retry(int sock, void *data, size_t n)
{
    ssize_t got;
    do
        got = recv(sock, data, n, 0);
    while (got < 0 && errno == EINTR);
    return got;
}

/* The event's wait status from the helper, or NOT_SERVED. */
static int via_helper(const char *path, const char *argv0, int argc, char **argv)
{
    double wait = helper_timeout();
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t plen = strlen(path);
    if (wait < 0 || plen >= sizeof addr.sun_path)
        return NOT_SERVED;
    memcpy(addr.sun_path, path, plen);
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return NOT_SERVED;
    int token = -1, fds[2] = {-1, -1}, status = NOT_SERVED;
    struct buf req = {0};
    unsigned char reply[4096];
    struct ucred cred;
    socklen_t clen = sizeof cred;
    ssize_t got;

    if (set_timeout(sock, SO_RCVTIMEO, wait) || set_timeout(sock, SO_SNDTIMEO, wait) ||
        connect(sock, (struct sockaddr *)&addr, (socklen_t)sizeof addr) ||
        getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &clen) || cred.uid != 0)
        goto out;                   /* absent, refused, or not root: it gets nothing */
    got = recv_retry(sock, reply, sizeof reply);
    if (got <= 0 || parse(reply, (size_t)got, &status) != R_READY)
        goto out;                   /* hung, overloaded, gone: nothing ran there */
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC))
        goto out;
    token = pipefd[0];
    got = write(pipefd[1], "!", 1);
    close(pipefd[1]);
    if (got != 1)
        goto out;
    fds[0] = open(".", O_RDONLY | O_CLOEXEC);
    fds[1] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    mode_t mask = umask(022);
    umask(mask);
    if (fds[0] < 0 || fds[1] < 0 || request(&req, argv0, argc, argv, mask))
        goto out;
    int rights[6] = {0, 1, 2, fds[0], fds[1], token};
    union { struct cmsghdr h; char space[CMSG_SPACE(sizeof rights)]; } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {req.p, req.len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                         .msg_controllen = sizeof ctl.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof rights);
    memcpy(CMSG_DATA(c), rights, sizeof rights);
    do
        got = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (got < 0 && errno == EINTR);
    if (got != (ssize_t)req.len)
        goto out;                   /* too large, refused, timed out: not sent */
    close(fds[0]);
    close(fds[1]);
    fds[0] = fds[1] = -1;

    /* Sent. The helper takes the token before it starts the event; if it says
     * nothing for `wait` s and the token is still there, the event is ours. */
    got = recv_retry(sock, reply, sizeof reply);
    int timed_out = got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (got <= 0) {                 /* no answer in time, or the helper went away */
        char byte;
        if (read(token, &byte, 1) == 1)
            goto out;               /* the helper never started it: run it here */
        if (timed_out && !set_timeout(sock, SO_RCVTIMEO, 0))
            got = recv_retry(sock, reply, sizeof reply);   /* started there: however long */
    }
    status = NOT_SERVED;
    switch (got > 0 ? parse(reply, (size_t)got, &status) : R_OTHER) {
    case R_EXIT:
        if (status == NOT_SERVED)
            status = 1 << 8;        /* no wait status: never a reason to run it again */
        goto out;
    case R_DECLINE:
        status = NOT_SERVED;        /* nothing of it ran there */
        goto out;
    default:
        break;
    }
    static const char stopped[] =
        "xenrules-launcher: the helper stopped during the event (not run again)\n";
    if (write(2, stopped, sizeof stopped - 1) < 0) {
        /* nothing more to say it with */
    }
    status = 1 << 8;
out:
    free(req.p);
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (token >= 0)
        close(token);
    close(sock);
    return status;
}

static void exit_like(int status)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        sigset_t set;
        signal(sig, SIG_DFL);
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        kill(getpid(), sig);
        _exit(128 + sig);
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

int main(int argc, char **argv)
{
    /* $0 is the path execve was given, as the kernel gives a #! script's
     * interpreter (the Python launcher's sys.argv[0]). */
    const char *argv0 = (const char *)getauxval(AT_EXECFN);
    if (!argv0 || !*argv0)
        argv0 = argc > 0 ? argv[0] : "xenrules-launcher";
    const char *path = getenv("XENRULES_HELPER_SOCKET");
    if (!path)
        path = HELPER_SOCKET;
    if (*path) {
        int status = via_helper(path, argv0, argc, argv);
        if (status != NOT_SERVED)
            exit_like(status);
    }
    /* In-process: python3 -IS xenrules-inprocess $0 ARGS..., same environment. */
    int n = argc > 1 ? argc - 1 : 0;
    char **args = calloc((size_t)n + 5, sizeof *args);
    if (!args) {
        fputs("xenrules-launcher: out of memory\n", stderr);
        return 1;
    }
    args[0] = (char *)XENRULES_PYTHON;
    args[1] = (char *)"-IS";
    args[2] = (char *)XENRULES_INPROCESS;
    args[3] = (char *)argv0;
    for (int i = 0; i < n; i++)
        args[4 + i] = argv[1 + i];
    execve(XENRULES_PYTHON, args, environ);
    fprintf(stderr, "xenrules-launcher: cannot run %s: %s\n", XENRULES_PYTHON, strerror(errno));
    free(args);
    return 1;
}
