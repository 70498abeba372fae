/*
 * Compiled loops for the Kalman core's sequential recursions on the CPU (seqlvm.kalman.native).
 *
 * Eager PyTorch pays a few microseconds of dispatch for every operation, and a step of these
 * recursions is a handful of products of n x n matrices with n around 4: one step costs more in
 * dispatch than in arithmetic. These loops do the same arithmetic with no dispatch. They work on
 * raw, C-contiguous buffers that seqlvm/kalman/native.py checks and lays out; nothing here
 * allocates a tensor or sees a Python object other than integers.
 *
 *   linear_recurrence  h_t = F_t h_{t-1} + g_t  (or F_t h_{t-1} F_t^T + g_t), float32 or float64
 *   riccati            the filter's covariance recursion (Joseph form), float64
 *   filter_means       the filter's mean pass given its gains, float32 or float64
 *   adjoints           the disturbance smoother's backward pass, float32 or float64
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* out (r x c) = a (r x s) b (s x c), all row-major. */
#define DEFINE_MATMUL(T, NAME)                                                               \
    static void NAME(const T *a, const T *b, T *out, long r, long s, long c) {               \
        for (long i = 0; i < r; i++) {                                                       \
            T *o = out + i * c;                                                              \
            for (long j = 0; j < c; j++) o[j] = 0;                                           \
            for (long l = 0; l < s; l++) {                                                   \
                const T w = a[i * s + l];                                                    \
                const T *bl = b + l * c;                                                     \
                for (long j = 0; j < c; j++) o[j] += w * bl[j];                              \
            }                                                                                \
        }                                                                                    \
    }

DEFINE_MATMUL(float, matmul_f)
DEFINE_MATMUL(double, matmul_d)

/* out (r x c) = a (r x s) b^T + add, with b (c x s) and add (r x c), all row-major; add may be
 * out itself (each entry is read before it is written). */
#define DEFINE_MATMUL_NT(T, NAME)                                                            \
    static void NAME(const T *a, const T *b, const T *add, T *out, long r, long s, long c) { \
        for (long i = 0; i < r; i++)                                                         \
            for (long j = 0; j < c; j++) {                                                   \
                T acc = 0;                                                                   \
                for (long l = 0; l < s; l++) acc += a[i * s + l] * b[j * s + l];             \
                out[i * c + j] = acc + add[i * c + j];                                       \
            }                                                                                \
    }

DEFINE_MATMUL_NT(float, matmul_nt_f)
DEFINE_MATMUL_NT(double, matmul_nt_d)

/*
 * h_t = F_t h_{t-1} + g_t for the N steps of each of B sequences; congruence: F_t h_{t-1} F_t^T + g_t.
 * F (bF, N, n, n), g (bg, N, n, k), h0 (bh, n, k), out (B, N, n, k); each operand's batch
 * stride is 0 when it is shared by the B sequences. reverse: t runs N-1 .. 0 and h_{t+1} takes
 * the place of h_{t-1}. scratch: n * n elements (congruence only).
 */
#define DEFINE_LINREC(T, NAME, MATMUL, MATMUL_NT)                                            \
    static void NAME(const T *F, long sF, const T *g, long sg, const T *h0, long sh, T *out, \
                     long B, long N, long n, long k, int reverse, int congruence, T *scratch) { \
        const long nn = n * n, nk = n * k;                                                   \
        for (long b = 0; b < B; b++) {                                                       \
            const T *prev = h0 + b * sh;                                                     \
            for (long i = 0; i < N; i++) {                                                   \
                const long t = reverse ? N - 1 - i : i;                                      \
                const T *Ft = F + b * sF + t * nn, *gt = g + b * sg + t * nk;                \
                T *ht = out + (b * N + t) * nk;                                              \
                if (congruence) { /* (F h) F^T + g */                                        \
                    MATMUL(Ft, prev, scratch, n, n, n);                                      \
                    MATMUL_NT(scratch, Ft, gt, ht, n, n, n);                                 \
                } else {                                                                     \
                    MATMUL(Ft, prev, ht, n, n, k);                                           \
                    for (long j = 0; j < nk; j++) ht[j] += gt[j];                            \
                }                                                                            \
                prev = ht;                                                                   \
            }                                                                                \
        }                                                                                    \
    }

DEFINE_LINREC(float, linrec_f, matmul_f, matmul_nt_f)
DEFINE_LINREC(double, linrec_d, matmul_d, matmul_nt_d)

