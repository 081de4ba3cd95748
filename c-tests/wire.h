/*
 * What the in-test daemons (test doubles for what a real ha-node never
 * sends: confd_shapes.c, fake_daemon.c) share: a builder for Erlang
 * external-term bytes and frame I/O on a socket.
 *
 * Term tags (Erlang's external term format): 97 SMALL_INTEGER, 98 INTEGER,
 * 104 SMALL_TUPLE, 106 NIL, 107 STRING, 108 LIST, 109 BINARY,
 * 119 SMALL_ATOM_UTF8, 131 the version byte. A frame is a 4-byte big-endian
 * length and that many bytes.
 *
 * A test that needs bigger terms defines WIRE_BYTES_CAP before including
 * this file (bytes; default 4096). A put beyond the capacity is dropped, so
 * the term comes out malformed and the test that reads it fails.
 */
#ifndef CTEST_WIRE_H
#define CTEST_WIRE_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef WIRE_BYTES_CAP
#define WIRE_BYTES_CAP 4096
#endif

struct bytes {
    unsigned char d[WIRE_BYTES_CAP];
    size_t n;
};

static inline void put(struct bytes *b, const void *p, size_t n)
{
    if (b->n + n <= sizeof b->d) {
        memcpy(b->d + b->n, p, n);
        b->n += n;
    }
}
static inline void put1(struct bytes *b, unsigned v) { unsigned char c = (unsigned char)v; put(b, &c, 1); }
static inline void put16(struct bytes *b, unsigned v) { put1(b, (v >> 8) & 255); put1(b, v & 255); }
static inline void put32(struct bytes *b, uint32_t v) { put16(b, v >> 16); put16(b, v & 0xffff); }
static inline void t_small(struct bytes *b, unsigned v) { put1(b, 97); put1(b, v); }
static inline void t_int(struct bytes *b, int32_t v) { put1(b, 98); put32(b, (uint32_t)v); }
static inline void t_tuple(struct bytes *b, unsigned arity) { put1(b, 104); put1(b, arity); }
static inline void t_atom(struct bytes *b, const char *a) { put1(b, 119); put1(b, (unsigned)strlen(a)); put(b, a, strlen(a)); }
static inline void t_bin(struct bytes *b, const void *p, size_t n) { put1(b, 109); put32(b, (uint32_t)n); put(b, p, n); }
static inline void t_bin_str(struct bytes *b, const char *s) { t_bin(b, s, strlen(s)); }
static inline void t_string(struct bytes *b, const char *s) { put1(b, 107); put16(b, (unsigned)strlen(s)); put(b, s, strlen(s)); }
static inline void t_list(struct bytes *b, uint32_t n) { put1(b, 108); put32(b, n); }
static inline void t_nil(struct bytes *b) { put1(b, 106); }

/* 0, or -1 on EOF or an error before n bytes were read. */
static inline int read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

/* 0, or -1 if the peer went away (no SIGPIPE). */
static inline int write_full(int fd, const void *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = send(fd, (const char *)p + done, n - done, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

/* Reads one frame into buf (at most cap bytes); its length, or -1 on EOF,
   an error or a frame longer than cap. */
static inline long read_frame(int fd, unsigned char *buf, size_t cap)
{
    unsigned char h[4];
    uint32_t len;
    if (read_full(fd, h, 4) != 0) return -1;
    len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (len > cap) return -1;
    if (read_full(fd, buf, len) != 0) return -1;
    return (long)len;
}

/* Sends t's bytes as one frame, as they are. */
static inline void send_frame(int fd, const struct bytes *t)
{
    unsigned char h[4] = {(unsigned char)(t->n >> 24), (unsigned char)(t->n >> 16), (unsigned char)(t->n >> 8), (unsigned char)t->n};
    write_full(fd, h, 4);
    write_full(fd, t->d, t->n);
}

/* Sends t as one frame holding an external term: the version byte 131, then t. */
static inline void send_term(int fd, const struct bytes *t)
{
    unsigned char h[5] = {(unsigned char)((t->n + 1) >> 24), (unsigned char)((t->n + 1) >> 16),
                          (unsigned char)((t->n + 1) >> 8), (unsigned char)(t->n + 1), 131};
    write_full(fd, h, 5);
    write_full(fd, t->d, t->n);
}

#endif
