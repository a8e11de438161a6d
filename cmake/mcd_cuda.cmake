# CUDA settings shared by the directories that compile .cu files. Include after
# enable_language(CUDA). CMake releases before 3.26 do not know nvcc's C++20 flag (nvcc has it
# since CUDA 12), and our targets require C++20 for every language they compile.
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