/*
 * The filter's mean pass for B sequences of T steps, given its covariance pass (gains K_t and
 * the Cholesky factors L_t of S_t), k columns at once (the product layout of linalg.columns):
 *   m_{t|t-1} = m0 (t = 0) or A_t m_{t-1|t-1} + U_t,   v_t = X_t - C_t m_{t|t-1},
 *   W_t = L_t^-1 v_t (forward substitution),          m_{t|t} = m_{t|t-1} + K_t v_t.
 * A (., ., n, n) and C (., ., m, n) with batch and time strides; K (., T, n, m), L (., T, m, m),
 * X (., T, m, k), U (., T, n, k) or NULL (control offsets), m0 (., n, k) with batch strides.
 * Outputs means, pred (B, T, n, k), W (B, T, m, k). scratch: m * k elements.
 */
#define DEFINE_FILTER_MEANS(T_, NAME, MATMUL)                                                      \
    static void NAME(const T_ *A, long bA, long tA, const T_ *C, long bC, long tC, const T_ *K,    \
                     long bK, const T_ *L, long bL, const T_ *X, long bX, const T_ *U, long bU,    \
                     const T_ *m0, long b0, T_ *means, T_ *pred, T_ *W, long B, long T, long n,    \
                     long m, long k, T_ *v) {                                                      \
        const long nk = n * k, mk = m * k;                                                         \
        for (long b = 0; b < B; b++)                                                               \
            for (long t = 0; t < T; t++) {                                                         \
                T_ *pt = pred + (b * T + t) * nk, *mt = means + (b * T + t) * nk;                  \
                T_ *wt = W + (b * T + t) * mk;                                                     \
                const T_ *Ct = C + b * bC + t * tC, *Kt = K + b * bK + t * n * m;                  \
                const T_ *Lt = L + b * bL + t * m * m, *Xt = X + b * bX + t * mk;                  \
                if (t == 0) {                                                                      \
                    memcpy(pt, m0 + b * b0, nk * sizeof(T_));                                      \
                } else {                                                                           \
                    MATMUL(A + b * bA + t * tA, mt - nk, pt, n, n, k);                             \
                    if (U)                                                                         \
                        for (long j = 0; j < nk; j++) pt[j] += U[b * bU + t * nk + j];             \
                }                                                                                  \
                MATMUL(Ct, pt, v, m, n, k); /* v = X - C pred */                                   \
                for (long j = 0; j < mk; j++) v[j] = Xt[j] - v[j];                                 \
                for (long i = 0; i < m; i++) /* W = L^-1 v */                                      \
                    for (long c = 0; c < k; c++) {                                                 \
                        T_ acc = v[i * k + c];                                                     \
                        for (long l = 0; l < i; l++) acc -= Lt[i * m + l] * wt[l * k + c];         \
                        wt[i * k + c] = acc / Lt[i * m + i];                                       \
                    }                                                                              \
                MATMUL(Kt, v, mt, n, m, k); /* m = pred + K v */                                   \
                for (long j = 0; j < nk; j++) mt[j] += pt[j];                                      \
            }                                                                                      \
    }

DEFINE_FILTER_MEANS(float, filter_means_f, matmul_f)
DEFINE_FILTER_MEANS(double, filter_means_d, matmul_d)

/*
 * The disturbance smoother's adjoints (seqlvm.kalman.likelihood.adjoints), backwards over the T
 * steps of B sequences, k columns at once: with a_t = A_{t+1}^T rho_{t+1} (0 at the last step),
 *   u_t = L_t^-T W_t - K_t^T a_t,   rho_t = C_t^T u_t + a_t,
 * where W_t = L_t^-1 v_t are the filter's whitened innovations. A (., ., n, n) and C (., ., m, n)
 * with batch and time strides; K (., T, n, m), L (., T, m, m), W (., T, m, k) with batch
 * strides. Outputs rho (B, T, n, k), u (B, T, m, k). scratch: n * k elements.
 */
