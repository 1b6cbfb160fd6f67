# llbitmap_enable_sanitizers(<target>): applies LLBITMAP_SANITIZE to one of our own targets.
# Under ThreadSanitizer the library calls liburcu's read side instead of inlining it
# (src/rcu.h), because TSan cannot see through the inlined pre-0.15 liburcu code.
function(llbitmap_enable_sanitizers target)
  if(LLBITMAP_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${LLBITMAP_SANITIZE} -fno-omit-frame-pointer
                                              -fno-sanitize-recover=all)
    target_link_options(${target} PRIVATE -fsanitize=${LLBITMAP_SANITIZE})
  endif()
endfunction()
