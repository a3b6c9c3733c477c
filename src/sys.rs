//! The process calls std does not offer, behind safe helpers.
//!
//! This is the crate's only `unsafe` code: sessions, signals, reaping,
//! pidfds, user/group lookups, socket peer credentials, and the
//! privilege drop of privilege separation, each a small block with its
//! `// SAFETY:` reason.
//! Every helper returns `io::Result` (or a plain value where the call
//! cannot fail). It owns no state, threads or channels; the spawner is the
//! only role that calls the process helpers.

use std::ffi::{CString, c_char, c_int};
use std::fs;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
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

/// Bytes written to a UNIX stream socket that its peer has not read yet,
/// as the kernel counts them (`SIOCOUTQ`, which is `TIOCOUTQ`: the memory
/// its queued writes take, their per-write overhead included).
pub fn unread_by_peer(socket: &impl AsFd) -> io::Result<usize> {
    let mut queued: c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which points to
    // `queued`, live and writable for the call.
    let code = unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::TIOCOUTQ, &raw mut queued) };
    if code == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}

/// Gives the pages malloc holds free back to the kernel (glibc's
/// `malloc_trim`, which walks every thread's arena): after a burst of
/// connections, their buffers are free but still resident.
#[cfg(target_env = "gnu")]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes a plain number and touches only malloc's
    // own state, under malloc's locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Nothing to do where malloc is not glibc's.
#[cfg(not(target_env = "gnu"))]
pub fn release_free_memory() {}

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

/// Makes `command`'s child get `fd` (open in the parent until the spawn
/// returns) as file descriptor `target`, without `FD_CLOEXEC`, so the
/// program it execs holds it: a readiness pipe's write end.
pub fn pass_fd(command: &mut Command, fd: BorrowedFd<'_>, target: c_int) {
    let source = fd.as_raw_fd();
    // SAFETY: the hook runs in the forked child, where only
    // async-signal-safe calls are allowed: `dup2` and `fcntl` are, and the
    // hook allocates nothing. `source` is open in the child, a copy of the
    // parent's descriptor, which the caller keeps open until the spawn
    // returns. When `source` already is `target`, `dup2` would do nothing
    // and leave `FD_CLOEXEC` set, so the flag is cleared instead.
    unsafe {
        command.pre_exec(move || {
            let result = if source == target {
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(source, target)
            };
            if result == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes `command`'s child append its own `/proc/self/stat` line to
/// `fd` (open in the parent until the spawn returns) before it execs, in
/// one `write(2)`: the child's pid and start time, recorded by the child
/// itself, for the spawner's intent of this start (`spawner/record.rs`).
/// Best effort: a child that cannot read its stat still execs.
pub fn record_own_stat_before_exec(command: &mut Command, fd: BorrowedFd<'_>) {
    let target = fd.as_raw_fd();
    // SAFETY: the hook runs in the forked child, where only
    // async-signal-safe calls are allowed: `open`, `read`, `write` and
    // `close` are, and the hook allocates nothing (the buffer is on its
    // stack, the path a static C string). `target` is a copy of the
    // parent's descriptor, which the caller keeps open until the spawn
    // returns.
    unsafe {
        command.pre_exec(move || {
            let mut buffer = [0u8; 1024];
            let stat = libc::open(
                c"/proc/self/stat".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if stat == -1 {
                return Ok(());
            }
            let mut length = 0usize;
            while length < buffer.len() {
                let read = libc::read(
                    stat,
                    buffer[length..].as_mut_ptr().cast(),
                    buffer.len() - length,
                );
                if read <= 0 {
                    break;
                }
                length += read.unsigned_abs();
            }
            libc::close(stat);
            libc::write(target, buffer.as_ptr().cast(), length);
            Ok(())
        });
    }
}

/// Whether the peer of socket `fd` has closed it (or shut down its
/// writing), even while data it sent before is still unread: `poll(2)`
/// for `POLLRDHUP` without waiting.
pub fn peer_hung_up(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut polled = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a count of one, and no wait.
    if unsafe { libc::poll(&mut polled, 1, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(polled.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0)
}

/// `flock(LOCK_EX | LOCK_NB)` on `file`: true when this process now holds
/// it, false when another open file holds it.
pub fn try_lock_exclusive(file: &impl AsFd) -> io::Result<bool> {
    // SAFETY: flock on a descriptor the caller holds open; no memory.
    if unsafe { libc::flock(file.as_fd().as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(error)
    }
}

/// Takes descriptor `fd`, inherited across exec from the parent, as this
/// process's own, checking it is an open socket and marking it
/// close-on-exec so children never inherit it.
pub fn take_inherited_socket(fd: c_int) -> io::Result<OwnedFd> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one stat into the buffer, or fails on a bad fd.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled the buffer.
    let mode = unsafe { stat.assume_init() }.st_mode;
    if mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket"),
        ));
    }
    // SAFETY: sets a flag on a descriptor checked open above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked) and nothing else in this
    // process owns it: it was handed over by the parent for this caller.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pipe2(2)` with `O_CLOEXEC`: (read end, write end). (std's
/// `io::pipe` is newer than the crate's minimum Rust version.)
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [c_int; 2] = [-1, -1];
    // SAFETY: `fds` is a live, writable array of two ints, which pipe2
    // fills with two new descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned both descriptors as new and owned by
    // nothing else, so each OwnedFd is its only owner.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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

/// `waitpid(pid, 0)`: waits for child `pid` to end and reaps it.
pub fn wait_for_child(pid: u32) -> io::Result<ExitStatusKind> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ECHILD))?;
    loop {
        let mut status: c_int = 0;
        // SAFETY: `status` is a live, writable c_int for the whole call.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == -1 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if libc::WIFEXITED(status) {
            return Ok(ExitStatusKind::Code(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(ExitStatusKind::Signal(libc::WTERMSIG(status)));
        }
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

/// The start time of process `pid`: field 22 of `/proc/<pid>/stat`, in
/// clock ticks after boot. A pid is recycled; a pid with its start time
/// names one process for good. `NotFound` when there is no such process.
pub fn process_start_time(pid: u32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no start time field"),
        )
    })
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are
/// counted from the last `)`, which ends it: field 3 comes right after.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// `pidfd_open(2)`: a file descriptor that names process `pid` (not its
/// number, which may be recycled) and becomes readable when it ends. Works
/// for processes that are not our children.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("pid {pid} out of range"),
        )
    })?;
    // SAFETY: pidfd_open takes a pid and a flags word and touches no memory
    // of ours; it returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = c_int::try_from(fd)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "pidfd_open returned a bad fd"))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing
    // else owns, so the OwnedFd is its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Which of `fds` are readable, without waiting: `poll(2)` with a zero
