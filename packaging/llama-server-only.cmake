# Build only what llama-server needs, and build the parts off the inference path faster.
# Included through CMAKE_PROJECT_INCLUDE (see the Makefile):
# - llama.cpp's tools/CMakeLists.txt adds every tool (bench, quantize, perplexity, tts, ...) with no
#   option to leave them out; fewshot runs the server alone, so the other tool folders are skipped;
# - common/, vendor/ and the server's own folders (HTTP, JSON, chat templates, the unused multimodal
#   library) are compiled at -O1: measured here, -O1 takes 20-37% less compile time on their largest
#   files (common/chat.cpp 9.1 -> 7.3 s, server-context.cpp 22.1 -> 14.0 s). ggml (the kernels) and
#   src/ (the model, tokenizer and sampler) keep the release -O3.
include_guard(GLOBAL)  # included after every project() call: define the override once
function(add_subdirectory source_dir)
  get_filename_component(_here "${CMAKE_CURRENT_SOURCE_DIR}" NAME)
  if(_here STREQUAL "tools" AND NOT source_dir MATCHES "^(server|mtmd|ui)$")
    return()
  endif()
  if(source_dir MATCHES "^(common|vendor|tools|server|mtmd|ui)$")
    set(CMAKE_C_FLAGS_RELEASE "-O1 -DNDEBUG")
    set(CMAKE_CXX_FLAGS_RELEASE "-O1 -DNDEBUG")
  endif()
  _add_subdirectory(${ARGV})
endfunction()
