# llbitmap_enable_sanitizers(<target>): applies LLBITMAP_SANITIZE to one of our own targets.
# Under ThreadSanitizer the library calls liburcu's read side instead of inlining it
# (src/rcu.h), because TSan cannot see through the inlined pre-0.15 liburcu code.
#
# UBSan: every check stops the program (-fno-sanitize-recover=all) except `alignment`,
# which is recoverable only so that tests/ubsan.supp can silence it for liburcu 0.13's
# misaligned urcu_bp_reader (see there). With UBSAN_OPTIONS=halt_on_error=1, which the
# asan test preset sets, any other alignment error still stops the program.
function(llbitmap_enable_sanitizers target)
  if(LLBITMAP_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${LLBITMAP_SANITIZE} -fno-omit-frame-pointer
                                              -fno-sanitize-recover=all)
    if(LLBITMAP_SANITIZE MATCHES "undefined")
      target_compile_options(${target} PRIVATE -fsanitize-recover=alignment)
    endif()
    target_link_options(${target} PRIVATE -fsanitize=${LLBITMAP_SANITIZE})
  endif()
endfunction()
