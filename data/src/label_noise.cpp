// Label noise. Every random draw comes from a generator seeded by (seed, stream, sample or
// class), so OpenMP scheduling cannot change the result. The instance-dependent projections
// are generated one class at a time, keeping memory at D * K floats instead of K * D * K.
#include <mcd/data/label_noise.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include <mcd/engine/error.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/safetensors.h>

#include "seeding.h"

namespace mcd::data {
namespace {

// Streams of this file, disjoint from the loader's shuffle and augmentation streams.
constexpr std::uint64_t kSymmetricStream = 0x53594d4eULL;
constexpr std::uint64_t kFlipRateStream = 0x464c4950ULL;
constexpr std::uint64_t kProjectionStream = 0x50524f4aULL;

Generator stream_generator(std::uint64_t seed, std::uint64_t stream, std::int64_t index) {
  std::uint64_t h = detail::mix64(seed ^ stream);
  return Generator(detail::mix64(h ^ static_cast<std::uint64_t>(index)));
}

void check_labels(const std::vector<std::int64_t>& labels, std::int64_t num_classes,
                  const char* op) {
  MCD_CHECK(num_classes >= 2, "{}: num_classes = {}, expected >= 2", op, num_classes);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    MCD_CHECK(labels[i] >= 0 && labels[i] < num_classes,
              "{}: label {} at sample {} outside [0, {})", op, labels[i], i, num_classes);
  }
}

void check_rate(double rate, const char* op) {
  MCD_CHECK(std::isfinite(rate) && rate >= 0.0 && rate <= 1.0, "{}: rate = {}, expected in [0, 1]",
            op, rate);
}

double fraction_changed(const NoisyLabels& n) {
  if (n.labels.empty()) return 0.0;
  std::int64_t changed = 0;
  for (std::size_t i = 0; i < n.labels.size(); ++i)
    changed += n.labels[i] != n.clean_labels[i];
  return static_cast<double>(changed) / static_cast<double>(n.labels.size());
}

}  // namespace

NoisyLabels apply_symmetric_noise(const std::vector<std::int64_t>& labels, std::int64_t num_classes,
                                  double rate, std::uint64_t seed) {
  check_labels(labels, num_classes, "apply_symmetric_noise");
  check_rate(rate, "apply_symmetric_noise");
  NoisyLabels out;
  out.kind = "symmetric";
  out.num_classes = num_classes;
  out.rate = rate;
  out.seed = seed;
  out.clean_labels = labels;
  out.labels = labels;
  const auto n = static_cast<std::int64_t>(labels.size());
  const auto others = static_cast<std::uint64_t>(num_classes - 1);
  for (std::int64_t i = 0; i < n; ++i) {
    Generator gen = stream_generator(seed, kSymmetricStream, i);
    if (gen.uniform() < rate) {
      auto& y = out.labels[static_cast<std::size_t>(i)];
      // y + 1 + [0, K - 2] modulo K covers exactly the other classes, uniformly.
      y = (y + 1 + static_cast<std::int64_t>(gen.below(others))) % num_classes;
    }
  }
  out.realised_rate = fraction_changed(out);
  return out;
}

NoisyLabels apply_instance_noise(const Dataset& data, const Normalization& norm, double rate,
                                 std::uint64_t seed, double rate_std) {
  const char* op = "apply_instance_noise";
  check_dataset(data, op);
  check_labels(data.labels, data.num_classes, op);
  check_rate(rate, op);
  check_normalization(norm, data.channels, op);
  MCD_CHECK(std::isfinite(rate_std) && rate_std >= 0.0, "{}: rate_std = {}, expected >= 0", op,
            rate_std);
  const std::int64_t n = data.size();
  const std::int64_t k_classes = data.num_classes;
  const std::int64_t dim = data.image_numel();
  const std::int64_t plane = data.height * data.width;
  std::vector<float> scale, bias;  // (C): normalised value = pixel * scale + bias
  for (std::int64_t c = 0; c < data.channels; ++c) {
    const double mean = norm.mean.empty() ? 0.0 : norm.mean[static_cast<std::size_t>(c)];
    const double sd = norm.std.empty() ? 1.0 : norm.std[static_cast<std::size_t>(c)];
    scale.push_back(static_cast<float>(1.0 / (255.0 * sd)));
    bias.push_back(static_cast<float>(-mean / sd));
  }

  NoisyLabels out;
  out.kind = "instance";
  out.num_classes = k_classes;
  out.rate = rate;
  out.seed = seed;
  out.clean_labels = data.labels;
  out.labels = data.labels;

  std::vector<std::vector<std::int64_t>> by_class(static_cast<std::size_t>(k_classes));
  for (std::int64_t i = 0; i < n; ++i)
    by_class[static_cast<std::size_t>(data.labels[static_cast<std::size_t>(i)])].push_back(i);

  std::vector<float> w(static_cast<std::size_t>(dim * k_classes));  // W_c, (D, K)
  for (std::int64_t c = 0; c < k_classes; ++c) {
    const std::vector<std::int64_t>& members = by_class[static_cast<std::size_t>(c)];
    if (members.empty()) continue;
    Generator wgen = stream_generator(seed, kProjectionStream, c);
    for (float& v : w)
      v = static_cast<float>(wgen.normal());
    const auto count = static_cast<std::int64_t>(members.size());
#pragma omp parallel
    {
      std::vector<float> x(static_cast<std::size_t>(dim));
      std::vector<double> p(static_cast<std::size_t>(k_classes));
#pragma omp for schedule(dynamic, 16)
      for (std::int64_t m = 0; m < count; ++m) {
        const std::int64_t i = members[static_cast<std::size_t>(m)];
        const std::uint8_t* img = data.image(i);
        for (std::int64_t d = 0; d < dim; ++d) {
          const auto ch = static_cast<std::size_t>(d / plane);
          x[static_cast<std::size_t>(d)] = static_cast<float>(img[d]) * scale[ch] + bias[ch];
        }
        // p = x^T W_c, accumulated in double over D in a fixed order.
        std::fill(p.begin(), p.end(), 0.0);
        for (std::int64_t d = 0; d < dim; ++d) {
          const double xd = x[static_cast<std::size_t>(d)];
          const float* row = w.data() + d * k_classes;
          for (std::int64_t k = 0; k < k_classes; ++k)
            p[static_cast<std::size_t>(k)] += xd * static_cast<double>(row[k]);
        }
        Generator gen = stream_generator(seed, kFlipRateStream, i);
        double q = rate;
        if (rate_std > 0) {  // truncated normal on [0, 1] by rejection (acceptance >= ~1/2)
          do {
            q = rate + rate_std * gen.normal();
          } while (q < 0.0 || q > 1.0);
        }
        // Softmax over the other classes (p[c] = -inf), scaled to q; p[c] = 1 - q.
        double top = -std::numeric_limits<double>::infinity();
        for (std::int64_t k = 0; k < k_classes; ++k)
          if (k != c) top = std::max(top, p[static_cast<std::size_t>(k)]);
        double total = 0.0;
        for (std::int64_t k = 0; k < k_classes; ++k) {
          double& v = p[static_cast<std::size_t>(k)];
          v = k == c ? 0.0 : std::exp(v - top);
          total += v;
        }
        for (std::int64_t k = 0; k < k_classes; ++k)
          p[static_cast<std::size_t>(k)] *= q / total;
        p[static_cast<std::size_t>(c)] = 1.0 - q;
        const double u = gen.uniform();
        double cumulative = 0.0;
        std::int64_t chosen = c;  // rounding can leave u just above the last cumulative sum
        for (std::int64_t k = 0; k < k_classes; ++k) {
          cumulative += p[static_cast<std::size_t>(k)];
          if (u < cumulative) {
            chosen = k;
            break;
          }
        }
        out.labels[static_cast<std::size_t>(i)] = chosen;
      }
    }
  }
  out.realised_rate = fraction_changed(out);
  return out;
}

