/*
 * dsqlops.sandbox._fastrelay: the sandbox front's per-session data path in C (optional).
 *
 * The front (front.py, asyncio) still does everything that decides anything: SSLRequest, the
 * TLS handshake's outcome (SNI, ALPN), the startup packet, IAM token auth, the backend login and
 * the DSQL dialect (relay.py). What moves here is what costs CPU on every round trip: TLS on the
 * client socket (OpenSSL directly on the file descriptor, no memory BIOs), reading and writing
 * both sockets, and framing the PostgreSQL v3 messages. Messages the front inspects are handed
 * to Python whole (the same Relay methods the pure-Python path uses); everything else is copied
 * as it arrives, so large rows and COPY data stream through.
 *
 * Objects
 *   Context(cert_file, key_file, alpn)  an SSL_CTX for the server side (ALPN "postgresql" when alpn)
 *   TLS(context, fd)                     a server-side TLS session on a non-blocking socket: the
 *                                        front drives handshake()/recv()/send() during startup
 *   Pump(tls_or_None, client_fd, backend_fd, handler)
 *                                        one logged-in session; the event loop calls
 *                                        on_client_readable() etc. The handler (Python) gets
 *                                        client_message(kind, msg) / backend_message(kind, msg)
 *                                        (return None to relay, bytes to replace, b"" to drop),
 *                                        want(client_read, client_write, backend_read,
 *                                        backend_write) when the watched events change, and
 *                                        finished(code, detail) once, when the session ends.
 *
 * Everything runs on the event loop's thread, holding the GIL; sockets are non-blocking, so no
 * call here waits. A destination that cannot take more stops reading from its source (backpressure
 * per direction, as asyncio's pause_reading does).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK (256 * 1024)
#define MAX_MESSAGE (256 * 1024 * 1024) /* protocol.MAX_MESSAGE */
#define MAX_READS_PER_WAKE 16

/* finished(code, detail) codes, mirrored in dsqlops/sandbox/native.py */
enum { FIN_TERMINATE = 0, FIN_CLIENT_GONE = 1, FIN_BACKEND_GONE = 2, FIN_VIOLATION = 3, FIN_BACKEND_BAD = 4,
       FIN_HANDLER_ERROR = 5 };

static PyObject *TLSError; /* subclass of ConnectionError */

static void raise_tls(const char *what) {
    unsigned long e = ERR_get_error();
    char buf[256];
    if (e) {
        ERR_error_string_n(e, buf, sizeof buf);
        PyErr_Format(TLSError, "%s: %s", what, buf);
    } else if (errno) {
        PyErr_Format(TLSError, "%s: %s", what, strerror(errno));
    } else {
        PyErr_Format(TLSError, "%s: connection closed", what);
    }
    ERR_clear_error();
}

/* ------------------------------------------------------------------------------------------ */
/* Context                                                                                     */

typedef struct {
    PyObject_HEAD
    SSL_CTX *ctx;
} ContextObject;

