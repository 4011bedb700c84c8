// The engine's own CUDA kernels, compiled at run time by NVRTC (see nvrtc.rs).
//
// Layouts follow backend/mod.rs: activations NHWC f32, per-channel vectors of C floats.
// Every reduction is deterministic: fixed partitions, sums in double, combined in a fixed
// order. The float arithmetic mirrors the CPU kernels operation for operation (the module is
// compiled with --fmad=false), so most results agree with the CPU bit for bit.
//
// Sizes are int where they fit (checked on the host) and long long for element counts.

#define GRID_STRIDE(i, total)                                                              \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total);      \
         i += (long long)gridDim.x * blockDim.x)

// Sum of one double per thread over a block of blockDim.x threads (a power of two).
__device__ double block_sum(double v, double* shared) {
    unsigned t = threadIdx.x;
    shared[t] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) shared[t] += shared[t + s];
        __syncthreads();
    }
    double total = shared[0];
    __syncthreads();
    return total;
}

// bf16 <-> f32 (bf16 is the top half of an f32; rounding to nearest even).
__device__ unsigned short to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (unsigned short)(u >> 16);
}
__device__ float from_bf16(unsigned short h) { return __uint_as_float(((unsigned)h) << 16); }

// A value as stored in an f32 or a bf16 buffer, and back.
__device__ float load(const float* p, long long i) { return p[i]; }
__device__ float load(const unsigned short* p, long long i) { return from_bf16(p[i]); }
__device__ void store(float* p, long long i, float v) { p[i] = v; }
__device__ void store(unsigned short* p, long long i, float v) { p[i] = to_bf16(v); }

// Four consecutive values moved with one access: 16 bytes of f32 or 8 of bf16. Where the
// channels are a multiple of 4, a quad at an index that is a multiple of 4 is four channels
// of one pixel. A thread with one scalar load in flight leaves the memory system idle (about
// 23 KB must be in flight per multiprocessor for the full bandwidth, by Little's law), so the
// memory-bound kernels below move quads where the layout allows (channels a multiple of 4,
// buffers `quad_aligned`) and fall back to single values elsewhere; both give the same
// values, the float operations being the same per element.
struct alignas(16) Quad {
    float v[4];
};
struct alignas(8) HalfQuad {
    unsigned short v[4];
};
__device__ bool aligned_to(const void* p, unsigned long long bytes) {
    return ((unsigned long long)p & (bytes - 1)) == 0;
}
// Null pointers (buffers a kernel does not write) pass.
__device__ bool quad_aligned(const float* p) { return aligned_to(p, 16); }
__device__ bool quad_aligned(const unsigned short* p) { return aligned_to(p, 8); }
__device__ void load4(const float* p, long long i, float* v) {
    Quad q = *(const Quad*)(p + i);
#pragma unroll
    for (int k = 0; k < 4; k++) v[k] = q.v[k];
}
__device__ void load4(const unsigned short* p, long long i, float* v) {
    HalfQuad q = *(const HalfQuad*)(p + i);
#pragma unroll
    for (int k = 0; k < 4; k++) v[k] = from_bf16(q.v[k]);
}
__device__ void store4(float* p, long long i, const float* v) {
    Quad q;
#pragma unroll
    for (int k = 0; k < 4; k++) q.v[k] = v[k];
    *(Quad*)(p + i) = q;
}
__device__ void store4(unsigned short* p, long long i, const float* v) {
    HalfQuad q;
#pragma unroll
    for (int k = 0; k < 4; k++) q.v[k] = to_bf16(v[k]);
    *(HalfQuad*)(p + i) = q;
}

// W (1 or 4) consecutive values: load/store, or load4/store4.
template <int W, typename T>
__device__ void load_w(const T* p, long long i, float* v) {
    if (W == 4) {
        load4(p, i, v);
    } else {
        v[0] = load(p, i);
    }
}
template <int W, typename T>
__device__ void store_w(T* p, long long i, const float* v) {
    if (W == 4) {
        store4(p, i, v);
    } else {
        store(p, i, v[0]);
    }
}

__device__ double softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }
__device__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

// ---- memory ----

extern "C" __global__ void fill_f32(float* x, float value, long long n) {
    GRID_STRIDE(i, n) x[i] = value;
}

// Buffers per launch of the *_many kernels (mod.rs's MANY). Their argument structs are
// passed by value; the Rust side mirrors each layout (FillManyArgs, CopyManyArgs, ...).
#define MANY 8

// Up to MANY buffers in one launch (zero_grad of an optimiser's parameters): block row
// y fills buffer y.
struct FillMany {
    float* ptr[MANY];
    long long len[MANY];
};

extern "C" __global__ void fill_many_f32(FillMany bufs, int count, float value) {
    int b = blockIdx.y;
    if (b >= count) return;
    float* x = bufs.ptr[b];
    GRID_STRIDE(i, bufs.len[b]) x[i] = value;
}

// Up to MANY copies into one buffer: block row b copies src[b] to dst + offset[b].
struct CopyMany {
    const float* src[MANY];
    long long offset[MANY];
    long long len[MANY];
};

extern "C" __global__ void copy_many_f32(float* dst, CopyMany parts, int count) {
    int b = blockIdx.y;
    if (b >= count) return;
    const float* x = parts.src[b];
    float* y = dst + parts.offset[b];
    GRID_STRIDE(i, parts.len[b]) y[i] = x[i];
}

// ---- label embedding ----

// A thread per (sample, pixel): its c image values and its label's map value, as a quad
// where that makes four (RGB images; launch: n * pixels threads). One 64-bit division a
// pixel, not four an element.
extern "C" __global__ void embed_forward(float* out, const float* images, const float* table,
                                         const unsigned* labels, int n, int pixels, int c) {
    long long total = (long long)n * pixels;
    bool quads = c == 3 && quad_aligned(out);
    GRID_STRIDE(sp, total) {
        long long s = sp / pixels;
        long long p = sp - s * pixels;
        const float* in = images + sp * c;
        float mark = table[(long long)labels[s] * pixels + p];
        if (quads) {
            float v[4] = {in[0], in[1], in[2], mark};
            store4(out, 4 * sp, v);
        } else {
            float* to = out + sp * (c + 1);
            for (int ch = 0; ch < c; ch++) to[ch] = in[ch];
            to[c] = mark;
        }
    }
}

// One thread per (label, pixel), adding the samples of its label only, in order, as on the
// CPU. `groups` lists the samples by label: groups[l]..groups[l + 1] index the sample
// numbers that follow the classes + 1 offsets (the host's `label_groups`).
extern "C" __global__ void embed_backward(float* grad_table, const float* grad_input,
                                          const unsigned* groups, int pixels, int c,
                                          int classes) {
    const unsigned* samples = groups + classes + 1;
    long long total = (long long)classes * pixels;
    GRID_STRIDE(i, total) {
        unsigned label = (unsigned)(i / pixels);
        long long p = i % pixels;
        float acc = grad_table[i];
        for (unsigned k = groups[label]; k < groups[label + 1]; k++)
            acc += grad_input[((long long)samples[k] * pixels + p) * (c + 1) + c];
        grad_table[i] = acc;
    }
}

