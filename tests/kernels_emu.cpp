// Runs the CUDA kernels of src/backend/cuda/kernels.cu on the CPU, with a small emulator of
// CUDA's execution model, and checks them against plain reference loops. It catches indexing,
// partition and reduction mistakes without a GPU (the GPU tests in tests/cuda.rs remain the
// real check). Built and run by tests/kernels_emu.rs.
//
// Emulation: the blocks of a launch run one after the other; the threads of a block are
// cooperative fibers (ucontext) that switch only at __syncthreads(), so barriers and
// __shared__ memory (a static, i.e. one copy, which is right because blocks run in turn)
// behave as on a GPU.

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
static dim3 blockIdx, threadIdx, blockDim, gridDim;

static void emu_sync();
#define __global__
#define __device__
#define __shared__ static
#define __syncthreads() emu_sync()

static float __int_as_float(int v) {
    float f;
    std::memcpy(&f, &v, 4);
    return f;
}
static float __uint_as_float(unsigned v) {
    float f;
    std::memcpy(&f, &v, 4);
    return f;
}
struct float2 {
    float x, y;
};
static float2 make_float2(float x, float y) { return {x, y}; }
static unsigned __float_as_uint(float f) {
    unsigned v;
    std::memcpy(&v, &f, 4);
    return v;
}

#include "../src/backend/cuda/kernels.cu"

// ---- the emulator ----

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    dim3 idx;
    bool done = false;
};
static ucontext_t scheduler;
static std::vector<Fiber> fibers;
static size_t current;
static std::function<void()> body;

static void emu_sync() { swapcontext(&fibers[current].ctx, &scheduler); }

static void trampoline() {
    body();
    fibers[current].done = true;
}

static void launch(dim3 grid, dim3 block, std::function<void()> kernel) {
    body = std::move(kernel);
    gridDim = grid;
    blockDim = block;
    size_t threads = (size_t)block.x * block.y * block.z;
    fibers.resize(threads);
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = {bx, by, bz};
                for (size_t t = 0; t < threads; t++) {
                    Fiber& f = fibers[t];
                    f.stack.resize(1 << 16);
                    f.done = false;
                    f.idx = {(unsigned)(t % block.x), (unsigned)(t / block.x % block.y),
                             (unsigned)(t / (block.x * block.y))};
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = &scheduler;
                    makecontext(&f.ctx, trampoline, 0);
                }
                // Run every live fiber to its next barrier (or its end), round after round.
                bool live = true;
                while (live) {
                    live = false;
                    for (size_t t = 0; t < threads; t++) {
                        if (fibers[t].done) continue;
                        current = t;
                        threadIdx = fibers[t].idx;
                        swapcontext(&scheduler, &fibers[t].ctx);
                        live |= !fibers[t].done;
                    }
                }
            }
}

// The launch geometry of src/backend/cuda/nvrtc.rs.
static const unsigned BLOCK = 256;
static dim3 elementwise(long long total) {
    long long blocks = (total + BLOCK - 1) / BLOCK;
    if (blocks < 1) blocks = 1;
    if (blocks > 64) blocks = 64;  // fewer blocks than on a GPU: exercises the grid stride
    return {(unsigned)blocks, 1, 1};
}
struct Parts {
    long long parts, chunk, rows;
    int cols;  // as launched: folded, g x the true columns
    dim3 grid() const { return {(unsigned)((cols + 31) / 32), (unsigned)parts, 1}; }
};
static Parts partials(long long rows, int cols, int sms) {
    long long groups = (cols + 31) / 32;
    if (groups < 1) groups = 1;
    long long wanted = (4LL * sms + groups - 1) / groups;
    long long most = (rows + 63) / 64;
    if (most < 1) most = 1;
    long long parts = wanted < 1 ? 1 : (wanted > most ? most : wanted);
    long long chunk = (rows + parts - 1) / parts;
    if (chunk < 1) chunk = 1;
    parts = (rows + chunk - 1) / chunk;
    if (parts < 1) parts = 1;
    return {parts, chunk, rows, cols};
}
// nvrtc.rs's fold and folded_partials.
static Parts folded_partials(long long rows, int cols, int sms) {
    int g = 1;
    if (cols > 0 && cols < 32)
        for (g = 32 / cols; g > 1 && rows % g != 0; g--) {
        }
    return partials(rows / g, cols * g, sms);
}

// ---- checks ----

static int failures = 0;
static void close(const char* what, const std::vector<float>& got, const std::vector<double>& want,
                  double rel, double abs) {
    if (got.size() != want.size()) {
        std::printf("FAIL %s: %zu values, expected %zu\n", what, got.size(), want.size());
        failures++;
        return;
    }
    for (size_t i = 0; i < got.size(); i++) {
        double d = std::fabs(got[i] - want[i]);
        if (!(d <= abs + rel * std::fabs(want[i]))) {
            std::printf("FAIL %s[%zu]: got %.9g, want %.9g\n", what, i, got[i], want[i]);
            failures++;
            return;
        }
    }
    std::printf("ok   %s (%zu values)\n", what, got.size());
}

// Double partial sums, the same to the bit.
static void same(const char* what, const std::vector<double>& got,
                 const std::vector<double>& want) {
    for (size_t i = 0; i < got.size() || i < want.size(); i++) {
        if (i >= got.size() || i >= want.size() || got[i] != want[i]) {
            std::printf("FAIL %s[%zu] differs\n", what, i);
            failures++;
            return;
        }
    }
    std::printf("ok   %s (%zu values)\n", what, got.size());
}

static std::mt19937_64 rng(7);
static std::vector<float> randn(size_t n, double scale = 1.0, double shift = 0.0) {
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<float> v(n);
    for (auto& x : v) x = (float)(shift + scale * d(rng));
    return v;
}

static std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }
static int features_of(const std::vector<float>& v, int n) { return (int)(v.size() / n); }

static std::vector<float> as_f32(const std::vector<unsigned short>& hv) {
    std::vector<float> back(hv.size());
    launch(elementwise(hv.size()), {BLOCK},
           [&] { bf16_to_f32(back.data(), hv.data(), (long long)hv.size(), 0); });
    return back;
}

// A linear layer's bias gradient: column sums (partial_sum, folded where narrow) added to
// what the output held.
static void check_column_sums(long long rows, int c) {
    auto x = randn(rows * c);
    Parts p = folded_partials(rows, c, 132);
    std::vector<double> pa(p.parts * c), pb(p.parts * c), want(c, 0.5);
    std::vector<float> out(c, 0.5f);
    launch(p.grid(), {32, 8, 1},
           [&] { partial_sum(pa.data(), pb.data(), x.data(), p.rows, p.cols, c, p.chunk); });
    dim3 cols{(unsigned)((c + FINISH_COLUMNS - 1) / FINISH_COLUMNS), 1, 1};
    launch(cols, {BLOCK},
           [&] { finish_add(out.data(), nullptr, pa.data(), pb.data(), (int)p.parts, c); });
    for (int k = 0; k < c; k++)
        for (long long r = 0; r < rows; r++) want[k] += x[r * c + k];
    std::string tag = "column sums " + std::to_string(rows) + "x" + std::to_string(c);
    close(tag.c_str(), out, want, 1e-5, 1e-5);
}

