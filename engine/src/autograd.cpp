// The reverse-mode engine (topological walk over Nodes) and forward-mode plumbing.
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/elementwise.h>

namespace mcd {
namespace {
thread_local bool g_grad_mode = true;
thread_local bool g_forward_ad = true;

Tensor accumulate(const Tensor& acc, const Tensor& g) {
  if (!acc.defined()) return g;
  return add(acc, g);
}

// Nodes reachable from `roots`, ordered so every node comes before the nodes it feeds into
// backwards (i.e. consumers before producers).
std::vector<Node*> reverse_topological(const std::vector<Node*>& roots) {
  std::vector<Node*> post;
  std::unordered_set<Node*> visited;
  // Iterative DFS: deep ResNets would overflow a recursive walk under sanitizers.
  std::vector<std::pair<Node*, std::size_t>> stack;
  for (Node* r : roots) {
    if (!r || visited.count(r)) continue;
    visited.insert(r);
    stack.emplace_back(r, 0);
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next < node->inputs.size()) {
        Node* child = node->inputs[next++].fn.get();
        if (child && !visited.count(child)) {
          visited.insert(child);
          stack.emplace_back(child, 0);
        }
      } else {
        post.push_back(node);
        stack.pop_back();
      }
    }
  }
  std::reverse(post.begin(), post.end());
  return post;
}

struct BackwardResult {
  std::unordered_map<Node*, Tensor> node_grads;
  std::unordered_map<TensorImpl*, Tensor> leaf_grads;
};

BackwardResult run_backward(const std::vector<Tensor>& outputs,
                            const std::vector<Tensor>& grad_outputs) {
  MCD_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(),
            "backward: {} grad_outputs for {} outputs", grad_outputs.size(), outputs.size());
  BackwardResult r;
  std::vector<Node*> roots;
  RuleGuard guard;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    MCD_CHECK(out.requires_grad(),
              "backward: output {} (shape {}) does not require grad and has no grad_fn", i,
              shape_str(out.shape()));
    Tensor g;
    if (grad_outputs.empty() || !grad_outputs[i].defined()) {
      MCD_CHECK(out.numel() == 1,
                "backward: a gradient must be given for non-scalar output {} of shape {}", i,
                shape_str(out.shape()));
      g = Tensor::ones(out.shape(), out.dtype(), out.device());
    } else {
      g = grad_outputs[i];
      MCD_CHECK(g.shape() == out.shape(), "backward: grad_output of shape {} for output {}",
                shape_str(g.shape()), shape_str(out.shape()));
      // The rules hand both to one device's kernels, which cannot read another device's memory.
      MCD_CHECK(g.device() == out.device(), "backward: grad_output on {} for output {} on {}",
                g.device().str(), i, out.device().str());
    }
    if (out.is_leaf()) {
      auto& acc = r.leaf_grads[out.impl_ptr().get()];
      acc = accumulate(acc, g);
    } else {
      auto& acc = r.node_grads[out.grad_fn().get()];
      acc = accumulate(acc, g);
      roots.push_back(out.grad_fn().get());
    }
  }
  for (Node* node : reverse_topological(roots)) {
    auto it = r.node_grads.find(node);
    if (it == r.node_grads.end()) continue;
    std::vector<Tensor> in_grads = node->vjp(it->second);
    MCD_CHECK(in_grads.size() == node->inputs.size(),
              "backward: {} returned {} gradients for {} inputs", node->name, in_grads.size(),
              node->inputs.size());
    for (std::size_t k = 0; k < in_grads.size(); ++k) {
      const auto& edge = node->inputs[k];
      if (!in_grads[k].defined()) continue;
      if (edge.fn) {
        auto& acc = r.node_grads[edge.fn.get()];
        acc = accumulate(acc, in_grads[k]);
      } else if (edge.leaf) {
        auto& acc = r.leaf_grads[edge.leaf.get()];
        acc = accumulate(acc, in_grads[k]);
      }
    }
  }
  return r;
}
}  // namespace

bool grad_mode_enabled() {
  return g_grad_mode;
}
bool forward_ad_enabled() {
  return g_forward_ad;
}

NoGradGuard::NoGradGuard() : previous_(g_grad_mode) {
  g_grad_mode = false;
}
NoGradGuard::~NoGradGuard() {
  g_grad_mode = previous_;
}