// ---- ReLU and max-pool ----

// out = pre + bias[i % features]: one map added to every sample.
extern "C" __global__ void add_bias_map(float* out, const float* pre, const float* bias,
                                        long long features, long long total) {
    GRID_STRIDE(i, total) out[i] = pre[i] + bias[i % features];
}

extern "C" __global__ void relu_forward(float* x, long long n) {
    GRID_STRIDE(i, n) x[i] = fmaxf(x[i], 0.0f);
}

extern "C" __global__ void relu_backward(float* grad, const float* activation, long long n) {
    GRID_STRIDE(i, n) {
        if (activation[i] <= 0.0f) grad[i] = 0.0f;
    }
}

// The input index of the top-left element of 2x2 window `j` (the index of its output in the
// pooled NHWC tensor) of an (n, h, w, c) input.
__device__ long long window_origin(long long j, int h, int w, int c) {
    int oh = h / 2, ow = w / 2;
    int ch = (int)(j % c);
    long long rest = j / c;
    int ox = (int)(rest % ow);
    rest /= ow;
    int oy = (int)(rest % oh);
    long long s = rest / oh;
    return ((s * h + 2 * oy) * w + 2 * ox) * c + ch;
}

extern "C" __global__ void maxpool2_forward(float* out, const float* x, int n, int h, int w,
                                            int c) {
    long long total = (long long)n * (h / 2) * (w / 2) * c;
    GRID_STRIDE(i, total) {
        const float* at = x + window_origin(i, h, w, c);
        float a = at[0], b = at[c], e = at[(long long)w * c], f = at[(long long)w * c + c];
        out[i] = fmaxf(fmaxf(fmaxf(a, b), e), f);
    }
}

// One thread per 2x2 window: it finds the window's first maximum (PyTorch's choice) and gives
// it the output gradient if the maximum is a live ReLU (> 0), zero to the other three; then
// the elements in no window (the last row or column of an odd size) get zero. A window's
// index arithmetic and loads serve its four elements at once. `Out` is float, or bf16 when
// the result goes straight to a bf16 convolution backward; `Saved`, the activation's type
// (bf16: the record of relu_pool_goodness_bf16). `x` may also be the pre-activation y: where
// the window's maximum is positive, y and ReLU(y) have it at the same first position, and a
// maximum <= 0 passes no gradient either way. Launch over the windows (grid-stride).
// With `grad_goodness` (not null), d(pooled) is not read but made from d(goodness) the way
// goodness_backward makes it: (grad_goodness[sample] * 2 / features) * pooled value, the
// pooled value being the window's maximum, which the record holds exactly.
template <typename Out, typename Saved>
__device__ void relu_maxpool2_backward_to(Out* grad_input, const float* grad_out, const Saved* x,
                                          int n, int h, int w, int c,
                                          const float* grad_goodness) {
    int oh = h / 2, ow = w / 2;
    long long row = (long long)w * c;
    long long windows = (long long)n * oh * ow * c;
    int features = oh * ow * c;
    float scale = 2.0f / (float)features;
    // Quads: four channels of a window at a time (and of one sample, as features % 4 == 0).
    bool quads = c % 4 == 0 && quad_aligned(grad_input) && quad_aligned(grad_out) &&
                 quad_aligned(x);
    int width = quads ? 4 : 1;
    GRID_STRIDE(jq, windows / width) {
        long long j = jq * width;
        long long base = window_origin(j, h, w, c);
        long long at[4] = {base, base + c, base + row, base + row + c};
        float v[4][4], g[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            if (quads) {
                load4(x, at[q], v[q]);
            } else {
                v[q][0] = load(x, at[q]);
            }
        }
        if (!grad_goodness) {
            if (quads) {
                load4(grad_out, j, g);
            } else {
                g[0] = grad_out[j];
            }
        }
        float gg = grad_goodness ? grad_goodness[j / features] * scale : 0.0f;
        float d[4][4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            if (k >= width) break;
            float a = v[0][k], b = v[1][k], cc = v[2][k], e = v[3][k];
            bool pick_a = a >= b && a >= cc && a >= e;
            bool pick_b = !pick_a && b >= cc && b >= e;
            bool pick_c = !pick_a && !pick_b && cc >= e;
            int picked = pick_a ? 0 : pick_b ? 1 : pick_c ? 2 : 3;
            float m = fmaxf(fmaxf(fmaxf(a, b), cc), e);
            float gk = 0.0f;
            if (m > 0.0f) {
                // The pooled layout is the windows' order.
                gk = grad_goodness ? gg * m : g[k];
            }
#pragma unroll
            for (int q = 0; q < 4; q++) d[q][k] = q == picked ? gk : 0.0f;
        }
#pragma unroll
        for (int q = 0; q < 4; q++) {
            if (quads) {
                store4(grad_input, at[q], d[q]);
            } else {
                store(grad_input, at[q], d[q][0]);
            }
        }
    }
    // The elements in no window, per sample: the last row when h is odd, then the last
    // column of the rows above it when w is odd.
    long long last_row = (h & 1) ? row : 0, last_col = (w & 1) ? 2LL * oh * c : 0;
    long long left = last_row + last_col;
    GRID_STRIDE(k, (long long)n * left) {
        long long s = k / left, r = k % left;
        long long at = r < last_row
                           ? (s * h + h - 1) * row + r
                           : (s * h + (r - last_row) / c) * row + (long long)(w - 1) * c +
                                 (r - last_row) % c;
        store(grad_input, at, 0.0f);
    }
}

extern "C" __global__ void relu_maxpool2_backward(float* grad_input, const float* grad_out,
                                                  const float* x, int n, int h, int w, int c) {
    relu_maxpool2_backward_to(grad_input, grad_out, x, n, h, w, c, nullptr);
}

// From the bf16 record of relu_pool_goodness_bf16, into bf16 for the convolution's backward.
extern "C" __global__ void relu_maxpool2_backward_bf16(unsigned short* grad_input,
                                                       const float* grad_out,
                                                       const unsigned short* x, int n, int h,
                                                       int w, int c) {
    relu_maxpool2_backward_to(grad_input, grad_out, x, n, h, w, c, nullptr);
}

// The same from d(goodness): goodness_backward and relu_maxpool2_backward_bf16 in one pass,
// which reads neither the pooled values nor d(pooled).
extern "C" __global__ void goodness_relu_maxpool2_backward_bf16(unsigned short* grad_input,
                                                                const float* grad_goodness,
                                                                const unsigned short* x, int n,
                                                                int h, int w, int c) {
    relu_maxpool2_backward_to(grad_input, (const float*)nullptr, x, n, h, w, c, grad_goodness);
}

