// Reverse mode (a dynamic tape of Nodes, one per op output) and forward mode (tangents
// carried on values). Every op records a Node whose `vjp` maps the output cotangent to one
// cotangent per input, and computes its output tangent from its inputs' tangents. Both rules
// run with recording and tangent propagation switched off: gradients are not themselves
// differentiable (the meta-gradient needs only one forward-mode pass, see DESIGN.md §3).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <mcd/engine/tensor.h>

namespace mcd {

struct Node {
  std::string name;
  // One entry per differentiable input: that input's grad_fn (non-leaf) or its impl (leaf
  // that requires grad). Entries for inputs that need no gradient are empty.
  struct Edge {
    std::shared_ptr<Node> fn;
    std::shared_ptr<TensorImpl> leaf;
  };
  std::vector<Edge> inputs;
  // Returns one cotangent per input, shaped like that input (undefined = no contribution).
  std::function<std::vector<Tensor>(const Tensor& grad_output)> vjp;
};

// True while ops should record Nodes (default on; off under NoGradGuard and inside rules).
bool grad_mode_enabled();
// True while ops should propagate tangents (off inside rules).
bool forward_ad_enabled();

class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Switches off recording and tangent propagation: used while evaluating rules.
class RuleGuard {
 public:
  RuleGuard();
  ~RuleGuard();
  RuleGuard(const RuleGuard&) = delete;
  RuleGuard& operator=(const RuleGuard&) = delete;

 private:
  bool previous_grad_, previous_fw_;
};

// Gradients of sum_i <grad_outputs[i], outputs[i]> with respect to `inputs`, without touching
// any .grad. A missing grad_output means ones (outputs must then be scalars). Inputs that
// the outputs do not depend on get zeros.
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs = {});

// Runs reverse mode from `outputs` and accumulates into the .grad of every leaf reached.
void backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs = {});

// Forward mode: evaluates f(primals) with `tangents` attached and returns f's outputs and
// their tangents (zeros where an output does not depend on the primals).
struct JvpResult {
  std::vector<Tensor> outputs;
  std::vector<Tensor> tangents;
};
JvpResult jvp(const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& f,
              const std::vector<Tensor>& primals, const std::vector<Tensor>& tangents);

// Attaches tangents to existing tensors (e.g. a model's parameters) for the lifetime of the
// scope; used when the function cannot take its primals as arguments.
class DualScope {
 public:
  DualScope(const std::vector<Tensor>& primals, const std::vector<Tensor>& tangents);
  ~DualScope();
  DualScope(const DualScope&) = delete;
  DualScope& operator=(const DualScope&) = delete;

 private:
  std::vector<Tensor> primals_;
};

// ---- helpers for op implementations

// Inputs that matter for autograd. Records a Node on `out` when grad mode is on and any
// input requires grad.
void record(Tensor& out, const char* name, const std::vector<Tensor>& inputs,
            std::function<std::vector<Tensor>(const Tensor&)> vjp);
// True if any input carries a tangent and forward mode is on.
bool any_tangent(const std::vector<Tensor>& inputs);
// True if t is defined and carries a tangent.
inline bool has_tangent(const Tensor& t) {
  return t.defined() && t.impl().tangent != nullptr;
}
// Tangent of t, or zeros shaped like t when it carries none.
Tensor tangent_or_zeros(const Tensor& t);
// Sets out's tangent to rule() (evaluated under RuleGuard) when any input carries one.
void propagate_tangent(Tensor& out, const std::vector<Tensor>& inputs,
                       const std::function<Tensor()>& rule);

}  // namespace mcd
