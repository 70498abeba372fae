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
 *   rts_covariances    the RTS smoother's gains and covariances, float64
 *   smoothed_means     the RTS smoother's mean pass given its gains, float32 or float64
 *   fisher_terms       the data-independent terms of log_likelihood's gradient, float64
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
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

/*
 * The RTS smoother's means for B sequences of T steps, k columns at once, given the smoother
 * gains E_t (rts_covariances): backwards from m_{T-1|T} = m_{T-1|T-1},
 *   m_{t|T} = m_{t|t} + E_t (m_{t+1|T} - m_{t+1|t}).
 * E (., T-1, n, n), filtered means Mf and predicted means Mp (., T, n, k), each with a batch
 * stride. Output out (B, T, n, k). scratch: n * k elements.
 */
#define DEFINE_SMOOTHED_MEANS(T_, NAME, MATMUL)                                                    \
    static void NAME(const T_ *E, long bE, const T_ *Mf, long bF, const T_ *Mp, long bP, T_ *out,  \
                     long B, long T, long n, long k, T_ *d) {                                      \
        const long nk = n * k;                                                                     \
        for (long b = 0; b < B; b++) {                                                             \
            const T_ *f = Mf + b * bF, *p = Mp + b * bP;                                           \
            T_ *o = out + b * T * nk;                                                              \
            memcpy(o + (T - 1) * nk, f + (T - 1) * nk, nk * sizeof(T_));                           \
            for (long t = T - 2; t >= 0; t--) {                                                    \
                for (long j = 0; j < nk; j++) d[j] = o[(t + 1) * nk + j] - p[(t + 1) * nk + j];    \
                MATMUL(E + b * bE + t * n * n, d, o + t * nk, n, n, k);                            \
                for (long j = 0; j < nk; j++) o[t * nk + j] += f[t * nk + j];                      \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_SMOOTHED_MEANS(float, smoothed_means_f, matmul_f)
DEFINE_SMOOTHED_MEANS(double, smoothed_means_d, matmul_d)

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

/* Y <- S^-1 Y for the m x c matrix Y, given the lower Cholesky factor L of S: forward solve
 * L Z = Y, then back solve L^T Y = Z. */
static void cholesky_solve(const double *L, double *Y, long m, long c) {
    for (long i = 0; i < m; i++)
        for (long j = 0; j < c; j++) {
            double v = Y[i * c + j];
            for (long l = 0; l < i; l++) v -= L[i * m + l] * Y[l * c + j];
            Y[i * c + j] = v / L[i * m + i];
        }
    for (long i = m - 1; i >= 0; i--)
        for (long j = 0; j < c; j++) {
            double v = Y[i * c + j];
            for (long l = i + 1; l < m; l++) v -= L[l * m + i] * Y[l * c + j];
            Y[i * c + j] = v / L[i * m + i];
        }
}

/* out (c x r) = a^T for the r x c matrix a. */
static void transpose(const double *a, double *out, long r, long c) {
    for (long i = 0; i < r; i++)
        for (long j = 0; j < c; j++) out[j * r + i] = a[i * c + j];
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
            memcpy(Kt, CP, nm * sizeof(double)); /* K^T = S^-1 C P */
            cholesky_solve(Lt, Kt, m, n);
            transpose(Kt, Kb, m, n); /* K = (K^T)^T */
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

/* Whether every entry of the n x n covariances P and P' differs by at most 8 units of rounding
 * on its own scale, max(sqrt(P_ii P_jj), sqrt(P'_ii P'_jj)): scan.steady_start's test. */
static int calm(const double *P, const double *Pn, long n) {
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) {
            const double scale = fmax(sqrt(fabs(P[i * n + i] * P[j * n + j])),
                                      sqrt(fabs(Pn[i * n + i] * Pn[j * n + j])));
            if (!(fabs(P[i * n + j] - Pn[i * n + j]) <= 8 * DBL_EPSILON * scale)) return 0;
        }
    return 1;
}

static int same(const double *a, const double *b, long count) {
    return a == b || memcmp(a, b, (size_t)count * sizeof(double)) == 0;
}

/*
 * The RTS smoother's covariances for B sequences of T steps, in float64 (seqlvm.kalman.smoother),
 * backwards from P_{T-1|T} = P_{T-1|T-1}:
 *   E_t = P_{t|t} A_{t+1}^T P_{t+1|t}^-1 (Cholesky solve),   L_t = sym(P_{t|t} - E_t A_{t+1} P_{t|t}),
 *   P_{t|T} = sym(E_t P_{t+1|T} E_t^T + L_t),                 X_t = P_{t+1|T} E_t^T = Cov(z_{t+1}, z_t | x).
 * A (., ., n, n) with batch and time strides; filtered Pf and predicted Pp covariances
 * (., T, n, n) with batch strides. Outputs E, X (B, T-1, n, n), Ps (B, T, n, n).
 * A filter held at its steady state repeats its inputs exactly from some step on: there E_t and
 * L_t are those of step t+1, copied, and once the smoothed covariances have changed calmly
 * (calm()) for `margin` steps in a row they are held too, as the PyTorch smoother's doubling
 * holds them, so a long steady stretch costs no O(n^3) work per step. Returns 1, or 0 where a
 * P_{t+1|t} is not positive definite (rounded to float32, a covariance can fall off the cone:
 * the PyTorch smoother's jittered factorisation then serves).
 */
static int rts_covariances(const double *A, long bA, long tA, const double *Pf, long bF,
                           const double *Pp, long bP, double *E, double *Ps, double *X, long B,
                           long T, long n, long margin, double *work) {
    const long nn = n * n;
    double *AP = work, *Y = AP + nn, *Lt = Y + nn, *M = Lt + nn;
    for (long b = 0; b < B; b++) {
        const double *F = Pf + b * bF, *P = Pp + b * bP;
        double *Eb = E + b * (T - 1) * nn, *S = Ps + b * T * nn, *Xb = X + b * (T - 1) * nn;
        memcpy(S + (T - 1) * nn, F + (T - 1) * nn, nn * sizeof(double));
        long calm_steps = 0;
        int held = 0;
        for (long t = T - 2; t >= 0; t--) {
            const double *At = A + b * bA + (t + 1) * tA, *Ft = F + t * nn, *Sn = S + (t + 1) * nn;
            double *Et = Eb + t * nn, *St = S + t * nn, *Xt = Xb + t * nn;
            const int repeated = t < T - 2 && same(Ft, Ft + nn, nn) && same(P + (t + 1) * nn, P + (t + 2) * nn, nn) &&
                                 same(At, At + tA, nn);
            if (repeated) {
                memcpy(Et, Et + nn, nn * sizeof(double)); /* and L_t is still in Lt */
            } else {
                matmul_d(At, Ft, AP, n, n, n); /* A P_{t|t} */
                memcpy(M, P + (t + 1) * nn, nn * sizeof(double));
                if (!cholesky(M, n)) return 0;
                memcpy(Y, AP, nn * sizeof(double)); /* E_t^T = P_{t+1|t}^-1 A P_{t|t} */
                cholesky_solve(M, Y, n, n);
                transpose(Y, Et, n, n);
                matmul_d(Et, AP, Lt, n, n, n);
                for (long j = 0; j < nn; j++) Lt[j] = Ft[j] - Lt[j];
                symmetrise(Lt, n);
                calm_steps = 0;
            }
            if (repeated && calm_steps >= margin) { /* steady: P_{t|T} = P_{t+1|T} */
                memcpy(St, Sn, nn * sizeof(double));
                if (held) {
                    memcpy(Xt, Xt + nn, nn * sizeof(double));
                    continue;
                }
                held = 1;
            } else {
                held = 0;
                matmul_d(Et, Sn, M, n, n, n);
                matmul_nt_d(M, Et, Lt, St, n, n, n);
                symmetrise(St, n);
                calm_steps = repeated && calm(St, Sn, n) ? calm_steps + 1 : 0;
            }
            memset(Xt, 0, nn * sizeof(double));
            matmul_nt_d(Sn, Et, Xt, Xt, n, n, n);
        }
    }
    return 1;
}

/*
 * The data-independent terms of log_likelihood's gradient (seqlvm.kalman.likelihood), in
 * float64, for B sequences of T steps, with P_t = P_{t|t-1}, V_t = P_{t|T}:
 *   N_t = sym(P_t^-1 (P_t - V_t) P_t^-1),
 *   D_t = sym(S_t^-1 + (A_{t+1} K_t)^T N_{t+1} A_{t+1} K_t)     (S_{T-1}^-1 alone at the last step),
 *   G_t = N_{t+1} A_{t+1} (I - K_t C_t) P_t   (t < T-1),      CV_t = C_t V_t.
 * A (., ., n, n) and C (., ., m, n) with batch and time strides; K (., T, n, m), the Cholesky
 * factors L of S_t (., T, m, m), P and V (., T, n, n) with batch strides. Outputs N (B, T, n, n),
 * D (B, T, m, m), G (B, T-1, n, n), CV (B, T, m, n). Where a filter and smoother held at their
 * steady states give steps t, t+1 and t+2 the same inputs, step t's terms are step t+1's, copied.
 * Returns 1, or 0 where a P_t is not positive definite (see rts_covariances).
 */
static int fisher_terms(const double *A, long bA, long tA, const double *C, long bC, long tC,
                        const double *K, long bK, const double *L, long bL, const double *P, long bP,
                        const double *V, long bV, double *N, double *D, double *G, double *CV,
                        long B, long T, long n, long m, double *work) {
    const long nn = n * n, nm = n * m, mm = m * m;
    double *W = work, *Y = W + nn, *Z = Y + nn, *AK = Z + nn, *NAK = AK + nm, *IKC = NAK + nm;
    for (long b = 0; b < B; b++) {
        int repeats_next = 0; /* steps t+1 and t+2 have the same inputs */
        for (long t = T - 1; t >= 0; t--) {
            const double *Pt = P + b * bP + t * nn, *Vt = V + b * bV + t * nn;
            const double *Kt = K + b * bK + t * nm, *Lt = L + b * bL + t * mm;
            const double *Ct = C + b * bC + t * tC, *An = A + b * bA + (t + 1) * tA;
            double *Nt = N + (b * T + t) * nn, *Dt = D + (b * T + t) * mm, *CVt = CV + (b * T + t) * nm;
            double *Gt = G + (b * (T - 1) + t) * nn;
            const int repeats = t < T - 2 && same(Pt, Pt + nn, nn) && same(Vt, Vt + nn, nn) && same(Kt, Kt + nm, nm) &&
                                same(Lt, Lt + mm, mm) && same(Ct, Ct + tC, nm) && same(An, An + tA, nn);
            const int copy = repeats && repeats_next;
            repeats_next = repeats;
            if (copy) {
                memcpy(Nt, Nt + nn, nn * sizeof(double));
                memcpy(Dt, Dt + mm, mm * sizeof(double));
                memcpy(CVt, CVt + nm, nm * sizeof(double));
                memcpy(Gt, Gt + nn, nn * sizeof(double));
                continue;
            }
            memcpy(W, Pt, nn * sizeof(double));
            if (!cholesky(W, n)) return 0;
            for (long j = 0; j < nn; j++) Y[j] = Pt[j] - Vt[j];
            cholesky_solve(W, Y, n, n); /* P^-1 (P - V) */
            transpose(Y, Z, n, n);
            cholesky_solve(W, Z, n, n); /* P^-1 (P - V)^T P^-1 = N^T */
            memcpy(Nt, Z, nn * sizeof(double));
            symmetrise(Nt, n);
            for (long i = 0; i < m; i++) /* S^-1 */
                for (long j = 0; j < m; j++) Dt[i * m + j] = i == j;
            cholesky_solve(Lt, Dt, m, m);
            matmul_d(Ct, Vt, CVt, m, n, n);
            if (t < T - 1) {
                matmul_d(An, Kt, AK, n, n, m); /* D += (A K)^T N_{t+1} A K */
                matmul_d(Nt + nn, AK, NAK, n, n, m);
                for (long i = 0; i < m; i++)
                    for (long j = 0; j < m; j++) {
                        double acc = 0;
                        for (long l = 0; l < n; l++) acc += AK[l * m + i] * NAK[l * m + j];
                        Dt[i * m + j] += acc;
                    }
                matmul_d(Kt, Ct, IKC, n, m, n); /* G = N_{t+1} A (I - K C) P */
                for (long i = 0; i < n; i++)
                    for (long j = 0; j < n; j++) IKC[i * n + j] = (i == j) - IKC[i * n + j];
                matmul_d(An, IKC, Y, n, n, n);
                matmul_d(Y, Pt, Z, n, n, n);
                matmul_d(Nt + nn, Z, Gt, n, n, n);
            }
            symmetrise(Dt, m);
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

/*
 * Each Python entry parses its integers, allocates the loop's scratch memory, runs the loop
 * without the GIL and returns whether it finished (False: a matrix that is not positive
 * definite). NAME_scratch gives the scratch size in bytes from the arguments; NAME_call
 * unpacks them into the loop's parameters.
 */
#define MAX_ARGS 32

static PyObject *run_loop(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *fn,
                          size_t (*scratch_bytes)(const long long *), int (*call)(const long long *, void *)) {
    long long a[MAX_ARGS];
    if (!take_longs(args, nargs, want, a, fn)) return NULL;
    void *scratch = malloc(scratch_bytes(a) + 1);
    if (!scratch) return PyErr_NoMemory();
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = call(a, scratch);
    Py_END_ALLOW_THREADS
    free(scratch);
    return PyBool_FromLong(ok);
}

#define ENTRY(NAME, NARGS)                                                                  \
    static PyObject *py_##NAME(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {  \
        _Static_assert(NARGS <= MAX_ARGS, #NAME " takes more than MAX_ARGS arguments");   \
        return run_loop(args, nargs, NARGS, #NAME, NAME##_scratch, NAME##_call);           \
    }

/* The element size of a loop that runs in either dtype (its first argument: float64 or not). */
#define ELEM(a) ((a)[0] ? sizeof(double) : sizeof(float))

/* linear_recurrence(double, F, sF, g, sg, h0, sh, out, B, N, n, k, reverse, congruence) */
static size_t linear_recurrence_scratch(const long long *a) { return (size_t)(a[10] * a[10]) * ELEM(a); }
static int linear_recurrence_call(const long long *a, void *s) {
    BY_DTYPE(a[0], linrec, PTR(a[1]), (long)a[2], PTR(a[3]), (long)a[4], PTR(a[5]), (long)a[6],
             PTR(a[7]), (long)a[8], (long)a[9], (long)a[10], (long)a[11], (int)a[12], (int)a[13], s);
    return 1;
}
ENTRY(linear_recurrence, 14)

/* filter_means(double, A, bA, tA, C, bC, tC, K, bK, L, bL, X, bX, U, bU, m0, b0, means, pred, W,
 *              B, T, n, m, k); U = 0 for no controls */
static size_t filter_means_scratch(const long long *a) { return (size_t)(a[23] * a[24]) * ELEM(a); }
static int filter_means_call(const long long *a, void *s) {
    BY_DTYPE(a[0], filter_means, PTR(a[1]), (long)a[2], (long)a[3], PTR(a[4]), (long)a[5],
             (long)a[6], PTR(a[7]), (long)a[8], PTR(a[9]), (long)a[10], PTR(a[11]), (long)a[12],
             PTR(a[13]), (long)a[14], PTR(a[15]), (long)a[16], PTR(a[17]), PTR(a[18]),
             PTR(a[19]), (long)a[20], (long)a[21], (long)a[22], (long)a[23], (long)a[24], s);
    return 1;
}
ENTRY(filter_means, 25)

/* adjoints(double, A, bA, tA, C, bC, tC, K, bK, L, bL, W, bW, rho, u, B, T, n, m, k) */
static size_t adjoints_scratch(const long long *a) { return (size_t)(a[17] * a[19]) * ELEM(a); }
static int adjoints_call(const long long *a, void *s) {
    BY_DTYPE(a[0], adjoints, PTR(a[1]), (long)a[2], (long)a[3], PTR(a[4]), (long)a[5],
             (long)a[6], PTR(a[7]), (long)a[8], PTR(a[9]), (long)a[10], PTR(a[11]), (long)a[12],
             PTR(a[13]), PTR(a[14]), (long)a[15], (long)a[16], (long)a[17], (long)a[18],
             (long)a[19], s);
    return 1;
}
ENTRY(adjoints, 20)

/* riccati(A, bA, tA, Q, bQ, tQ, C, bC, tC, R, bR, tR, P0, bP, pred, filt, K, L, B, T, n, m,
 *         continued) */
static size_t riccati_scratch(const long long *a) {
    return (size_t)(4 * a[20] * a[20] + 3 * a[20] * a[21]) * sizeof(double);
}
static int riccati_call(const long long *a, void *s) {
    return riccati(PTR(a[0]), (long)a[1], (long)a[2], PTR(a[3]), (long)a[4], (long)a[5], PTR(a[6]),
                   (long)a[7], (long)a[8], PTR(a[9]), (long)a[10], (long)a[11], PTR(a[12]),
                   (long)a[13], PTR(a[14]), PTR(a[15]), PTR(a[16]), PTR(a[17]), (long)a[18],
                   (long)a[19], (long)a[20], (long)a[21], (int)a[22], s);
}
ENTRY(riccati, 23)

/* smoothed_means(double, E, bE, Mf, bF, Mp, bP, out, B, T, n, k) */
static size_t smoothed_means_scratch(const long long *a) { return (size_t)(a[10] * a[11]) * ELEM(a); }
static int smoothed_means_call(const long long *a, void *s) {
    BY_DTYPE(a[0], smoothed_means, PTR(a[1]), (long)a[2], PTR(a[3]), (long)a[4], PTR(a[5]),
             (long)a[6], PTR(a[7]), (long)a[8], (long)a[9], (long)a[10], (long)a[11], s);
    return 1;
}
ENTRY(smoothed_means, 12)

/* rts_covariances(A, bA, tA, Pf, bF, Pp, bP, E, Ps, X, B, T, n, margin) */
static size_t rts_covariances_scratch(const long long *a) { return (size_t)(4 * a[12] * a[12]) * sizeof(double); }
static int rts_covariances_call(const long long *a, void *s) {
    return rts_covariances(PTR(a[0]), (long)a[1], (long)a[2], PTR(a[3]), (long)a[4], PTR(a[5]),
                           (long)a[6], PTR(a[7]), PTR(a[8]), PTR(a[9]), (long)a[10], (long)a[11],
                           (long)a[12], (long)a[13], s);
}
ENTRY(rts_covariances, 14)

/* fisher_terms(A, bA, tA, C, bC, tC, K, bK, L, bL, P, bP, V, bV, N, D, G, CV, B, T, n, m) */
static size_t fisher_terms_scratch(const long long *a) {
    return (size_t)(4 * a[20] * a[20] + 2 * a[20] * a[21]) * sizeof(double);
}
static int fisher_terms_call(const long long *a, void *s) {
    return fisher_terms(PTR(a[0]), (long)a[1], (long)a[2], PTR(a[3]), (long)a[4], (long)a[5],
                        PTR(a[6]), (long)a[7], PTR(a[8]), (long)a[9], PTR(a[10]), (long)a[11],
                        PTR(a[12]), (long)a[13], PTR(a[14]), PTR(a[15]), PTR(a[16]), PTR(a[17]),
                        (long)a[18], (long)a[19], (long)a[20], (long)a[21], s);
}
ENTRY(fisher_terms, 22)

static PyMethodDef methods[] = {
    {"linear_recurrence", (PyCFunction)(void (*)(void))py_linear_recurrence, METH_FASTCALL,
     "h_t = F_t h_{t-1} + g_t over raw buffers (see seqlvm.kalman.native)."},
    {"filter_means", (PyCFunction)(void (*)(void))py_filter_means, METH_FASTCALL,
     "The Kalman filter's mean pass over raw buffers (see seqlvm.kalman.native)."},
    {"adjoints", (PyCFunction)(void (*)(void))py_adjoints, METH_FASTCALL,
     "The disturbance smoother's adjoints over raw buffers (see seqlvm.kalman.native)."},
    {"riccati", (PyCFunction)(void (*)(void))py_riccati, METH_FASTCALL,
     "The Kalman filter's covariance recursion over raw float64 buffers (see seqlvm.kalman.native)."},
    {"rts_covariances", (PyCFunction)(void (*)(void))py_rts_covariances, METH_FASTCALL,
     "The RTS smoother's covariance pass over raw float64 buffers (see seqlvm.kalman.native)."},
    {"smoothed_means", (PyCFunction)(void (*)(void))py_smoothed_means, METH_FASTCALL,
     "The RTS smoother's mean pass over raw buffers (see seqlvm.kalman.native)."},
    {"fisher_terms", (PyCFunction)(void (*)(void))py_fisher_terms, METH_FASTCALL,
     "The data-independent terms of log_likelihood's gradient over raw float64 buffers (see seqlvm.kalman.native)."},
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