// `shift` moves the data far from zero: the one-pass variance must stay exact there (its sums
// are shifted by row 0's values; unshifted, a mean a million standard deviations from zero
// would cancel 12 of double's 16 digits). `abs` is the absolute tolerance of the outputs (a
// single row has zero variance, so rstd = 1/sqrt(eps) amplifies float rounding, on the CPU as
// here; far from zero the f32 apply rounds at the data's magnitude). The backward uses the
// f32 mean, as the CPU does, so `backward` is checked near zero only.
static void check_batchnorm(long long rows, int c, double shift, double abs, bool backward = true) {
    auto x = randn(rows * c, 3.0, shift), gamma = randn(c), beta = randn(c), dy = randn(rows * c);
    std::vector<float> out(rows * c), mean(c), rstd(c), rm(c, 0.5f), rv(c, 1.0f);
    Parts p = folded_partials(rows, c, 132);
    std::vector<double> pa(p.parts * c), pb(p.parts * c);
    dim3 grid = p.grid(), block{32, 8, 1};
    dim3 cols{(unsigned)((c + FINISH_COLUMNS - 1) / FINISH_COLUMNS), 1, 1};
    launch(grid, block,
           [&] { partial_moments(pa.data(), pb.data(), x.data(), p.rows, p.cols, c, p.chunk); });
    launch(cols, {BLOCK}, [&] {
        batchnorm_finish_moments(mean.data(), rstd.data(), rm.data(), rv.data(), x.data(),
                                 pa.data(), pb.data(), (int)p.parts, c, rows, 1e-5f, 0.1f);
    });
    launch(elementwise(rows * c), {BLOCK}, [&] {
        batchnorm_apply(out.data(), nullptr, x.data(), mean.data(), rstd.data(), gamma.data(),
                        beta.data(), c, rows * c);
    });
    // With the bf16 copy: the same f32 values, and their bf16 rounding beside them.
    std::vector<float> out2(rows * c);
    std::vector<unsigned short> half(rows * c, 0x7fff), want_half(rows * c);
    launch(elementwise(rows * c), {BLOCK}, [&] {
        batchnorm_apply(out2.data(), half.data(), x.data(), mean.data(), rstd.data(),
                        gamma.data(), beta.data(), c, rows * c);
    });
    launch(elementwise(rows * c), {BLOCK},
           [&] { f32_to_bf16(want_half.data(), out.data(), rows * c); });
    // Evaluation mode from the running statistics, with and without the copy.
    std::vector<float> eval(rows * c), eval2(rows * c);
    std::vector<unsigned short> eval_half(rows * c, 0x7fff), want_eval_half(rows * c);
    std::vector<double> want_eval(rows * c);
    for (int with_half = 0; with_half < 2; with_half++) {
        launch(elementwise(rows * c), {BLOCK}, [&] {
            batchnorm_apply_eval(with_half ? eval2.data() : eval.data(),
                                 with_half ? eval_half.data() : nullptr, x.data(), gamma.data(),
                                 beta.data(), rm.data(), rv.data(), 1e-5f, c, rows * c);
        });
    }
    launch(elementwise(rows * c), {BLOCK},
           [&] { f32_to_bf16(want_eval_half.data(), eval.data(), rows * c); });
    for (long long r = 0; r < rows; r++)
        for (int k = 0; k < c; k++)
            want_eval[r * c + k] =
                (x[r * c + k] - rm[k]) / std::sqrt((double)rv[k] + 1e-5) * gamma[k] + beta[k];
    // Reference.
    std::vector<double> m(c, 0), var(c, 0), want(rows * c), wm(c), wr(c), wrm(c), wrv(c);
    for (long long r = 0; r < rows; r++)
        for (int k = 0; k < c; k++) m[k] += x[r * c + k];
    for (int k = 0; k < c; k++) m[k] /= rows;
    for (long long r = 0; r < rows; r++)
        for (int k = 0; k < c; k++) var[k] += (x[r * c + k] - m[k]) * (x[r * c + k] - m[k]);
    for (int k = 0; k < c; k++) {
        var[k] /= rows;
        wm[k] = m[k];
        wr[k] = 1.0 / std::sqrt(var[k] + 1e-5);
        wrm[k] = 0.9 * 0.5 + 0.1 * m[k];
        wrv[k] = 0.9 * 1.0 + 0.1 * (rows > 1 ? var[k] * rows / (rows - 1) : var[k]);
    }
    for (long long r = 0; r < rows; r++)
        for (int k = 0; k < c; k++)
            want[r * c + k] = (x[r * c + k] - m[k]) * wr[k] * gamma[k] + beta[k];
    std::string tag = "batchnorm " + std::to_string(rows) + "x" + std::to_string(c);
    close((tag + " mean").c_str(), mean, wm, 1e-6, 1e-6);
    close((tag + " rstd").c_str(), rstd, wr, 1e-5, 1e-7);
    close((tag + " running mean").c_str(), rm, wrm, 1e-6, 1e-6);
    close((tag + " running var").c_str(), rv, wrv, 1e-5, 1e-6);
    close((tag + " out").c_str(), out, want, 1e-4, abs);
    close((tag + " out, with its bf16 copy").c_str(), out2, widen(out), 0, 0);
    close((tag + " bf16 copy").c_str(), as_f32(half), widen(as_f32(want_half)), 0, 0);
    close((tag + " eval out").c_str(), eval, want_eval, 1e-4, abs);
    close((tag + " eval out, with its bf16 copy").c_str(), eval2, widen(eval), 0, 0);
    close((tag + " eval bf16 copy").c_str(), as_f32(eval_half), widen(as_f32(want_eval_half)), 0, 0);
    // The bf16 copy alone (no f32 output): the same bf16 values.
    std::vector<unsigned short> alone(rows * c, 0x7fff), eval_alone(rows * c, 0x7fff);
    launch(elementwise(rows * c), {BLOCK}, [&] {
        batchnorm_apply(nullptr, alone.data(), x.data(), mean.data(), rstd.data(), gamma.data(),
                        beta.data(), c, rows * c);
    });
    launch(elementwise(rows * c), {BLOCK}, [&] {
        batchnorm_apply_eval(nullptr, eval_alone.data(), x.data(), gamma.data(), beta.data(),
                             rm.data(), rv.data(), 1e-5f, c, rows * c);
    });
    close((tag + " bf16 alone").c_str(), as_f32(alone), widen(as_f32(want_half)), 0, 0);
    close((tag + " eval bf16 alone").c_str(), as_f32(eval_alone), widen(as_f32(want_eval_half)),
          0, 0);
    if (!backward) return;

    // Backward.
    std::vector<float> dgamma(c, 0.25f), dbeta(c, -0.5f), coef(3 * c), dx(rows * c);
    launch(grid, block, [&] {
        partial_dy_dyx(pa.data(), pb.data(), dy.data(), x.data(), p.rows, p.cols, c, p.chunk);
    });
    launch(cols, {BLOCK}, [&] {
        batchnorm_backward_finish(dgamma.data(), dbeta.data(), coef.data(), coef.data() + c,
                                  coef.data() + 2 * c, pa.data(), pb.data(), (int)p.parts, c,
                                  rows, mean.data(), rstd.data(), gamma.data());
    });
    launch(elementwise(rows * c), {BLOCK}, [&] {
        batchnorm_backward_apply(dx.data(), dy.data(), x.data(), coef.data(), coef.data() + c,
                                 coef.data() + 2 * c, c, rows * c);
    });
    std::vector<double> sdy(c, 0), sdyxh(c, 0), wdg(c), wdb(c), wdx(rows * c);
    for (long long r = 0; r < rows; r++)
        for (int k = 0; k < c; k++) {
            double xh = (x[r * c + k] - m[k]) * wr[k];
            sdy[k] += dy[r * c + k];
            sdyxh[k] += dy[r * c + k] * xh;
        }
    for (int k = 0; k < c; k++) {
        wdg[k] = 0.25 + sdyxh[k];
        wdb[k] = -0.5 + sdy[k];
    }
    for (long long r = 0; r < rows; r++)
        for (int k = 0; k < c; k++) {
            double xh = (x[r * c + k] - m[k]) * wr[k];
            wdx[r * c + k] =
                gamma[k] * wr[k] * (dy[r * c + k] - sdy[k] / rows - xh * sdyxh[k] / rows);
        }
    close((tag + " dgamma").c_str(), dgamma, wdg, 1e-4, 1e-4);
    close((tag + " dbeta").c_str(), dbeta, wdb, 1e-5, 1e-4);
    close((tag + " dx").c_str(), dx, wdx, 1e-3, abs / 10);

    // dy as bf16 values (a bf16 convolution's input gradient): the f32 kernels' results on
    // the widened values, bit for bit.
    std::vector<unsigned short> dyh(rows * c);
    launch(elementwise(rows * c), {BLOCK},
           [&] { f32_to_bf16(dyh.data(), dy.data(), rows * c); });
    std::vector<float> dyr = as_f32(dyh);
    std::vector<double> qa(p.parts * c), qb(p.parts * c), ra(p.parts * c), rb(p.parts * c);
    launch(grid, block, [&] {
        partial_dy_dyx(qa.data(), qb.data(), dyr.data(), x.data(), p.rows, p.cols, c, p.chunk);
    });
    launch(grid, block, [&] {
        partial_dy_dyx_bf16(ra.data(), rb.data(), dyh.data(), x.data(), p.rows, p.cols, c,
                            p.chunk);
    });
    std::vector<float> dxr(rows * c), dxh(rows * c, 99.0f);
    launch(elementwise(rows * c), {BLOCK}, [&] {
        batchnorm_backward_apply(dxr.data(), dyr.data(), x.data(), coef.data(), coef.data() + c,
                                 coef.data() + 2 * c, c, rows * c);
    });
    launch(elementwise(rows * c), {BLOCK}, [&] {
        batchnorm_backward_apply_bf16(dxh.data(), dyh.data(), x.data(), coef.data(),
                                      coef.data() + c, coef.data() + 2 * c, c, rows * c);
    });
    same((tag + " bf16 dy: sum dy").c_str(), ra, qa);
    same((tag + " bf16 dy: sum dy x").c_str(), rb, qb);
    close((tag + " bf16 dy: dx").c_str(), dxh, widen(dxr), 0, 0);
}

