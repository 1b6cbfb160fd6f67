// SPDX-License-Identifier: LGPL-2.1-or-later
//
// detail/thread_annotations.h: clang thread-safety analysis attributes.
//
// Layer 0. They expand to nothing on compilers without the analysis (GCC), so they
// document which mutex guards which field at no cost; a clang build with
// -Wthread-safety checks them.
#pragma once

#if defined(__clang__)
#define LLBM_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define LLBM_THREAD_ANNOTATION(x)
#endif

#define LLBM_CAPABILITY(x) LLBM_THREAD_ANNOTATION(capability(x))
#define LLBM_SCOPED_CAPABILITY LLBM_THREAD_ANNOTATION(scoped_lockable)
#define LLBM_GUARDED_BY(x) LLBM_THREAD_ANNOTATION(guarded_by(x))
#define LLBM_PT_GUARDED_BY(x) LLBM_THREAD_ANNOTATION(pt_guarded_by(x))
#define LLBM_REQUIRES(...) LLBM_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define LLBM_ACQUIRE(...) LLBM_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define LLBM_RELEASE(...) LLBM_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define LLBM_ASSERT_CAPABILITY(x) LLBM_THREAD_ANNOTATION(assert_capability(x))
#define LLBM_TRY_ACQUIRE(...) LLBM_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define LLBM_EXCLUDES(...) LLBM_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define LLBM_NO_THREAD_SAFETY_ANALYSIS LLBM_THREAD_ANNOTATION(no_thread_safety_analysis)
