# Driver of the install/consume tests (registered by tests/install/CMakeLists.txt).
#
#   cmake -DSTEP=<step> -DSOURCE_DIR=<llbitmap source> -DWORK_DIR=<scratch dir> ... -P install_test.cmake
#
# Steps:
#   install         configure + build the library on its own (BUILD_SHARED_LIBS=${SHARED}),
#                   then `cmake --install <build> --prefix ${WORK_DIR}/prefix`.
#   find_package    consumer/ with find_package(llbitmap) against that prefix.
#   pkg_config      consumer/main.cc compiled by plain ${CXX} with `pkg-config --cflags --libs
#                   [--static] llbitmap` (PKG_CONFIG_PATH at the prefix).
#   headers         the installed public headers never reach liburcu: no code line names it
#                   and no header pulls in a liburcu header; each header compiles on its own.
#                   The installed tree is only the product: no sync-point or test-hook
#                   header, FaultStorage only under llbitmap/testing/, and no
#                   LLBM_SYNC_POINTS in the exported targets (the library was built with
#                   sync points on, to prove the definition stays private). bitmap.h
#                   compiles alone but reaches no <thread>, <condition_variable> or
#                   <mutex>: a TU with only it that names std::thread (or
#                   std::condition_variable, std::mutex) must fail to compile.
#   paths           no source or build-tree path in the installed CMake and pkg-config
#                   files; the .pc points at the install prefix.
#   add_subdirectory, fetchcontent
#                   consumer/ with the source tree vendored, or fetched from a source
#                   archive made from it (file:// URL, no network).
#
# Other inputs: GENERATOR, MAKE_PROGRAM, CXX, BUILD_TYPE, PKG_CONFIG, JOBS, SHARED,
# BUILD_TREE (the enclosing build, whose paths must not leak either).
# Any failure ends in message(FATAL_ERROR), i.e. a non-zero exit and a failed test.
cmake_minimum_required(VERSION 3.25)

