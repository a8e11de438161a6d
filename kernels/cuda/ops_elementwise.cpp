// The CUDA table of the elementwise family (mcd/engine/device_ops/elementwise.h): checks what
// the kernels assume (dtypes, contiguity, one device), builds the strided geometry on the host
// and launches the kernels of elementwise.cu, reduce.cu and softmax.cu with the tensors'
// device current, on that device's current stream (backend.h).
#include <initializer_list>
#include <vector>

#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/elementwise.h>
#include <mcd/engine/error.h>
#include <mcd/kernels/cpu/strided.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/elementwise.h>
#include <mcd/kernels/cuda/reduce.h>
#include <mcd/kernels/cuda/softmax.h>

namespace mcd::kernels::cuda {
namespace {

// Makes the tensors' device current for the launches and names its current stream.
struct LaunchScope {
  DeviceGuard guard;
  cudaStream_t stream;
  explicit LaunchScope(const Tensor& t)
      : guard(t.device().index), stream(current_stream(t.device().index).get()) {}
};

// Runs f(T{}) with T the C++ type of `dtype`: any dtype, or only float32 and float64.
template <class F>
void visit_any(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32:
      return f(float{});
    case DType::Float64:
      return f(double{});
    case DType::Int64:
      return f(std::int64_t{});
  }
}

template <class F>
void visit_floating(const char* op, DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32:
      return f(float{});
    case DType::Float64:
      return f(double{});
    default:
      fail("{} (CUDA): expected a float32 or float64 tensor, got {}", op, dtype_name(dtype));
  }
}

void check_on_device(const char* op, const Tensor& out, std::initializer_list<const Tensor*> ins) {
  MCD_CHECK(out.device().type == DeviceType::CUDA, "{} (CUDA): output on {}", op,
            out.device().str());
  for (const Tensor* t : ins)
    MCD_CHECK(!t->defined() || t->device() == out.device(),
              "{} (CUDA): an input on {} for an output on {}", op, t->device().str(),
              out.device().str());
}

void check_same_dtypes(const char* op, const Tensor& out,
                       std::initializer_list<const Tensor*> ins) {
  for (const Tensor* t : ins)
    MCD_CHECK(!t->defined() || t->dtype() == out.dtype(), "{} (CUDA): dtype {} for an output of {}",
              op, dtype_name(t->dtype()), dtype_name(out.dtype()));
}

void check_contiguous(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    MCD_CHECK(!t->defined() || t->is_contiguous(),
              "{} (CUDA): expected a contiguous tensor, got shape {} with strides {}", op,
              shape_str(t->shape()), shape_str(t->strides()));
}

// Geometry of out and inputs that all have out's shape (broadcasts already expanded).
StridedArgs geometry(const char* op, const Tensor& out, std::initializer_list<const Tensor*> ins) {
  std::vector<std::vector<std::int64_t>> strides{out.strides()};
  for (const Tensor* t : ins) {
    MCD_CHECK(t->shape() == out.shape(), "{} (CUDA): operand of shape {} for an output of shape {}",
              op, shape_str(t->shape()), shape_str(out.shape()));
    strides.push_back(t->strides());
  }
  return to_strided_args(cpu::make_geometry(out.shape(), strides), op);
}

SoftmaxRuleKernel rule_kernel(SoftmaxRule rule) {
  switch (rule) {
    case SoftmaxRule::SoftmaxVjpJvp:
      return SoftmaxRuleKernel::SoftmaxVjpJvp;
    case SoftmaxRule::LogSoftmaxVjp:
      return SoftmaxRuleKernel::LogSoftmaxVjp;
    case SoftmaxRule::LogSoftmaxJvp:
      return SoftmaxRuleKernel::LogSoftmaxJvp;
  }
  fail("softmax rule (CUDA): unknown rule {}", static_cast<int>(rule));
}