// relu_backward into a bf16 buffer (not in place): grad_input = grad_out where x > 0.
extern "C" __global__ void relu_backward_bf16(unsigned short* grad_input, const float* grad_out,
                                              const float* x, long long n) {
    if (n % 4 == 0 && quad_aligned(grad_input) && quad_aligned(grad_out) && quad_aligned(x)) {
        GRID_STRIDE(q, n / 4) {
            float g[4], v[4];
            load4(grad_out, 4 * q, g);
            load4(x, 4 * q, v);
#pragma unroll
            for (int k = 0; k < 4; k++) g[k] = v[k] > 0.0f ? g[k] : 0.0f;
            store4(grad_input, 4 * q, g);
        }
        return;
    }
    GRID_STRIDE(i, n) grad_input[i] = to_bf16(x[i] > 0.0f ? grad_out[i] : 0.0f);
}

// goodness_backward and relu_backward_bf16 in one pass, for an unpooled block whose output is
// its activation `x`: d(output) = (grad_goodness[sample] * 2 / features) * x, where x > 0.
extern "C" __global__ void goodness_relu_backward_bf16(unsigned short* grad_input,
                                                       const float* grad_goodness,
                                                       const float* x, int features,
                                                       long long total) {
    float scale = 2.0f / (float)features;
    if (features % 4 == 0 && quad_aligned(grad_input) && quad_aligned(x)) {
        // A quad lies within one sample.
        GRID_STRIDE(q, total / 4) {
            float v[4];
            load4(x, 4 * q, v);
            float g = grad_goodness[4 * q / features] * scale;
#pragma unroll
            for (int k = 0; k < 4; k++) v[k] = v[k] > 0.0f ? g * v[k] : 0.0f;
            store4(grad_input, 4 * q, v);
        }
        return;
    }
    GRID_STRIDE(i, total) {
        float v = x[i];
        grad_input[i] = to_bf16(v > 0.0f ? (grad_goodness[i / features] * scale) * v : 0.0f);
    }
}

// What follows a block's convolution, in one pass over its output `y` (f32, possibly the
// activation buffer itself, or the bf16 output of a tensor-core convolution). One block per
// sample. Without pool: activation = ReLU(y), the block's output. With pool: pooled = the 2x2
// max-pool of ReLU(y), and, with `save`, `saved` = ReLU(y) for the backward (evaluation needs
// only the pooled values) in the record's type: bf16 when y is bf16, which is exact since
// ReLU(y) of a bf16 value is one. goodness = the mean square of the block's output. The
// values and the goodness sum come out exactly as from relu_forward, maxpool2_forward and
// goodness_forward (the same float operations, the same summation order).
// Each thread takes TAIL_UNROLL of its items at a time and issues all their loads before any
// store: the stores may alias the loads (f32 works in place), so the compiler cannot move a
// later load above an earlier store itself, and one load in flight per warp would leave the
// kernel waiting on memory. The items are still summed in the thread's own order.
#define TAIL_UNROLL 4
// A pooled block's quads hold 16 values an item (four positions of four channels): 2 at a
// time.
#define TAIL_QUAD_UNROLL 2

// BatchNorm in eval mode is x * scale + shift per channel; these are channel `ch`'s.
__device__ void bn_eval_coefficients(int ch, const float* gamma, const float* beta,
                                     const float* running_mean, const float* running_var,
                                     float eps, float* scale, float* shift) {
    float rstd = 1.0f / sqrtf(running_var[ch] + eps);
    *scale = rstd * gamma[ch];
    *shift = beta[ch] - running_mean[ch] * rstd * gamma[ch];
}

// BatchNorm in eval mode of one value of channel `ch`: what batchnorm_apply_eval computes.
__device__ float bn_eval(float x, int ch, const float* gamma, const float* beta,
                         const float* running_mean, const float* running_var, float eps) {
    float scale, shift;
    bn_eval_coefficients(ch, gamma, beta, running_mean, running_var, eps, &scale, &shift);
    return x * scale + shift;
}

// Channels up to which a tail keeps the next BatchNorm's coefficients in shared memory
// (computed once per block, not once per element); above, it computes them per element.
#define NEXT_NORM_CHANNELS 1024

// The next block's BatchNorm in eval mode, for a tail in evaluation to apply to the block's
// output as it goes out (null `gamma`: none). `out` (if not null) then gets the normalised
// values instead of the block's output getting the values themselves, and `out_half` (if
// not null) their bf16 rounding: what batchnorm_apply_eval would write from the output.
// Passed by value; the Rust side mirrors the layout (NextNormArgs).
struct NextNorm {
    float* out;
    unsigned short* out_half;
    const float* gamma;
    const float* beta;
    const float* running_mean;
    const float* running_var;
    float eps;
};

// Writes a tail's output values `v`, W channels from `ch` at element `at` of the output: to
// `out`, or normalised to the next block's input, with the coefficients of `scale` and
// `shift` where given (the same values bn_eval computes).
template <int W>
__device__ void put_output(float* out, const NextNorm& next, const float* scale,
                           const float* shift, long long at, int ch, const float* v) {
    if (!next.gamma) {
        store_w<W>(out, at, v);
        return;
    }
    float z[W];
#pragma unroll
    for (int k = 0; k < W; k++) {
        z[k] = scale ? v[k] * scale[ch + k] + shift[ch + k]
                     : bn_eval(v[k], ch + k, next.gamma, next.beta, next.running_mean,
                               next.running_var, next.eps);
    }
    if (next.out) store_w<W>(next.out, at, z);
    if (next.out_half) store_w<W>(next.out_half, at, z);
}

// ReLU of y's W values at `at`, plus bias's where there is a bias map (`at` is within one
// sample).
template <int W, typename In>
__device__ void relu_biased(const In* ys, const float* bias, long long at, float* v) {
    load_w<W>(ys, at, v);
    float b[W];
    if (bias) load_w<W>(bias, at, b);
#pragma unroll
    for (int k = 0; k < W; k++) v[k] = fmaxf(bias ? v[k] + b[k] : v[k], 0.0f);
}

