# Build only what llama-server needs: llama.cpp's tools/CMakeLists.txt adds every tool
# (bench, quantize, perplexity, tts, ...) with no option to leave them out, and fewshot runs the
# server alone. Included through CMAKE_PROJECT_INCLUDE, this skips the other tool folders.
include_guard(GLOBAL)  # included after every project() call: define the override once
function(add_subdirectory source_dir)
  get_filename_component(_here "${CMAKE_CURRENT_SOURCE_DIR}" NAME)
  if(_here STREQUAL "tools" AND NOT source_dir MATCHES "^(server|mtmd|ui)$")
    return()
  endif()
  _add_subdirectory(${ARGV})
endfunction()
