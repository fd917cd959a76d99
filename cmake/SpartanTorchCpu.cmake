# libtorch's CPU half without Torch's CMake, for SPARTAN_CUDA=OFF: TorchConfig of the CUDA build
# insists on finding a CUDA toolkit even for CPU-only code. Gives TORCH_LIBRARIES (torch_cpu and
# c10, never torch_cuda) with torch's include folders, as find_package(Torch) would.
find_library(SPARTAN_TORCH_CPU_LIBRARY torch_cpu PATHS "${SPARTAN_TORCH_DIR}/lib" NO_DEFAULT_PATH)
find_library(SPARTAN_C10_LIBRARY c10 PATHS "${SPARTAN_TORCH_DIR}/lib" NO_DEFAULT_PATH)
if(NOT SPARTAN_TORCH_CPU_LIBRARY OR NOT SPARTAN_C10_LIBRARY)
  message(FATAL_ERROR "spartan: libtorch_cpu/libc10 not found under ${SPARTAN_TORCH_DIR}/lib")
endif()
add_library(spartan_torch_cpu INTERFACE)
target_include_directories(spartan_torch_cpu SYSTEM INTERFACE "${SPARTAN_TORCH_DIR}/include"
  "${SPARTAN_TORCH_DIR}/include/torch/csrc/api/include")
target_link_libraries(spartan_torch_cpu INTERFACE ${SPARTAN_TORCH_CPU_LIBRARY} ${SPARTAN_C10_LIBRARY})
target_compile_definitions(spartan_torch_cpu INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
set(TORCH_LIBRARIES spartan_torch_cpu)
