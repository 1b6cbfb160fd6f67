# Install rules: the CMake package (llbitmap::llbitmap) and a pkg-config file.
include(CMakePackageConfigHelpers)
set(_llbm_cfgdir "${CMAKE_INSTALL_LIBDIR}/cmake/llbitmap")
install(TARGETS llbitmap EXPORT llbitmapTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        FILE_SET HEADERS DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT llbitmapTargets NAMESPACE llbitmap:: DESTINATION "${_llbm_cfgdir}")
export(EXPORT llbitmapTargets NAMESPACE llbitmap::
       FILE "${PROJECT_BINARY_DIR}/llbitmapTargets.cmake")
configure_package_config_file(cmake/llbitmapConfig.cmake.in
  "${PROJECT_BINARY_DIR}/llbitmapConfig.cmake" INSTALL_DESTINATION "${_llbm_cfgdir}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/llbitmapConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/llbitmapConfig.cmake"
              "${PROJECT_BINARY_DIR}/llbitmapConfigVersion.cmake"
        DESTINATION "${_llbm_cfgdir}")
configure_file(cmake/llbitmap.pc.in "${PROJECT_BINARY_DIR}/llbitmap.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/llbitmap.pc" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
if(TARGET llbitmap_tool)
  install(TARGETS llbitmap_tool RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