RuleGuard::RuleGuard() : previous_grad_(g_grad_mode), previous_fw_(g_forward_ad) {
  g_grad_mode = false;
  g_forward_ad = false;
}
RuleGuard::~RuleGuard() {
  g_grad_mode = previous_grad_;
  g_forward_ad = previous_fw_;
}

void backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs) {
  BackwardResult r = run_backward(outputs, grad_outputs);
  RuleGuard guard;
  for (auto& [leaf, g] : r.leaf_grads) {
    if (!leaf->requires_grad) continue;
    Tensor g_c = g.contiguous();
    if (leaf->grad) {
      Tensor(leaf->grad).add_(g_c);
    } else {
      // Own the buffer: a cotangent may alias the caller's grad_output or another leaf's.
      leaf->grad = g_c.clone().impl_ptr();
    }
  }
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs) {
  BackwardResult r = run_backward(outputs, grad_outputs);
  std::vector<Tensor> result;
  result.reserve(inputs.size());
  for (const Tensor& in : inputs) {
    Tensor g;
    if (in.is_leaf()) {
      auto it = r.leaf_grads.find(in.impl_ptr().get());
      if (it != r.leaf_grads.end()) g = it->second;
    } else {
      auto it = r.node_grads.find(in.grad_fn().get());
      if (it != r.node_grads.end()) g = it->second;
    }
    result.push_back(g.defined() ? g : Tensor::zeros(in.shape(), in.dtype(), in.device()));
  }
  return result;
}

JvpResult jvp(const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& f,
              const std::vector<Tensor>& primals, const std::vector<Tensor>& tangents) {
  MCD_CHECK(primals.size() == tangents.size(), "jvp: {} primals but {} tangents", primals.size(),
            tangents.size());
  std::vector<Tensor> duals;
  duals.reserve(primals.size());
  for (std::size_t i = 0; i < primals.size(); ++i) {
    Tensor d = primals[i].detach();
    if (tangents[i].defined()) d.set_tangent(tangents[i]);
    duals.push_back(d);
  }
  JvpResult r;
  r.outputs = f(duals);
  for (Tensor& out : r.outputs) {
    Tensor t = out.tangent();
    r.tangents.push_back(t.defined() ? t : Tensor::zeros(out.shape(), out.dtype(), out.device()));
    out = out.detach();  // outputs come back as plain values
  }
  return r;
}

DualScope::DualScope(const std::vector<Tensor>& primals, const std::vector<Tensor>& tangents)
    : primals_(primals) {
  MCD_CHECK(primals.size() == tangents.size(), "DualScope: {} primals but {} tangents",
            primals.size(), tangents.size());
  for (std::size_t i = 0; i < primals.size(); ++i)
    primals_[i].set_tangent(tangents[i]);
}

DualScope::~DualScope() {
  for (Tensor& p : primals_)
    p.set_tangent(Tensor());
}

void record(Tensor& out, const char* name, const std::vector<Tensor>& inputs,
            std::function<std::vector<Tensor>(const Tensor&)> vjp) {
  if (!g_grad_mode) return;
  bool any = false;
  for (const Tensor& in : inputs)
    any = any || (in.defined() && in.requires_grad());
  if (!any) return;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs.reserve(inputs.size());
  for (const Tensor& in : inputs) {
    Node::Edge e;
    if (in.defined() && in.requires_grad()) {
      if (in.is_leaf())
        e.leaf = in.impl_ptr();
      else
        e.fn = in.grad_fn();
    }
    node->inputs.push_back(std::move(e));
  }
  node->vjp = std::move(vjp);
  out.impl().grad_fn = std::move(node);
  out.impl().requires_grad = true;
}

bool any_tangent(const std::vector<Tensor>& inputs) {
  if (!g_forward_ad) return false;
  for (const Tensor& in : inputs)
    if (in.defined() && in.impl().tangent) return true;
  return false;
}

Tensor tangent_or_zeros(const Tensor& t) {
  if (t.impl().tangent) return Tensor(t.impl().tangent);
  return Tensor::zeros(t.shape(), t.dtype(), t.device());
}

void propagate_tangent(Tensor& out, const std::vector<Tensor>& inputs,
                       const std::function<Tensor()>& rule) {
  if (!any_tangent(inputs)) return;
  Tensor t;
  {
    RuleGuard guard;
    t = rule();
  }
  out.set_tangent(t.contiguous());
}

}  // namespace mcd
