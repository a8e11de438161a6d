// Synthetic label noise for robustness experiments: symmetric noise and the instance-dependent
// noise of Xia et al. (NeurIPS 2020). Invariant: the result is a pure function of the inputs
// and the seed (per-sample and per-class generators, so also of no thread count), and it keeps
// the clean labels next to the noisy ones.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <mcd/data/dataset.h>
#include <mcd/data/transforms.h>

namespace mcd::data {

struct NoisyLabels {
  std::string kind;  // "symmetric" or "instance"
  std::int64_t num_classes = 0;
  double rate = 0.0;           // the requested noise rate
  double realised_rate = 0.0;  // fraction of samples whose label changed
  std::uint64_t seed = 0;
  std::vector<std::int64_t> labels;        // (N) noisy
  std::vector<std::int64_t> clean_labels;  // (N)
};

// Each label is replaced, with probability `rate` in [0, 1], by a class drawn uniformly from
// the num_classes - 1 OTHER classes. Labels must be in [0, num_classes), num_classes >= 2.
NoisyLabels apply_symmetric_noise(const std::vector<std::int64_t>& labels, std::int64_t num_classes,
                                  double rate, std::uint64_t seed);

// Instance-dependent noise (Xia et al., 2020, "Part-dependent label noise", their generator
// get_instance_noisy_label): per class c a projection W_c ~ N(0, 1) of shape (D, K), D = C*H*W;
// per sample a flip rate q_i ~ N(rate, rate_std^2) truncated to [0, 1]; p = x_i^T W_{y_i} with
// x_i the normalised image ((pixel / 255 - mean) / std, flattened), p[y_i] = -inf, softmax,
// scaled by q_i, p[y_i] = 1 - q_i; the noisy label is drawn from p. Covers every sample of
// `data`, whose labels are the clean ones.
NoisyLabels apply_instance_noise(const Dataset& data, const Normalization& norm, double rate,
                                 std::uint64_t seed, double rate_std = 0.1);

// Run-directory record: a safetensors file with int64 tensors "labels" and "clean_labels" and
// the other fields in its metadata. load_noisy_labels validates lengths and label ranges and
// throws naming the path and the field at fault.
void save_noisy_labels(const std::string& path, const NoisyLabels& noisy);
NoisyLabels load_noisy_labels(const std::string& path);

}  // namespace mcd::data
