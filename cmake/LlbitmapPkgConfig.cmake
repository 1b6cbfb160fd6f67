# Writes llbitmap.pc at install time (run from install(CODE), see LlbitmapInstall.cmake).
#
# The paths are absolute (pkg-config has no portable relative form) and are computed from
# the prefix the install actually uses, so `cmake --install build --prefix /opt/x` gives a
# .pc that points at /opt/x, not at the CMAKE_INSTALL_PREFIX seen at configure time.
# DESTDIR is not part of the paths, as usual for staged installs.
#
# In: CMAKE_INSTALL_PREFIX (set by the install script), LLBM_PC_TEMPLATE, LLBM_PC_OUTPUT,
#     LLBM_PC_LIBDIR, LLBM_PC_INCLUDEDIR (as given to GNUInstallDirs, relative or absolute),
#     PROJECT_DESCRIPTION, PROJECT_VERSION, LLBITMAP_URCU_MODULE_NAME.
function(llbm_pc_abs out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

set(LLBM_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
llbm_pc_abs(LLBM_PC_LIBDIR "${LLBM_PC_LIBDIR}")
llbm_pc_abs(LLBM_PC_INCLUDEDIR "${LLBM_PC_INCLUDEDIR}")
configure_file("${LLBM_PC_TEMPLATE}" "${LLBM_PC_OUTPUT}" @ONLY)