// relu_pool_goodness's item loop: an item is W channels (1, or a quad where channels are a
// multiple of 4 and every buffer quad_aligned) of one output position, U items at a time, all
// loads before any store. The goodness adds each thread's items in its own order, item by
// item, channel by channel (goodness_forward adds in the same order). Returns the thread's
// sum.
template <int W, int U, bool POOL, typename In, typename Saved>
__device__ double relu_pool_goodness_items(float* activation, Saved* as, float* pooled,
                                           const In* ys, const float* bias, long long s, int h,
                                           int w, int c, int features, int save,
                                           const NextNorm& next, const float* scale,
                                           const float* shift) {
    double sum = 0.0;
    int items = features / W;
    long long row = (long long)w * c;
    // A window's four positions from its top-left one (pool); else the one position.
    const long long offset[4] = {0, c, row, row + c};
    const int positions = POOL ? 4 : 1;
    for (int i0 = threadIdx.x; i0 < items; i0 += U * blockDim.x) {
        long long base[U];
        float v[U][4][W];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int i = i0 + u * blockDim.x;
            if (i >= items) break;
            // Within this sample.
            base[u] = POOL ? window_origin((long long)W * i, h, w, c) : (long long)W * i;
#pragma unroll
            for (int q = 0; q < positions; q++)
                relu_biased<W>(ys, bias, base[u] + offset[q], v[u][q]);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int i = i0 + u * blockDim.x;
            if (i >= items) break;
            long long out = (long long)W * i;
            float m[W];
#pragma unroll
            for (int k = 0; k < W; k++) {
                m[k] = POOL ? fmaxf(fmaxf(fmaxf(v[u][0][k], v[u][1][k]), v[u][2][k]), v[u][3][k])
                            : v[u][0][k];
            }
            if (POOL && save) {
#pragma unroll
                for (int q = 0; q < 4; q++) store_w<W>(as, base[u] + offset[q], v[u][q]);
            }
            put_output<W>(POOL ? pooled : activation, next, scale, shift, s * features + out,
                          (int)(out % c), m);
#pragma unroll
            for (int k = 0; k < W; k++) {
                double d = (double)m[k];
                sum += d * d;
            }
        }
    }
    return sum;
}

// The same with the unroll of each case: the quads of a pooled block hold 16 values an item.
template <int W, typename In, typename Saved>
__device__ double relu_pool_goodness_loop(float* activation, Saved* as, float* pooled,
                                          const In* ys, const float* bias, long long s, int h,
                                          int w, int c, int pool, int features, int save,
                                          const NextNorm& next, const float* scale,
                                          const float* shift) {
    if (pool) {
        return relu_pool_goodness_items<W, W == 4 ? TAIL_QUAD_UNROLL : TAIL_UNROLL, true>(
            activation, as, pooled, ys, bias, s, h, w, c, features, save, next, scale, shift);
    }
    return relu_pool_goodness_items<W, TAIL_UNROLL, false>(
        activation, as, pooled, ys, bias, s, h, w, c, features, save, next, scale, shift);
}

template <typename In, typename Saved>
__device__ void relu_pool_goodness(float* activation, Saved* saved, float* pooled,
                                   float* goodness, const In* y, const float* bias, int h, int w,
                                   int c, int pool, int save, NextNorm next) {
    __shared__ double shared[256];
    __shared__ float next_scale[NEXT_NORM_CHANNELS], next_shift[NEXT_NORM_CHANNELS];
    long long s = blockIdx.x;
    long long per_sample = (long long)h * w * c;
    const In* ys = y + s * per_sample;
    // The next BatchNorm's coefficients, once per block (the condition is the same for the
    // whole block, so all of it reaches the barrier).
    const float *scale = nullptr, *shift = nullptr;
    if (next.gamma && c <= NEXT_NORM_CHANNELS) {
        for (int ch = threadIdx.x; ch < c; ch += blockDim.x) {
            bn_eval_coefficients(ch, next.gamma, next.beta, next.running_mean, next.running_var,
                                 next.eps, &next_scale[ch], &next_shift[ch]);
        }
        __syncthreads();
        scale = next_scale;
        shift = next_shift;
    }
    Saved* as = saved + s * per_sample;
    int oh = h / 2, ow = w / 2;
    int features = pool ? oh * ow * c : (int)per_sample;
    bool quads = c % 4 == 0 && quad_aligned(y) && quad_aligned(bias) &&
                 quad_aligned(activation) && quad_aligned(saved) && quad_aligned(pooled) &&
                 quad_aligned(next.out) && quad_aligned(next.out_half);
    double sum = quads ? relu_pool_goodness_loop<4>(activation, as, pooled, ys, bias, s, h, w, c,
                                                    pool, features, save, next, scale, shift)
                       : relu_pool_goodness_loop<1>(activation, as, pooled, ys, bias, s, h, w, c,
                                                    pool, features, save, next, scale, shift);
    if (pool && save && ((h | w) & 1)) {
        // The last row or column of an odd size is in no window: ReLU alone.
        for (long long i = threadIdx.x; i < per_sample; i += blockDim.x) {
            long long rest = i / c;
            int xx = (int)(rest % w), yy = (int)(rest / w);
            if (yy >= 2 * oh || xx >= 2 * ow) {
                float v;
                relu_biased<1>(ys, bias, i, &v);
                store(as, i, v);
            }
        }
    }
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) goodness[s] = (float)(sum / features);
}

// f32: the record of a pooled block is the f32 activation.
extern "C" __global__ void relu_pool_goodness_f32(float* activation, float* pooled,
                                                  float* goodness, const float* y, int h, int w,
                                                  int c, int pool, int save) {
    relu_pool_goodness(activation, activation, pooled, goodness, y, nullptr, h, w, c, pool,
                       save, NextNorm{});
}

// bf16: the record of a pooled block is bf16, in the first half of the activation buffer. In
// training the backend has the convolution write y itself there and passes save = 0: the
// pooled backward gives the same gradient from y as from ReLU(y), so y serves as the record.
extern "C" __global__ void relu_pool_goodness_bf16(float* activation, float* pooled,
                                                   float* goodness, const unsigned short* y,
                                                   int h, int w, int c, int pool, int save) {
    relu_pool_goodness(activation, (unsigned short*)activation, pooled, goodness, y, nullptr, h,
                       w, c, pool, save, NextNorm{});
}

// Evaluation: the tail above with no record saved, on y plus, where `bias` is not null, one
// map (h x w x c) added to every sample (a convolution's output kept aside, see
// add_bias_map), and with the next block's BatchNorm applied to the output where `next`
// has one. The values come out as from add_bias_map, the separate kernels and
// batchnorm_apply_eval (the same float operations).
extern "C" __global__ void eval_tail_f32(float* activation, float* pooled, float* goodness,
                                         const float* y, const float* bias, int h, int w, int c,
                                         int pool, NextNorm next) {
    relu_pool_goodness(activation, activation, pooled, goodness, y, bias, h, w, c, pool, 0,
                       next);
}

// The same from bf16 values: a tensor-core convolution's output, or a kept output's bf16
// copy (its f32 data being the same values widened).
extern "C" __global__ void eval_tail_bf16(float* activation, float* pooled, float* goodness,
                                          const unsigned short* y, const float* bias, int h,
                                          int w, int c, int pool, NextNorm next) {
    relu_pool_goodness(activation, activation, pooled, goodness, y, bias, h, w, c, pool, 0,
                       next);
}

