# Install rules: the CMake package (llbitmap::llbitmap; component "testing" adds
# llbitmap::testing, FaultStorage) and a pkg-config file for the library. tests/install/ checks all of it from a consumer's point of
# view (ctest -L install).
include(CMakePackageConfigHelpers)
set(_llbm_cfgdir "${CMAKE_INSTALL_LIBDIR}/cmake/llbitmap")
install(TARGETS llbitmap EXPORT llbitmapTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        FILE_SET HEADERS DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT llbitmapTargets NAMESPACE llbitmap:: DESTINATION "${_llbm_cfgdir}")
# The testing component: find_package(llbitmap COMPONENTS testing).
install(TARGETS llbitmap_testing EXPORT llbitmapTestingTargets COMPONENT testing
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        FILE_SET HEADERS DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT llbitmapTestingTargets NAMESPACE llbitmap:: DESTINATION "${_llbm_cfgdir}"
        COMPONENT testing)
# The build tree is usable as a package too (CMAKE_PREFIX_PATH=<build dir>).
export(EXPORT llbitmapTargets NAMESPACE llbitmap::
       FILE "${PROJECT_BINARY_DIR}/llbitmapTargets.cmake")
export(EXPORT llbitmapTestingTargets NAMESPACE llbitmap::
       FILE "${PROJECT_BINARY_DIR}/llbitmapTestingTargets.cmake")
configure_package_config_file(cmake/llbitmapConfig.cmake.in
  "${PROJECT_BINARY_DIR}/llbitmapConfig.cmake" INSTALL_DESTINATION "${_llbm_cfgdir}")
# 0.x: a minor release may break the API; use SameMajorVersion from 1.0 on.
write_basic_package_version_file("${PROJECT_BINARY_DIR}/llbitmapConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/llbitmapConfig.cmake"
              "${PROJECT_BINARY_DIR}/llbitmapConfigVersion.cmake"
        DESTINATION "${_llbm_cfgdir}")

# pkg-config: generated when installing, from the prefix in use (LlbitmapPkgConfig.cmake).
# Requires.private names the liburcu module actually found (LLBITMAP_URCU_MODULE_NAME).
set(_llbm_pc "${PROJECT_BINARY_DIR}/pkgconfig-install/llbitmap.pc")
install(CODE "
  set(LLBM_PC_TEMPLATE [==[${PROJECT_SOURCE_DIR}/cmake/llbitmap.pc.in]==])
  set(LLBM_PC_OUTPUT [==[${_llbm_pc}]==])
  set(LLBM_PC_LIBDIR [==[${CMAKE_INSTALL_LIBDIR}]==])
  set(LLBM_PC_INCLUDEDIR [==[${CMAKE_INSTALL_INCLUDEDIR}]==])
  set(PROJECT_DESCRIPTION [==[${PROJECT_DESCRIPTION}]==])
  set(PROJECT_VERSION [==[${PROJECT_VERSION}]==])
  set(LLBITMAP_URCU_MODULE_NAME [==[${LLBITMAP_URCU_MODULE_NAME}]==])
  include([==[${PROJECT_SOURCE_DIR}/cmake/LlbitmapPkgConfig.cmake]==])
")
install(FILES "${_llbm_pc}" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")

if(TARGET llbitmap_tool)
  install(TARGETS llbitmap_tool RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