#define DEFINE_ADJOINTS(T_, NAME)                                                                  \
    static void NAME(const T_ *A, long bA, long tA, const T_ *C, long bC, long tC, const T_ *K,    \
                     long bK, const T_ *L, long bL, const T_ *W, long bW, T_ *rho, T_ *u, long B,  \
                     long T, long n, long m, long k, T_ *a) {                                      \
        const long nk = n * k, mk = m * k;                                                         \
        for (long b = 0; b < B; b++)                                                               \
            for (long t = T - 1; t >= 0; t--) {                                                    \
                const T_ *Ct = C + b * bC + t * tC, *Kt = K + b * bK + t * n * m;                  \
                const T_ *Lt = L + b * bL + t * m * m, *Wt = W + b * bW + t * mk;                  \
                T_ *rt = rho + (b * T + t) * nk, *ut = u + (b * T + t) * mk;                       \
                for (long j = 0; j < nk; j++) a[j] = 0;                                            \
                if (t < T - 1) { /* a = A_{t+1}^T rho_{t+1} */                                     \
                    const T_ *An = A + b * bA + (t + 1) * tA, *rn = rt + nk;                       \
                    for (long l = 0; l < n; l++)                                                   \
                        for (long i = 0; i < n; i++) {                                             \
                            const T_ w = An[l * n + i];                                            \
                            for (long c = 0; c < k; c++) a[i * k + c] += w * rn[l * k + c];        \
                        }                                                                          \
                }                                                                                  \
                for (long i = m - 1; i >= 0; i--) /* u = L^-T W (back substitution) */             \
                    for (long c = 0; c < k; c++) {                                                 \
                        T_ acc = Wt[i * k + c];                                                    \
                        for (long l = i + 1; l < m; l++) acc -= Lt[l * m + i] * ut[l * k + c];     \
                        ut[i * k + c] = acc / Lt[i * m + i];                                       \
                    }                                                                              \
                for (long l = 0; l < n; l++) /* u -= K^T a */                                      \
                    for (long i = 0; i < m; i++) {                                                 \
                        const T_ w = Kt[l * m + i];                                                \
                        for (long c = 0; c < k; c++) ut[i * k + c] -= w * a[l * k + c];            \
                    }                                                                              \
                memcpy(rt, a, nk * sizeof(T_)); /* rho = C^T u + a */                              \
                for (long i = 0; i < m; i++)                                                       \
                    for (long l = 0; l < n; l++) {                                                 \
                        const T_ w = Ct[i * n + l];                                                \
                        for (long c = 0; c < k; c++) rt[l * k + c] += w * ut[i * k + c];           \
                    }                                                                              \
            }                                                                                      \
    }

DEFINE_ADJOINTS(float, adjoints_f)
DEFINE_ADJOINTS(double, adjoints_d)

/* In-place lower Cholesky factor of the m x m matrix S (upper triangle zeroed); 0 if not
 * positive definite. */
static int cholesky(double *S, long m) {
    for (long j = 0; j < m; j++) {
        double d = S[j * m + j];
        for (long l = 0; l < j; l++) d -= S[j * m + l] * S[j * m + l];
        if (!(d > 0)) return 0; /* also catches NaN */
        d = sqrt(d);
        S[j * m + j] = d;
        for (long i = j + 1; i < m; i++) {
            double v = S[i * m + j];
            for (long l = 0; l < j; l++) v -= S[i * m + l] * S[j * m + l];
            S[i * m + j] = v / d;
        }
        for (long i = 0; i < j; i++) S[i * m + j] = 0;
    }
    return 1;
}

static void symmetrise(double *P, long n) {
    for (long i = 0; i < n; i++)
        for (long j = 0; j < i; j++) {
            const double v = 0.5 * (P[i * n + j] + P[j * n + i]);
            P[i * n + j] = v;
            P[j * n + i] = v;
        }
}

/*
 * The filter's covariance pass for B sequences of T steps, in float64 (seqlvm.kalman.filter):
 *   P_{t|t-1} = P0 (t = 0) or sym(A_t P_{t-1|t-1} A_t^T + Q_t),  S_t = C_t P_{t|t-1} C_t^T + R_t = L_t L_t^T,
 *   K_t = P_{t|t-1} C_t^T S_t^-1 (two triangular solves),
 *   P_{t|t} = sym((I - K_t C_t) P_{t|t-1} (I - K_t C_t)^T + K_t R_t K_t^T)   (Joseph form).
 * Inputs A, Q (., ., n, n), C (., ., m, n), R (., ., m, m), P0 (., n, n), each with a batch and a
 * time stride (0 when shared or time-invariant). Outputs pred, filt (B, T, n, n), K (B, T, n, m),
 * L (B, T, m, m). continued: P0 is instead the filtered covariance of the step before the first,
 * which step 0 then predicts from (a recursion resumed in stretches). Returns 1, or 0 at the
 * first S_t that is not positive definite.
 */
