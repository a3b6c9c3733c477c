//! The process calls std does not offer, behind safe helpers.
//!
//! This is the crate's only `unsafe` code: sessions, signals, reaping,
//! user/group lookups and socket peer credentials, each a small block with
//! its `// SAFETY:` reason.
//! Every helper returns `io::Result` (or a plain value where the call
//! cannot fail). It owns no state, threads or channels; the spawner is the
//! only role that calls the process helpers.

use std::ffi::{CString, c_char, c_int};
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr;

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatusKind {
    /// It exited with this code.
    Code(i32),
    /// A signal with this number killed it.
    Signal(i32),
}

/// A user's ids from the passwd database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIds {
    /// The user id.
    pub uid: u32,
    /// The user's primary group id.
    pub gid: u32,
}

/// Who is at the other end of a UNIX socket, as the kernel recorded it
/// when the peer connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCredentials {
    /// The peer's process id at connect time.
    pub pid: i32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
    /// The peer's supplementary groups.
    pub groups: Vec<u32>,
}

/// The credentials of a connected UNIX socket's peer: `SO_PEERCRED` for
/// pid, uid and gid, `SO_PEERGROUPS` for the supplementary groups. Both
/// are the kernel's snapshot from `connect()`, so they cannot be swapped
/// by a peer that exits and has its pid reused, as reading
/// `/proc/<pid>/status` could be; and they are what the peer really held,
/// not what the group database says it might.
pub fn peer_credentials(socket: &impl AsFd) -> io::Result<PeerCredentials> {
    let fd = socket.as_fd().as_raw_fd();
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = socklen_of::<libc::ucred>();
    // SAFETY: `credentials` is a live, writable ucred and `len` holds its
    // size, as SO_PEERCRED requires; the kernel writes at most `len` bytes.
    let code = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut credentials).cast(),
            &mut len,
        )
    };
    if code == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCredentials {
        pid: credentials.pid,
        uid: credentials.uid,
        gid: credentials.gid,
        groups: peer_groups(fd)?,
    })
}

/// The most supplementary groups Linux lets a process hold.
const MAX_GROUPS: usize = 65_536;

fn peer_groups(fd: i32) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = socklen_for(groups.len() * size_of::<libc::gid_t>());
        // SAFETY: `groups` is a live, writable buffer of `len` bytes; the
        // kernel writes at most `len` bytes and sets `len` to what it wrote
        // (or, on ERANGE, to what it needs).
        let code = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / size_of::<libc::gid_t>();
        if code == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ERANGE)
            && needed > groups.len()
            && needed <= MAX_GROUPS
        {
            groups.resize(needed, 0);
            continue;
        }
        return Err(error);
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    socklen_for(size_of::<T>())
}

fn socklen_for(bytes: usize) -> libc::socklen_t {
    // Both buffers are far below 4 GiB: a ucred, or MAX_GROUPS gids.
    libc::socklen_t::try_from(bytes).unwrap_or(libc::socklen_t::MAX)
}

/// Makes `command`'s child call `setsid()` between fork and exec, so it
/// leads a new session and process group (whose id is its pid) with no
/// controlling terminal: a signal to the group reaches its whole tree.
pub fn start_in_new_session(command: &mut Command) -> &mut Command {
    // SAFETY: the hook runs in the forked child, where only
    // async-signal-safe calls are allowed. `setsid` is one, and the hook
    // allocates nothing: an `io::Error` built from errno is a plain value.
    unsafe { command.pre_exec(setsid) }
}

/// `setsid(2)`: async-signal-safe, for the pre-exec hook above.
fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments and touches no memory of ours.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `kill(2)`: sends `signal` to process `pid`, or to process group `-pid`
/// when `pid` is negative. Refuses 0 (the caller's own group) and -1
/// (every process it may signal): no caller means those.
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    if pid == 0 || pid == -1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}, which means more than one process"),
        ));
    }
    // SAFETY: kill takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `waitpid(-1, WNOHANG)`: reaps one exited child of this process, if any.
/// `None` when no child has exited yet or there are no children at all.
pub fn reap_any() -> io::Result<Option<(u32, ExitStatusKind)>> {
    loop {
        let mut status: c_int = 0;
        // SAFETY: `status` is a live, writable c_int for the whole call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == 0 {
            return Ok(None);
        }
        if pid < 0 {
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::ECHILD) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(error),
            }
        }
        let kind = if libc::WIFEXITED(status) {
            ExitStatusKind::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatusKind::Signal(libc::WTERMSIG(status))
        } else {
            // Stops and continues are only reported when asked for
            // (WUNTRACED, WCONTINUED); such a child was not reaped.
            continue;
        };
        return Ok(Some((pid.unsigned_abs(), kind)));
    }
}

