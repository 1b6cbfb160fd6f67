# llbitmap_set_warnings(<target>): warning flags for the project's own targets.
# They are PRIVATE: nothing here is forced on consumers.
function(llbitmap_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
    -Woverloaded-virtual -Wnull-dereference -Wimplicit-fallthrough)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    # -Wthread-safety checks the annotations (preset clang-tsa). liburcu's store macros
    # (CMM_STORE_SHARED, used by the inlined read side in src/sync/rcu.h) assign through a
    # volatile lvalue inside an expression, which C++20 deprecates.
    target_compile_options(${target} PRIVATE -Wthread-safety -Wno-deprecated-volatile)
  endif()
  if(LLBITMAP_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
