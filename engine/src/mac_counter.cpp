// The thread-local stack of live MacCounters. Each counter links to the one it shadows, so
// an op adds its MACs to every enclosing scope.
#include <mcd/engine/mac_counter.h>

namespace mcd {
namespace {
thread_local MacCounter* g_innermost = nullptr;
}  // namespace

MacCounter::MacCounter() : outer_(g_innermost) {
  g_innermost = this;
}

MacCounter::~MacCounter() {
  g_innermost = outer_;
}

void add_macs(std::int64_t macs) {
  for (MacCounter* c = g_innermost; c != nullptr; c = c->outer_)
    c->macs_ += macs;
}

}  // namespace mcd
