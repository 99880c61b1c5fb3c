/* powercut_shim.c: an LD_PRELOAD library that records what a process does to its disk
 * and its sockets, in order, for bench/powercut.py (the power-cut test).
 *
 * Compiled at run time into a temporary directory (cc -shared -fPIC -O2 ... -ldl); never
 * committed as a binary. Environment:
 *   POWERCUT_LOG    file the records are appended to (required; nothing is recorded without it)
 *   POWERCUT_MATCH  path prefix of the files whose writes are recorded (the store's path:
 *                   it matches the database, its -wal, -shm and -journal)
 *
 * Recorded, each after the real call returned (so a record means "this had happened"):
 *   OPEN   a matching file opened (flags; O_TRUNC is a truncate to 0)
 *   WRITE  bytes written to a matching file, with their offset (write, pwrite, pwrite64)
 *   SYNC   fsync/fdatasync of a matching file
 *   TRUNC  ftruncate of a matching file
 *   UNLINK a matching file deleted; RENAME one renamed (old\0new)
 *   CLOSE  a matching file's descriptor closed
 *   SEND   bytes sent on any socket (send, sendto, sendmsg): MQTT publishes, CAN frames
 *   STDIO  bytes written to fd 1 or 2 (the agent's log lines)
 * One mutex orders the records of every thread. Record: "<B3xiqqqI" (op, fd, offset,
 * length, CLOCK_MONOTONIC ns, extra length) then the extra bytes (data or path).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { OP_OPEN = 1, OP_WRITE, OP_SYNC, OP_TRUNC, OP_UNLINK, OP_RENAME, OP_CLOSE, OP_SEND, OP_STDIO };
#define MAX_FD 65536

#pragma pack(push, 1)
struct rec {
    uint8_t op;
    uint8_t pad[3];
    int32_t fd;
    int64_t off;
    int64_t len;
    int64_t t_ns;
    uint32_t extra;
};
#pragma pack(pop)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -1;
static int ready = 0;
static char match[4096];
static size_t match_len = 0;
static unsigned char tracked[MAX_FD];

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_unlink)(const char *);
static int (*real_rename)(const char *, const char *);
static int (*real_close)(int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);

#define RESOLVE(name) \
    if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)

static void resolve_all(void) {
    RESOLVE(write); RESOLVE(pwrite); RESOLVE(pwrite64); RESOLVE(open); RESOLVE(open64);
    RESOLVE(openat); RESOLVE(openat64); RESOLVE(fsync); RESOLVE(fdatasync);
    RESOLVE(ftruncate); RESOLVE(ftruncate64); RESOLVE(unlink); RESOLVE(rename);
    RESOLVE(close); RESOLVE(send); RESOLVE(sendto); RESOLVE(sendmsg);
}

__attribute__((constructor)) static void init(void) {
    resolve_all();
    const char *path = getenv("POWERCUT_LOG");
    const char *m = getenv("POWERCUT_MATCH");
    if (m) {
        strncpy(match, m, sizeof match - 1);
        match_len = strlen(match);
    }
    if (path) log_fd = real_open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    ready = log_fd >= 0;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void put(const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = real_write(log_fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* caller holds the lock */
static void emit_locked(int op, int fd, int64_t off, int64_t len, const void *extra, size_t n) {
    struct rec r = {0};
    r.op = (uint8_t)op;
    r.fd = fd;
    r.off = off;
    r.len = len;
    r.t_ns = now_ns();
    r.extra = (uint32_t)n;
    put(&r, sizeof r);
    if (n) put(extra, n);
}

static void emit(int op, int fd, int64_t off, int64_t len, const void *extra, size_t n) {
    int saved = errno;
    pthread_mutex_lock(&lock);
    emit_locked(op, fd, off, len, extra, n);
    pthread_mutex_unlock(&lock);
    errno = saved;
}

static int matches(const char *path) {
    return ready && path && match_len && strncmp(path, match, match_len) == 0;
}

static int is_tracked(int fd) { return ready && fd >= 0 && fd < MAX_FD && tracked[fd]; }

static void opened(int fd, const char *path, int flags) {
    if (fd < 0 || fd >= MAX_FD || !matches(path)) return;
    tracked[fd] = 1;
    emit(OP_OPEN, fd, flags, (flags & O_TRUNC) ? 0 : -1, path, strlen(path));
}

#define OPEN_MODE(flags, mode)                     \
    mode_t mode = 0;                               \
    if ((flags) & (O_CREAT | O_TMPFILE)) {         \
        va_list ap;                                \
        va_start(ap, flags);                       \
        mode = (mode_t)va_arg(ap, int);            \
        va_end(ap);                                \
    }

int open(const char *path, int flags, ...) {
    OPEN_MODE(flags, mode);
    RESOLVE(open);
    int fd = real_open(path, flags, mode);
    opened(fd, path, flags);
    return fd;
}

int open64(const char *path, int flags, ...) {
    OPEN_MODE(flags, mode);
    RESOLVE(open64);
    int fd = real_open64(path, flags, mode);
    opened(fd, path, flags);
    return fd;
}