static const unsigned char ALPN_PG[] = "\x0apostgresql";

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
    (void)ssl;
    (void)arg;
    unsigned char *o = NULL;
    if (SSL_select_next_proto(&o, outlen, ALPN_PG, sizeof ALPN_PG - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = o;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK; /* as Python's ssl does: the front then refuses the session */
}

static int Context_init(ContextObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"cert_file", "key_file", "alpn", NULL};
    const char *cert, *key;
    int alpn = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ss|p", names, &cert, &key, &alpn)) return -1;
    if (self->ctx) SSL_CTX_free(self->ctx);
    self->ctx = SSL_CTX_new(TLS_server_method());
    if (!self->ctx) {
        raise_tls("SSL_CTX_new");
        return -1;
    }
    SSL_CTX_set_min_proto_version(self->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(self->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                       SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(self->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* read whole socket buffers, not a 5-byte header then the record: one read() per request */
    SSL_CTX_set_read_ahead(self->ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(self->ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(self->ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(self->ctx) != 1) {
        raise_tls("loading the certificate");
        return -1;
    }
    if (alpn) SSL_CTX_set_alpn_select_cb(self->ctx, alpn_select, NULL);
    return 0;
}

static void Context_dealloc(ContextObject *self) {
    if (self->ctx) SSL_CTX_free(self->ctx);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dsqlops.sandbox._fastrelay.Context",
    .tp_basicsize = sizeof(ContextObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Context_init,
    .tp_dealloc = (destructor)Context_dealloc,
    .tp_doc = "Context(cert_file, key_file, alpn=False): a server-side TLS context.",
};

/* ------------------------------------------------------------------------------------------ */
/* TLS                                                                                         */

typedef struct {
    PyObject_HEAD
    SSL *ssl;
    int fd;
    PyObject *context;
} TLSObject;

static int TLS_init(TLSObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"context", "fd", NULL};
    PyObject *ctx;
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!i", names, &ContextType, &ctx, &fd)) return -1;
    if (self->ssl) {
        PyErr_SetString(PyExc_RuntimeError, "TLS object already initialised");
        return -1;
    }
    self->ssl = SSL_new(((ContextObject *)ctx)->ctx);
    if (!self->ssl || SSL_set_fd(self->ssl, fd) != 1) {
        raise_tls("SSL_new");
        return -1;
    }
    SSL_set_accept_state(self->ssl);
    self->fd = fd;
    Py_INCREF(ctx);
    self->context = ctx;
    return 0;
}

static void TLS_dealloc(TLSObject *self) {
    if (self->ssl) SSL_free(self->ssl);
    Py_XDECREF(self->context);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int tls_ready(TLSObject *self) {
    if (!self->ssl) {
        PyErr_SetString(PyExc_RuntimeError, "TLS object not initialised");
        return 0;
    }
    return 1;
}

/* handshake() -> 0 done, 1 wants the socket readable, 2 wants it writable */
static PyObject *TLS_handshake(TLSObject *self, PyObject *unused) {
    (void)unused;
    if (!tls_ready(self)) return NULL;
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(self->ssl);
    if (r == 1) return PyLong_FromLong(0);
    switch (SSL_get_error(self->ssl, r)) {
    case SSL_ERROR_WANT_READ: return PyLong_FromLong(1);
    case SSL_ERROR_WANT_WRITE: return PyLong_FromLong(2);
    default: raise_tls("TLS handshake failed"); return NULL;
    }
}

static PyObject *blocking(void) {
    errno = EAGAIN;
    PyErr_SetFromErrno(PyExc_BlockingIOError);
    return NULL;
}

static PyObject *TLS_recv(TLSObject *self, PyObject *arg) {
    if (!tls_ready(self)) return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "negative size");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n ? n : 1);
    if (!out) return NULL;
    size_t got = 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_read_ex(self->ssl, PyBytes_AS_STRING(out), (size_t)(n ? n : 1), &got) != 1) {
        int e = SSL_get_error(self->ssl, 0);
        Py_DECREF(out);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return blocking();
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) {
            ERR_clear_error();
            return PyBytes_FromStringAndSize(NULL, 0);
        }
        raise_tls("TLS read failed");
        return NULL;
    }
    if (_PyBytes_Resize(&out, (Py_ssize_t)got) < 0) return NULL;
    return out;
}

/* send(data) -> bytes written (partial writes allowed); BlockingIOError when nothing could be. A
   retry after BlockingIOError must pass the same bytes again (OpenSSL's write-retry rule). */
static PyObject *TLS_send(TLSObject *self, PyObject *arg) {
    if (!tls_ready(self)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    if (view.len == 0) {
        PyBuffer_Release(&view);
        return PyLong_FromLong(0);
    }
    size_t w = 0;
    ERR_clear_error();
    errno = 0;
    int ok = SSL_write_ex(self->ssl, view.buf, (size_t)view.len, &w);
    PyBuffer_Release(&view);
    if (ok == 1) return PyLong_FromSize_t(w);
    int e = SSL_get_error(self->ssl, 0);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return blocking();
    raise_tls("TLS write failed");
    return NULL;
}

static PyObject *TLS_server_name(TLSObject *self, void *closure) {
    (void)closure;
    if (!tls_ready(self)) return NULL;
    const char *name = SSL_get_servername(self->ssl, TLSEXT_NAMETYPE_host_name);
    if (!name) Py_RETURN_NONE;
    return PyUnicode_DecodeASCII(name, (Py_ssize_t)strlen(name), "replace");
}

static PyObject *TLS_alpn(TLSObject *self, void *closure) {
    (void)closure;
    if (!tls_ready(self)) return NULL;
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(self->ssl, &p, &n);
    if (!p || !n) Py_RETURN_NONE;
    return PyUnicode_DecodeASCII((const char *)p, (Py_ssize_t)n, "replace");
}

/* shutdown(): send close_notify (one non-blocking attempt), as a TLS peer expects before EOF. */
static PyObject *TLS_shutdown(TLSObject *self, PyObject *unused) {
    (void)unused;
    if (!tls_ready(self)) return NULL;
    ERR_clear_error();
    int r = SSL_shutdown(self->ssl);
    ERR_clear_error();
    return PyBool_FromLong(r >= 0);
}

static PyMethodDef TLS_methods[] = {
    {"handshake", (PyCFunction)TLS_handshake, METH_NOARGS,
     "Advance the server handshake: 0 done, 1 wants readable, 2 wants writable."},
    {"recv", (PyCFunction)TLS_recv, METH_O, "Up to n decrypted bytes; b'' at EOF; BlockingIOError if none yet."},
    {"send", (PyCFunction)TLS_send, METH_O, "Encrypt and send; returns how many bytes were taken."},
    {"shutdown", (PyCFunction)TLS_shutdown, METH_NOARGS, "Send close_notify (best effort, non-blocking)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef TLS_getset[] = {
    {"server_name", (getter)TLS_server_name, NULL, "The SNI host name the client sent, or None.", NULL},
    {"alpn", (getter)TLS_alpn, NULL, "The ALPN protocol selected, or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TLSType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dsqlops.sandbox._fastrelay.TLS",
    .tp_basicsize = sizeof(TLSObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)TLS_init,
    .tp_dealloc = (destructor)TLS_dealloc,
    .tp_methods = TLS_methods,
    .tp_getset = TLS_getset,
    .tp_doc = "TLS(context, fd): a server-side TLS session on a non-blocking socket (fd not owned).",
};

/* ------------------------------------------------------------------------------------------ */
/* Pump                                                                                        */

typedef struct {
    char *p;
    size_t len; /* bytes held */
    size_t off; /* bytes already consumed (output buffers) */
    size_t cap;
} Buf;

static int buf_add(Buf *b, const char *data, size_t n) {
    if (!n) return 0;
    if (b->off && b->off == b->len) b->off = b->len = 0;
    if (b->len + n > b->cap) {
        if (b->off) { /* compact first */
            memmove(b->p, b->p + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap : 4096;
            while (cap < b->len + n) cap *= 2;
            char *p = PyMem_Realloc(b->p, cap);
            if (!p) {
                PyErr_NoMemory();
                return -1;
            }
            b->p = p;
            b->cap = cap;
        }
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static size_t buf_size(const Buf *b) { return b->len - b->off; }

static void buf_free(Buf *b) {
    PyMem_Free(b->p);
    b->p = NULL;
    b->len = b->off = b->cap = 0;
}

/* One direction's framing state. */
typedef struct {
    Buf in;        /* the start of a message we must see whole */
    size_t need;   /* bytes `in` must hold before it is worth framing again */
    size_t skip;   /* bytes left of a message relayed without a look */
    int skip_drop; /* ... and dropped instead (backend output of a suppressed segment) */
} Framing;

typedef struct {
    PyObject_HEAD
    PyObject *tls; /* TLSObject or NULL (plaintext client, used by tests) */
    PyObject *handler;
    SSL *ssl;
    int cfd, bfd;
    PyObject *m_client, *m_backend, *m_want, *m_finished; /* the handler's bound methods */
    int done;
    int fin_code;
    int drop; /* set by Python: the backend's current segment is suppressed */
    Framing up;   /* client -> backend */
    Buf bout;     /* waiting for the backend socket */
    Framing down; /* backend -> client */
    Buf cout;         /* waiting for the client socket (plaintext; encrypted on the way out) */
    size_t tls_retry; /* length of an SSL_write to repeat, or 0 */
    int read_wants_write;
    int write_wants_read;
    /* the events the loop watches for us */
    int w_cr, w_cw, w_br, w_bw;
} PumpObject;

static const char FRONTEND_TYPES[] = "QPBEDCHSFXdcfp";
static const char CLIENT_INSPECT[] = "QPBESC";
static const char BACKEND_INSPECT[] = "CEZIs";

static int is_in(const char *set, unsigned char c) { return c && strchr(set, c) != NULL; }

static int32_t be32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (int32_t)(((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | u[3]);
}

static void pump_finish(PumpObject *self, int code, PyObject *detail) {
    if (self->done) return;
    self->done = 1;
    self->fin_code = code;
    PyObject *r = PyObject_CallFunction(self->m_finished, "iO", code, detail ? detail : Py_None);
    if (!r) PyErr_WriteUnraisable(self->handler);
    Py_XDECREF(r);
}

static void pump_finish_msg(PumpObject *self, int code, const char *msg) {
    PyObject *s = PyUnicode_FromString(msg);
    if (!s) PyErr_Clear();
    pump_finish(self, code, s);
    Py_XDECREF(s);
}

/* A Python call failed: end the session and hand the exception to the handler. */
static void pump_fail_exc(PumpObject *self) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value) PyException_SetTraceback(value, tb);
    pump_finish(self, FIN_HANDLER_ERROR, value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* Ask Python about one whole message; append what to send to `out`. -1: the session ended. */
static int inspect(PumpObject *self, PyObject *method, const char *msg, size_t n, Buf *out) {
    PyObject *args[2];
    args[0] = PyLong_FromLong((unsigned char)msg[0]); /* a small int: cached, cannot fail */
    args[1] = PyBytes_FromStringAndSize(msg, (Py_ssize_t)n);
    PyObject *r = args[1] ? PyObject_Vectorcall(method, args, 2, NULL) : NULL;
    Py_DECREF(args[0]);
    Py_XDECREF(args[1]);
    if (!r) {
        pump_fail_exc(self);
        return -1;
    }
    int rc = 0;
    if (r == Py_None) {
        rc = buf_add(out, msg, n);
    } else if (PyBytes_Check(r)) {
        rc = buf_add(out, PyBytes_AS_STRING(r), (size_t)PyBytes_GET_SIZE(r));
    } else {
        PyErr_SetString(PyExc_TypeError, "handler must return None or bytes");
        rc = -1;
    }
    Py_DECREF(r);
    if (rc < 0) {
        pump_fail_exc(self);
        return -1;
    }
    return self->done ? -1 : 0;
}

/* Frame the bytes of one direction: whole inspected messages go to Python, the rest is copied to
   the other side's output as it arrives. Client bytes are checked (message type, length); a backend
   message is trusted but for its length. Returns -1 if the session ended. */
static int frame(PumpObject *self, int client, const char *data, size_t n) {
    Framing *f = client ? &self->up : &self->down;
    Buf *out = client ? &self->bout : &self->cout;
    size_t pos = 0;
    while (pos < n) {
        if (f->skip) {
            size_t take = n - pos < f->skip ? n - pos : f->skip;
            if (!f->skip_drop && buf_add(out, data + pos, take) < 0) goto nomem;
            f->skip -= take;
            pos += take;
            continue;
        }
        if (n - pos < 5) break;
        unsigned char kind = (unsigned char)data[pos];
        int32_t len = be32(data + pos + 1);
        char m[64];
        if (client && !is_in(FRONTEND_TYPES, kind)) {
            snprintf(m, sizeof m, "invalid frontend message type %d", kind);
            pump_finish_msg(self, FIN_VIOLATION, m);
            return -1;
        }
        if (len < 4 || (client && len > MAX_MESSAGE)) {
            snprintf(m, sizeof m, client ? "invalid message length %d" : "backend sent a message of length %d", len);
            pump_finish_msg(self, client ? FIN_VIOLATION : FIN_BACKEND_BAD, m);
            return -1;
        }
        size_t whole = 1 + (size_t)len;
        if (is_in(client ? CLIENT_INSPECT : BACKEND_INSPECT, kind)) {
            if (pos + whole > n) {
                f->need = whole;
                break;
            }
            if (inspect(self, client ? self->m_client : self->m_backend, data + pos, whole, out) < 0) return -1;
            pos += whole;
        } else if (client && kind == 'X') {
            size_t take = n - pos < whole ? n - pos : whole;
            if (buf_add(out, data + pos, take) < 0) goto nomem;
            pump_finish(self, FIN_TERMINATE, NULL);
            return -1;
        } else {
            f->skip = whole;
            f->skip_drop = !client && self->drop;
        }
    }
    if (pos < n && buf_add(&f->in, data + pos, n - pos) < 0) goto nomem;
    return 0;
nomem:
    pump_fail_exc(self);
    return -1;
}

/* New bytes from one side: frame them together with what was held back. */
static int take_in(PumpObject *self, int client, const char *data, size_t n) {
    Buf *in = client ? &self->up.in : &self->down.in;
    size_t *need = client ? &self->up.need : &self->down.need;
    if (!buf_size(in)) return frame(self, client, data, n);
    if (buf_add(in, data, n) < 0) {
        pump_fail_exc(self);
        return -1;
    }
    if (buf_size(in) < *need) return 0; /* a large message still arriving: do not re-frame per chunk */
    /* frame the held bytes from a private copy (framing appends any remainder to `in` again) */
    Buf held = *in;
    memset(in, 0, sizeof *in);
    *need = 0;
    int rc = frame(self, client, held.p + held.off, held.len - held.off);
    buf_free(&held);
    return rc;
}

/* Write what waits for the backend. 0: all sent or would block; -1: the socket failed (errno). */
static int flush_backend(PumpObject *self) {
    while (buf_size(&self->bout)) {
        ssize_t w = write(self->bfd, self->bout.p + self->bout.off, buf_size(&self->bout));
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -1;
        }
        self->bout.off += (size_t)w;
    }
    self->bout.off = self->bout.len = 0;
    return 0;
}

static int flush_client(PumpObject *self) {
    self->write_wants_read = 0;
    while (buf_size(&self->cout)) {
        size_t avail = buf_size(&self->cout);
        if (!self->ssl) {
            ssize_t w = write(self->cfd, self->cout.p + self->cout.off, avail);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
                return -1;
            }
            self->cout.off += (size_t)w;
            continue;
        }
        size_t n = self->tls_retry ? self->tls_retry : avail;
        size_t w = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_write_ex(self->ssl, self->cout.p + self->cout.off, n, &w) != 1) {
            int e = SSL_get_error(self->ssl, 0);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                self->tls_retry = n;
                self->write_wants_read = e == SSL_ERROR_WANT_READ;
                return 0;
            }
            ERR_clear_error();
            return -1;
        }
        self->tls_retry = 0;
        self->cout.off += w;
    }
    self->cout.off = self->cout.len = 0;
    return 0;
}

static int send_backend(PumpObject *self) {
    if (flush_backend(self) == 0) return 0;
    pump_finish_msg(self, FIN_BACKEND_GONE, strerror(errno));
    return -1;
}

static int send_client(PumpObject *self) {
    if (flush_client(self) == 0) return 0;
    pump_finish(self, FIN_CLIENT_GONE, NULL);
    return -1;
}

/* Tell Python which events to watch when that changes. */
static int update_interest(PumpObject *self) {
    if (self->done) return -1;
    int cr = !buf_size(&self->bout) || self->write_wants_read;
    int cw = buf_size(&self->cout) > 0 || self->read_wants_write;
    if (self->write_wants_read) cw = 0;
    int br = !buf_size(&self->cout);
    int bw = buf_size(&self->bout) > 0;
    if (cr == self->w_cr && cw == self->w_cw && br == self->w_br && bw == self->w_bw) return 0;
    self->w_cr = cr;
    self->w_cw = cw;
    self->w_br = br;
    self->w_bw = bw;
    PyObject *r = PyObject_CallFunction(self->m_want, "iiii", cr, cw, br, bw);
    if (!r) {
        pump_fail_exc(self);
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static char *scratch; /* one read buffer: everything runs on the loop's thread, under the GIL */

/* Read from the client until it would block, the backend's queue fills, or a fair share is done. */
static void read_client(PumpObject *self) {
    self->read_wants_write = 0;
    for (int i = 0; !self->done && !buf_size(&self->bout); i++) {
        /* a fair share per wake-up, but never leave decrypted bytes inside OpenSSL unread:
           epoll cannot see them */
        if (i >= MAX_READS_PER_WAKE && !(self->ssl && SSL_has_pending(self->ssl))) break;
        size_t got = 0;
        if (self->ssl) {
            ERR_clear_error();
            errno = 0;
            if (SSL_read_ex(self->ssl, scratch, READ_CHUNK, &got) != 1) {
                int e = SSL_get_error(self->ssl, 0);
                if (e == SSL_ERROR_WANT_READ) break;
                if (e == SSL_ERROR_WANT_WRITE) {
                    self->read_wants_write = 1;
                    break;
                }
                ERR_clear_error();
                pump_finish(self, FIN_CLIENT_GONE, NULL);
                return;
            }
        } else {
            ssize_t r = read(self->cfd, scratch, READ_CHUNK);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                pump_finish(self, FIN_CLIENT_GONE, NULL);
                return;
            }
            got = (size_t)r;
        }
        if (take_in(self, 1, scratch, got) < 0) {
            /* Terminate: what preceded it, and the Terminate itself, go to the backend */
            if (self->fin_code == FIN_TERMINATE) flush_backend(self);
            return;
        }
        if (send_backend(self) < 0) return;
        /* Nothing buffered inside OpenSSL: stop here rather than pay a read() that would only say
           EAGAIN; epoll is level-triggered and brings us back for bytes still in the socket. */
        if (!self->ssl || !SSL_has_pending(self->ssl)) break;
    }
}

static void read_backend(PumpObject *self) {
    for (int i = 0; i < MAX_READS_PER_WAKE && !self->done && !buf_size(&self->cout); i++) {
        ssize_t r = read(self->bfd, scratch, READ_CHUNK);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            pump_finish_msg(self, FIN_BACKEND_GONE, r < 0 ? strerror(errno) : "end of file");
            return;
        }
        if (take_in(self, 0, scratch, (size_t)r) < 0) return;
        if (send_client(self) < 0) return;
        if ((size_t)r < READ_CHUNK) break; /* drained */
    }
}

static PyObject *after(PumpObject *self) {
    if (!self->done) update_interest(self);
    if (PyErr_Occurred()) PyErr_WriteUnraisable((PyObject *)self);
    Py_RETURN_NONE;
}

/* The event loop's callbacks: one step of work, then tell Python what to watch next. */
static PyObject *on_event(PumpObject *self, void (*step)(PumpObject *)) {
    if (self->done) Py_RETURN_NONE;
    Py_INCREF(self); /* the handler may drop its reference to us while we run */
    step(self);
    PyObject *r = after(self);
    Py_DECREF(self);
    return r;
}

static void client_readable(PumpObject *self) {
    if (self->write_wants_read) send_client(self);
    if (!self->done) read_client(self);
}

static void client_writable(PumpObject *self) {
    int was_blocked = buf_size(&self->cout) > 0;
    if (send_client(self) < 0 || self->done) return;
    if (self->read_wants_write) read_client(self);
    else if (was_blocked && !buf_size(&self->cout)) read_backend(self); /* resume promptly */
}

static void backend_writable(PumpObject *self) {
    if (send_backend(self) < 0 || self->done || buf_size(&self->bout)) return;
    read_client(self); /* decrypted bytes may wait inside OpenSSL, where epoll cannot see them */
}

static PyObject *Pump_on_client_readable(PumpObject *self, PyObject *unused) {
    (void)unused;
    return on_event(self, client_readable);
}

static PyObject *Pump_on_client_writable(PumpObject *self, PyObject *unused) {
    (void)unused;
    return on_event(self, client_writable);
}

static PyObject *Pump_on_backend_readable(PumpObject *self, PyObject *unused) {
    (void)unused;
    return on_event(self, read_backend);
}

static PyObject *Pump_on_backend_writable(PumpObject *self, PyObject *unused) {
    (void)unused;
    return on_event(self, backend_writable);
}

/* feed_client(data) / feed_backend(data): bytes read before the pump took over. */
static PyObject *feed(PumpObject *self, PyObject *arg, int client) {
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0) return NULL;
    if (!self->done && v.len) {
        Py_INCREF(self);
        if (take_in(self, client, v.buf, (size_t)v.len) == 0) {
            if (client) send_backend(self);
            else send_client(self);
        } else if (client && self->fin_code == FIN_TERMINATE) {
            flush_backend(self);
        }
        PyBuffer_Release(&v);
        PyObject *r = after(self);
        Py_DECREF(self);
        return r;
    }
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

static PyObject *Pump_feed_client(PumpObject *self, PyObject *arg) { return feed(self, arg, 1); }
static PyObject *Pump_feed_backend(PumpObject *self, PyObject *arg) { return feed(self, arg, 0); }

/* start(): announce the initial interest and read whatever is already waiting. */
static PyObject *Pump_start(PumpObject *self, PyObject *unused) {
    (void)unused;
    if (self->done) Py_RETURN_NONE;
    self->w_cr = self->w_cw = self->w_br = self->w_bw = -1;
    Py_INCREF(self);
    PyObject *r = after(self);
    Py_XDECREF(r);
    if (!self->done && self->ssl && SSL_has_pending(self->ssl)) read_client(self);
    r = after(self);
    Py_DECREF(self);
    return r;
}

/* flush() -> True when nothing is left to write (one non-blocking attempt per side). */
static PyObject *Pump_flush(PumpObject *self, PyObject *unused) {
    (void)unused;
    int failed = flush_backend(self) < 0;
    failed |= flush_client(self) < 0;
    return PyBool_FromLong(!failed && !buf_size(&self->cout) && !buf_size(&self->bout));
}

static int Pump_init(PumpObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"tls", "client_fd", "backend_fd", "handler", NULL};
    PyObject *tls, *handler;
    int cfd, bfd;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OiiO", names, &tls, &cfd, &bfd, &handler)) return -1;
    if (self->handler) {
        PyErr_SetString(PyExc_RuntimeError, "Pump already initialised");
        return -1;
    }
    if (tls != Py_None) {
        if (!PyObject_TypeCheck(tls, &TLSType) || !((TLSObject *)tls)->ssl) {
            PyErr_SetString(PyExc_TypeError, "tls must be an initialised TLS object or None");
            return -1;
        }
        self->ssl = ((TLSObject *)tls)->ssl;
        Py_INCREF(tls);
        self->tls = tls;
    }
    self->m_client = PyObject_GetAttrString(handler, "client_message");
    self->m_backend = self->m_client ? PyObject_GetAttrString(handler, "backend_message") : NULL;
    self->m_want = self->m_backend ? PyObject_GetAttrString(handler, "want") : NULL;
    self->m_finished = self->m_want ? PyObject_GetAttrString(handler, "finished") : NULL;
    if (!self->m_finished) return -1;
    Py_INCREF(handler);
    self->handler = handler;
    self->cfd = cfd;
    self->bfd = bfd;
    return 0;
}

static int Pump_traverse(PumpObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->tls);
    Py_VISIT(self->handler);
    Py_VISIT(self->m_client);
    Py_VISIT(self->m_backend);
    Py_VISIT(self->m_want);
    Py_VISIT(self->m_finished);
    return 0;
}

static int Pump_clear(PumpObject *self) {
    Py_CLEAR(self->tls);
    Py_CLEAR(self->handler);
    Py_CLEAR(self->m_client);
    Py_CLEAR(self->m_backend);
    Py_CLEAR(self->m_want);
    Py_CLEAR(self->m_finished);
    self->ssl = NULL;
    self->done = 1;
    return 0;
}

static void Pump_dealloc(PumpObject *self) {
    PyObject_GC_UnTrack(self);
    Pump_clear(self);
    buf_free(&self->up.in);
    buf_free(&self->down.in);
    buf_free(&self->cout);
    buf_free(&self->bout);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Pump_get_drop(PumpObject *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->drop);
}

static int Pump_set_drop(PumpObject *self, PyObject *v, void *closure) {
    (void)closure;
    int t = v ? PyObject_IsTrue(v) : 0;
    if (t < 0) return -1;
    self->drop = t;
    return 0;
}

static PyObject *Pump_get_done(PumpObject *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->done);
}

static PyMethodDef Pump_methods[] = {
    {"start", (PyCFunction)Pump_start, METH_NOARGS, "Announce the events to watch; read what already waits."},
    {"on_client_readable", (PyCFunction)Pump_on_client_readable, METH_NOARGS, NULL},
    {"on_client_writable", (PyCFunction)Pump_on_client_writable, METH_NOARGS, NULL},
    {"on_backend_readable", (PyCFunction)Pump_on_backend_readable, METH_NOARGS, NULL},
    {"on_backend_writable", (PyCFunction)Pump_on_backend_writable, METH_NOARGS, NULL},
    {"feed_client", (PyCFunction)Pump_feed_client, METH_O, "Client bytes read before the pump took over."},
    {"feed_backend", (PyCFunction)Pump_feed_backend, METH_O, "Backend bytes read before the pump took over."},
    {"flush", (PyCFunction)Pump_flush, METH_NOARGS, "One non-blocking attempt to write what is queued."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Pump_getset[] = {
    {"drop", (getter)Pump_get_drop, (setter)Pump_set_drop,
     "True while the backend's output is being suppressed (an injected error ended the segment).", NULL},
    {"done", (getter)Pump_get_done, NULL, "True once finished() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dsqlops.sandbox._fastrelay.Pump",
    .tp_basicsize = sizeof(PumpObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pump_init,
    .tp_dealloc = (destructor)Pump_dealloc,
    .tp_traverse = (traverseproc)Pump_traverse,
    .tp_clear = (inquiry)Pump_clear,
    .tp_methods = Pump_methods,
    .tp_getset = Pump_getset,
    .tp_doc = "Pump(tls, client_fd, backend_fd, handler): one logged-in session's data path.",
};

/* ------------------------------------------------------------------------------------------ */

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_fastrelay",
    "The sandbox front's per-session data path (TLS, socket I/O, PostgreSQL framing) in C.", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastrelay(void) {
    if (PyType_Ready(&ContextType) < 0 || PyType_Ready(&TLSType) < 0 || PyType_Ready(&PumpType) < 0) return NULL;
    scratch = PyMem_RawMalloc(READ_CHUNK);
    if (!scratch) return PyErr_NoMemory();
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    TLSError = PyErr_NewException("dsqlops.sandbox._fastrelay.TLSError", PyExc_ConnectionError, NULL);
    if (!TLSError || PyModule_AddObjectRef(m, "TLSError", TLSError) < 0 ||
        PyModule_AddObjectRef(m, "Context", (PyObject *)&ContextType) < 0 ||
        PyModule_AddObjectRef(m, "TLS", (PyObject *)&TLSType) < 0 ||
        PyModule_AddObjectRef(m, "Pump", (PyObject *)&PumpType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "FIN_TERMINATE", FIN_TERMINATE);
    PyModule_AddIntConstant(m, "FIN_CLIENT_GONE", FIN_CLIENT_GONE);
    PyModule_AddIntConstant(m, "FIN_BACKEND_GONE", FIN_BACKEND_GONE);
    PyModule_AddIntConstant(m, "FIN_VIOLATION", FIN_VIOLATION);
    PyModule_AddIntConstant(m, "FIN_BACKEND_BAD", FIN_BACKEND_BAD);
    PyModule_AddIntConstant(m, "FIN_HANDLER_ERROR", FIN_HANDLER_ERROR);
    return m;
}
