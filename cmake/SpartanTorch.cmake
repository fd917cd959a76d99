# Finds libtorch inside the project's Python venv (PyPI's torch==2.11.0, the CUDA 13 build that
# GPU machines run; scripts/setup creates the venv). Sets SPARTAN_TORCH_DIR and puts the torch
# package folder and its share/cmake first on CMAKE_PREFIX_PATH: with only share/cmake there,
# TorchConfig's find_library would take Debian's /usr/lib/x86_64-linux-gnu/libc10.so if present.
#
# SPARTAN_PYTHON (cache) names the interpreter whose torch is used; default: the venv's.
set(SPARTAN_PYTHON "${PROJECT_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH
    "Python whose torch package provides libtorch")
if(NOT EXISTS "${SPARTAN_PYTHON}")
  message(FATAL_ERROR "spartan: no Python at ${SPARTAN_PYTHON}; run scripts/setup (it creates "
                      "the venv with torch), or pass -DSPARTAN_PYTHON=/path/to/python")
endif()
execute_process(
  COMMAND "${SPARTAN_PYTHON}" -c
          "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__)"
  OUTPUT_VARIABLE _spartan_torch_out RESULT_VARIABLE _spartan_torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT _spartan_torch_rc EQUAL 0)
  message(FATAL_ERROR "spartan: ${SPARTAN_PYTHON} cannot import torch; run scripts/setup")
endif()
string(REPLACE "\n" ";" _spartan_torch_out "${_spartan_torch_out}")
list(GET _spartan_torch_out 0 SPARTAN_TORCH_DIR)
list(GET _spartan_torch_out 1 SPARTAN_TORCH_VERSION)
list(PREPEND CMAKE_PREFIX_PATH "${SPARTAN_TORCH_DIR}" "${SPARTAN_TORCH_DIR}/share/cmake")
# The site-packages folder: the nvidia-* wheels (NCCL, cuSPARSELt, cuDNN) that this torch uses.
get_filename_component(SPARTAN_SITE_PACKAGES "${SPARTAN_TORCH_DIR}" DIRECTORY)
message(STATUS "spartan: libtorch ${SPARTAN_TORCH_VERSION} from ${SPARTAN_TORCH_DIR}")