int openat(int dirfd, const char *path, int flags, ...) {
    OPEN_MODE(flags, mode);
    RESOLVE(openat);
    int fd = real_openat(dirfd, path, flags, mode);
    if (path[0] == '/') opened(fd, path, flags);
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) {
    OPEN_MODE(flags, mode);
    RESOLVE(openat64);
    int fd = real_openat64(dirfd, path, flags, mode);
    if (path[0] == '/') opened(fd, path, flags);
    return fd;
}

ssize_t write(int fd, const void *buf, size_t n) {
    RESOLVE(write);
    if (is_tracked(fd)) {
        /* the position and the write under one lock: no other record between them */
        int saved;
        pthread_mutex_lock(&lock);
        off_t pos = lseek(fd, 0, SEEK_CUR);
        ssize_t w = real_write(fd, buf, n);
        saved = errno;
        if (w > 0) emit_locked(OP_WRITE, fd, pos, w, buf, (size_t)w);
        pthread_mutex_unlock(&lock);
        errno = saved;
        return w;
    }
    ssize_t w = real_write(fd, buf, n);
    if (ready && w > 0 && (fd == 1 || fd == 2)) emit(OP_STDIO, fd, -1, w, buf, (size_t)w);
    return w;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    RESOLVE(pwrite);
    ssize_t w = real_pwrite(fd, buf, n, off);
    if (w > 0 && is_tracked(fd)) emit(OP_WRITE, fd, off, w, buf, (size_t)w);
    return w;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    RESOLVE(pwrite64);
    ssize_t w = real_pwrite64(fd, buf, n, off);
    if (w > 0 && is_tracked(fd)) emit(OP_WRITE, fd, off, w, buf, (size_t)w);
    return w;
}

int fsync(int fd) {
    RESOLVE(fsync);
    int r = real_fsync(fd);
    if (r == 0 && is_tracked(fd)) emit(OP_SYNC, fd, 0, 0, NULL, 0);
    return r;
}

int fdatasync(int fd) {
    RESOLVE(fdatasync);
    int r = real_fdatasync(fd);
    if (r == 0 && is_tracked(fd)) emit(OP_SYNC, fd, 0, 0, NULL, 0);
    return r;
}

int ftruncate(int fd, off_t len) {
    RESOLVE(ftruncate);
    int r = real_ftruncate(fd, len);
    if (r == 0 && is_tracked(fd)) emit(OP_TRUNC, fd, len, 0, NULL, 0);
    return r;
}

int ftruncate64(int fd, off_t len) {
    RESOLVE(ftruncate64);
    int r = real_ftruncate64(fd, len);
    if (r == 0 && is_tracked(fd)) emit(OP_TRUNC, fd, len, 0, NULL, 0);
    return r;
}

int unlink(const char *path) {
    RESOLVE(unlink);
    int r = real_unlink(path);
    if (r == 0 && matches(path)) emit(OP_UNLINK, -1, 0, 0, path, strlen(path));
    return r;
}

int rename(const char *a, const char *b) {
    RESOLVE(rename);
    int r = real_rename(a, b);
    if (r == 0 && (matches(a) || matches(b))) {
        size_t la = strlen(a), lb = strlen(b);
        char *both = malloc(la + lb + 1);
        if (both) {
            memcpy(both, a, la);
            both[la] = '\0';
            memcpy(both + la + 1, b, lb);
            emit(OP_RENAME, -1, 0, 0, both, la + lb + 1);
            free(both);
        }
    }
    return r;
}

int close(int fd) {
    RESOLVE(close);
    if (!is_tracked(fd)) return real_close(fd);
    /* the close and its record under one lock: an open that gets the same number in
       another thread is recorded after it */
    pthread_mutex_lock(&lock);
    tracked[fd] = 0;
    int r = real_close(fd);
    int saved = errno;
    emit_locked(OP_CLOSE, fd, 0, 0, NULL, 0);
    pthread_mutex_unlock(&lock);
    errno = saved;
    return r;
}

ssize_t send(int fd, const void *buf, size_t n, int flags) {
    RESOLVE(send);
    ssize_t w = real_send(fd, buf, n, flags);
    if (ready && w > 0) emit(OP_SEND, fd, -1, w, buf, (size_t)w);
    return w;
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *to,
               socklen_t tolen) {
    RESOLVE(sendto);
    ssize_t w = real_sendto(fd, buf, n, flags, to, tolen);
    if (ready && w > 0) emit(OP_SEND, fd, -1, w, buf, (size_t)w);
    return w;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
    RESOLVE(sendmsg);
    ssize_t w = real_sendmsg(fd, msg, flags);
    if (ready && w > 0) {
        /* the bytes actually sent, gathered from the iovecs */
        char *all = malloc((size_t)w);
        if (all) {
            size_t left = (size_t)w, at = 0;
            for (size_t i = 0; i < msg->msg_iovlen && left; i++) {
                size_t take = msg->msg_iov[i].iov_len < left ? msg->msg_iov[i].iov_len : left;
                memcpy(all + at, msg->msg_iov[i].iov_base, take);
                at += take;
                left -= take;
            }
            emit(OP_SEND, fd, -1, w, all, (size_t)w);
            free(all);
        }
    }
    return w;
}