/// timeout. A pidfd is readable once its process ended; a pipe's read end
/// once it holds data or its write ends are all closed.
pub fn readable_fds(fds: &[BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let count = libc::nfds_t::try_from(polled.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many fds to poll"))?;
    loop {
        // SAFETY: `polled` is a live, writable array of `count` pollfds for
        // the whole call, and a zero timeout never blocks.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), count, 0) };
        if ready >= 0 {
            break;
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error);
        }
    }
    Ok(polled.iter().map(|fd| fd.revents != 0).collect())
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments and always succeeds.
    unsafe { libc::geteuid() }
}

/// Drops this process's privileges for good: supplementary groups
/// cleared, then `setgid(gid)`, then `setuid(uid)` (real, effective and
/// saved ids all change for a root caller), then checks that `setuid(0)`
/// now fails. Call it while the process has one thread: glibc changes
/// every thread's ids, but a thread started before could be mid-call.
pub fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setgroups with a zero count reads no memory (the null list
    // is never dereferenced).
    if unsafe { libc::setgroups(0, ptr::null()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setgid takes one integer and touches no memory of ours.
    if unsafe { libc::setgid(gid) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setuid takes one integer and touches no memory of ours.
    if unsafe { libc::setuid(uid) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; this call must fail, which is what is checked.
    if uid != 0 && unsafe { libc::setuid(0) } != -1 {
        return Err(io::Error::other(format!(
            "root was regained after dropping to uid {uid}"
        )));
    }
    Ok(())
}

/// Names this process (its `comm`, as `ps` shows it) `name`, cut to 15
/// bytes by the kernel.
pub fn set_process_name(name: &str) -> io::Result<()> {
    let name = c_name(name, "process")?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string, which `name` is
    // and which outlives the call; the kernel copies at most 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    use std::os::fd::AsFd;

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
    fn start_time_is_counted_from_the_end_of_the_command_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("42 (truncated"), None);
        let own = process_start_time(std::process::id()).unwrap();
        assert_eq!(process_start_time(std::process::id()).unwrap(), own);
    }

    #[test]
    fn a_pidfd_turns_readable_when_its_process_ends() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pidfd = pidfd_open(child.id()).unwrap();
        assert_eq!(readable_fds(&[pidfd.as_fd()]).unwrap(), [false]);
        child.kill().unwrap();
        // Readable once it ends, reaped or not; the spawner's tests in this
        // process reap any child, so `child.wait()` could find it gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while readable_fds(&[pidfd.as_fd()]).unwrap() != [true] {
            assert!(std::time::Instant::now() < deadline, "never readable");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = child.wait();
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
