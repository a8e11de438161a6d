// The page-locked block cache (pinned_pool.h).
#include <mcd/kernels/cuda/pinned_pool.h>

#include <bit>
#include <utility>
#include <vector>

namespace mcd::kernels::cuda {

struct PinnedLease::Block {
  explicit Block(std::size_t nbytes) : buffer(nbytes) {}
  PinnedBuffer buffer;
  std::unique_ptr<Event> last_use;  // recorded after the last copy; made on that stream's device
  bool lent = false;
};

// ---- PinnedLease

PinnedLease::PinnedLease(PinnedLease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), block_(std::exchange(other.block_, nullptr)) {}

PinnedLease& PinnedLease::operator=(PinnedLease&& other) noexcept {
  std::swap(pool_, other.pool_);
  std::swap(block_, other.block_);
  return *this;
}

PinnedLease::~PinnedLease() {
  if (block_ != nullptr) pool_->give_back(block_);
}

void* PinnedLease::data() const {
  return block_->buffer.data();
}

std::size_t PinnedLease::size() const {
  return block_->buffer.size();
}

void PinnedLease::record_use(const Stream& stream) {
  // An event records only on a stream of its own device.
  if (block_->last_use == nullptr || block_->last_use->device() != stream.device())
    block_->last_use = std::make_unique<Event>(stream.device());
  block_->last_use->record(stream.get());
}

bool PinnedLease::done() const {
  return block_->last_use == nullptr || block_->last_use->done();
}

void PinnedLease::wait() const {
  if (block_->last_use != nullptr) block_->last_use->synchronize();
}

// ---- PinnedPool

PinnedPool& PinnedPool::instance() {
  static auto* pool = new PinnedPool();
  return *pool;
}

PinnedLease PinnedPool::acquire(std::size_t nbytes) {
  const std::size_t size = std::bit_ceil(std::max<std::size_t>(nbytes, 4096));
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& b : blocks_) {
    if (b->lent || b->buffer.size() != size) continue;
    if (b->last_use != nullptr && !b->last_use->done()) continue;
    b->lent = true;
    return PinnedLease(this, b.get());
  }
  blocks_.push_back(std::make_unique<PinnedLease::Block>(size));
  blocks_.back()->lent = true;
  return PinnedLease(this, blocks_.back().get());
}

std::size_t PinnedPool::blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return blocks_.size();
}

std::size_t PinnedPool::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::size_t total = 0;
  for (const auto& b : blocks_)
    total += b->buffer.size();
  return total;
}

std::size_t PinnedPool::release_unused() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::size_t freed = 0;
  std::erase_if(blocks_, [&](const std::unique_ptr<PinnedLease::Block>& b) {
    if (b->lent || (b->last_use != nullptr && !b->last_use->done())) return false;
    freed += b->buffer.size();
    return true;
  });
  return freed;
}

void PinnedPool::give_back(PinnedLease::Block* block) {
  std::lock_guard<std::mutex> lock(mutex_);
  block->lent = false;
}

}  // namespace mcd::kernels::cuda