static void check_layernorm(int n, int f) {
    auto x = randn((size_t)n * f), gamma = randn(f), beta = randn(f), dy = randn((size_t)n * f);
    std::vector<float> out((size_t)n * f), mean(n), rstd(n), dx((size_t)n * f), dg(f, 0), db(f, 0);
    launch({(unsigned)n}, {BLOCK}, [&] {
        layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), gamma.data(),
                          beta.data(), f, 1e-5f);
    });
    launch({(unsigned)n}, {BLOCK}, [&] {
        layernorm_backward_input(dx.data(), dy.data(), x.data(), mean.data(), rstd.data(),
                                 gamma.data(), f);
    });
    Parts p = partials(n, f, 132);
    std::vector<double> pa(p.parts * f), pb(p.parts * f);
    launch({(unsigned)((f + 31) / 32), (unsigned)p.parts}, {32, 8}, [&] {
        partial_dy_xhat_rows(pa.data(), pb.data(), dy.data(), x.data(), mean.data(), rstd.data(),
                             n, f, f, p.chunk);
    });
    launch({(unsigned)((f + FINISH_COLUMNS - 1) / FINISH_COLUMNS)}, {BLOCK},
           [&] { finish_add(dg.data(), db.data(), pa.data(), pb.data(), (int)p.parts, f); });
    {
        // dy as bf16 values: the f32 kernels' results on the widened values, bit for bit.
        std::vector<unsigned short> dyh((size_t)n * f);
        launch(elementwise(dyh.size()), {BLOCK},
               [&] { f32_to_bf16(dyh.data(), dy.data(), (long long)dyh.size()); });
        std::vector<float> dyr = as_f32(dyh), dxr((size_t)n * f), dxh((size_t)n * f, 99.0f);
        launch({(unsigned)n}, {BLOCK}, [&] {
            layernorm_backward_input(dxr.data(), dyr.data(), x.data(), mean.data(), rstd.data(),
                                     gamma.data(), f);
        });
        launch({(unsigned)n}, {BLOCK}, [&] {
            layernorm_backward_input_bf16(dxh.data(), dyh.data(), x.data(), mean.data(),
                                          rstd.data(), gamma.data(), f);
        });
        std::vector<double> qa(p.parts * f), qb(p.parts * f), ra(p.parts * f), rb(p.parts * f);
        dim3 g{(unsigned)((f + 31) / 32), (unsigned)p.parts};
        launch(g, {32, 8}, [&] {
            partial_dy_xhat_rows(qa.data(), qb.data(), dyr.data(), x.data(), mean.data(),
                                 rstd.data(), n, f, f, p.chunk);
        });
        launch(g, {32, 8}, [&] {
            partial_dy_xhat_rows_bf16(ra.data(), rb.data(), dyh.data(), x.data(), mean.data(),
                                      rstd.data(), n, f, f, p.chunk);
        });
        std::string t = "layernorm " + std::to_string(n) + "x" + std::to_string(f) + " bf16 dy";
        close((t + " dx").c_str(), dxh, widen(dxr), 0, 0);
        same((t + " sum dy xhat").c_str(), ra, qa);
        same((t + " sum dy").c_str(), rb, qb);
    }
    std::vector<double> wout((size_t)n * f), wdx((size_t)n * f), wdg(f, 0), wdb(f, 0);
    for (int s = 0; s < n; s++) {
        const float* r = &x[(size_t)s * f];
        double m = 0, v = 0;
        for (int i = 0; i < f; i++) m += r[i];
        m /= f;
        for (int i = 0; i < f; i++) v += (r[i] - m) * (r[i] - m);
        v /= f;
        double rs = 1.0 / std::sqrt(v + 1e-5), a = 0, b = 0;
        for (int i = 0; i < f; i++) {
            double xh = (r[i] - m) * rs, g = dy[(size_t)s * f + i];
            wout[(size_t)s * f + i] = xh * gamma[i] + beta[i];
            wdg[i] += g * xh;
            wdb[i] += g;
            a += g * gamma[i];
            b += g * gamma[i] * xh;
        }
        for (int i = 0; i < f; i++) {
            double xh = (r[i] - m) * rs;
            wdx[(size_t)s * f + i] = rs * (dy[(size_t)s * f + i] * gamma[i] - a / f - xh * b / f);
        }
    }
    std::string tag = "layernorm " + std::to_string(n) + "x" + std::to_string(f);
    close((tag + " out").c_str(), out, wout, 1e-4, 1e-4);
    close((tag + " dx").c_str(), dx, wdx, 1e-3, 1e-4);
    close((tag + " dgamma").c_str(), dg, wdg, 1e-4, 1e-4);
    close((tag + " dbeta").c_str(), db, wdb, 1e-4, 1e-4);
}

