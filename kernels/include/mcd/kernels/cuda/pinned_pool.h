// Page-locked host blocks for copies the host does not wait for (engine/transfer.h). A copy
// from or to such a block runs later on a stream, so the block is handed out again only after
// that copy has run: each block carries an event recorded after its last use. Blocks are kept
// and reused, in power-of-two sizes, because cudaHostAlloc is slow (it maps the pages for every
// device) and, in a training loop, the same few sizes come back every step.
#pragma once
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include <mcd/kernels/cuda/runtime.h>

namespace mcd::kernels::cuda {

class PinnedPool;

// One block, lent by the pool until the lease is destroyed (or moved from).
class PinnedLease {
 public:
  PinnedLease() = default;
  PinnedLease(PinnedLease&& other) noexcept;
  PinnedLease& operator=(PinnedLease&& other) noexcept;
  PinnedLease(const PinnedLease&) = delete;
  PinnedLease& operator=(const PinnedLease&) = delete;
  // Gives the block back; it is lent again once its recorded use has run.
  ~PinnedLease();

  void* data() const;
  std::size_t size() const;
  // The block is in use by the work queued on `stream` so far (a copy from or to it).
  void record_use(const Stream& stream);
  bool done() const;  // the recorded use has run (true when none was recorded)
  void wait() const;  // blocks until it has

 private:
  friend class PinnedPool;
  struct Block;
  PinnedLease(PinnedPool* pool, Block* block) : pool_(pool), block_(block) {}
  PinnedPool* pool_ = nullptr;
  Block* block_ = nullptr;
};

class PinnedPool {
 public:
  // The process's pool (never destroyed: leases may end during static destruction).
  static PinnedPool& instance();

  // A block of at least nbytes (rounded up to a power of two, at least 4 KiB) whose last use
  // has run; a new one when none is free.
  PinnedLease acquire(std::size_t nbytes);
  // Blocks held now, lent or not (tests: the steady state allocates none).
  std::size_t blocks() const;
  // Their page-locked bytes.
  std::size_t reserved_bytes() const;
  // Frees every block that is not lent and whose last use has run, and returns the bytes freed.
  // The pool keeps what it allocates (a training loop asks for the same few sizes every step);
  // this gives page-locked memory back when the sizes change for good (a new batch size, the end
  // of training), since page-locked pages cannot be swapped and limit the host's other work.
  std::size_t release_unused();

  PinnedPool() = default;
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;

 private:
  friend class PinnedLease;
  void give_back(PinnedLease::Block* block);

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<PinnedLease::Block>> blocks_;
};

}  // namespace mcd::kernels::cuda
