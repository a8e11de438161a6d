#include "resnet_flops.h"

#include <map>

#include <mcd/engine/error.h>

namespace mcd::bench {

ResNetShape resnet_shape(const std::string& arch) {
  static const std::map<std::string, ResNetShape> table = {
      {"resnet10_xxxs", {{4, 8, 8, 16}, {1, 1, 1, 1}}},
      {"resnet10_xxs", {{8, 8, 16, 16}, {1, 1, 1, 1}}},
      {"resnet10_xs", {{8, 16, 16, 32}, {1, 1, 1, 1}}},
      {"resnet10_s", {{8, 16, 32, 64}, {1, 1, 1, 1}}},
      {"resnet10_m", {{16, 32, 64, 128}, {1, 1, 1, 1}}},
      {"resnet10_l", {{32, 64, 128, 256}, {1, 1, 1, 1}}},
      {"resnet10", {{64, 128, 256, 512}, {1, 1, 1, 1}}},
      {"resnet18", {{64, 128, 256, 512}, {2, 2, 2, 2}}},
      {"resnet34", {{64, 128, 256, 512}, {3, 4, 6, 3}}},
  };
  auto it = table.find(arch);
  MCD_CHECK(it != table.end(), "resnet_shape: no FLOP model for '{}'", arch);
  return it->second;
}

double resnet_forward_macs(const ResNetShape& s, std::int64_t channels, std::int64_t size,
                           std::int64_t classes) {
  auto conv = [](double cin, double cout, double k, double out_hw) {
    return cin * cout * k * k * out_hw * out_hw;
  };
  double macs = conv(static_cast<double>(channels), static_cast<double>(s.widths[0]), 3,
                     static_cast<double>(size));
  std::int64_t in = s.widths[0], hw = size;
  for (int stage = 0; stage < 4; ++stage) {
    for (std::int64_t b = 0; b < s.blocks[stage]; ++b) {
      const std::int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
      const std::int64_t out = s.widths[stage];
      const std::int64_t out_hw = (hw + 2 - 3) / stride + 1;  // 3x3, padding 1
      macs +=
          conv(static_cast<double>(in), static_cast<double>(out), 3, static_cast<double>(out_hw));
      macs +=
          conv(static_cast<double>(out), static_cast<double>(out), 3, static_cast<double>(out_hw));
      if (stride != 1 || in != out)
        macs +=
            conv(static_cast<double>(in), static_cast<double>(out), 1, static_cast<double>(out_hw));
      in = out;
      hw = out_hw;
    }
  }
  return macs + static_cast<double>(in * classes);
}

}  // namespace mcd::bench
