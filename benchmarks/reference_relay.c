/*
 * reference_relay: the cheapest relay a DSQL front could be, to measure the ceiling side by side.
 *
 * Used only by benchmarks/sandbox_overhead.py, which compiles it with the machine's C compiler.
 * It accepts TCP on 127.0.0.1:PORT and relays each connection, byte for byte and without looking
 * at the bytes, to a PostgreSQL Unix socket. With CERT and KEY it does what the sandbox front must
 * do before relaying (answer SSLRequest with 'S' and terminate TLS with OpenSSL on the socket);
 * without them it relays plaintext. It does no authentication, no SQL dialect, no metering: any
 * real front costs at least this much, so its throughput is the upper bound for the front's.
 *
 * One thread, epoll, non-blocking sockets; a write that would block waits in poll() (good enough
 * for a benchmark, where peers read promptly). The TLS handshake is done blocking at accept time,
 * which pgbench does not count (it reports tps without connection time).
 *
 *   cc -O2 -o reference_relay reference_relay.c -lssl -lcrypto
 *   reference_relay PORT /path/to/.s.PGSQL.NNNN [CERT KEY]
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF (256 * 1024)

struct conn;
struct side { struct conn *c; int client; };
struct conn { int cfd, bfd; SSL *ssl; struct side cs, bs; };

static SSL_CTX *ctx;
static const char *backend_path;
static unsigned char buf[BUF];

static int wait_fd(int fd, short events) {
    struct pollfd p = {fd, events, 0};
    return poll(&p, 1, 10000) == 1 ? 0 : -1;
}

static int write_plain(int fd, const unsigned char *b, size_t n) {
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN && wait_fd(fd, POLLOUT) == 0) continue;
            return -1;
        }
        b += w; n -= (size_t)w;
    }
    return 0;
}

static int write_tls(SSL *s, int fd, const unsigned char *b, size_t n) {
    while (n) {
        size_t w = 0;
        if (SSL_write_ex(s, b, n, &w) <= 0) {
            int e = SSL_get_error(s, 0);
            if (e == SSL_ERROR_WANT_WRITE && wait_fd(fd, POLLOUT) == 0) continue;
            if (e == SSL_ERROR_WANT_READ && wait_fd(fd, POLLIN) == 0) continue;
            return -1;
        }
        b += w; n -= w;
    }
    return 0;
}

static void close_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->cfd, NULL);
    epoll_ctl(ep, EPOLL_CTL_DEL, c->bfd, NULL);
    if (c->ssl) SSL_free(c->ssl);
    close(c->cfd);
    close(c->bfd);
    free(c);
}

static int read_exact(int fd, unsigned char *b, size_t n) {
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r <= 0) { if (r < 0 && errno == EINTR) continue; return -1; }
        b += r; n -= (size_t)r;
    }
    return 0;
}

static int pump(struct side *s);

static void accept_one(int ep, int ls) {
    int one = 1, cfd = accept(ls, NULL, NULL), bfd = -1;
    SSL *ssl = NULL;
    if (cfd < 0) return;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (ctx) {
        /* SSLRequest: length 8, code 80877103 */
        unsigned char req[8];
        static const unsigned char want[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
        if (read_exact(cfd, req, 8) || memcmp(req, want, 8) || write(cfd, "S", 1) != 1) goto fail;
        ssl = SSL_new(ctx);
        SSL_set_fd(ssl, cfd);
        if (SSL_accept(ssl) <= 0) goto fail;
    }
    bfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un u;
    memset(&u, 0, sizeof u);
    u.sun_family = AF_UNIX;
    strncpy(u.sun_path, backend_path, sizeof u.sun_path - 1);
    if (bfd < 0 || connect(bfd, (struct sockaddr *)&u, sizeof u)) goto fail;
    fcntl(cfd, F_SETFL, O_NONBLOCK);
    fcntl(bfd, F_SETFL, O_NONBLOCK);
    struct conn *c = calloc(1, sizeof *c);
    if (!c) goto fail;
    c->cfd = cfd; c->bfd = bfd; c->ssl = ssl;
    c->cs.c = c; c->cs.client = 1;
    c->bs.c = c; c->bs.client = 0;
    struct epoll_event e = {.events = EPOLLIN};
    e.data.ptr = &c->cs;
    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &e);
    e.data.ptr = &c->bs;
    epoll_ctl(ep, EPOLL_CTL_ADD, bfd, &e);
    /* read-ahead may have pulled the client's first message in with the handshake: epoll will
       not report it, so relay it now */
    if (ssl && SSL_has_pending(ssl) && pump(&c->cs) < 0) close_conn(ep, c);
    return;
fail:
    ERR_clear_error();
    if (ssl) SSL_free(ssl);
    if (bfd >= 0) close(bfd);
    close(cfd);
}

/* Returns -1 when the connection is over. */
static int pump(struct side *s) {
    struct conn *c = s->c;
    if (s->client) {
        if (!c->ssl) {
            ssize_t r = read(c->cfd, buf, BUF);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
            return r <= 0 ? -1 : write_plain(c->bfd, buf, (size_t)r);
        }
        do {  /* drain what OpenSSL already decrypted, so epoll does not miss it */
            size_t r = 0;
            if (SSL_read_ex(c->ssl, buf, BUF, &r) <= 0) {
                int e = SSL_get_error(c->ssl, 0);
                return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
            }
            if (write_plain(c->bfd, buf, r)) return -1;
        } while (SSL_has_pending(c->ssl));
        return 0;
    }
    ssize_t r = read(c->bfd, buf, BUF);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (r <= 0) return -1;
    return c->ssl ? write_tls(c->ssl, c->cfd, buf, (size_t)r) : write_plain(c->cfd, buf, (size_t)r);
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: %s PORT BACKEND_SOCKET [CERT KEY]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    backend_path = argv[2];
    if (argc == 5) {
        ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
        SSL_CTX_set_read_ahead(ctx, 1); /* one read() per request rather than header + body */
    }
    int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 512)) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN}, evs[64];
    e.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &e);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { perror("epoll_wait"); return 1; }
        /* A connection closed in this batch may still have a later event here: close after. */
        struct conn *dead[64];
        int ndead = 0;
        for (int i = 0; i < n; i++) {
            struct side *s = evs[i].data.ptr;
            if (!s) { accept_one(ep, ls); continue; }
            int gone = 0;
            for (int k = 0; k < ndead; k++) gone |= dead[k] == s->c;
            if (!gone && pump(s) < 0) dead[ndead++] = s->c;
        }
        for (int k = 0; k < ndead; k++) close_conn(ep, dead[k]);
    }
}