// The fused kernels of a block's tail against the separate ones (already checked above):
// relu_pool_goodness (f32 in place, f32 from another buffer, bf16) must give the activation,
// the pooled values and the goodness of relu_forward + maxpool2_forward + goodness_forward
// bit for bit; the bf16 backward kernels must give the bf16 rounding of the f32 ones.
static void check_fused_tails(const std::vector<float>& x, const std::vector<float>& gout, int n,
                              int h, int w, int c, const std::string& tag) {
    int oh = h / 2, ow = w / 2;
    size_t full = x.size(), pooled_size = (size_t)n * oh * ow * c;
    for (int pool = 0; pool < 2; pool++) {
        // The separate kernels.
        std::vector<float> act = x, pooled(pooled_size), g(n);
        launch(elementwise(full), {BLOCK}, [&] { relu_forward(act.data(), (long long)full); });
        if (pool) {
            launch(elementwise(pooled_size), {BLOCK},
                   [&] { maxpool2_forward(pooled.data(), act.data(), n, h, w, c); });
        }
        const std::vector<float>& out = pool ? pooled : act;
        int features = (int)(out.size() / n);
        launch({(unsigned)n}, {BLOCK}, [&] { goodness_forward(g.data(), out.data(), features); });
        std::string t = tag + (pool ? " fused tail with pool" : " fused tail without pool");
        // f32, in place and from another buffer.
        for (int in_place = 0; in_place < 2; in_place++) {
            std::vector<float> y = x, a(full, 99.0f), p(pooled_size, 99.0f), gg(n, 99.0f);
            float* dst = in_place ? y.data() : a.data();
            launch({(unsigned)n}, {BLOCK}, [&] {
                relu_pool_goodness_f32(dst, p.data(), gg.data(), y.data(), h, w, c, pool, 1);
            });
            std::string u = t + (in_place ? " (f32 in place)" : " (f32)");
            close((u + " activation").c_str(), in_place ? y : a, widen(act), 0, 0);
            if (pool) close((u + " pooled").c_str(), p, widen(pooled), 0, 0);
            close((u + " goodness").c_str(), gg, widen(g), 0, 0);
        }
        if (pool) {
            // Evaluation: the same pooled values and goodness, and no activation written.
            std::vector<float> a(full, 99.0f), p(pooled_size, 99.0f), gg(n, 99.0f);
            launch({(unsigned)n}, {BLOCK}, [&] {
                relu_pool_goodness_f32(a.data(), p.data(), gg.data(), x.data(), h, w, c, 1, 0);
            });
            close((t + " (no activation saved) activation").c_str(), a,
                  std::vector<double>(full, 99.0), 0, 0);
            close((t + " (no activation saved) pooled").c_str(), p, widen(pooled), 0, 0);
            close((t + " (no activation saved) goodness").c_str(), gg, widen(g), 0, 0);
        }
        // Evaluation from a kept output plus a bias map: add_bias_map (against a plain loop),
        // then the separate kernels; the fused kernel gives the same values bit for bit, and
        // writes no activation with pool.
        {
            size_t features = (size_t)h * w * c;
            auto maps = randn(3 * features);
            const float* map = maps.data() + 2 * features;
            std::vector<float> sum(full), ps(pooled_size), gs(n);
            launch(elementwise(full), {BLOCK}, [&] {
                add_bias_map(sum.data(), x.data(), map, (long long)features, (long long)full);
            });
            std::vector<double> want_sum(full);
            for (size_t i = 0; i < full; i++) want_sum[i] = (double)(x[i] + map[i % features]);
            close((t + " add_bias_map").c_str(), sum, want_sum, 0, 0);
            launch(elementwise(full), {BLOCK}, [&] { relu_forward(sum.data(), (long long)full); });
            if (pool) {
                launch(elementwise(pooled_size), {BLOCK},
                       [&] { maxpool2_forward(ps.data(), sum.data(), n, h, w, c); });
            }
            const std::vector<float>& outs = pool ? ps : sum;
            launch({(unsigned)n}, {BLOCK},
                   [&] { goodness_forward(gs.data(), outs.data(), features_of(outs, n)); });
            std::vector<float> a(full, 99.0f), p(pooled_size, 99.0f), gg(n, 99.0f);
            launch({(unsigned)n}, {BLOCK}, [&] {
                eval_tail_f32(a.data(), p.data(), gg.data(), x.data(), map, h, w, c, pool,
                              NextNorm{});
            });
            std::string u = t + " (bias map)";
            if (pool) {
                close((u + " activation").c_str(), a, std::vector<double>(full, 99.0), 0, 0);
                close((u + " pooled").c_str(), p, widen(ps), 0, 0);
            } else {
                close((u + " activation").c_str(), a, widen(sum), 0, 0);
            }
            close((u + " goodness").c_str(), gg, widen(gs), 0, 0);
            // From a bf16 copy of y: the f32 kernel on the widened values, bit for bit.
            std::vector<unsigned short> yh(full);
            launch(elementwise(full), {BLOCK},
                   [&] { f32_to_bf16(yh.data(), x.data(), (long long)full); });
            std::vector<float> xr(full), af(full, 99.0f), pf(pooled_size, 99.0f), gf(n, 99.0f);
            launch(elementwise(full), {BLOCK},
                   [&] { bf16_to_f32(xr.data(), yh.data(), (long long)full, 0); });
            launch({(unsigned)n}, {BLOCK}, [&] {
                eval_tail_f32(af.data(), pf.data(), gf.data(), xr.data(), map, h, w, c, pool,
                              NextNorm{});
            });
            std::vector<float> ah(full, 99.0f), ph(pooled_size, 99.0f), gh(n, 99.0f);
            launch({(unsigned)n}, {BLOCK}, [&] {
                eval_tail_bf16(ah.data(), ph.data(), gh.data(), yh.data(), map, h, w, c, pool,
                              NextNorm{});
            });
            close((u + " bf16 activation").c_str(), ah, widen(af), 0, 0);
            if (pool) close((u + " bf16 pooled").c_str(), ph, widen(pf), 0, 0);
            close((u + " bf16 goodness").c_str(), gh, widen(gf), 0, 0);
            // With the next block's BatchNorm: batchnorm_apply_eval of the output (f32 and
            // bf16), the same goodness, and the output itself not written; without a map too.
            size_t out_size = outs.size();
            auto gamma = randn(c), beta = randn(c), mean = randn(c), var = randn(c);
            for (auto& v : var) v = std::fabs(v) + 0.5f;
            for (int biased = 0; biased < 2; biased++) {
                const float* m = biased ? map : nullptr;
                std::vector<float> plain(full), pp(pooled_size), pg(n);
                launch({(unsigned)n}, {BLOCK}, [&] {
                    eval_tail_f32(plain.data(), pp.data(), pg.data(), x.data(), m, h, w, c, pool,
                                  NextNorm{});
                });
                const std::vector<float>& out = pool ? pp : plain;
                std::vector<float> want(out_size);
                std::vector<unsigned short> want_half(out_size);
                launch(elementwise(out_size), {BLOCK}, [&] {
                    batchnorm_apply_eval(want.data(), want_half.data(), out.data(), gamma.data(),
                                         beta.data(), mean.data(), var.data(), 1e-5f, c,
                                         (long long)out_size);
                });
                std::vector<float> a2(full, 99.0f), p2(pooled_size, 99.0f), g2(n, 99.0f);
                std::vector<float> next(out_size, 99.0f);
                std::vector<unsigned short> next_half(out_size, 7);
                NextNorm nn{next.data(), next_half.data(), gamma.data(), beta.data(),
                            mean.data(),  var.data(),       1e-5f};
                launch({(unsigned)n}, {BLOCK}, [&] {
                    eval_tail_f32(a2.data(), p2.data(), g2.data(), x.data(), m, h, w, c, pool,
                                  nn);
                });
                std::string v = u + (biased ? " next norm" : " next norm, no map");
                close((v + " normalised").c_str(), next, widen(want), 0, 0);
                close((v + " normalised bf16").c_str(), as_f32(next_half), widen(as_f32(want_half)),
                      0, 0);
                close((v + " goodness").c_str(), g2, widen(pg), 0, 0);
                close((v + " activation").c_str(), a2, std::vector<double>(full, 99.0), 0, 0);
                close((v + " pooled").c_str(), p2, std::vector<double>(pooled_size, 99.0), 0, 0);
                // The bf16 values alone (no f32 output): the same bf16 values.
                std::vector<unsigned short> alone(out_size, 7);
                NextNorm half_only{nullptr,     alone.data(), gamma.data(), beta.data(),
                                   mean.data(), var.data(),   1e-5f};
                launch({(unsigned)n}, {BLOCK}, [&] {
                    eval_tail_f32(a2.data(), p2.data(), g2.data(), x.data(), m, h, w, c, pool,
                                  half_only);
                });
                close((v + " normalised bf16 alone").c_str(), as_f32(alone),
                      widen(as_f32(want_half)), 0, 0);
            }
        }
        // bf16 input: the same as the separate kernels on the bf16-rounded values.
        std::vector<unsigned short> yh(full);
        launch(elementwise(full), {BLOCK},
               [&] { f32_to_bf16(yh.data(), x.data(), (long long)full); });
        std::vector<float> xr(full);
        launch(elementwise(full), {BLOCK},
               [&] { bf16_to_f32(xr.data(), yh.data(), (long long)full, 0); });
        std::vector<float> ar = xr, pr(pooled_size), gr(n);
        launch(elementwise(full), {BLOCK}, [&] { relu_forward(ar.data(), (long long)full); });
        if (pool) {
            launch(elementwise(pooled_size), {BLOCK},
                   [&] { maxpool2_forward(pr.data(), ar.data(), n, h, w, c); });
        }
        const std::vector<float>& outr = pool ? pr : ar;
        launch({(unsigned)n}, {BLOCK}, [&] { goodness_forward(gr.data(), outr.data(), features); });
        std::vector<float> a(full, 99.0f), p(pooled_size, 99.0f), gg(n, 99.0f);
        launch({(unsigned)n}, {BLOCK}, [&] {
            relu_pool_goodness_bf16(a.data(), p.data(), gg.data(), yh.data(), h, w, c, pool, 1);
        });
        if (pool) {
            // The record: bf16 values in the first half of the activation buffer.
            std::vector<unsigned short> record(full);
            std::memcpy(record.data(), a.data(), full * sizeof(unsigned short));
            close((t + " (bf16) record").c_str(), as_f32(record), widen(ar), 0, 0);
        } else {
            close((t + " (bf16) activation").c_str(), a, widen(ar), 0, 0);
        }
        if (pool) close((t + " (bf16) pooled").c_str(), p, widen(pr), 0, 0);
        close((t + " (bf16) goodness").c_str(), gg, widen(gr), 0, 0);
        if (pool) {
            // As in training: y in the first half of the activation buffer, no record
            // written (the backward reads y); the same pooled values and goodness.
            std::vector<float> a2(full, 0.0f), p2(pooled_size, 99.0f), g2(n, 99.0f);
            std::memcpy(a2.data(), yh.data(), full * sizeof(unsigned short));
            auto y_in_place = (const unsigned short*)a2.data();
            launch({(unsigned)n}, {BLOCK}, [&] {
                relu_pool_goodness_bf16(a2.data(), p2.data(), g2.data(), y_in_place, h, w, c, 1,
                                        0);
            });
            close((t + " (bf16, y in place) pooled").c_str(), p2, widen(pr), 0, 0);
            close((t + " (bf16, y in place) goodness").c_str(), g2, widen(gr), 0, 0);
            std::vector<unsigned short> still(full);
            std::memcpy(still.data(), a2.data(), full * sizeof(unsigned short));
            close((t + " (bf16, y in place) y untouched").c_str(), as_f32(still),
                  widen(as_f32(yh)), 0, 0);
        }
    }
    // Backward straight to bf16: the rounding of the f32 kernels' results.
    auto rounded = [&](const std::vector<float>& v) {
        std::vector<unsigned short> hv(v.size());
        std::vector<float> back(v.size());
        launch(elementwise(v.size()), {BLOCK},
               [&] { f32_to_bf16(hv.data(), v.data(), (long long)v.size()); });
        launch(elementwise(v.size()), {BLOCK},
               [&] { bf16_to_f32(back.data(), hv.data(), (long long)v.size(), 0); });
        return widen(back);
    };
    // The activation as a bf16 convolution leaves it: bf16 values, and their bf16 record.
    std::vector<unsigned short> record(full);
    launch(elementwise(full), {BLOCK},
           [&] { f32_to_bf16(record.data(), x.data(), (long long)full); });
    std::vector<float> act = as_f32(record);
    launch(elementwise(full), {BLOCK}, [&] { relu_forward(act.data(), (long long)full); });
    launch(elementwise(full), {BLOCK},
           [&] { f32_to_bf16(record.data(), act.data(), (long long)full); });
    std::vector<float> gin(full);
    launch(elementwise(full), {BLOCK}, [&] {
        relu_maxpool2_backward(gin.data(), gout.data(), act.data(), n, h, w, c);
    });
    std::vector<unsigned short> gh(full, 0x7fff);
    launch(elementwise(full), {BLOCK}, [&] {
        relu_maxpool2_backward_bf16(gh.data(), gout.data(), record.data(), n, h, w, c);
    });
    close((tag + " relu+pool backward to bf16").c_str(), as_f32(gh), rounded(gin), 0, 0);
    // From the pre-activation itself (bf16 y, not ReLU'd): the same, bit for bit.
    std::vector<unsigned short> raw(full), gr(full, 0x7fff);
    launch(elementwise(full), {BLOCK},
           [&] { f32_to_bf16(raw.data(), x.data(), (long long)full); });
    launch(elementwise(full), {BLOCK}, [&] {
        relu_maxpool2_backward_bf16(gr.data(), gout.data(), raw.data(), n, h, w, c);
    });
    close((tag + " relu+pool backward from y").c_str(), as_f32(gr), widen(as_f32(gh)), 0, 0);
    auto dy = randn(full);
    std::vector<float> masked = dy;
    launch(elementwise(full), {BLOCK},
           [&] { relu_backward(masked.data(), act.data(), (long long)full); });
    std::vector<unsigned short> rh(full, 0x7fff);
    launch(elementwise(full), {BLOCK}, [&] {
        relu_backward_bf16(rh.data(), dy.data(), act.data(), (long long)full);
    });
    close((tag + " relu backward to bf16").c_str(), as_f32(rh), rounded(masked), 0, 0);

    // From d(goodness) in one pass: goodness_backward of the block's output, then the bf16
    // backward kernels above, bit for bit.
    auto gg = randn(n);
    std::vector<float> pooled(pooled_size), dpool(pooled_size);
    launch(elementwise(pooled_size), {BLOCK},
           [&] { maxpool2_forward(pooled.data(), act.data(), n, h, w, c); });
    int pf = oh * ow * c;
    launch(elementwise(pooled_size), {BLOCK}, [&] {
        goodness_backward(dpool.data(), gg.data(), pooled.data(), pf, (long long)pooled_size);
    });
    std::vector<unsigned short> want_pool(full, 0x7fff), got_pool(full, 0x7fff);
    launch(elementwise(full), {BLOCK}, [&] {
        relu_maxpool2_backward_bf16(want_pool.data(), dpool.data(), record.data(), n, h, w, c);
    });
    launch(elementwise(full), {BLOCK}, [&] {
        goodness_relu_maxpool2_backward_bf16(got_pool.data(), gg.data(), record.data(), n, h, w,
                                             c);
    });
    close((tag + " goodness+relu+pool backward to bf16").c_str(), as_f32(got_pool),
          widen(as_f32(want_pool)), 0, 0);
    std::vector<unsigned short> from_y(full, 0x7fff);
    launch(elementwise(full), {BLOCK}, [&] {
        goodness_relu_maxpool2_backward_bf16(from_y.data(), gg.data(), raw.data(), n, h, w, c);
    });
    close((tag + " goodness+relu+pool backward from y").c_str(), as_f32(from_y),
          widen(as_f32(want_pool)), 0, 0);
    int f = h * w * c;
    std::vector<float> dact(full);
    launch(elementwise(full), {BLOCK},
           [&] { goodness_backward(dact.data(), gg.data(), act.data(), f, (long long)full); });
    std::vector<unsigned short> want_relu(full, 0x7fff), got_relu(full, 0x7fff);
    launch(elementwise(full), {BLOCK}, [&] {
        relu_backward_bf16(want_relu.data(), dact.data(), act.data(), (long long)full);
    });
    launch(elementwise(full), {BLOCK}, [&] {
        goodness_relu_backward_bf16(got_relu.data(), gg.data(), act.data(), f, (long long)full);
    });
    close((tag + " goodness+relu backward to bf16").c_str(), as_f32(got_relu),
          widen(as_f32(want_relu)), 0, 0);
}

