//! The supervisor's own memory: one malloc arena for all its threads, and free heap pages given
//! back after a burst of work.

/// glibc gives each thread that allocates while another holds the main arena an arena of its own
/// (a 64 MiB reservation whose first pages are touched): the spawner, the output writer, the
/// sweeper and tokio's blocking threads each cost one, ~50 kB of RSS in all. They allocate
/// rarely and briefly, so one shared arena costs them nothing measurable. Call before any thread
/// starts. A no-op elsewhere than glibc.
pub fn single_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called from main before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the free pages inside glibc's heaps to the kernel (`malloc_trim(0)`).
///
/// glibc gives back only the free memory at the top of a heap on its own; a start or stop of
/// thousands of apps leaves the freed memory of its transient buffers (command lines,
/// environments, state-file snapshots) between live allocations, where it stayed resident: about
/// 7 kB per app after a storm of 2,000. The call walks the free chunks (a millisecond or so at
/// thousands of apps) and is made after each state-file write, which is rarer and costlier.
/// A no-op where the C library is not glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and madvises glibc's own free lists, under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