static int riccati(const double *A, long bA, long tA, const double *Q, long bQ, long tQ,
                   const double *C, long bC, long tC, const double *R, long bR, long tR,
                   const double *P0, long bP, double *pred, double *filt, double *K, double *L,
                   long B, long T, long n, long m, int continued, double *work) {
    const long nn = n * n, nm = n * m, mm = m * m;
    double *AP = work, *CP = AP + nn, *Kt = CP + nm, *IKC = Kt + nm, *M = IKC + nn, *KR = M + nn;
    for (long b = 0; b < B; b++) {
        for (long t = 0; t < T; t++) {
            const double *At = A + b * bA + t * tA, *Qt = Q + b * bQ + t * tQ;
            const double *Ct = C + b * bC + t * tC, *Rt = R + b * bR + t * tR;
            double *Pp = pred + (b * T + t) * nn, *Pf = filt + (b * T + t) * nn;
            double *Kb = K + (b * T + t) * nm, *Lt = L + (b * T + t) * mm;
            if (t == 0 && !continued) {
                memcpy(Pp, P0 + b * bP, nn * sizeof(double));
            } else { /* A P A^T + Q */
                const double *Pprev = t == 0 ? P0 + b * bP : Pf - nn;
                matmul_d(At, Pprev, AP, n, n, n);
                matmul_nt_d(AP, At, Qt, Pp, n, n, n);
                symmetrise(Pp, n);
            }
            matmul_d(Ct, Pp, CP, m, n, n);          /* C P (m x n) */
            matmul_nt_d(CP, Ct, Rt, Lt, m, n, m);  /* S = C P C^T + R */
            if (!cholesky(Lt, m)) return 0;
            /* K^T = S^-1 C P: forward solve L Y = C P, then back solve L^T K^T = Y. */
            memcpy(Kt, CP, nm * sizeof(double));
            for (long i = 0; i < m; i++)
                for (long c = 0; c < n; c++) {
                    double v = Kt[i * n + c];
                    for (long l = 0; l < i; l++) v -= Lt[i * m + l] * Kt[l * n + c];
                    Kt[i * n + c] = v / Lt[i * m + i];
                }
            for (long i = m - 1; i >= 0; i--)
                for (long c = 0; c < n; c++) {
                    double v = Kt[i * n + c];
                    for (long l = i + 1; l < m; l++) v -= Lt[l * m + i] * Kt[l * n + c];
                    Kt[i * n + c] = v / Lt[i * m + i];
                }
            for (long i = 0; i < n; i++) /* K = (K^T)^T */
                for (long j = 0; j < m; j++) Kb[i * m + j] = Kt[j * n + i];
            matmul_d(Kb, Ct, IKC, n, m, n); /* I - K C */
            for (long i = 0; i < n; i++)
                for (long j = 0; j < n; j++) IKC[i * n + j] = (i == j) - IKC[i * n + j];
            /* (I-KC) P (I-KC)^T + K R K^T: the second term first, then the first added to it */
            matmul_d(IKC, Pp, M, n, n, n);
            matmul_d(Kb, Rt, KR, n, m, m);
            memset(Pf, 0, nn * sizeof(double));
            matmul_nt_d(KR, Kb, Pf, Pf, n, m, n);
            matmul_nt_d(M, IKC, Pf, Pf, n, n, n);
            symmetrise(Pf, n);
        }
    }
    return 1;
}

/* Python wrappers: every argument is an integer (addresses from Tensor.data_ptr()). */

static int take_longs(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, long long *out,
                      const char *fn) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd integer arguments; got %zd", fn, want, nargs);
        return 0;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = PyLong_AsLongLong(args[i]);
        if (out[i] == -1 && PyErr_Occurred()) return 0;
    }
    return 1;
}

#define PTR(v) ((void *)(intptr_t)(v))

/* Call NAME_d (float64 buffers) or NAME_f (float32) with the same arguments. */
#define BY_DTYPE(is_double, NAME, ...)      \
    do {                                    \
        if (is_double)                      \
            NAME##_d(__VA_ARGS__);          \
        else                                \
            NAME##_f(__VA_ARGS__);          \
    } while (0)

/* linear_recurrence(double, F, sF, g, sg, h0, sh, out, B, N, n, k, reverse, congruence) */
static PyObject *py_linear_recurrence(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[14];
    if (!take_longs(args, nargs, 14, a, "linear_recurrence")) return NULL;
    const long n = (long)a[10];
    void *scratch = malloc((size_t)(n * n) * (a[0] ? sizeof(double) : sizeof(float)) + 1);
    if (!scratch) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    BY_DTYPE(a[0], linrec, PTR(a[1]), (long)a[2], PTR(a[3]), (long)a[4], PTR(a[5]), (long)a[6],
             PTR(a[7]), (long)a[8], (long)a[9], n, (long)a[11], (int)a[12], (int)a[13],
             scratch);
    Py_END_ALLOW_THREADS
    free(scratch);
    Py_RETURN_NONE;
}

