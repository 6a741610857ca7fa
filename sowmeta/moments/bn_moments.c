/* Eval-mode BatchNorm and the per-row moments of its input in one read of the input.
 *
 * Rows are (image, channel) pairs of an [N, C, P] float32 map, contiguous. For every row:
 *   y = x * scale[c] + bias[c]                        (the BatchNorm's output)
 *   shift = mean of 8 evenly spaced x                 (as sowmeta.moments.reduce.row_shift)
 *   d = E[x - shift], q = E[(x - shift)^2]            (float32 sums, vectorized)
 *   mean = shift + d, m2 = max(0, (q - d^2) * P)      (float64, as sowmeta.moments.dispatch.central_moments)
 * and the number of rows whose m2 is ill-conditioned (m2 * ill_factor < d^2 * P) is returned,
 * for the caller to recompute them exactly. Built and loaded by sowmeta/moments/native.py, linked
 * against torch's own OpenMP runtime.
 */
#include <stdint.h>

int64_t bn_moments(const float *x, float *y, const float *scale, const float *bias, float *shift, double *mean,
                   double *m2, int64_t n, int64_t c, int64_t p, double ill_factor, int threads) {
    const int64_t step = p / 8 > 0 ? p / 8 : 1;
    const int64_t picks = p < 8 ? p : 8;
    int64_t ill = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : ill)
    for (int64_t r = 0; r < n * c; r++) {
        const float *xr = x + r * p;
        float *yr = y + r * p;
        const float a = scale[r % c], b = bias[r % c];
        float s = 0.f;
        for (int64_t k = 0; k < picks; k++) s += xr[k * step];
        s /= (float)picks;
        float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t i = 0; i < p; i++) {
            const float v = xr[i], d = v - s;
            s1 += d;
            s2 += d * d;
            yr[i] = v * a + b;
        }
        const double d = (double)(s1 / (float)p), q = (double)(s2 / (float)p);
        const double spread = (q - d * d) * (double)p;
        ill += spread * ill_factor < d * d * (double)p;
        shift[r] = s;
        mean[r] = (double)s + d;
        m2[r] = spread > 0.0 ? spread : 0.0;
    }
    return ill;
}

/* Synthesis, forward: y as above, and per row E[x] and E[x^2] (float32), one read of x. */
void bn_sums_forward(const float *x, float *y, const float *scale, const float *bias, float *mean, float *sq, int64_t n,
                     int64_t c, int64_t p, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < n * c; r++) {
        const float *xr = x + r * p;
        float *yr = y + r * p;
        const float a = scale[r % c], b = bias[r % c];
        float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t i = 0; i < p; i++) {
            const float v = xr[i];
            s1 += v;
            s2 += v * v;
            yr[i] = v * a + b;
        }
        mean[r] = s1 / (float)p;
        sq[r] = s2 / (float)p;
    }
}

/* Synthesis, backward: dx = scale[c] * dy + (g_mean + 2 x g_sq) / P, one read of dy and x. */
void bn_sums_backward(const float *x, const float *dy, float *dx, const float *scale, const float *g_mean,
                      const float *g_sq, int64_t n, int64_t c, int64_t p, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < n * c; r++) {
        const float *xr = x + r * p, *dyr = dy + r * p;
        float *dxr = dx + r * p;
        const float a = scale[r % c], k0 = g_mean[r] / (float)p, k1 = 2.f * g_sq[r] / (float)p;
#pragma omp simd
        for (int64_t i = 0; i < p; i++) dxr[i] = a * dyr[i] + k0 + k1 * xr[i];
    }
}