template <class T>
T* data_or_null(Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <class T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

class CudaElementwiseOps final : public ElementwiseDeviceOps {
 public:
  void copy(Tensor& out, const Tensor& src) override {
    check_on_device("copy_", out, {&src});
    const StridedArgs g = geometry("copy_", out, {&src});
    LaunchScope s(out);
    visit_any(out.dtype(), [&](auto to) {
      using To = decltype(to);
      visit_any(src.dtype(), [&](auto from) {
        using From = decltype(from);
        copy_cuda<To, From>(g, out.data<To>(), src.data<From>(), s.stream);
      });
    });
  }

  void fill(Tensor& out, double value) override {
    check_on_device("fill_", out, {});
    const StridedArgs g = geometry("fill_", out, {});
    LaunchScope s(out);
    visit_any(out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      fill_cuda<T>(g, out.data<T>(), static_cast<T>(value), s.stream);
    });
  }

  void unary(UnaryOp op, Tensor& out, const Tensor& x, double scalar) override {
    check_on_device("unary op", out, {&x});
    check_same_dtypes("unary op", out, {&x});
    const StridedArgs g = geometry("unary op", out, {&x});
    LaunchScope s(out);
    visit_floating("unary op", out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      unary_cuda<T>(op, g, out.data<T>(), x.data<T>(), scalar, s.stream);
    });
  }

  void binary(BinaryOp op, Tensor& out, const Tensor& a, const Tensor& b) override {
    check_on_device("binary op", out, {&a, &b});
    check_same_dtypes("binary op", out, {&a, &b});
    const StridedArgs g = geometry("binary op", out, {&a, &b});
    LaunchScope s(out);
    visit_floating("binary op", out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      binary_cuda<T>(op, g, out.data<T>(), a.data<T>(), b.data<T>(), s.stream);
    });
  }

  void relu_mask(Tensor& out, const Tensor& v, const Tensor& x) override {
    check_on_device("relu", out, {&v, &x});
    check_same_dtypes("relu", out, {&v, &x});
    const StridedArgs g = geometry("relu", out, {&v, &x});
    LaunchScope s(out);
    visit_floating("relu", out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      relu_mask_cuda<T>(g, out.data<T>(), v.data<T>(), x.data<T>(), s.stream);
    });
  }

  void sum(Tensor& out, const Tensor& in, std::int64_t outer, std::int64_t reduced,
           std::int64_t inner) override {
    check_on_device("sum", out, {&in});
    check_same_dtypes("sum", out, {&in});
    check_contiguous("sum", {&out, &in});
    MCD_CHECK(in.numel() == outer * reduced * inner && out.numel() == outer * inner,
              "sum (CUDA): shapes {} -> {} do not match ({}, {}, {})", shape_str(in.shape()),
              shape_str(out.shape()), outer, reduced, inner);
    LaunchScope s(out);
    visit_floating("sum", out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      sum_outer_inner_cuda<T>(outer, reduced, inner, in.data<T>(), out.data<T>(), s.stream);
    });
  }

  void argmax(Tensor& out, const Tensor& in, std::int64_t outer, std::int64_t reduced,
              std::int64_t inner) override {
    check_on_device("argmax", out, {&in});
    check_contiguous("argmax", {&out, &in});
    MCD_CHECK(out.dtype() == DType::Int64 && in.numel() == outer * reduced * inner &&
                  out.numel() == outer * inner,
              "argmax (CUDA): {} {} -> {} {} do not match ({}, {}, {})", dtype_name(in.dtype()),
              shape_str(in.shape()), dtype_name(out.dtype()), shape_str(out.shape()), outer,
              reduced, inner);
    LaunchScope s(out);
    visit_floating("argmax", in.dtype(), [&](auto tag) {
      using T = decltype(tag);
      argmax_outer_inner_cuda<T>(outer, reduced, inner, in.data<T>(), out.data<std::int64_t>(),
                                 s.stream);
    });
  }

  void softmax_forward(Tensor& y, const Tensor& x, std::int64_t outer, std::int64_t v,
                       std::int64_t inner, double inv_tau, bool log) override {
    check_on_device("softmax", y, {&x});
    check_same_dtypes("softmax", y, {&x});
    check_contiguous("softmax", {&y, &x});
    MCD_CHECK(x.numel() == outer * v * inner && y.numel() == x.numel(),
              "softmax (CUDA): shape {} does not match ({}, {}, {})", shape_str(x.shape()), outer,
              v, inner);
    LaunchScope s(y);
    visit_floating("softmax", y.dtype(), [&](auto tag) {
      using T = decltype(tag);
      softmax_forward_cuda<T>(outer, v, inner, x.data<T>(), inv_tau, log, y.data<T>(), s.stream);
    });
  }

  void softmax_rule(SoftmaxRule rule, Tensor& out, const Tensor& y, const Tensor& u,
                    std::int64_t outer, std::int64_t v, std::int64_t inner,
                    double inv_tau) override {
    check_on_device("softmax rule", out, {&y, &u});
    check_same_dtypes("softmax rule", out, {&y, &u});
    check_contiguous("softmax rule", {&out, &y, &u});
    MCD_CHECK(y.numel() == outer * v * inner && u.numel() == y.numel() && out.numel() == y.numel(),
              "softmax rule (CUDA): shape {} does not match ({}, {}, {})", shape_str(y.shape()),
              outer, v, inner);
    LaunchScope s(out);
    visit_floating("softmax rule", out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      softmax_rule_cuda<T>(rule_kernel(rule), outer, v, inner, y.data<T>(), u.data<T>(), inv_tau,
                           out.data<T>(), s.stream);
    });
  }

  void cross_entropy_forward(Tensor& loss, Tensor& lse, const Tensor& logits,
                             const Tensor& labels) override {
    const auto [b, v] = check_loss("cross_entropy", logits, {&loss, &lse, &labels}, {&logits});
    LaunchScope s(logits);
    visit_floating("cross_entropy", logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cross_entropy_forward_cuda<T>(b, v, logits.data<T>(), labels.data<std::int64_t>(),
                                    loss.data<T>(), lse.data<double>(), s.stream);
    });
  }

  void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& labels,
                              const Tensor& lse, const Tensor& g) override {
    const auto [b, v] =
        check_loss("cross_entropy backward", logits, {&dlogits, &labels, &lse, &g}, {&dlogits, &g});
    LaunchScope s(logits);
    visit_floating("cross_entropy backward", logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cross_entropy_backward_cuda<T>(b, v, logits.data<T>(), labels.data<std::int64_t>(),
                                     lse.data<double>(), g.data<T>(), dlogits.data<T>(), s.stream);
    });
  }

  void cross_entropy_jvp(Tensor& loss_t, const Tensor& logits, const Tensor& labels,
                         const Tensor& lse, const Tensor& logits_t) override {
    const auto [b, v] = check_loss("cross_entropy jvp", logits, {&loss_t, &labels, &lse, &logits_t},
                                   {&loss_t, &logits_t});
    LaunchScope s(logits);
    visit_floating("cross_entropy jvp", logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cross_entropy_jvp_cuda<T>(b, v, logits.data<T>(), labels.data<std::int64_t>(),
                                lse.data<double>(), logits_t.data<T>(), loss_t.data<T>(), s.stream);
    });
  }

  void kl_div_softmax_forward(Tensor& kl, Tensor& lse_s, Tensor& lse_t, const Tensor& st,
                              const Tensor& tt, double inv_tau) override {
    const auto [b, v] = check_loss("kl_div_softmax", st, {&kl, &lse_s, &lse_t, &tt}, {&kl, &tt});
    LaunchScope s(st);
    visit_floating("kl_div_softmax", st.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kl_div_softmax_forward_cuda<T>(b, v, st.data<T>(), tt.data<T>(), inv_tau, kl.data<T>(),
                                     lse_s.data<double>(), lse_t.data<double>(), s.stream);
    });
  }

  void kl_div_softmax_backward(Tensor& ds, Tensor& dt, const Tensor& st, const Tensor& tt,
                               const Tensor& lse_s, const Tensor& lse_t, const Tensor& g,
                               double inv_tau) override {
    const auto [b, v] = check_loss("kl_div_softmax backward", st,
                                   {&ds, &dt, &tt, &lse_s, &lse_t, &g}, {&ds, &dt, &tt, &g});
    LaunchScope s(st);
    visit_floating("kl_div_softmax backward", st.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kl_div_softmax_backward_cuda<T>(b, v, st.data<T>(), tt.data<T>(), inv_tau,
                                      lse_s.data<double>(), lse_t.data<double>(), g.data<T>(),
                                      data_or_null<T>(ds), data_or_null<T>(dt), s.stream);
    });
  }

  void kl_div_softmax_jvp(Tensor& kl_t, const Tensor& st, const Tensor& tt, const Tensor& lse_s,
                          const Tensor& lse_t, const Tensor& s_t, const Tensor& t_t,
                          double inv_tau) override {
    const auto [b, v] =
        check_loss("kl_div_softmax jvp", st, {&kl_t, &tt, &lse_s, &lse_t, &s_t, &t_t},
                   {&kl_t, &tt, &s_t, &t_t});
    LaunchScope s(st);
    visit_floating("kl_div_softmax jvp", st.dtype(), [&](auto tag) {
      using T = decltype(tag);
      kl_div_softmax_jvp_cuda<T>(b, v, st.data<T>(), tt.data<T>(), inv_tau, lse_s.data<double>(),
                                 lse_t.data<double>(), data_or_null<T>(s_t), data_or_null<T>(t_t),
                                 kl_t.data<T>(), s.stream);
    });
  }

 private:
  struct RowsOf {
    std::int64_t b, v;
  };

  // Checks the (B, V) logits and the other tensors of a loss kernel: one device, all
  // contiguous, `same_dtype` ones with the logits' dtype. Returns (B, V).
  static RowsOf check_loss(const char* op, const Tensor& logits,
                           std::initializer_list<const Tensor*> others,
                           std::initializer_list<const Tensor*> same_dtype) {
    MCD_CHECK(logits.dim() == 2, "{} (CUDA): logits must be (B, V), got {}", op,
              shape_str(logits.shape()));
    check_on_device(op, logits, others);
    check_contiguous(op, {&logits});
    check_contiguous(op, others);
    check_same_dtypes(op, logits, same_dtype);
    return {logits.size(0), logits.size(1)};
  }
};

}  // namespace

void register_cuda_elementwise_ops() {
  static CudaElementwiseOps ops;
  register_device_ops<ElementwiseDeviceOps>(DeviceType::CUDA, &ops);
}

}  // namespace mcd::kernels::cuda
