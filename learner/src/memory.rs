//! How the learner's process allocates. The `rlvr` binary (and the learner benchmark) put mimalloc in
//! as the global allocator: with the forward passes spread over the tokio blocking pool and rayon's
//! threads, glibc keeps a heap arena per thread and holds on to freed activations in each, which grew
//! `rlvr train` by gigabytes per step until it was killed (a single arena kept it flat).

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the -sys crate does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory stays with the process instead of going back to the OS after 10 ms: a training step
/// frees and reallocates gigabytes of activations, and returning them made the kernel zero every page
/// again on the next step (over half the CPU time of a step in `clear_page`). The resident set stays
/// at the run's peak instead of following it. Call it first thing in `main`, with mimalloc as the
/// global allocator (it does nothing useful otherwise).
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table (an atomic write); it takes
    // no pointers and is valid to call at any time, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