static void check_pool(int n, int h, int w, int c) {
    std::uniform_int_distribution<int> d(-1, 2);  // ties and zeros on purpose
    std::vector<float> x((size_t)n * h * w * c);
    for (auto& v : x) v = (float)d(rng);
    int oh = h / 2, ow = w / 2;
    auto gout = randn((size_t)n * oh * ow * c);
    std::vector<float> relu = x, out((size_t)n * oh * ow * c), gin(x.size(), 99.0f);
    launch(elementwise(relu.size()), {BLOCK}, [&] { relu_forward(relu.data(), relu.size()); });
    launch(elementwise(out.size()), {BLOCK},
           [&] { maxpool2_forward(out.data(), relu.data(), n, h, w, c); });
    launch(elementwise(gin.size()), {BLOCK}, [&] {
        relu_maxpool2_backward(gin.data(), gout.data(), relu.data(), n, h, w, c);
    });
    std::vector<double> wout(out.size()), wgin(x.size(), 0.0);
    auto at = [&](int s, int y, int xx, int k) {
        return std::max(x[(((size_t)s * h + y) * w + xx) * c + k], 0.0f);
    };
    for (int s = 0; s < n; s++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int k = 0; k < c; k++) {
                    float v[4] = {at(s, 2 * oy, 2 * ox, k), at(s, 2 * oy, 2 * ox + 1, k),
                                  at(s, 2 * oy + 1, 2 * ox, k), at(s, 2 * oy + 1, 2 * ox + 1, k)};
                    int best = 0;
                    for (int q = 1; q < 4; q++)
                        if (v[q] > v[best]) best = q;  // the first maximum wins
                    size_t o = (((size_t)s * oh + oy) * ow + ox) * c + k;
                    wout[o] = v[best];
                    if (v[best] > 0) {
                        int y = 2 * oy + best / 2, xx = 2 * ox + best % 2;
                        wgin[(((size_t)s * h + y) * w + xx) * c + k] = gout[o];
                    }
                }
    std::string tag = "pool " + std::to_string(n) + "x" + std::to_string(h) + "x" +
                      std::to_string(w) + "x" + std::to_string(c);
    close((tag + " forward").c_str(), out, wout, 0, 0);
    close((tag + " relu+pool backward").c_str(), gin, wgin, 0, 0);
    check_fused_tails(x, gout, n, h, w, c, tag);
}