/// Marks this process a child subreaper: orphans of its descendants (the
/// grandchildren of a service that double-forks) are re-parented to it
/// rather than to init, so the spawner reaps them and none stays a zombie.
pub fn become_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches
    // no memory of ours; the unused arguments are passed as zero.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments and always succeeds.
    unsafe { libc::geteuid() }
}

/// Looks `name` up in the passwd database (`getpwnam_r`).
pub fn lookup_user(name: &str) -> io::Result<Option<UserIds>> {
    let name = c_name(name, "user")?;
    lookup(
        |entry: *mut libc::passwd, buffer, len, result| {
            // SAFETY: `name` is NUL-terminated; `entry`, `buffer` (of `len`
            // bytes) and `result` are valid and writable for the call.
            unsafe { libc::getpwnam_r(name.as_ptr(), entry, buffer, len, result) }
        },
        |entry| UserIds {
            uid: entry.pw_uid,
            gid: entry.pw_gid,
        },
    )
}

/// Looks user id `uid` up in the passwd database (`getpwuid_r`).
pub fn lookup_uid(uid: u32) -> io::Result<Option<UserIds>> {
    lookup(
        |entry: *mut libc::passwd, buffer, len, result| {
            // SAFETY: `entry`, `buffer` (of `len` bytes) and `result` are
            // valid and writable for the call.
            unsafe { libc::getpwuid_r(uid, entry, buffer, len, result) }
        },
        |entry| UserIds {
            uid: entry.pw_uid,
            gid: entry.pw_gid,
        },
    )
}

/// Looks `name` up in the group database (`getgrnam_r`); its group id.
pub fn lookup_group(name: &str) -> io::Result<Option<u32>> {
    let name = c_name(name, "group")?;
    lookup(
        |entry: *mut libc::group, buffer, len, result| {
            // SAFETY: `name` is NUL-terminated; `entry`, `buffer` (of `len`
            // bytes) and `result` are valid and writable for the call.
            unsafe { libc::getgrnam_r(name.as_ptr(), entry, buffer, len, result) }
        },
        |entry| entry.gr_gid,
    )
}

fn c_name(name: &str, what: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} name {name:?} contains a NUL byte"),
        )
    })
}

/// Where a `get*_r` buffer starts, and the most it grows to on ERANGE (a
/// group with many members can need a large one).
const LOOKUP_BUFFER_START: usize = 1024;
const LOOKUP_BUFFER_MAX: usize = 16 << 20;

/// Runs one reentrant database query (`getpwnam_r` and kin), growing its
/// string buffer until the entry fits; `extract` reads the found entry.
fn lookup<E, T>(
    mut query: impl FnMut(*mut E, *mut c_char, usize, *mut *mut E) -> c_int,
    extract: impl Fn(&E) -> T,
) -> io::Result<Option<T>> {
    let mut buffer = vec![0u8; LOOKUP_BUFFER_START];
    loop {
        let mut entry = MaybeUninit::<E>::uninit();
        let mut result: *mut E = ptr::null_mut();
        let code = query(
            entry.as_mut_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut result,
        );
        match code {
            0 if result.is_null() => return Ok(None),
            0 => {
                // SAFETY: a zero return with a non-null result means the
                // call filled `entry` (result points to it); its strings
                // point into `buffer`, which outlives this read.
                let entry = unsafe { entry.assume_init_ref() };
                return Ok(Some(extract(entry)));
            }
            libc::ENOENT => return Ok(None),
            libc::EINTR => {}
            libc::ERANGE if buffer.len() < LOOKUP_BUFFER_MAX => {
                buffer.resize(buffer.len() * 2, 0);
            }
            code => return Err(io::Error::from_raw_os_error(code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_id() {
        let root = lookup_user("root").unwrap().unwrap();
        assert_eq!(root, UserIds { uid: 0, gid: 0 });
        assert_eq!(lookup_uid(0).unwrap(), Some(root));
        assert_eq!(lookup_group("root").unwrap(), Some(0));
    }

    #[test]
    fn unknown_names_are_not_found() {
        assert_eq!(lookup_user("sf-no-such-user").unwrap(), None);
        assert_eq!(lookup_group("sf-no-such-group").unwrap(), None);
        assert!(lookup_user("a\0b").is_err());
    }

    #[test]
    fn a_socket_pair_peer_is_this_process() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = peer_credentials(&ours).unwrap();
        assert_eq!(peer.pid, std::process::id() as i32);
        assert_eq!(peer.uid, effective_uid());
        // SAFETY: getegid takes no arguments and always succeeds.
        assert_eq!(peer.gid, unsafe { libc::getegid() });
    }

    #[test]
    fn kill_refuses_pids_that_mean_many_processes() {
        assert!(kill(0, 0).is_err());
        assert!(kill(-1, 0).is_err());
        kill(std::process::id() as i32, 0).unwrap();
    }
}
