//! The supervisor's own memory: one malloc arena for all its threads.

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
