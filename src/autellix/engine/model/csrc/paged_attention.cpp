// Decode attention that reads each sequence's K/V blocks where they lie in the paged
// cache: no gather into a padded copy, no padding, one pass over K and one over V.
// Work is split over (sequence, KV head); the query heads that share a KV head (GQA)
// are scored together, so each K and V row is read once for all of them. Head size and
// group size are template parameters so that the accumulators stay in registers.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int kLanes = 16;  // one AVX-512 register of floats

struct Shape {
  int64_t heads, kv_heads, num_blocks, block_size, max_blocks;
};

// The next block lies anywhere in the pool: ask for it while this one is computed (the
// hardware prefetcher stops at a block's end).
inline void prefetch(const void* rows, int64_t bytes) {
  const char* p = static_cast<const char*>(rows);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
}

// Calls fn(position, row) for the first len rows of a sequence, block by block.
template <typename T, int D, typename Fn>
inline void for_each_row(const T* head, const int64_t* table, int64_t len, int64_t bs, Fn&& fn) {
  const int64_t bytes = bs * D * static_cast<int64_t>(sizeof(T));
  for (int64_t start = 0; start < len; start += bs) {
    const T* rows = head + table[start / bs] * bs * D;
    if (start + bs < len) prefetch(head + table[start / bs + 1] * bs * D, bytes);
    const int64_t count = std::min(bs, len - start);
    for (int64_t t = 0; t < count; ++t) fn(start + t, rows + t * D);
  }
}

template <typename T, int D, int G>
void attend(const T* q, const T* k_head, const T* v_head, const int64_t* table, int64_t len,
            const Shape& shape, float scale, std::vector<float>& scores, T* out) {
  const int64_t bs = shape.block_size;
  float query[G][D];
  for (int g = 0; g < G; ++g)
    for (int d = 0; d < D; ++d) query[g][d] = static_cast<float>(q[g * D + d]) * scale;
  scores.resize(G * len);
  float top[G];
  std::fill(top, top + G, std::numeric_limits<float>::lowest());
  for_each_row<T, D>(k_head, table, len, bs, [&](int64_t pos, const T* key) {
    float lanes[G][kLanes] = {};
    for (int d0 = 0; d0 < D; d0 += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        const float x = static_cast<float>(key[d0 + l]);
        for (int g = 0; g < G; ++g) lanes[g][l] += query[g][d0 + l] * x;
      }
    for (int g = 0; g < G; ++g) {
      float s = 0;
      for (int l = 0; l < kLanes; ++l) s += lanes[g][l];
      scores[g * len + pos] = s;
      top[g] = std::max(top[g], s);
    }
  });
  float inv[G];
  for (int g = 0; g < G; ++g) {
    float* row = scores.data() + g * len;
    float sum = 0;
    for (int64_t t = 0; t < len; ++t) sum += (row[t] = std::exp(row[t] - top[g]));
    inv[g] = 1.0f / sum;
  }
  float acc[G][D] = {};
  for_each_row<T, D>(v_head, table, len, bs, [&](int64_t pos, const T* value) {
    for (int g = 0; g < G; ++g) {
      const float p = scores[g * len + pos];
      for (int d = 0; d < D; ++d) acc[g][d] += p * static_cast<float>(value[d]);
    }
  });
  for (int g = 0; g < G; ++g)
    for (int d = 0; d < D; ++d) out[g * D + d] = static_cast<T>(acc[g][d] * inv[g]);
}

template <typename T, int D, int G>
void decode(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
            const at::Tensor& block_tables, const at::Tensor& kv_lens, at::Tensor& out,
            double scale) {
  const Shape shape{q.size(1), k_cache.size(0), k_cache.size(1), k_cache.size(2),
                    block_tables.size(1)};
  const T* qp = q.data_ptr<T>();
  const T* kp = k_cache.data_ptr<T>();
  const T* vp = v_cache.data_ptr<T>();
  const int64_t* tables = block_tables.data_ptr<int64_t>();
  const int64_t* lens = kv_lens.data_ptr<int64_t>();
  T* op = out.data_ptr<T>();
  const int64_t head_rows = shape.num_blocks * shape.block_size * D;
  at::parallel_for(0, q.size(0) * shape.kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t s = item / shape.kv_heads, h = item % shape.kv_heads;
      const int64_t first = (s * shape.heads + h * G) * D;
      attend<T, D, G>(qp + first, kp + h * head_rows, vp + h * head_rows,
                      tables + s * shape.max_blocks, lens[s], shape, static_cast<float>(scale),
                      scores, op + first);
    }
  });
}

// (head size, query heads per KV head) instantiated; Python reads them as `shapes`.
#define AUTELLIX_SHAPES(X) \
  X(64, 1) X(64, 2) X(64, 3) X(64, 4) X(64, 8) X(128, 1) X(128, 2) X(128, 4) X(128, 8)