/* filter_means(double, A, bA, tA, C, bC, tC, K, bK, L, bL, X, bX, U, bU, m0, b0, means, pred, W,
 *              B, T, n, m, k); U = 0 for no controls */
static PyObject *py_filter_means(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[25];
    if (!take_longs(args, nargs, 25, a, "filter_means")) return NULL;
    const long m = (long)a[23], k = (long)a[24];
    void *v = malloc((size_t)(m * k) * (a[0] ? sizeof(double) : sizeof(float)) + 1);
    if (!v) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    BY_DTYPE(a[0], filter_means, PTR(a[1]), (long)a[2], (long)a[3], PTR(a[4]), (long)a[5],
             (long)a[6], PTR(a[7]), (long)a[8], PTR(a[9]), (long)a[10], PTR(a[11]), (long)a[12],
             PTR(a[13]), (long)a[14], PTR(a[15]), (long)a[16], PTR(a[17]), PTR(a[18]),
             PTR(a[19]), (long)a[20], (long)a[21], (long)a[22], m, k, v);
    Py_END_ALLOW_THREADS
    free(v);
    Py_RETURN_NONE;
}

/* adjoints(double, A, bA, tA, C, bC, tC, K, bK, L, bL, W, bW, rho, u, B, T, n, m, k) */
static PyObject *py_adjoints(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[20];
    if (!take_longs(args, nargs, 20, a, "adjoints")) return NULL;
    const long n = (long)a[17], k = (long)a[19];
    void *scratch = malloc((size_t)(n * k) * (a[0] ? sizeof(double) : sizeof(float)) + 1);
    if (!scratch) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    BY_DTYPE(a[0], adjoints, PTR(a[1]), (long)a[2], (long)a[3], PTR(a[4]), (long)a[5],
             (long)a[6], PTR(a[7]), (long)a[8], PTR(a[9]), (long)a[10], PTR(a[11]), (long)a[12],
             PTR(a[13]), PTR(a[14]), (long)a[15], (long)a[16], n, (long)a[18], k, scratch);
    Py_END_ALLOW_THREADS
    free(scratch);
    Py_RETURN_NONE;
}

/* riccati(A, bA, tA, Q, bQ, tQ, C, bC, tC, R, bR, tR, P0, bP, pred, filt, K, L, B, T, n, m,
 *         continued) -> bool */
static PyObject *py_riccati(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long a[23];
    if (!take_longs(args, nargs, 23, a, "riccati")) return NULL;
    const long n = (long)a[20], m = (long)a[21];
    double *work = malloc((size_t)(4 * n * n + 3 * n * m + 1) * sizeof(double));
    if (!work) return PyErr_NoMemory();
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = riccati(PTR(a[0]), (long)a[1], (long)a[2], PTR(a[3]), (long)a[4], (long)a[5], PTR(a[6]),
                 (long)a[7], (long)a[8], PTR(a[9]), (long)a[10], (long)a[11], PTR(a[12]),
                 (long)a[13], PTR(a[14]), PTR(a[15]), PTR(a[16]), PTR(a[17]), (long)a[18],
                 (long)a[19], n, m, (int)a[22], work);
    Py_END_ALLOW_THREADS
    free(work);
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"linear_recurrence", (PyCFunction)(void (*)(void))py_linear_recurrence, METH_FASTCALL,
     "h_t = F_t h_{t-1} + g_t over raw buffers (see seqlvm.kalman.native)."},
    {"filter_means", (PyCFunction)(void (*)(void))py_filter_means, METH_FASTCALL,
     "The Kalman filter's mean pass over raw buffers (see seqlvm.kalman.native)."},
    {"adjoints", (PyCFunction)(void (*)(void))py_adjoints, METH_FASTCALL,
     "The disturbance smoother's adjoints over raw buffers (see seqlvm.kalman.native)."},
    {"riccati", (PyCFunction)(void (*)(void))py_riccati, METH_FASTCALL,
     "The Kalman filter's covariance recursion over raw float64 buffers (see seqlvm.kalman.native)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_native",
    .m_doc = "Compiled loops of seqlvm.kalman (see native.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