// ---- goodness and the FF losses ----

// One block per sample.
extern "C" __global__ void goodness_forward(float* goodness, const float* x, int features) {
    __shared__ double shared[256];
    const float* row = x + (long long)blockIdx.x * features;
    double sum = 0.0;
    if (features % 4 == 0 && quad_aligned(x)) {
        // Quad by quad, channel by channel: the fused tails' order (relu_pool_goodness).
        for (int q = threadIdx.x; q < features / 4; q += blockDim.x) {
            float v[4];
            load4(row, 4LL * q, v);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                double d = (double)v[k];
                sum += d * d;
            }
        }
    } else {
        for (int i = threadIdx.x; i < features; i += blockDim.x) {
            double v = (double)row[i];
            sum += v * v;
        }
    }
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) goodness[blockIdx.x] = (float)(sum / features);
}

extern "C" __global__ void goodness_backward(float* grad_input, const float* grad_goodness,
                                             const float* x, int features, long long total) {
    float scale = 2.0f / (float)features;
    GRID_STRIDE(i, total) grad_input[i] = (grad_goodness[i / features] * scale) * x[i];
}

// One block. kind 0: SymBa with `param` = alpha; kind 1: threshold with `param` = tau.
extern "C" __global__ void ff_loss(float* loss, float* grad_goodness, const float* goodness,
                                   int pairs, int kind, float param) {
    __shared__ double shared[256];
    double total = 0.0;
    double p_param = (double)param;
    double terms = 2.0 * pairs;
    for (int i = threadIdx.x; i < pairs; i += blockDim.x) {
        double pos = (double)goodness[i], neg = (double)goodness[pairs + i];
        if (kind == 0) {
            double delta = pos - neg;
            total += softplus(-p_param * delta);
            double d = -p_param * sigmoid(-p_param * delta) / pairs;
            grad_goodness[i] = (float)d;
            grad_goodness[pairs + i] = (float)(-d);
        } else {
            total += softplus(p_param - pos) + softplus(neg - p_param);
            grad_goodness[i] = (float)(-sigmoid(p_param - pos) / terms);
            grad_goodness[pairs + i] = (float)(sigmoid(neg - p_param) / terms);
        }
    }
    total = block_sum(total, shared);
    if (threadIdx.x == 0) loss[0] = (float)(kind == 0 ? total / pairs : total / terms);
}

// ---- per-column (per-channel) reductions, in two deterministic steps ----
// Step 1: block (x = 32 columns, y = 8 row lanes), grid (column groups, parts); part p covers
// rows [p * chunk, min(rows, (p + 1) * chunk)) and writes part_a/part_b[p * period + column].
// Step 2: a warp per column adds the parts in order (the *_finish kernels).
//
// Narrow matrices are folded: `period` is the true number of columns and `cols` = g x period
// (g rows side by side, nvrtc.rs's `fold`), so that block 0's 4 channels keep 32 lanes busy
// instead of 4; the block then adds its g lanes of each true column (in lane order) before
// it writes the part. Unfolded, period = cols.
//
// Each thread loads PARTIAL_ROWS rows before it adds any: the loads are then in flight
// together (the compiler interleaved loads and double adds, about 1.5 loads in flight a
// thread for partial_dy_dyx_bf16, which ran at 1.4 TB/s). The adds keep their order.

#define PARTIAL_ROWS 8

// A column's values at flat index `at` (row `r`, true column `c`), and how they are added.
// `for_column` gives the item a thread of column `c` uses (the item itself, but for
// MomentsItem).
template <typename Item>
__device__ Item for_column(Item item, int) {
    return item;
}

struct SumItem {
    const float* x;
    typedef float V;
    __device__ V get(long long at, long long, int) const { return x[at]; }
    __device__ void add(double& a, double&, V v, int) const { a += (double)v; }
};

// a = sum (x - k), b = sum (x - k)^2, with k the column's value in row 0: the mean and the
// variance in one pass (BatchNorm's forward statistics). The shift lies within the data, so
// b / rows - (a / rows)^2 loses only about (mean - k)^2 / var of double's 16 digits to
// cancellation, not mean^2 / var as unshifted sums would (the emulator checks a mean a
// million standard deviations from zero against the two-pass variance).
struct MomentsItem {
    const float* x;
    double k;
    typedef float V;
    __device__ V get(long long at, long long, int) const { return x[at]; }
    __device__ void add(double& a, double& b, V v, int) const {
        double d = (double)v - k;
        a += d;
        b += d * d;
    }
};

// Row 0's value of true column c is at flat index c, folded or not.
__device__ MomentsItem for_column(MomentsItem item, int c) {
    item.k = (double)item.x[c];
    return item;
}

template <typename Dy>
struct DyDyxItem {
    const Dy* dy;
    const float* x;
    typedef float2 V;
    __device__ V get(long long at, long long, int) const {
        return make_float2(load(dy, at), x[at]);
    }
    __device__ void add(double& a, double& b, V v, int) const {
        double g = (double)v.x;
        a += g;
        b += g * (double)v.y;
    }
};

// xhat from per-row statistics (LayerNorm's parameters; never folded: `r` is a true row).
template <typename Dy>
struct DyXhatRowsItem {
    const Dy* dy;
    const float* x;
    const float* mean;
    const float* rstd;
    typedef float2 V;
    __device__ V get(long long at, long long r, int) const {
        return make_float2(load(dy, at), (x[at] - mean[r]) * rstd[r]);
    }
    __device__ void add(double& a, double& b, V v, int) const {
        a += (double)(v.x * v.y);
        b += (double)v.x;
    }
};

