// y = x @ w^T + bias for 1-4 rows of x, reading w where oneDNN packed it. For fp32 oneDNN
// stores an inner product's weight as blocks of B output rows, input-major inside a block
// ([out / B][in][B]); at a few rows its own kernel spends ~25 us a call before it reads any
// weight and then reads them below the copy bandwidth. This one streams each block once,
// with its rows' B sums in registers (`python benchmarks/one_row_products.py`). linear.py
// checks the layout on the real weights before it lets a matrix use this.
#include <torch/extension.h>
#include <ATen/Parallel.h>

namespace {

template <int B, int M>
void blocks(const float* x, const float* w, const float* bias, float* y, int64_t in,
            int64_t out, int64_t begin, int64_t end) {
  for (int64_t block = begin; block < end; ++block) {
    const float* wb = w + block * in * B;
    float acc[M][B];
    for (int m = 0; m < M; ++m) {
#pragma omp simd
      for (int b = 0; b < B; ++b) acc[m][b] = bias ? bias[block * B + b] : 0.f;
    }
    for (int64_t k = 0; k < in; ++k) {
      const float* wk = wb + k * B;
      __builtin_prefetch(wk + 16 * B);
      for (int m = 0; m < M; ++m) {
        const float xk = x[m * in + k];
#pragma omp simd
        for (int b = 0; b < B; ++b) acc[m][b] += xk * wk[b];
      }
    }
    for (int m = 0; m < M; ++m) {
#pragma omp simd
      for (int b = 0; b < B; ++b) y[m * out + block * B + b] = acc[m][b];
    }
  }
}

template <int B>
void by_rows(int64_t rows, const float* x, const float* w, const float* bias, float* y,
             int64_t in, int64_t out) {
  at::parallel_for(0, out / B, 1, [&](int64_t begin, int64_t end) {
    switch (rows) {
      case 1: return blocks<B, 1>(x, w, bias, y, in, out, begin, end);
      case 2: return blocks<B, 2>(x, w, bias, y, in, out, begin, end);
      case 3: return blocks<B, 3>(x, w, bias, y, in, out, begin, end);
      default: return blocks<B, 4>(x, w, bias, y, in, out, begin, end);
    }
  });
}

}  // namespace

// `weight` is the address of oneDNN's packed [out / block][in][block] fp32 data, which the
// caller keeps alive.
at::Tensor few_rows_linear(const at::Tensor& x, int64_t weight, int64_t out, int64_t block,
                           const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kFloat,
              "few_rows_linear: x [rows, in], contiguous float32");
  const int64_t rows = x.size(0), in = x.size(1);
  TORCH_CHECK(rows >= 1 && rows <= 4, "few_rows_linear: 1 to 4 rows, not ", rows);
  TORCH_CHECK(out % block == 0, "few_rows_linear: out a multiple of the block");
  const float* b = nullptr;
  if (bias) {
    TORCH_CHECK(bias->is_contiguous() && bias->scalar_type() == at::kFloat &&
                    bias->numel() == out,
                "few_rows_linear: a float32 bias of out entries");
    b = bias->data_ptr<float>();
  }
  at::Tensor y = at::empty({rows, out}, x.options());
  const float* w = reinterpret_cast<const float*>(weight);
  const float* xs = x.data_ptr<float>();
  float* ys = y.data_ptr<float>();
  switch (block) {
    case 8: by_rows<8>(rows, xs, w, b, ys, in, out); break;
    case 16: by_rows<16>(rows, xs, w, b, ys, in, out); break;
    case 32: by_rows<32>(rows, xs, w, b, ys, in, out); break;
    case 64: by_rows<64>(rows, xs, w, b, ys, in, out); break;
    default: TORCH_CHECK(false, "few_rows_linear: blocks of 8, 16, 32 or 64 rows, not ", block);
  }
  return y;
}

void register_few_rows(pybind11::module& m) { m.def("few_rows_linear", &few_rows_linear); }