static void check_goodness_and_losses(int pairs, int f) {
    int n = 2 * pairs;
    auto x = randn((size_t)n * f, 0.5);
    std::vector<float> g(n), loss(1), dg(n), dx((size_t)n * f);
    launch({(unsigned)n}, {BLOCK}, [&] { goodness_forward(g.data(), x.data(), f); });
    std::vector<double> wg(n, 0);
    for (int s = 0; s < n; s++) {
        for (int i = 0; i < f; i++) wg[s] += (double)x[(size_t)s * f + i] * x[(size_t)s * f + i];
        wg[s] /= f;
    }
    std::string tag = "goodness " + std::to_string(n) + "x" + std::to_string(f);
    close(tag.c_str(), g, wg, 1e-6, 1e-7);
    for (int kind = 0; kind < 2; kind++) {
        float param = kind == 0 ? 4.0f : 2.0f;
        launch({1}, {BLOCK}, [&] { ff_loss(loss.data(), dg.data(), g.data(), pairs, kind, param); });
        launch(elementwise(dx.size()), {BLOCK},
               [&] { goodness_backward(dx.data(), dg.data(), x.data(), f, (long long)dx.size()); });
        double total = 0;
        std::vector<double> wdg(n), wdx(dx.size());
        auto sp = [](double v) { return std::max(v, 0.0) + std::log1p(std::exp(-std::fabs(v))); };
        auto sg = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
        for (int i = 0; i < pairs; i++) {
            double p = g[i], q = g[pairs + i];
            if (kind == 0) {
                total += sp(-param * (p - q));
                wdg[i] = -param * sg(-param * (p - q)) / pairs;
                wdg[pairs + i] = -wdg[i];
            } else {
                total += sp(param - p) + sp(q - param);
                wdg[i] = -sg(param - p) / (2.0 * pairs);
                wdg[pairs + i] = sg(q - param) / (2.0 * pairs);
            }
        }
        for (size_t i = 0; i < dx.size(); i++) wdx[i] = wdg[i / f] * 2.0 / f * x[i];
        std::string k = tag + (kind == 0 ? " symba" : " threshold");
        close((k + " loss").c_str(), loss, {total / (kind == 0 ? pairs : 2.0 * pairs)}, 1e-6, 1e-7);
        close((k + " grad goodness").c_str(), dg, wdg, 1e-6, 1e-9);
        close((k + " dx").c_str(), dx, wdx, 1e-5, 1e-9);
    }
}

// embed_forward with c image channels (3: quads; else single values).
static std::vector<float> check_embed_forward(int n, int pixels, int c, int classes,
                                              const std::vector<unsigned>& labels) {
    auto images = randn((size_t)n * pixels * c), table = randn((size_t)classes * pixels);
    std::vector<float> out((size_t)n * pixels * (c + 1));
    launch(elementwise((long long)n * pixels), {BLOCK}, [&] {
        embed_forward(out.data(), images.data(), table.data(), labels.data(), n, pixels, c);
    });
    std::vector<double> wout(out.size());
    for (int s = 0; s < n; s++)
        for (int p = 0; p < pixels; p++) {
            size_t at = (size_t)s * pixels + p;
            for (int k = 0; k < c; k++) wout[at * (c + 1) + k] = images[at * c + k];
            wout[at * (c + 1) + c] = table[labels[s] * pixels + p];
        }
    close(("embedding forward, " + std::to_string(c) + " channels").c_str(), out, wout, 0, 0);
    return out;
}

// adam_step_many with one parameter, as the backend's adam_step launches it.
static void adam_step(float* param, unsigned short* param_half, float* m, float* v,
                      const float* grad, long long n, float beta1, float beta2, float eps,
                      float step_size, float bias2_sqrt) {
    AdamMany t{};
    t.param[0] = param;
    t.param_half[0] = param_half;
    t.m[0] = m;
    t.v[0] = v;
    t.grad[0] = grad;
    t.n[0] = n;
    adam_step_many(t, 1, beta1, beta2, eps, step_size, bias2_sqrt);
}