template <typename Item>
__device__ void partials_of(double* part_a, double* part_b, Item column_item, long long rows,
                            int cols, int period, long long chunk) {
    __shared__ double sa[8][33];
    __shared__ double sb[8][33];
    int col = blockIdx.x * 32 + threadIdx.x;
    long long start = (long long)blockIdx.y * chunk;
    long long end = start + chunk < rows ? start + chunk : rows;
    double a = 0.0, b = 0.0;
    if (col < cols && start < end) {
        int c = col % period;  // here period >= 1 (no columns: no thread gets here)
        Item item = for_column(column_item, c);
        long long r = start + threadIdx.y;
        for (; r + 8 * (PARTIAL_ROWS - 1) < end; r += 8 * PARTIAL_ROWS) {
            typename Item::V v[PARTIAL_ROWS];
#pragma unroll
            for (int k = 0; k < PARTIAL_ROWS; k++)
                v[k] = item.get((r + 8 * k) * cols + col, r + 8 * k, c);
#pragma unroll
            for (int k = 0; k < PARTIAL_ROWS; k++) item.add(a, b, v[k], c);
        }
        for (; r < end; r += 8) item.add(a, b, item.get(r * cols + col, r, c), c);
    }
    sa[threadIdx.y][threadIdx.x] = a;
    sb[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    // Folded (cols <= 32, one column group): lanes x, x + period, ... hold column x, added in
    // lane order. Unfolded: g = 1, col < cols = period.
    int g = cols / period;
    if (threadIdx.y == 0 && col < period) {
        double ta = 0.0, tb = 0.0;
        for (int k = 0; k < g; k++) {
            for (int y = 0; y < 8; y++) {
                ta += sa[y][threadIdx.x + k * period];
                tb += sb[y][threadIdx.x + k * period];
            }
        }
        part_a[(long long)blockIdx.y * period + col] = ta;
        part_b[(long long)blockIdx.y * period + col] = tb;
    }
}

// a = sum x (a linear layer's bias gradient).
extern "C" __global__ void partial_sum(double* part_a, double* part_b, const float* x,
                                       long long rows, int cols, int period, long long chunk) {
    partials_of(part_a, part_b, SumItem{x}, rows, cols, period, chunk);
}

// a = sum (x - k), b = sum (x - k)^2 with k = row 0's value (MomentsItem).
extern "C" __global__ void partial_moments(double* part_a, double* part_b, const float* x,
                                           long long rows, int cols, int period,
                                           long long chunk) {
    partials_of(part_a, part_b, MomentsItem{x, 0.0}, rows, cols, period, chunk);
}

// The norms' backward kernels read dy as f32, or (the `_bf16` forms) as the bf16 values a
// bf16 convolution's input gradient is kept as: the same float arithmetic on the values.

// a = sum dy, b = sum dy * x (BatchNorm backward).
extern "C" __global__ void partial_dy_dyx(double* part_a, double* part_b, const float* dy,
                                          const float* x, long long rows, int cols, int period,
                                          long long chunk) {
    partials_of(part_a, part_b, DyDyxItem<float>{dy, x}, rows, cols, period, chunk);
}

extern "C" __global__ void partial_dy_dyx_bf16(double* part_a, double* part_b,
                                               const unsigned short* dy, const float* x,
                                               long long rows, int cols, int period,
                                               long long chunk) {
    partials_of(part_a, part_b, DyDyxItem<unsigned short>{dy, x}, rows, cols, period, chunk);
}

// a = sum dy * xhat, b = sum dy (LayerNorm's parameters).
extern "C" __global__ void partial_dy_xhat_rows(double* part_a, double* part_b,
                                                const float* dy, const float* x,
                                                const float* mean, const float* rstd,
                                                long long rows, int cols, int period,
                                                long long chunk) {
    partials_of(part_a, part_b, DyXhatRowsItem<float>{dy, x, mean, rstd}, rows, cols, period,
                chunk);
}

extern "C" __global__ void partial_dy_xhat_rows_bf16(double* part_a, double* part_b,
                                                     const unsigned short* dy, const float* x,
                                                     const float* mean, const float* rstd,
                                                     long long rows, int cols, int period,
                                                     long long chunk) {
    partials_of(part_a, part_b, DyXhatRowsItem<unsigned short>{dy, x, mean, rstd}, rows, cols,
                period, chunk);
}

// The finish kernels: a warp per column, FINISH_COLUMNS columns per block of 256 threads
// (nvrtc.rs's per_column). A column's parts were summed by one thread, one after the other
// (hundreds of dependent loads); now lane l of its warp adds parts l, l + 32, ... in order
// and the 32 lane sums are added in lane order: a fixed order, the same on every run.
#define FINISH_COLUMNS 8

// Sum over the parts of column `col` (parts x cols, row-major); every thread of the block
// calls it (it has barriers), each gets its column's sum. `shared` holds blockDim.x doubles.
__device__ double parts_sum(const double* part, int parts, int cols, int col, double* shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    double s = 0.0;
    if (col < cols) {
        for (int p = lane; p < parts; p += 32) s += part[(long long)p * cols + col];
    }
    shared[threadIdx.x] = s;
    __syncthreads();
    double total = 0.0;
    for (int l = 0; l < 32; l++) total += shared[warp * 32 + l];
    __syncthreads();
    return total;
}

// This thread's column, and whether it writes it (lane 0 of the column's warp).
__device__ int finish_column(int cols, bool* writes) {
    int col = blockIdx.x * FINISH_COLUMNS + threadIdx.x / 32;
    *writes = col < cols && threadIdx.x % 32 == 0;
    return col;
}

// The sums of part_a and part_b for this thread's column `col`; true for the thread that
// writes the column.
__device__ bool finish_pair(const double* part_a, const double* part_b, int parts, int cols,
                            int* col, double* a, double* b) {
    __shared__ double shared[32 * FINISH_COLUMNS];
    bool writes;
    *col = finish_column(cols, &writes);
    *a = parts_sum(part_a, parts, cols, *col, shared);
    *b = parts_sum(part_b, parts, cols, *col, shared);
    return writes;
}

// BatchNorm statistics from partial_moments' parts (x is its input, for the shift); updates
// the running statistics (unbiased variance) with `momentum`.
extern "C" __global__ void batchnorm_finish_moments(float* mean, float* rstd,
                                                    float* running_mean, float* running_var,
                                                    const float* x, const double* part_a,
                                                    const double* part_b, int parts, int cols,
                                                    long long rows, float eps, float momentum) {
    int c;
    double a, b;
    if (!finish_pair(part_a, part_b, parts, cols, &c, &a, &b)) return;
    double d = a / (double)rows;  // mean - k
    double var = b / (double)rows - d * d;
    if (var < 0.0) var = 0.0;
    mean[c] = (float)((rows > 0 ? (double)x[c] : 0.0) + d);  // x is empty without rows
    rstd[c] = (float)(1.0 / sqrt(var + (double)eps));
    double unbiased = rows > 1 ? var * (double)rows / (double)(rows - 1) : var;
    running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean[c];
    running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (float)unbiased;
}

// out_a[c] += sum of part_a, out_b[c] += sum of part_b (either may be null).
extern "C" __global__ void finish_add(float* out_a, float* out_b, const double* part_a,
                                      const double* part_b, int parts, int cols) {
    int c;
    double a, b;
    if (!finish_pair(part_a, part_b, parts, cols, &c, &a, &b)) return;
    if (out_a) out_a[c] += (float)a;
    if (out_b) out_b[c] += (float)b;
}

// ---- BatchNorm ----

// `out_half`, when not null, also gets the bf16 rounding of `out` (for a bf16 convolution
// that reads the normed values next), and then `out` may be null: the bf16 values alone;
// likewise in batchnorm_apply_eval.
// out = f(x, channel) elementwise over rows of c channels, and out_half its bf16 rounding
// (either may be null); quads where they fit.
template <typename F>
__device__ void per_channel_map(float* out, unsigned short* out_half, const float* x, int c,
                                long long total, F f) {
    if (c % 4 == 0 && quad_aligned(out) && quad_aligned(out_half) && quad_aligned(x)) {
        GRID_STRIDE(q, total / 4) {
            long long i = 4 * q;
            int ch = (int)(i % c);
            float v[4];
            load4(x, i, v);
#pragma unroll
            for (int k = 0; k < 4; k++) v[k] = f(v[k], ch + k);
            if (out) store4(out, i, v);
            if (out_half) store4(out_half, i, v);
        }
        return;
    }
    GRID_STRIDE(i, total) {
        float v = f(x[i], (int)(i % c));
        if (out) out[i] = v;
        if (out_half) out_half[i] = to_bf16(v);
    }
}

extern "C" __global__ void batchnorm_apply(float* out, unsigned short* out_half, const float* x,
                                           const float* mean, const float* rstd,
                                           const float* gamma, const float* beta, int c,
                                           long long total) {
    per_channel_map(out, out_half, x, c, total, [&](float v, int ch) {
        float scale = rstd[ch] * gamma[ch];
        float shift = beta[ch] - mean[ch] * rstd[ch] * gamma[ch];
        return v * scale + shift;
    });
}

extern "C" __global__ void batchnorm_apply_eval(float* out, unsigned short* out_half,
                                                const float* x, const float* gamma,
                                                const float* beta, const float* running_mean,
                                                const float* running_var, float eps, int c,
                                                long long total) {
    per_channel_map(out, out_half, x, c, total, [&](float v, int ch) {
        return bn_eval(v, ch, gamma, beta, running_mean, running_var, eps);
    });
}

// Parameter gradients, and the coefficients of dx = k dy + slope x + offset per channel.
extern "C" __global__ void batchnorm_backward_finish(float* grad_gamma, float* grad_beta,
                                                     float* k, float* slope, float* offset,
                                                     const double* part_dy,
                                                     const double* part_dyx, int parts,
                                                     int cols, long long rows,
                                                     const float* mean, const float* rstd,
                                                     const float* gamma) {
    int c;
    double sum_dy, sum_dyx;
    if (!finish_pair(part_dy, part_dyx, parts, cols, &c, &sum_dy, &sum_dyx)) return;
    double sum_dy_xhat = (double)rstd[c] * (sum_dyx - (double)mean[c] * sum_dy);
    grad_beta[c] += (float)sum_dy;
    grad_gamma[c] += (float)sum_dy_xhat;
    double mean_dy = sum_dy / (double)rows;
    double mean_dy_xhat = sum_dy_xhat / (double)rows;
    double kc = (double)gamma[c] * (double)rstd[c];
    double r = (double)rstd[c];
    k[c] = (float)kc;
    slope[c] = (float)(-kc * r * mean_dy_xhat);
    offset[c] = (float)(kc * (r * mean_dy_xhat * (double)mean[c] - mean_dy));
}

template <typename Dy>
__device__ void batchnorm_backward_apply_of(float* dx, const Dy* dy, const float* x,
                                            const float* k, const float* slope,
                                            const float* offset, int c, long long total) {
    GRID_STRIDE(i, total) {
        int ch = (int)(i % c);
        dx[i] = k[ch] * load(dy, i) + slope[ch] * x[i] + offset[ch];
    }
}

extern "C" __global__ void batchnorm_backward_apply(float* dx, const float* dy, const float* x,
                                                    const float* k, const float* slope,
                                                    const float* offset, int c,
                                                    long long total) {
    batchnorm_backward_apply_of(dx, dy, x, k, slope, offset, c, total);
}

extern "C" __global__ void batchnorm_backward_apply_bf16(float* dx, const unsigned short* dy,
                                                         const float* x, const float* k,
                                                         const float* slope,
                                                         const float* offset, int c,
                                                         long long total) {
    batchnorm_backward_apply_of(dx, dy, x, k, slope, offset, c, total);
}

// ---- LayerNorm (one block per sample) ----

extern "C" __global__ void layernorm_forward(float* out, float* mean, float* rstd,
                                             const float* x, const float* gamma,
                                             const float* beta, int features, float eps) {
    __shared__ double shared[256];
    long long base = (long long)blockIdx.x * features;
    double sum = 0.0;
    for (int i = threadIdx.x; i < features; i += blockDim.x) sum += (double)x[base + i];
    double m = block_sum(sum, shared) / features;
    double sq = 0.0;
    for (int i = threadIdx.x; i < features; i += blockDim.x) {
        double d = (double)x[base + i] - m;
        sq += d * d;
    }
    double var = block_sum(sq, shared) / features;
    float mu = (float)m;
    float rs = (float)(1.0 / sqrt(var + (double)eps));
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = mu;
        rstd[blockIdx.x] = rs;
    }
    for (int i = threadIdx.x; i < features; i += blockDim.x)
        out[base + i] = (x[base + i] - mu) * rs * gamma[i] + beta[i];
}

