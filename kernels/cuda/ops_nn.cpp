// Registration of the CUDA nn op tables (backend.h).
#include <mcd/kernels/cuda/backend.h>

namespace mcd::kernels::cuda {

void register_cuda_nn_ops() {}

}  // namespace mcd::kernels::cuda