static void check_embedding_heads_adam() {
    int n = 37, pixels = 35, c = 3, classes = 10;
    std::vector<unsigned> labels(n);
    for (auto& l : labels) l = (unsigned)(rng() % classes);
    check_embed_forward(n, pixels, 1, classes, labels);
    auto out = check_embed_forward(n, pixels, c, classes, labels);
    auto grad = randn(out.size());
    std::vector<float> gt((size_t)classes * pixels, 1.0f);
    // The samples by label, as the host's label_groups lists them.
    std::vector<unsigned> groups(classes + 1, 0);
    for (int s = 0; s < n; s++) groups[labels[s] + 1]++;
    for (int l = 0; l < classes; l++) groups[l + 1] += groups[l];
    for (int l = 0; l < classes; l++)
        for (int s = 0; s < n; s++)
            if ((int)labels[s] == l) groups.push_back((unsigned)s);
    launch(elementwise(gt.size()), {BLOCK}, [&] {
        embed_backward(gt.data(), grad.data(), groups.data(), pixels, c, classes);
    });
    std::vector<double> wgt(gt.size(), 1.0);
    for (int s = 0; s < n; s++)
        for (int p = 0; p < pixels; p++)
            wgt[labels[s] * pixels + p] += grad[((size_t)s * pixels + p) * (c + 1) + c];
    close("embedding backward", gt, wgt, 1e-5, 1e-5);

    // Average pool, bias, cross-entropy.
    int px = 16, ch = 40;
    auto feat = randn((size_t)n * px * ch);
    std::vector<float> pooled((size_t)n * ch), gin(feat.size());
    launch(elementwise(pooled.size()), {BLOCK},
           [&] { avgpool_forward(pooled.data(), feat.data(), n, px, ch); });
    std::vector<double> wp(pooled.size(), 0);
    for (int s = 0; s < n; s++)
        for (int p = 0; p < px; p++)
            for (int k = 0; k < ch; k++) wp[(size_t)s * ch + k] += feat[((size_t)s * px + p) * ch + k] / px;
    close("avgpool forward", pooled, wp, 1e-5, 1e-6);
    launch(elementwise(gin.size()), {BLOCK},
           [&] { avgpool_backward(gin.data(), pooled.data(), px, ch, (long long)gin.size()); });
    std::vector<double> wgin(gin.size());
    for (size_t i = 0; i < gin.size(); i++) wgin[i] = pooled[i / ((size_t)px * ch) * ch + i % ch] / px;
    close("avgpool backward", gin, wgin, 1e-6, 1e-7);
    auto bias = randn(classes);
    std::vector<float> logits((size_t)n * classes), loss(1), dl(logits.size());
    launch(elementwise(logits.size()), {BLOCK},
           [&] { bias_rows(logits.data(), bias.data(), classes, (long long)logits.size()); });
    std::vector<double> wl(logits.size());
    for (size_t i = 0; i < wl.size(); i++) wl[i] = bias[i % classes];
    close("bias rows", logits, wl, 0, 0);
    logits = randn(logits.size(), 2.0);
    launch({1}, {BLOCK}, [&] {
        cross_entropy(loss.data(), dl.data(), logits.data(), labels.data(), n, classes);
    });
    double total = 0;
    std::vector<double> wdl(dl.size());
    for (int s = 0; s < n; s++) {
        double mx = -1e30, sum = 0;
        for (int k = 0; k < classes; k++) mx = std::max(mx, (double)logits[s * classes + k]);
        for (int k = 0; k < classes; k++) sum += std::exp(logits[s * classes + k] - mx);
        total += std::log(sum) + mx - logits[s * classes + labels[s]];
        for (int k = 0; k < classes; k++)
            wdl[s * classes + k] =
                (std::exp(logits[s * classes + k] - mx) / sum - (k == (int)labels[s])) / n;
    }
    close("cross-entropy loss", loss, {total / n}, 1e-6, 1e-7);
    close("cross-entropy gradient", dl, wdl, 1e-5, 1e-8);

    // Adam, two steps.
    size_t len = 1001;
    auto p = randn(len);
    std::vector<float> m(len, 0), v(len, 0);
    std::vector<unsigned short> p_half(len, 0x7fff);
    std::vector<double> wp2(p.begin(), p.end()), wm(len, 0), wv(len, 0);
    for (int step = 1; step <= 2; step++) {
        auto g = randn(len);
        double b1 = 1 - std::pow(0.9, step), b2 = 1 - std::pow(0.999, step);
        float step_size = (float)(1e-3 / b1), bias2_sqrt = (float)std::sqrt(b2);
        // The second step also writes the bf16 copy of the new parameters.
        launch(elementwise(len), {BLOCK}, [&] {
            adam_step(p.data(), step == 2 ? p_half.data() : nullptr, m.data(), v.data(),
                      g.data(), (long long)len, 0.9f, 0.999f, 1e-8f, step_size, bias2_sqrt);
        });
        for (size_t i = 0; i < len; i++) {
            wm[i] = 0.9 * wm[i] + 0.1 * g[i];
            wv[i] = 0.999 * wv[i] + 0.001 * (double)g[i] * g[i];
            wp2[i] -= 1e-3 / b1 * wm[i] / (std::sqrt(wv[i]) / std::sqrt(b2) + 1e-8);
        }
    }
    close("adam param", p, wp2, 1e-5, 1e-6);
    close("adam m", m, wm, 1e-5, 1e-7);
    std::vector<unsigned short> want_half(len);
    launch(elementwise(len), {BLOCK}, [&] { f32_to_bf16(want_half.data(), p.data(), (long long)len); });
    close("adam bf16 copy", as_f32(p_half), widen(as_f32(want_half)), 0, 0);
    // Quads and single values agree bit for bit: the same step on buffers one float off
    // alignment (single values throughout).
    {
        auto g = randn(len), p0 = randn(len), m0 = randn(len, 0.1), v0 = randn(len, 0.1);
        for (auto& x : v0) x = std::fabs(x);
        std::vector<float> pa = p0, ma = m0, va = v0;
        std::vector<float> pb(len + 1), mb(len + 1), vb(len + 1), gb(len + 1);
        std::copy(p0.begin(), p0.end(), pb.begin() + 1);
        std::copy(m0.begin(), m0.end(), mb.begin() + 1);
        std::copy(v0.begin(), v0.end(), vb.begin() + 1);
        std::copy(g.begin(), g.end(), gb.begin() + 1);
        launch(elementwise(len), {BLOCK}, [&] {
            adam_step(pa.data(), nullptr, ma.data(), va.data(), g.data(), (long long)len, 0.9f,
                      0.999f, 1e-8f, 0.01f, 0.5f);
        });
        launch(elementwise(len), {BLOCK}, [&] {
            adam_step(pb.data() + 1, nullptr, mb.data() + 1, vb.data() + 1, gb.data() + 1,
                      (long long)len, 0.9f, 0.999f, 1e-8f, 0.01f, 0.5f);
        });
        close("adam quads against single values", pa,
              std::vector<double>(pb.begin() + 1, pb.end()), 0, 0);
        close("adam quads against single values (v)", va,
              std::vector<double>(vb.begin() + 1, vb.end()), 0, 0);
    }

    // adam_step_many: the same values as adam_step on each parameter, bit for bit; block
    // rows beyond `count` leave theirs alone. Sizes from empty up, one with a bf16 copy.
    {
        const int count = 4;
        long long lens[count + 1] = {0, 3, 1001, 6, 5};
        std::vector<std::vector<float>> ps, ms, vs, gs, want_p, want_m, want_v;
        std::vector<unsigned short> half(1001, 0x7fff), want_half(1001, 0x7fff);
        for (int k = 0; k <= count; k++) {
            ps.push_back(randn(lens[k]));
            ms.push_back(randn(lens[k], 0.1));
            vs.push_back(randn(lens[k], 0.1));
            for (auto& x : vs.back()) x = std::fabs(x);
            gs.push_back(randn(lens[k]));
        }
        want_p = ps, want_m = ms, want_v = vs;
        AdamMany t{};
        for (int k = 0; k <= count; k++) {
            t.param[k] = ps[k].data();
            t.param_half[k] = k == 2 ? half.data() : nullptr;
            t.m[k] = ms[k].data();
            t.v[k] = vs[k].data();
            t.grad[k] = gs[k].data();
            t.n[k] = lens[k];
            if (k == count) break;
            launch(elementwise(lens[k]), {BLOCK}, [&] {
                adam_step(want_p[k].data(), k == 2 ? want_half.data() : nullptr,
                          want_m[k].data(), want_v[k].data(), gs[k].data(), lens[k], 0.9f,
                          0.999f, 1e-8f, 0.01f, 0.5f);
            });
        }
        launch({3, count + 1, 1}, {BLOCK},
               [&] { adam_step_many(t, count, 0.9f, 0.999f, 1e-8f, 0.01f, 0.5f); });
        bool ok = half == want_half && ps[count] == want_p[count] && ms[count] == want_m[count];
        for (int k = 0; k < count; k++)
            ok &= ps[k] == want_p[k] && ms[k] == want_m[k] && vs[k] == want_v[k];
        std::printf("%s adam_step_many\n", ok ? "ok  " : "FAIL");
        if (!ok) failures++;
    }

    // bf16 round trip: exact for values with 8 significant bits, nearest-even otherwise.
    std::vector<float> src = {1.0f, -2.5f, 0.375f, 1.00390625f /* 1 + 2^-8: ties to even */,
                              1.01171875f /* 1 + 3*2^-8: ties up */, 65504.0f};
    std::vector<unsigned short> half(src.size());
    std::vector<float> back(src.size(), 7.0f);
    launch({1}, {BLOCK}, [&] { f32_to_bf16(half.data(), src.data(), (long long)src.size()); });
    launch({1}, {BLOCK}, [&] { bf16_to_f32(back.data(), half.data(), (long long)src.size(), 1); });
    close("bf16 round trip (accumulated onto 7)", back,
          {8.0, 4.5, 7.375, 8.0, 8.015625, 65536.0 + 7.0}, 0, 1e-6);
}