template <typename Dy>
__device__ void layernorm_backward_input_of(float* dx, const Dy* dy, const float* x,
                                            const float* mean, const float* rstd,
                                            const float* gamma, int features) {
    __shared__ double shared[256];
    long long base = (long long)blockIdx.x * features;
    float mu = mean[blockIdx.x], rs = rstd[blockIdx.x];
    double sum = 0.0, sum_xhat = 0.0;
    for (int i = threadIdx.x; i < features; i += blockDim.x) {
        float dxhat = load(dy, base + i) * gamma[i];
        sum += (double)dxhat;
        sum_xhat += (double)(dxhat * (x[base + i] - mu) * rs);
    }
    sum = block_sum(sum, shared);
    sum_xhat = block_sum(sum_xhat, shared);
    float mean_dxhat = (float)(sum / features);
    float mean_dxhat_xhat = (float)(sum_xhat / features);
    for (int i = threadIdx.x; i < features; i += blockDim.x) {
        float xhat = (x[base + i] - mu) * rs;
        dx[base + i] = rs * (load(dy, base + i) * gamma[i] - mean_dxhat - xhat * mean_dxhat_xhat);
    }
}

extern "C" __global__ void layernorm_backward_input(float* dx, const float* dy, const float* x,
                                                    const float* mean, const float* rstd,
                                                    const float* gamma, int features) {
    layernorm_backward_input_of(dx, dy, x, mean, rstd, gamma, features);
}

extern "C" __global__ void layernorm_backward_input_bf16(float* dx, const unsigned short* dy,
                                                         const float* x, const float* mean,
                                                         const float* rstd, const float* gamma,
                                                         int features) {
    layernorm_backward_input_of(dx, dy, x, mean, rstd, gamma, features);
}

// ---- Adam (PyTorch semantics; step_size = lr / (1 - beta1^t) and
// bias2_sqrt = sqrt(1 - beta2^t) come from the host) ----

