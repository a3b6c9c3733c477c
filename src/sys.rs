//! The operating-system calls std does not offer, each behind a safe helper.
//!
//! This is the only module with `unsafe`. It owns no state, reads and writes
//! no channels, and cannot fail on its own: a helper's error is returned to
//! its caller.

/// The process's effective user id (0 is root).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and
    // cannot fail (POSIX: "shall always be successful").
    unsafe { libc::geteuid() }
}