void save_noisy_labels(const std::string& path, const NoisyLabels& noisy) {
  MCD_CHECK(noisy.labels.size() == noisy.clean_labels.size(),
            "save_noisy_labels: {} noisy labels but {} clean labels for {}", noisy.labels.size(),
            noisy.clean_labels.size(), path);
  const auto n = static_cast<std::int64_t>(noisy.labels.size());
  StateDict tensors;
  tensors["labels"] = Tensor::from_vector(noisy.labels, {n});
  tensors["clean_labels"] = Tensor::from_vector(noisy.clean_labels, {n});
  const std::map<std::string, std::string> metadata = {
      {"kind", noisy.kind},
      {"num_classes", std::to_string(noisy.num_classes)},
      {"rate", fmt::format("{}", noisy.rate)},
      {"realised_rate", fmt::format("{}", noisy.realised_rate)},
      {"seed", std::to_string(noisy.seed)}};
  save_safetensors(path, tensors, metadata);
}

NoisyLabels load_noisy_labels(const std::string& path) {
  const SafetensorsFile f = load_safetensors(path);
  const auto field = [&](const char* key) -> const std::string& {
    auto it = f.metadata.find(key);
    MCD_CHECK(it != f.metadata.end(), "load_noisy_labels: {} lacks metadata field '{}'", path, key);
    return it->second;
  };
  const auto number = [&](const char* key) {
    const std::string& s = field(key);
    try {
      std::size_t used = 0;
      const double v = std::stod(s, &used);
      if (used == s.size()) return v;
    } catch (const std::exception&) {
    }
    fail("load_noisy_labels: {} metadata '{}' = '{}' is not a number", path, key, s);
  };
  const auto labels = [&](const char* key) {
    auto it = f.tensors.find(key);
    MCD_CHECK(it != f.tensors.end(), "load_noisy_labels: {} lacks tensor '{}'", path, key);
    const Tensor& t = it->second;
    MCD_CHECK(t.dtype() == DType::Int64 && t.dim() == 1,
              "load_noisy_labels: {} tensor '{}' must be a 1-d int64 tensor", path, key);
    const std::int64_t* p = t.data<std::int64_t>();
    return std::vector<std::int64_t>(p, p + t.numel());
  };
  NoisyLabels out;
  out.kind = field("kind");
  MCD_CHECK(out.kind == "symmetric" || out.kind == "instance",
            "load_noisy_labels: {} kind = '{}', expected 'symmetric' or 'instance'", path,
            out.kind);
  out.num_classes = static_cast<std::int64_t>(number("num_classes"));
  out.rate = number("rate");
  out.realised_rate = number("realised_rate");
  try {
    out.seed = std::stoull(field("seed"));
  } catch (const std::exception&) {
    fail("load_noisy_labels: {} metadata 'seed' = '{}' is not an unsigned integer", path,
         field("seed"));
  }
  out.labels = labels("labels");
  out.clean_labels = labels("clean_labels");
  MCD_CHECK(out.labels.size() == out.clean_labels.size(),
            "load_noisy_labels: {} has {} labels but {} clean labels", path, out.labels.size(),
            out.clean_labels.size());
  const std::string op = "load_noisy_labels: " + path;
  check_labels(out.labels, out.num_classes, op.c_str());
  check_labels(out.clean_labels, out.num_classes, op.c_str());
  return out;
}

}  // namespace mcd::data