// `param_half`, when not null, also gets the bf16 rounding of the new parameter (the copy a
// bf16 convolution reads its weights from).
// One parameter's Adam update; the values go back through the references.
__device__ void adam_one(float g, float& m, float& v, float& p, float beta1, float beta2,
                         float eps, float step_size, float bias2_sqrt) {
    m = beta1 * m + (1.0f - beta1) * g;
    v = beta2 * v + (1.0f - beta2) * g * g;
    float denom = sqrtf(v) / bias2_sqrt + eps;
    p = p - step_size * m / denom;
}

// Quads over the first n / 4 * 4 parameters where the buffers are aligned, then single
// values (launch: a thread per quad, along the grid's x).
__device__ void adam_tensor(float* param, unsigned short* param_half, float* m, float* v,
                            const float* grad, long long n, float beta1, float beta2, float eps,
                            float step_size, float bias2_sqrt) {
    bool aligned = quad_aligned(param) && quad_aligned(param_half) && quad_aligned(m) &&
                   quad_aligned(v) && quad_aligned(grad);
    long long quads = aligned ? n / 4 : 0;
    GRID_STRIDE(q, quads) {
        long long i = 4 * q;
        float g[4], mq[4], vq[4], p[4];
        load4(grad, i, g);
        load4(m, i, mq);
        load4(v, i, vq);
        load4(param, i, p);
#pragma unroll
        for (int k = 0; k < 4; k++)
            adam_one(g[k], mq[k], vq[k], p[k], beta1, beta2, eps, step_size, bias2_sqrt);
        store4(m, i, mq);
        store4(v, i, vq);
        store4(param, i, p);
        if (param_half) store4(param_half, i, p);
    }
    GRID_STRIDE(j, n - 4 * quads) {
        long long i = 4 * quads + j;
        float mi = m[i], vi = v[i], p = param[i];
        adam_one(grad[i], mi, vi, p, beta1, beta2, eps, step_size, bias2_sqrt);
        m[i] = mi;
        v[i] = vi;
        param[i] = p;
        if (param_half) param_half[i] = to_bf16(p);
    }
}

// Up to MANY parameters of one step count: block row b updates parameter b.
struct AdamMany {
    float* param[MANY];
    unsigned short* param_half[MANY];
    float* m[MANY];
    float* v[MANY];
    const float* grad[MANY];
    long long n[MANY];
};

extern "C" __global__ void adam_step_many(AdamMany t, int count, float beta1, float beta2,
                                          float eps, float step_size, float bias2_sqrt) {
    int b = blockIdx.y;
    if (b >= count) return;
    adam_tensor(t.param[b], t.param_half[b], t.m[b], t.v[b], t.grad[b], t.n[b], beta1, beta2,
                eps, step_size, bias2_sqrt);
}

// ---- classifier heads ----

// One thread per (sample, channel), pixels in order.
extern "C" __global__ void avgpool_forward(float* out, const float* x, int n, int pixels,
                                           int c) {
    long long total = (long long)n * c;
    float scale = 1.0f / (float)pixels;
    GRID_STRIDE(i, total) {
        long long s = i / c;
        int ch = (int)(i % c);
        float acc = 0.0f;
        for (int p = 0; p < pixels; p++) acc += x[(s * pixels + p) * c + ch];
        out[i] = acc * scale;
    }
}

extern "C" __global__ void avgpool_backward(float* grad_input, const float* grad_out,
                                            int pixels, int c, long long total) {
    float scale = 1.0f / (float)pixels;
    GRID_STRIDE(i, total) {
        long long s = i / ((long long)pixels * c);
        int ch = (int)(i % c);
        grad_input[i] = grad_out[s * c + ch] * scale;
    }
}

extern "C" __global__ void bias_rows(float* out, const float* bias, int outputs,
                                     long long total) {
    GRID_STRIDE(i, total) out[i] = bias[i % outputs];
}

// One block: mean softmax cross-entropy and its gradient (softmax - onehot) / n.
extern "C" __global__ void cross_entropy(float* loss, float* grad, const float* logits,
                                         const unsigned* labels, int n, int classes) {
    __shared__ double shared[256];
    double total = 0.0;
    for (int s = threadIdx.x; s < n; s += blockDim.x) {
        const float* z = logits + (long long)s * classes;
        float mx = -__int_as_float(0x7f800000);
        for (int k = 0; k < classes; k++) mx = fmaxf(mx, z[k]);
        double max = (double)mx;
        double sum = 0.0;
        for (int k = 0; k < classes; k++) sum += exp((double)z[k] - max);
        unsigned label = labels[s];
        total += log(sum) + max - (double)z[label];
        for (int k = 0; k < classes; k++) {
            double p = exp((double)z[k] - max) / sum;
            grad[(long long)s * classes + k] = (float)((p - (k == (int)label ? 1.0 : 0.0)) / n);
        }
    }
    total = block_sum(total, shared);
    if (threadIdx.x == 0) loss[0] = (float)(total / n);
}

// ---- mixed precision: bf16 copies for tensor-core convolutions ----


extern "C" __global__ void f32_to_bf16(unsigned short* out, const float* x, long long n) {
    GRID_STRIDE(i, n) out[i] = to_bf16(x[i]);
}

// out = bf16 value (accumulate = 0) or out += bf16 value (accumulate = 1).
extern "C" __global__ void bf16_to_f32(float* out, const unsigned short* x, long long n,
                                       int accumulate) {
    GRID_STRIDE(i, n) {
        float v = from_bf16(x[i]);
        out[i] = accumulate ? out[i] + v : v;
    }
}

// ---- zero channels for tensor-core convolutions ----
// cuDNN's tensor-core kernels for NHWC bf16 want the channels a multiple of 8; block 0 has 4
// (3 colours and the label). A convolution over channels padded with zeros (in its input and
// its weights) is the same convolution, so the backend pads those operands and takes the
// real channels back out of the gradients.

// dst (rows of `to` channels) = src (rows of `from` channels), channel by channel: the first
// `from` channels and zeros after them where `to` > `from` (padding), the first `to` where
// `to` < `from` (unpadding).
extern "C" __global__ void repad_channels_bf16(unsigned short* dst, const unsigned short* src,
                                               long long rows, int from, int to) {
    if (from % 4 == 0 && to % 4 == 0 && quad_aligned(dst) && quad_aligned(src)) {
        int per_row = to / 4;
        GRID_STRIDE(q, rows * per_row) {
            long long r = q / per_row;
            int j = 4 * (int)(q % per_row);
            HalfQuad v = {{0, 0, 0, 0}};
            if (j < from) v = *(const HalfQuad*)(src + r * from + j);
            *(HalfQuad*)(dst + r * to + j) = v;
        }
        return;
    }
    GRID_STRIDE(i, rows * to) {
        long long r = i / to;
        int j = (int)(i % to);
        dst[i] = j < from ? src[r * from + j] : (unsigned short)0;
    }
}