foreach(var STEP SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "install_test.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT JOBS)
  set(JOBS 2)
endif()
if(NOT BUILD_TYPE)
  set(BUILD_TYPE RelWithDebInfo)
endif()
set(consumer_dir "${CMAKE_CURRENT_LIST_DIR}/consumer")
set(prefix "${WORK_DIR}/prefix")
file(MAKE_DIRECTORY "${WORK_DIR}")

# run(<what> COMMAND ... [WORKING_DIRECTORY d] [OUTPUT_VARIABLE v] [NO_FAIL_VARIABLE rc])
# Runs a command, echoing it; on failure stops the test with the command's output.
function(run what)
  cmake_parse_arguments(R "" "WORKING_DIRECTORY;OUTPUT_VARIABLE;RESULT_VARIABLE" "COMMAND" ${ARGN})
  if(NOT R_WORKING_DIRECTORY)
    set(R_WORKING_DIRECTORY "${WORK_DIR}")
  endif()
  list(JOIN R_COMMAND " " shown)
  message(STATUS "[${what}] ${shown}")
  execute_process(COMMAND ${R_COMMAND} WORKING_DIRECTORY "${R_WORKING_DIRECTORY}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(R_RESULT_VARIABLE)
    set(${R_RESULT_VARIABLE} "${rc}" PARENT_SCOPE)
  elseif(NOT rc EQUAL 0)
    message(FATAL_ERROR "[${what}] failed (${rc}):\n${out}")
  endif()
  if(R_OUTPUT_VARIABLE)
    set(${R_OUTPUT_VARIABLE} "${out}" PARENT_SCOPE)
  endif()
endfunction()

# The arguments every nested configure gets: same generator and compiler as the enclosing
# build, no sanitizers, no -Werror (a consumer's build).
set(common_args -G "${GENERATOR}" "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}")
if(MAKE_PROGRAM)
  list(APPEND common_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(CXX)
  list(APPEND common_args "-DCMAKE_CXX_COMPILER=${CXX}")
endif()

# Runs the consumer binary and checks that it reports OK.
function(run_app what exe)
  run("${what}: run" COMMAND ${ARGN} "${exe}" OUTPUT_VARIABLE out)
  if(NOT out MATCHES "(^|\n)OK\n")
    message(FATAL_ERROR "[${what}] the consumer did not print OK:\n${out}")
  endif()
  message(STATUS "[${what}] consumer printed OK")
endfunction()

# Builds consumer/ in a fresh directory with extra configure arguments, runs it.
function(build_consumer what)
  set(bdir "${WORK_DIR}/consumer-${what}")
  file(REMOVE_RECURSE "${bdir}")
  run("${what}: configure" COMMAND "${CMAKE_COMMAND}" -S "${consumer_dir}" -B "${bdir}"
      ${common_args} "-DLLBITMAP_CONSUME=${what}" ${ARGN})
  run("${what}: build" COMMAND "${CMAKE_COMMAND}" --build "${bdir}" --parallel ${JOBS})
  set(consumer_build "${bdir}" PARENT_SCOPE)
  run_app("${what}" "${bdir}/app")
  run_app("${what} (testing component)" "${bdir}/testing_app")
endfunction()

# The installed files the package consists of.
function(find_installed)
  file(GLOB_RECURSE cfg "${prefix}/llbitmapConfig.cmake")
  file(GLOB_RECURSE pc "${prefix}/llbitmap.pc")
  list(LENGTH cfg ncfg)
  list(LENGTH pc npc)
  if(NOT ncfg EQUAL 1 OR NOT npc EQUAL 1)
    message(FATAL_ERROR "expected one llbitmapConfig.cmake and one llbitmap.pc under ${prefix}, "
                        "found: ${cfg} ${pc} (did the install step run?)")
  endif()
  get_filename_component(cfgdir "${cfg}" DIRECTORY)
  get_filename_component(pcdir "${pc}" DIRECTORY)
  get_filename_component(libdir "${pcdir}" DIRECTORY)
  set(cfgdir "${cfgdir}" PARENT_SCOPE)
  set(pcdir "${pcdir}" PARENT_SCOPE)
  set(pcfile "${pc}" PARENT_SCOPE)
  set(libdir "${libdir}" PARENT_SCOPE)
endfunction()

if(STEP STREQUAL "install")
  set(bdir "${WORK_DIR}/build")
  # Sync points on: the headers step checks that nothing of them is installed or exported.
  set(args -S "${SOURCE_DIR}" -B "${bdir}" ${common_args} "-DBUILD_SHARED_LIBS=${SHARED}"
      -DLLBITMAP_BUILD_TESTS=OFF -DLLBITMAP_BUILD_BENCH=OFF -DLLBITMAP_BUILD_TOOLS=OFF
      -DLLBITMAP_BUILD_EXAMPLES=OFF -DLLBITMAP_SYNC_POINTS=ON)
  # The build directory is kept between runs (incremental); a stale one is recreated.
  run("install: configure" COMMAND "${CMAKE_COMMAND}" ${args} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    file(REMOVE_RECURSE "${bdir}")
    run("install: configure (fresh)" COMMAND "${CMAKE_COMMAND}" ${args})
  endif()
  run("install: build" COMMAND "${CMAKE_COMMAND}" --build "${bdir}" --parallel ${JOBS})
  file(REMOVE_RECURSE "${prefix}")
  # The configure-time CMAKE_INSTALL_PREFIX is the default one: --prefix must win everywhere.
  run("install: install" COMMAND "${CMAKE_COMMAND}" --install "${bdir}" --prefix "${prefix}")
  find_installed()
  if(SHARED)
    file(GLOB libs "${libdir}/libllbitmap.so*")
    set(kind "libllbitmap.so")
  else()
    file(GLOB libs "${libdir}/libllbitmap.a")
    set(kind "libllbitmap.a")
  endif()
  if(NOT libs)
    message(FATAL_ERROR "no ${kind} installed in ${libdir}")
  endif()
  message(STATUS "installed into ${prefix}: ${libs}")

elseif(STEP STREQUAL "find_package")
  find_installed()
  build_consumer(find_package "-DCMAKE_PREFIX_PATH=${prefix}")
  # Make sure it was this prefix's package that was found, not another installed copy.
  file(STRINGS "${consumer_build}/CMakeCache.txt" found REGEX "^llbitmap_DIR:")
  if(NOT found STREQUAL "llbitmap_DIR:PATH=${cfgdir}")
    message(FATAL_ERROR "find_package found the wrong package: '${found}', expected ${cfgdir}")
  endif()

elseif(STEP STREQUAL "pkg_config")
  if(NOT PKG_CONFIG OR NOT CXX)
    message(FATAL_ERROR "pkg_config step needs -DPKG_CONFIG=... and -DCXX=...")
  endif()
  find_installed()
  set(ENV{PKG_CONFIG_PATH} "${pcdir}")
  run("pkg-config: prefix" COMMAND "${PKG_CONFIG}" --variable=prefix llbitmap OUTPUT_VARIABLE pc_prefix)
  string(STRIP "${pc_prefix}" pc_prefix)
  if(NOT pc_prefix STREQUAL prefix)
    message(FATAL_ERROR "llbitmap.pc says prefix=${pc_prefix}, installed at ${prefix}")
  endif()
  set(mode)
  if(NOT SHARED)
    set(mode --static)  # a static archive needs its private dependencies on the link line
  endif()
  run("pkg-config: flags" COMMAND "${PKG_CONFIG}" ${mode} --cflags --libs llbitmap
      OUTPUT_VARIABLE flags)
  string(STRIP "${flags}" flags)
  message(STATUS "pkg-config ${mode} --cflags --libs llbitmap: ${flags}")
  separate_arguments(flags UNIX_COMMAND "${flags}")
  set(app "${WORK_DIR}/pkg-config-app")
  file(REMOVE "${app}")
  run("pkg-config: compile" COMMAND "${CXX}" -std=c++20 "${consumer_dir}/main.cc" ${flags} -o "${app}")
  if(SHARED)
    # The prefix is not in the loader's search path; an installed copy would be.
    run_app(pkg_config "${app}" "${CMAKE_COMMAND}" -E env "LD_LIBRARY_PATH=${libdir}")
  else()
    run_app(pkg_config "${app}")
  endif()

elseif(STEP STREQUAL "headers")
  if(NOT CXX)
    message(FATAL_ERROR "headers step needs -DCXX=...")
  endif()
  file(GLOB_RECURSE headers RELATIVE "${prefix}/include" "${prefix}/include/*")
  if(NOT headers)
    message(FATAL_ERROR "no headers installed under ${prefix}/include")
  endif()
  set(bad "")
  set(tu "${WORK_DIR}/header-check.cc")
  foreach(h IN LISTS headers)
    # 1. No code names liburcu (comments may: they explain the design).
    file(READ "${prefix}/include/${h}" text)
    string(REGEX REPLACE "/\\*([^*]|\\*+[^*/])*\\*+/" "" code "${text}")
    string(REGEX REPLACE "//[^\n]*" "" code "${code}")
    string(TOLOWER "${code}" code)
    string(REGEX MATCHALL "[^\n]*urcu[^\n]*" hits "${code}")
    foreach(hit IN LISTS hits)
      string(APPEND bad "  ${h}: ${hit}\n")
    endforeach()
    # 2. Nothing it includes, directly or not, is a liburcu header; 3. it compiles alone.
    file(WRITE "${tu}" "#include <${h}>\n")
    run("headers: ${h} dependencies" COMMAND "${CXX}" -std=c++20 "-I${prefix}/include" -M "${tu}"
        OUTPUT_VARIABLE deps)
    string(REGEX MATCHALL "[^ \\\n]*urcu[^ \\\n]*" urcu_deps "${deps}")
    if(urcu_deps)
      string(APPEND bad "  ${h} includes ${urcu_deps}\n")
    endif()
    run("headers: ${h} compiles alone" COMMAND "${CXX}" -std=c++20 "-I${prefix}/include"
        -fsyntax-only "${tu}")
  endforeach()
  if(bad)
    message(FATAL_ERROR "liburcu is reachable from the installed public headers:\n${bad}")
  endif()
  # 4. bitmap.h shows no private state: it compiles alone, reaches none of <thread>,
  # <condition_variable>, <mutex> (nor detail/mutex.h), and a translation unit that
  # includes only it and uses std::thread, std::condition_variable or std::mutex fails to
  # compile. A standard library may define a name itself through headers bitmap.h cannot
  # do without (libstdc++ 12 in C++20: <memory> and <atomic> reach <bits/std_mutex.h>);
  # a probe finds that out, and for such a name the dependency check is what holds.
  set(tu "${WORK_DIR}/bitmap-private.cc")
  file(WRITE "${tu}" "#include <llbitmap/bitmap.h>\n")
  run("headers: bitmap.h alone compiles" COMMAND "${CXX}" -std=c++20 "-I${prefix}/include"
      -fsyntax-only "${tu}")
  run("headers: bitmap.h dependencies" COMMAND "${CXX}" -std=c++20 "-I${prefix}/include" -M "${tu}"
      OUTPUT_VARIABLE deps)
  string(REGEX MATCHALL "[^ \\\n]*/(thread|condition_variable|mutex|detail/mutex\\.h)( |\n|$)"
         private_deps "${deps}")
  if(private_deps)
    string(APPEND bad "  llbitmap/bitmap.h includes ${private_deps}\n")
  endif()
  foreach(name IN ITEMS std::thread std::condition_variable std::mutex)
    set(use "[[maybe_unused]] static const auto llbm_size = sizeof(${name});\n")
    file(WRITE "${tu}" "#include <atomic>\n#include <memory>\n${use}")
    run("headers: does the standard library alone define ${name}?" COMMAND "${CXX}" -std=c++20
        -fsyntax-only "${tu}" RESULT_VARIABLE rc)
    if(rc EQUAL 0)
      message(STATUS "[headers] ${name}: defined by <atomic>/<memory> themselves here; "
                     "checked by the dependency list only")
      continue()
    endif()
    file(WRITE "${tu}" "#include <llbitmap/bitmap.h>\n${use}")
    run("headers: bitmap.h must not provide ${name}" COMMAND "${CXX}" -std=c++20
        "-I${prefix}/include" -fsyntax-only "${tu}" RESULT_VARIABLE rc)
    if(rc EQUAL 0)
      string(APPEND bad "  a TU with only llbitmap/bitmap.h can use ${name}\n")
    else()
      message(STATUS "[headers] ${name} unknown to a TU with only llbitmap/bitmap.h (as required)")
    endif()
  endforeach()
  if(bad)
    message(FATAL_ERROR "llbitmap/bitmap.h exposes the Bitmap's private machinery:\n${bad}")
  endif()
  # The installed surface is the product only.
  foreach(h IN LISTS headers)
    if(h MATCHES "sync_point|test_hook")
      string(APPEND bad "  test machinery installed: ${h}\n")
    endif()
    if(h MATCHES "fault_storage" AND NOT h STREQUAL "llbitmap/testing/fault_storage.h")
      string(APPEND bad "  FaultStorage outside llbitmap/testing/: ${h}\n")
    endif()
    file(READ "${prefix}/include/${h}" text)
    if(text MATCHES "LLBM_SYNC_POINT|TestHooks")
      string(APPEND bad "  ${h} mentions the sync points or the test hooks\n")
    endif()
  endforeach()
  file(GLOB_RECURSE exported "${prefix}/*Targets*.cmake")
  if(NOT exported)
    message(FATAL_ERROR "no exported target files under ${prefix}")
  endif()
  foreach(f IN LISTS exported)
    file(READ "${f}" text)
    if(text MATCHES "LLBM_SYNC_POINTS")
      string(APPEND bad "  ${f} exports LLBM_SYNC_POINTS\n")
    endif()
  endforeach()
  if(bad)
    message(FATAL_ERROR "the installed tree is not only the product:\n${bad}")
  endif()
  list(LENGTH headers nh)
  message(STATUS "${nh} installed headers checked: none reaches liburcu, no test machinery")

elseif(STEP STREQUAL "paths")
  find_installed()
  file(GLOB_RECURSE files "${cfgdir}/*.cmake")
  list(APPEND files "${pcfile}")
  set(bad "")
  foreach(f IN LISTS files)
    file(READ "${f}" text)
    # The prefix itself may legitimately appear (pkg-config needs absolute paths) and may
    # lie inside the build tree, so take it out before looking for build-tree paths.
    string(REPLACE "${prefix}" "<prefix>" text "${text}")
    foreach(leak IN ITEMS "${SOURCE_DIR}" "${WORK_DIR}/build" "${BUILD_TREE}")
      if(NOT leak STREQUAL "")
        string(FIND "${text}" "${leak}" at)
        if(at GREATER -1)
          string(APPEND bad "  ${f} contains ${leak}\n")
        endif()
      endif()
    endforeach()
    # Exported targets name installed files relative to ${_IMPORT_PREFIX} (include dirs,
    # FILE_SET base dirs, library locations): an absolute path there is machine-specific.
    if(f MATCHES "Targets(-[a-z]+)?\\.cmake$")
      string(REGEX MATCHALL "[\"; ]/[A-Za-z0-9_.+-][^\"; ]*" abs "${text}")
      foreach(path IN LISTS abs)  # a leading ';' splits off as an empty item
        string(REGEX REPLACE "^[\" ]" "" path "${path}")
        if(NOT path STREQUAL "")
          string(APPEND bad "  ${f}: absolute path ${path}\n")
        endif()
      endforeach()
    endif()
  endforeach()
  file(STRINGS "${pcfile}" pc_lines REGEX "^(prefix|libdir|includedir)=")
  string(REGEX REPLACE "([][+.*()^$?|\\])" "\\\\\\1" prefix_re "${prefix}")
  list(FILTER pc_lines EXCLUDE REGEX "^(prefix|libdir|includedir)=${prefix_re}(/|$)")
  list(LENGTH pc_lines n_outside)
  if(n_outside GREATER 0)
    string(APPEND bad "  ${pcfile}: paths outside the install prefix: ${pc_lines}\n")
  endif()
  if(bad)
    message(FATAL_ERROR "installed package files are not relocatable:\n${bad}")
  endif()
  list(LENGTH files nf)
  message(STATUS "${nf} installed package files checked: no build-tree paths")

elseif(STEP STREQUAL "add_subdirectory")
  build_consumer(add_subdirectory "-DLLBITMAP_SOURCE_DIR=${SOURCE_DIR}")

elseif(STEP STREQUAL "fetchcontent")
  # A source archive with what a release tarball of the library holds; the library must
  # configure as a subproject from these alone.
  set(archive "${WORK_DIR}/llbitmap-src.tar.gz")
  file(REMOVE "${archive}")
  run("fetchcontent: archive" WORKING_DIRECTORY "${SOURCE_DIR}"
      COMMAND "${CMAKE_COMMAND}" -E tar czf "${archive}" -- CMakeLists.txt LICENSE cmake include src)
  file(SHA256 "${archive}" sha)
  build_consumer(fetchcontent "-DLLBITMAP_URL=file://${archive}" "-DLLBITMAP_URL_HASH=SHA256=${sha}")

else()
  message(FATAL_ERROR "install_test.cmake: unknown STEP '${STEP}'")
endif()
