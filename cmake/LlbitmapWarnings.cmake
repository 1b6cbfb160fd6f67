# llbitmap_set_warnings(<target>): warning flags for the project's own targets.
# They are PRIVATE: nothing here is forced on consumers.
function(llbitmap_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
    -Woverloaded-virtual -Wnull-dereference -Wimplicit-fallthrough)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(${target} PRIVATE -Wthread-safety)
  endif()
  if(LLBITMAP_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