template <typename T>
void dispatch(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
              const at::Tensor& block_tables, const at::Tensor& kv_lens, at::Tensor& out,
              double scale) {
  const int64_t dim = q.size(2), group = q.size(1) / k_cache.size(0);
#define AUTELLIX_CASE(D, G)                                                     \
  if (dim == D && group == G)                                                   \
    return decode<T, D, G>(q, k_cache, v_cache, block_tables, kv_lens, out, scale);
  AUTELLIX_SHAPES(AUTELLIX_CASE)
#undef AUTELLIX_CASE
  TORCH_CHECK(false, "decode_attention: no kernel for head size ", dim, " and ", group,
              " query heads per KV head");
}

}  // namespace

// q [n, heads, dim]; k_cache, v_cache one layer's [kv_heads, blocks, block_size, dim];
// block_tables [n, max_blocks] int64; kv_lens [n] int64 (each >= 1); out [n, heads, dim].
void decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                      const at::Tensor& block_tables, const at::Tensor& kv_lens, at::Tensor out,
                      double scale) {
  TORCH_CHECK(q.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  block_tables.is_contiguous() && kv_lens.is_contiguous() && out.is_contiguous(),
              "decode_attention takes contiguous tensors");
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && q.size(2) == k_cache.size(3) &&
                  q.size(1) % k_cache.size(0) == 0,
              "decode_attention: q [n, heads, dim] against a cache [kv_heads, blocks, size, dim]");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && kv_lens.scalar_type() == at::kLong,
              "decode_attention: block tables and lengths are int64");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type() && q.scalar_type() == out.scalar_type(),
              "decode_attention: one dtype for q, cache and out");
  if (q.scalar_type() == at::kFloat)
    dispatch<float>(q, k_cache, v_cache, block_tables, kv_lens, out, scale);
  else if (q.scalar_type() == at::kBFloat16)
    dispatch<at::BFloat16>(q, k_cache, v_cache, block_tables, kv_lens, out, scale);
  else
    TORCH_CHECK(false, "decode_attention: float32 or bfloat16 only");
}

// Stores the new tokens' K and V [n, kv_heads, dim] (rows may be strided: views of the qkv
// product) at their slots (block * block_size + offset) of one layer of the cache
// [2, layers, kv_heads, blocks, block_size, dim]. In torch this is ~10 ops a layer (views,
// two index_copy_ of transposed sources), more time than the copy at a few tokens a step.
void write_kv(at::Tensor kv_cache, int64_t layer, const at::Tensor& k, const at::Tensor& v,
              const at::Tensor& slots) {
  TORCH_CHECK(kv_cache.dim() == 6 && kv_cache.is_contiguous() && layer >= 0 &&
                  layer < kv_cache.size(1),
              "write_kv: a contiguous cache [2, layers, kv_heads, blocks, size, dim] and a layer");
  TORCH_CHECK(k.dim() == 3 && k.sizes() == v.sizes() && k.size(1) == kv_cache.size(2) &&
                  k.size(2) == kv_cache.size(5) && k.stride(2) == 1 && v.stride(2) == 1,
              "write_kv: k and v [n, kv_heads, dim] with unit stride along dim");
  TORCH_CHECK(k.scalar_type() == kv_cache.scalar_type() &&
                  v.scalar_type() == kv_cache.scalar_type(),
              "write_kv: k, v and the cache of one dtype");
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.is_contiguous() &&
                  slots.numel() == k.size(0),
              "write_kv: one int64 slot per token");
  const int64_t heads = kv_cache.size(2), rows = kv_cache.size(3) * kv_cache.size(4);
  const int64_t dim = kv_cache.size(5), elem = kv_cache.element_size();
  const int64_t* slot = slots.data_ptr<int64_t>();
  char* base = static_cast<char*>(kv_cache.data_ptr());
  const at::Tensor* sources[2] = {&k, &v};
  for (int64_t t = 0; t < k.size(0); ++t) {
    TORCH_CHECK(slot[t] >= 0 && slot[t] < rows, "write_kv: slot ", slot[t], " out of range");
    for (int kv = 0; kv < 2; ++kv) {
      const at::Tensor& src = *sources[kv];
      const char* row = static_cast<const char*>(src.data_ptr()) + t * src.stride(0) * elem;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t at = ((kv * kv_cache.size(1) + layer) * heads + h) * rows + slot[t];
        char* dst = base + at * dim * elem;
        std::memcpy(dst, row + h * src.stride(1) * elem, dim * elem);
      }
    }
  }
}

void register_layer_ops(pybind11::module& m);  // layer_ops.cpp
void register_few_rows(pybind11::module& m);   // few_rows.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention);
  m.def("write_kv", &write_kv);
  register_layer_ops(m);
  register_few_rows(m);
  pybind11::list shapes;
#define AUTELLIX_SHAPE(D, G) shapes.append(pybind11::make_tuple(D, G));
  AUTELLIX_SHAPES(AUTELLIX_SHAPE)
#undef AUTELLIX_SHAPE
  m.attr("shapes") = shapes;
}
