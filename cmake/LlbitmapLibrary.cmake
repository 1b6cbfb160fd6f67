# How the library is built: one OBJECT library per layer of src/ (docs/design.md#layers),
# joined into llbitmap (static, or shared with BUILD_SHARED_LIBS) and, for the benchmarks,
# into a shared copy made of the same objects.
#
# llbitmap_layer_options(<target>)
#   The compile options of every object of the library: C++20, position-independent code,
#   the fast-path TLS flags, warnings, sanitizers, and LLBM_SYNC_POINTS (PRIVATE: the
#   installed package never sees it).
#
# llbitmap_add_layer(<name> SOURCES <files...> [DEPS <lower layers...>])
#   Target llbitmap_<name> (OBJECT) from src/<name>/. Its private include path is its own
#   folder, the folders of the layers in DEPS and include/, and nothing else: a layer that
#   includes a private header of a layer above it (or of one it does not list) fails to
#   build. It links liburcu-bp's usage requirements (the only library that is not ours).
#
# llbitmap_join_layers(<target>)
#   Gives a library target (llbitmap, or the benchmarks' shared copy) the objects of every
#   layer and the public interface: the installed headers (an explicit list), C++20,
#   threads.
include_guard(GLOBAL)
include(CheckCXXCompilerFlag)
check_cxx_compiler_flag(-fno-extern-tls-init LLBITMAP_HAVE_NO_EXTERN_TLS_INIT)  # GCC only

function(llbitmap_layer_options target)
  target_compile_features(${target} PUBLIC cxx_std_20)
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF POSITION_INDEPENDENT_CODE ON)
  # Fast-path TLS (docs/design.md#the-write-fast-path): liburcu-bp's reader pointer and
  # our counter area are thread_local variables defined in another translation unit;
  # without -fno-extern-tls-init every access calls an init wrapper. initial-exec keeps a
  # shared build off __tls_get_addr (liburcu and this library are loaded at start-up).
  target_compile_options(${target} PRIVATE -ftls-model=initial-exec)
  if(LLBITMAP_HAVE_NO_EXTERN_TLS_INIT)
    target_compile_options(${target} PRIVATE -fno-extern-tls-init)
  endif()
  if(LLBITMAP_SYNC_POINTS)
    target_compile_definitions(${target} PRIVATE LLBM_SYNC_POINTS=1)
  endif()
  if(LLBITMAP_FUZZ)
    # Coverage for libFuzzer (tests/fuzz), and the debug checks (LLBM_DCHECK: chunk, page
    # and block bounds) kept whatever the build type.
    target_compile_options(${target} PRIVATE -fsanitize=fuzzer-no-link -UNDEBUG)
  endif()
  llbitmap_set_warnings(${target})
  llbitmap_enable_sanitizers(${target})
endfunction()

function(llbitmap_add_layer name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
  set(_dirs "${CMAKE_CURRENT_SOURCE_DIR}/${name}")
  foreach(_dep IN LISTS A_DEPS)
    list(APPEND _dirs "${CMAKE_CURRENT_SOURCE_DIR}/${_dep}")
  endforeach()
  list(TRANSFORM A_SOURCES PREPEND "${CMAKE_CURRENT_SOURCE_DIR}/${name}/")
  add_library(llbitmap_${name} OBJECT ${A_SOURCES})
  target_include_directories(llbitmap_${name} PRIVATE ${_dirs} "${PROJECT_SOURCE_DIR}/include")
  target_link_libraries(llbitmap_${name} PRIVATE PkgConfig::LLBITMAP_URCU Threads::Threads)
  llbitmap_layer_options(llbitmap_${name})
endfunction()

function(llbitmap_join_layers target)
  set(_root "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/..")
  foreach(_layer IN ITEMS base sync disk bitmap)
    target_sources(${target} PRIVATE $<TARGET_OBJECTS:llbitmap_${_layer}>)
  endforeach()
  # The installed headers: the product only (FaultStorage is llbitmap::testing's; the
  # sync points and every private header stay in src/).
  set(_headers
    detail/cacheline.h
    detail/check.h
    detail/mutex.h
    detail/thread_annotations.h
    percpu_ref.h
    wait_queue.h
    clock.h
    page_barrier.h
    chunk_state.h
    error.h
    format.h
    recovery.h
    storage.h
    bitmap.h
    reactor.h)
  list(TRANSFORM _headers PREPEND "${_root}/include/llbitmap/")
  target_sources(${target} PUBLIC FILE_SET HEADERS BASE_DIRS "${_root}/include" FILES ${_headers})
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_link_libraries(${target} PUBLIC Threads::Threads PRIVATE PkgConfig::LLBITMAP_URCU)
  set_target_properties(${target} PROPERTIES
    LINKER_LANGUAGE CXX
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
  llbitmap_enable_sanitizers(${target})
endfunction()