// Zero channels in, real channels out, against plain loops (the quad path where c and cp
// are multiples of 4, single values elsewhere).
static void check_channel_padding(long long rows, int c, int cp) {
    std::vector<unsigned short> src(rows * c), padded(rows * cp, 0x7fff), back(rows * c, 7);
    for (size_t i = 0; i < src.size(); i++) src[i] = (unsigned short)(1 + i % 60000);
    launch(elementwise(rows * cp), {BLOCK}, [&] {
        repad_channels_bf16(padded.data(), src.data(), rows, c, cp);
    });
    launch(elementwise(rows * c), {BLOCK}, [&] {
        repad_channels_bf16(back.data(), padded.data(), rows, cp, c);
    });
    std::string tag = "channel padding " + std::to_string(rows) + "x" + std::to_string(c) +
                      "->" + std::to_string(cp);
    bool ok = back == src;
    for (long long r = 0; r < rows && ok; r++)
        for (int j = 0; j < cp; j++)
            ok &= padded[r * cp + j] == (j < c ? src[r * c + j] : 0);
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", tag.c_str());
    if (!ok) failures++;
}

// Several buffers in one launch, block row y filling buffer y; rows past `count` touch nothing.
static void check_fill_many() {
    std::vector<std::vector<float>> bufs = {std::vector<float>(0), std::vector<float>(1, 7.0f),
                                            std::vector<float>(1000, 7.0f),
                                            std::vector<float>(70, 7.0f)};
    FillMany args{};
    for (int k = 0; k < 3; k++) {
        args.ptr[k] = bufs[k].data();
        args.len[k] = (long long)bufs[k].size();
    }
    args.ptr[3] = bufs[3].data();  // beyond count: left alone
    args.len[3] = 70;
    launch({4, 4, 1}, {BLOCK}, [&] { fill_many_f32(args, 3, 2.5f); });
    bool ok = true;
    for (int k = 0; k < 4; k++)
        for (float v : bufs[k]) ok &= v == (k < 3 ? 2.5f : 7.0f);
    std::printf("%s fill_many\n", ok ? "ok  " : "FAIL");
    if (!ok) failures++;
    // fill_f32: the first n values, over a grid smaller than n.
    std::vector<float> one(20000, 7.0f);
    launch({4, 1, 1}, {BLOCK}, [&] { fill_f32(one.data(), -1.5f, 19999); });
    bool filled = one.back() == 7.0f;
    for (size_t i = 0; i + 1 < one.size(); i++) filled &= one[i] == -1.5f;
    std::printf("%s fill\n", filled ? "ok  " : "FAIL");
    if (!filled) failures++;
}

// Three windows of one buffer from sources of 0, 1000 and 3 values; a fourth part beyond
// `count` and the gaps keep their values.
static void check_copy_many() {
    std::vector<float> a(0), b = randn(1000), c = randn(3), d = randn(50);
    std::vector<float> dst(1100, 7.0f), want(1100, 7.0f);
    CopyMany parts{};
    const float* src[4] = {a.data(), b.data(), c.data(), d.data()};
    long long offset[4] = {5, 10, 1020, 1030}, len[4] = {0, 1000, 3, 50};
    for (int k = 0; k < 4; k++) {
        parts.src[k] = src[k];
        parts.offset[k] = offset[k];
        parts.len[k] = len[k];
        for (long long i = 0; k < 3 && i < len[k]; i++) want[offset[k] + i] = src[k][i];
    }
    launch({3, 4, 1}, {BLOCK}, [&] { copy_many_f32(dst.data(), parts, 3); });
    bool ok = dst == want;
    std::printf("%s copy_many\n", ok ? "ok  " : "FAIL");
    if (!ok) failures++;
}

int main() {
    check_fill_many();
    check_copy_many();
    check_channel_padding(1000, 4, 8);
    check_channel_padding(37, 2, 8);
    check_channel_padding(9, 12, 16);
    check_column_sums(999, 10);  // folded 3 rows to a warp
    check_column_sums(77, 45);
    check_batchnorm(1, 3, 0.0, 1e-3);
    check_batchnorm(70, 3, 50.0, 1e-4);
    check_batchnorm(64 * 33, 40, 50.0, 1e-4);
    check_batchnorm(20000, 4, 50.0, 1e-4);  // folded 8 rows to a warp (block 0's 4 channels)
    check_batchnorm(63, 4, 50.0, 1e-4);     // folded 7 rows (63 is no multiple of 8)
    check_batchnorm(5000, 6, 3e6, 0.2, false);  // a mean a million standard deviations out
    check_layernorm(1, 5);
    check_layernorm(3, 105);
    check_layernorm(70, 300);
    check_pool(1, 2, 2, 1);
    check_pool(2, 7, 5, 3);
    check_pool(3, 8, 8, 40);
    check_fused_tails(randn(2 * 6 * 6 * 8), randn(2 * 3 * 3 * 8), 2, 6, 6, 8, "random 2x6x6x8");
    check_fused_tails(randn(3 * 5 * 7 * 4), randn(3 * 2 * 3 * 4), 3, 5, 7, 4, "random 3x5x7x4");
    // More channels than the tails keep next-norm coefficients for in shared memory.
    check_fused_tails(randn(1 * 2 * 3 * 1030), randn(1 * 1 * 1 * 1030), 1, 2, 3, 1030,
                      "random 1x2x3x1030");
    check_goodness_and_losses(1, 3);
    check_goodness_and_losses(37, 128);
    check_goodness_and_losses(300, 700);
    check_embedding_heads_adam();
    if (failures) {
        std::printf("%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("all kernel checks passed\n");
    return 0;
}
