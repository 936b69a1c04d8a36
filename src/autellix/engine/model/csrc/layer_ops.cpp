// A decoder layer's elementwise work, one pass each: RMS norm (with the residual add
// folded in), the rotary embedding in place, and SiLU-and-multiply. In torch each is 4-8
// ops of a few microseconds' dispatch, which at one token a step is more than their
// arithmetic: 4.5 ms of a 38 ms decode step went to the norms alone.
// Rounding follows the torch path: norms in fp32, each result rounded to the tensor's
// dtype where torch rounds it (for bfloat16).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>

namespace {

constexpr int64_t kGrain = 16;  // rows per thread's share: one token's row is tiny

template <typename T>
inline T round_to(float x) {
  return static_cast<T>(x);
}

// out = weight * (x / rms(x)), row by row.
template <typename T>
void norm_row(const T* x, const T* weight, T* out, int64_t n, float eps) {
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(x[i]);
    sum += v * v;
  }
  const float scale = 1.f / std::sqrt(sum / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) {
    const float normed = static_cast<float>(round_to<T>(static_cast<float>(x[i]) * scale));
    out[i] = round_to<T>(static_cast<float>(weight[i]) * normed);
  }
}

template <typename T>
void rms_norm_impl(const at::Tensor& x, const at::Tensor& weight, at::Tensor& out, float eps) {
  const int64_t rows = x.size(0), n = x.size(1);
  const T* xs = x.data_ptr<T>();
  const T* w = weight.data_ptr<T>();
  T* os = out.data_ptr<T>();
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) norm_row(xs + r * n, w, os + r * n, n, eps);
  });
}

// residual += x, then x = norm(residual): the layer's skip connection and its next norm.
template <typename T>
void add_rms_norm_impl(at::Tensor& x, at::Tensor& residual, const at::Tensor& weight, float eps) {
  const int64_t rows = x.size(0), n = x.size(1);
  T* xs = x.data_ptr<T>();
  T* rs = residual.data_ptr<T>();
  const T* w = weight.data_ptr<T>();
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* xr = xs + r * n;
      T* rr = rs + r * n;
      for (int64_t i = 0; i < n; ++i)
        rr[i] = round_to<T>(static_cast<float>(xr[i]) + static_cast<float>(rr[i]));
      norm_row(rr, w, xr, n, eps);
    }
  });
}

// The first `heads` heads of each row of qkv, rotated in place: x * cos + rotate_half(x) * sin.
template <typename T>
void rotary_impl(at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, int64_t heads,
                 int64_t dim) {
  const int64_t rows = qkv.size(0), stride = qkv.stride(0), half = dim / 2;
  T* base = qkv.data_ptr<T>();
  const T* cs = cos.data_ptr<T>();
  const T* sn = sin.data_ptr<T>();
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* c = cs + r * dim;
      const T* s = sn + r * dim;
      for (int64_t h = 0; h < heads; ++h) {
        T* x = base + r * stride + h * dim;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = static_cast<float>(x[i]), x2 = static_cast<float>(x[i + half]);
          // each product rounded before the sum, as torch's three ops round
          const float a = static_cast<float>(round_to<T>(x1 * static_cast<float>(c[i])));
          const float b = static_cast<float>(round_to<T>(-x2 * static_cast<float>(s[i])));
          const float d = static_cast<float>(round_to<T>(x2 * static_cast<float>(c[i + half])));
          const float e = static_cast<float>(round_to<T>(x1 * static_cast<float>(s[i + half])));
          x[i] = round_to<T>(a + b);
          x[i + half] = round_to<T>(d + e);
        }
      }
    }
  });
}

// out = silu(gate) * up, where each row of gate_up is [gate | up].
template <typename T>
void silu_mul_impl(const at::Tensor& gate_up, at::Tensor& out) {
  const int64_t rows = gate_up.size(0), n = out.size(1);
  const T* gu = gate_up.data_ptr<T>();
  T* os = out.data_ptr<T>();
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* g = gu + r * 2 * n;
      const T* u = g + n;
      T* o = os + r * n;
      for (int64_t i = 0; i < n; ++i) {
        const float v = static_cast<float>(g[i]);
        const float act = static_cast<float>(round_to<T>(v / (1.f + std::exp(-v))));
        o[i] = round_to<T>(act * static_cast<float>(u[i]));
      }
    }
  });
}

void check_rows(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous(), what, " takes contiguous [rows, size] tensors");
}

template <typename Fn>
void by_dtype(const at::Tensor& t, const char* what, Fn&& fn) {
  if (t.scalar_type() == at::kFloat)
    fn(float{});
  else if (t.scalar_type() == at::kBFloat16)
    fn(at::BFloat16{});
  else
    TORCH_CHECK(false, what, ": float32 or bfloat16 only");
}

}  // namespace

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rows(x, "rms_norm");
  TORCH_CHECK(weight.is_contiguous() && weight.numel() == x.size(1) &&
                  weight.scalar_type() == x.scalar_type(),
              "rms_norm: one weight per column, of the input's dtype");
  at::Tensor out = at::empty_like(x);
  by_dtype(x, "rms_norm", [&](auto t) {
    rms_norm_impl<decltype(t)>(x, weight, out, static_cast<float>(eps));
  });
  return out;
}

void add_rms_norm(at::Tensor x, at::Tensor residual, const at::Tensor& weight, double eps) {
  check_rows(x, "add_rms_norm");
  check_rows(residual, "add_rms_norm");
  TORCH_CHECK(x.sizes() == residual.sizes() && x.scalar_type() == residual.scalar_type() &&
                  weight.is_contiguous() && weight.numel() == x.size(1) &&
                  weight.scalar_type() == x.scalar_type(),
              "add_rms_norm: x and residual alike, one weight per column");
  by_dtype(x, "add_rms_norm", [&](auto t) {
    add_rms_norm_impl<decltype(t)>(x, residual, weight, static_cast<float>(eps));
  });
}

void rotary(at::Tensor qkv, const at::Tensor& cos, const at::Tensor& sin, int64_t heads,
            int64_t dim) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.stride(1) == 1 && qkv.size(1) >= heads * dim && dim % 2 == 0,
              "rotary: qkv [rows, >= heads * dim] with unit column stride, an even dim");
  check_rows(cos, "rotary");
  check_rows(sin, "rotary");
  TORCH_CHECK(cos.sizes() == sin.sizes() && cos.size(0) == qkv.size(0) && cos.size(1) == dim &&
                  cos.scalar_type() == qkv.scalar_type() && sin.scalar_type() == qkv.scalar_type(),
              "rotary: cos and sin [rows, dim] of qkv's dtype");
  by_dtype(qkv, "rotary", [&](auto t) { rotary_impl<decltype(t)>(qkv, cos, sin, heads, dim); });
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
  check_rows(gate_up, "silu_mul");
  TORCH_CHECK(gate_up.size(1) % 2 == 0, "silu_mul: rows of [gate | up]");
  at::Tensor out = at::empty({gate_up.size(0), gate_up.size(1) / 2}, gate_up.options());
  by_dtype(gate_up, "silu_mul", [&](auto t) { silu_mul_impl<decltype(t)>(gate_up, out); });
  return out;
}

void register_layer_ops(pybind11::module& m) {
  m.def("rms_norm", &rms_norm);
  m.def("add_rms_norm", &add_rms_norm);
  m.def("rotary", &rotary);
  m.def("silu_mul", &silu_mul);
}
