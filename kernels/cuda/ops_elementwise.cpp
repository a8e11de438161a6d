// Registration of the CUDA elementwise op tables (backend.h).
#include <mcd/kernels/cuda/backend.h>

namespace mcd::kernels::cuda {

void register_cuda_elementwise_ops() {}

}  // namespace mcd::kernels::cuda
