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

/// What a reaped child used, from the kernel's `rusage` of it (and of
/// the descendants it waited for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// User plus system CPU time, in microseconds.
    pub cpu_usec: u64,
    /// The largest resident set size it reached, in bytes.
    pub max_rss_bytes: u64,
}

/// `wait4(-1, WNOHANG)`: reaps one exited child of this process, if any,
/// with what it used. `None` when no child has exited yet or there are no
/// children at all.
pub fn reap_any() -> io::Result<Option<(u32, ExitStatusKind, Usage)>> {
    loop {
        let mut status: c_int = 0;
        let mut usage = MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `status` and `usage` are live, writable values of the
        // types wait4 fills, for the whole call.
        let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, usage.as_mut_ptr()) };
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
        // SAFETY: zeroed is a valid rusage (plain integers), and wait4
        // filled it in for the child it returned.
        let usage = unsafe { usage.assume_init() };
        let micros = |time: libc::timeval| {
            (time.tv_sec.max(0) as u64) * 1_000_000 + time.tv_usec.max(0) as u64
        };
        let used = Usage {
            cpu_usec: micros(usage.ru_utime) + micros(usage.ru_stime),
            max_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
        };
        return Ok(Some((pid.unsigned_abs(), kind, used)));
    }
}

/// The `RLIMIT_*` resources by their lowercase names, as `limits` in a
/// service's configuration names them.
pub const RLIMITS: [(&str, u32); 16] = [
    ("as", libc::RLIMIT_AS),
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

/// `RLIM_INFINITY`: no limit.
pub const RLIM_INFINITY: u64 = libc::RLIM_INFINITY;

/// One rlimit a child gets: resource (an [`RLIMITS`] number), soft and
/// hard values ([`RLIM_INFINITY`] for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The `RLIMIT_*` number.
    pub resource: u32,
    /// The soft limit.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// `getrlimit(2)`: this process's (soft, hard) limit of `resource`.
pub fn getrlimit(resource: u32) -> io::Result<(u64, u64)> {
    let mut value = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `value` is a live, writable rlimit for the whole call.
    if unsafe { libc::getrlimit(resource as _, &mut value) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok((value.rlim_cur, value.rlim_max))
}

/// The name of rlimit `resource` in [`RLIMITS`], or its number.
pub fn rlimit_name(resource: u32) -> String {
    RLIMITS
        .iter()
        .find(|(_, number)| *number == resource)
        .map_or_else(|| resource.to_string(), |(name, _)| (*name).to_owned())
}

/// Whether this process holds capability `number` (`CAP_*`) in its
/// effective set, from `/proc/self/status`.
pub fn has_capability(number: u32) -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|set| number < 64 && set & (1 << number) != 0)
}

/// `CAP_SYS_RESOURCE`: raising a hard rlimit needs it.
pub const CAP_SYS_RESOURCE: u32 = 24;

/// What a child does between fork and exec, after `setsid`, in this
/// order: joins the cgroups whose `cgroup.procs` files are open in
/// `cgroup_procs` (writing "0", which moves the writer; the files were
/// opened by the spawner, so the kernel checks the opener's rights), sets
/// `rlimits` (while still privileged, so a hard limit may be raised),
/// then drops to `ids` as `setgroups`, `setgid`, `setuid` (clearing the
/// supplementary groups only when it runs as root, as std does).
#[derive(Debug, Default)]
pub struct ChildSetup {
    /// `cgroup.procs` files of the cgroups to join, opened write-only.
    pub cgroup_procs: Vec<OwnedFd>,
    /// The rlimits to set.
    pub rlimits: Vec<Rlimit>,
    /// The user and group to run as; None keeps the spawner's.
    pub ids: Option<UserIds>,
}

/// Makes `command`'s child carry out `setup` before exec (see
/// [`ChildSetup`]). Use it instead of `CommandExt::uid`/`gid`, which std
/// applies before any hook, too early for the rlimits.
pub fn prepare_child(command: &mut Command, setup: ChildSetup) {
    // SAFETY: the hook runs in the forked child, where only
    // async-signal-safe calls are allowed: write, setrlimit, getuid,
    // setgroups, setgid and setuid are plain system calls, and the hook
    // allocates nothing (it only reads the vectors moved into it, which
    // the child's copy of memory holds). The descriptors stay open until
    // the Command is dropped, after the spawn.
    unsafe {
        command.pre_exec(move || {
            for procs in &setup.cgroup_procs {
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            for limit in &setup.rlimits {
                let value = libc::rlimit {
                    rlim_cur: limit.soft,
                    rlim_max: limit.hard,
                };
                if libc::setrlimit(limit.resource as _, &value) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(ids) = setup.ids {
                if libc::getuid() == 0 && libc::setgroups(0, ptr::null()) == -1 {
                    return Err(io::Error::last_os_error());
                }
                if libc::setgid(ids.gid) == -1 || libc::setuid(ids.uid) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
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

/// The CPU time (user + system, in microseconds) and resident set (in
/// bytes) of process `pid`, from `/proc/<pid>/stat`.
pub fn process_usage(pid: u32) -> io::Result<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|end| stat[end + 1..].split_whitespace().collect())
        .unwrap_or_default();
    let field = |number: usize| fields.get(number - 3).and_then(|f| f.parse::<u64>().ok());
    let (Some(utime), Some(stime), Some(rss_pages)) = (field(14), field(15), field(24)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat lacks its time or rss fields"),
        ));
    };
    // SAFETY: sysconf takes one integer and touches no memory of ours.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let ticks = u64::try_from(ticks).unwrap_or(100).max(1);
    let page = u64::try_from(page).unwrap_or(4096);
    Ok(((utime + stime) * 1_000_000 / ticks, rss_pages * page))
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

/// The effective group id of this process.
pub fn effective_gid() -> u32 {
    // SAFETY: getegid takes no arguments and always succeeds.
    unsafe { libc::getegid() }
}

/// Drops this process's privileges for good: supplementary groups
/// cleared, then `setgid(gid)`, then `setuid(uid)` (real, effective and
/// saved ids all change for a root caller), then checks that `setuid(0)`
/// now fails. Call it while the process has one thread: glibc changes
/// every thread's ids, but a thread started before could be mid-call.
pub fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    clear_supplementary_groups()?;
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

/// Looks `name` up in the passwd database (`getpwnam_r`, so through NSS;
/// a static build reads `/etc/passwd` itself, see [`accounts`]).
pub fn lookup_user(name: &str) -> io::Result<Option<UserIds>> {
    #[cfg(target_feature = "crt-static")]
    return accounts::user(|entry_name, _| entry_name == name);
    #[cfg(not(target_feature = "crt-static"))]
    let name = c_name(name, "user")?;
    #[cfg(not(target_feature = "crt-static"))]
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

/// Looks user id `uid` up in the passwd database (`getpwuid_r`; a static
/// build reads `/etc/passwd`).
pub fn lookup_uid(uid: u32) -> io::Result<Option<UserIds>> {
    #[cfg(target_feature = "crt-static")]
    return accounts::user(|_, entry_uid| entry_uid == uid);
    #[cfg(not(target_feature = "crt-static"))]
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

/// A user's name, home and shell from the passwd database, for the
/// `USER`, `LOGNAME`, `HOME` and `SHELL` of a service's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// `pw_name`.
    pub name: String,
    /// `pw_dir`.
    pub home: String,
    /// `pw_shell`.
    pub shell: String,
}

/// Looks user id `uid` up in the passwd database for its name, home and
/// shell (`getpwuid_r`; a static build reads `/etc/passwd`).
pub fn lookup_account(uid: u32) -> io::Result<Option<Account>> {
    #[cfg(target_feature = "crt-static")]
    return accounts::account(uid);
    #[cfg(not(target_feature = "crt-static"))]
    lookup(
        |entry: *mut libc::passwd, buffer, len, result| {
            // SAFETY: `entry`, `buffer` (of `len` bytes) and `result` are
            // valid and writable for the call.
            unsafe { libc::getpwuid_r(uid, entry, buffer, len, result) }
        },
        |entry| {
            let text = |field: *const c_char| {
                if field.is_null() {
                    return String::new();
                }
                // SAFETY: a non-null passwd string field points to a
                // NUL-terminated string in the lookup's buffer, which
                // outlives this read (see `lookup`).
                unsafe { std::ffi::CStr::from_ptr(field) }
                    .to_string_lossy()
                    .into_owned()
            };
            Account {
                name: text(entry.pw_name),
                home: text(entry.pw_dir),
                shell: text(entry.pw_shell),
            }
        },
    )
}

/// Looks `name` up in the group database (`getgrnam_r`; a static build
/// reads `/etc/group`); its group id.
pub fn lookup_group(name: &str) -> io::Result<Option<u32>> {
    #[cfg(target_feature = "crt-static")]
    return accounts::group(name);
    #[cfg(not(target_feature = "crt-static"))]
    let name = c_name(name, "group")?;
    #[cfg(not(target_feature = "crt-static"))]
    lookup(
        |entry: *mut libc::group, buffer, len, result| {
            // SAFETY: `name` is NUL-terminated; `entry`, `buffer` (of `len`
            // bytes) and `result` are valid and writable for the call.
            unsafe { libc::getgrnam_r(name.as_ptr(), entry, buffer, len, result) }
        },
        |entry| entry.gr_gid,
    )
}

/// A `SOCK_SEQPACKET` UNIX socket bound to the abstract name `name` (no
/// file: it vanishes with its last holder) and listening, non-blocking.
/// Only one socket can hold a name; the peer's credentials tell who did.
pub fn seqpacket_listen(name: &[u8]) -> io::Result<OwnedFd> {
    let socket = seqpacket_socket(libc::SOCK_NONBLOCK)?;
    let (address, len) = abstract_address(name)?;
    // SAFETY: `address` is a live sockaddr_un of which `len` bytes are
    // set; bind reads only those.
    if unsafe { libc::bind(socket.as_raw_fd(), (&raw const address).cast(), len) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen takes a descriptor and a backlog and touches no memory.
    if unsafe { libc::listen(socket.as_raw_fd(), 16) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// A blocking `SOCK_SEQPACKET` socket connected to the abstract name
/// `name`.
pub fn seqpacket_connect(name: &[u8]) -> io::Result<OwnedFd> {
    let socket = seqpacket_socket(0)?;
    let (address, len) = abstract_address(name)?;
    // SAFETY: `address` is a live sockaddr_un of which `len` bytes are
    // set; connect reads only those.
    if unsafe { libc::connect(socket.as_raw_fd(), (&raw const address).cast(), len) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// Accepts one connection on `listener`, non-blocking and close-on-exec;
/// `None` when none is waiting.
pub fn seqpacket_accept(listener: &impl AsFd) -> io::Result<Option<OwnedFd>> {
    loop {
        // SAFETY: null address pointers ask for no peer address; accept4
        // returns a new descriptor or -1.
        let fd = unsafe {
            libc::accept4(
                listener.as_fd().as_raw_fd(),
                ptr::null_mut(),
                ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if fd >= 0 {
            // SAFETY: accept4 just returned `fd` as a new descriptor owned
            // by nothing else.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(error),
        }
    }
}

fn seqpacket_socket(flags: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket takes three integers and returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | flags,
            0,
        )
    };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket just returned `fd` as a new descriptor owned by
    // nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The address of abstract name `name` (a leading NUL, then the name) and
/// its length.
fn abstract_address(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain integers and bytes, for which all zeroes
    // is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if name.len() + 1 > address.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("abstract socket name of {} bytes is too long", name.len()),
        ));
    }
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (slot, byte) in address.sun_path[1..].iter_mut().zip(name) {
        *slot = *byte as c_char;
    }
    let len = size_of::<libc::sa_family_t>() + 1 + name.len();
    Ok((address, socklen_for(len)))
}

/// Sends `bytes` as one packet on `socket`, with `fd` as `SCM_RIGHTS`
/// when given; never raises SIGPIPE.
pub fn send_packet(socket: &impl AsFd, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain integers and pointers, all zeroes valid.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &raw mut iov;
    header.msg_iovlen = 1;
    if let Some(fd) = fd {
        let raw = fd.as_raw_fd();
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(size_of::<c_int>() as u32) } as usize;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = space;
        // SAFETY: the control buffer (32 bytes, aligned for cmsghdr) holds
        // one cmsghdr with one int, which CMSG_SPACE says fits; CMSG_FIRSTHDR
        // and CMSG_DATA point inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&raw const header);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<c_int>() as u32) as usize;
            ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), raw);
        }
    }
    loop {
        // SAFETY: `header` points at `iov` (over `bytes`) and the control
        // buffer, all alive for the call; sendmsg only reads them.
        let sent = unsafe {
            libc::sendmsg(
                socket.as_fd().as_raw_fd(),
                &raw const header,
                libc::MSG_NOSIGNAL,
            )
        };
        if sent >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Receives one packet from `socket` into `buffer`: its length (0 at EOF)
/// and the descriptor passed with it, if any (close-on-exec). A packet
/// longer than `buffer` is cut to it.
pub fn recv_packet(socket: &impl AsFd, buffer: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain integers and pointers, all zeroes valid.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &raw mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = size_of::<[u64; 4]>();
    let received = loop {
        // SAFETY: `header` points at `iov` (over `buffer`) and the control
        // buffer, both alive and writable for the call.
        let received = unsafe {
            libc::recvmsg(
                socket.as_fd().as_raw_fd(),
                &raw mut header,
                libc::MSG_CMSG_CLOEXEC,
            )
        };
        if received >= 0 {
            break received.unsigned_abs();
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    };
    let mut passed = None;
    // SAFETY: the kernel filled `header`'s control part; CMSG_FIRSTHDR and
    // CMSG_NXTHDR walk only within msg_controllen, and an SCM_RIGHTS
    // message's data is the descriptors the kernel just installed in this
    // process, each owned by nothing else, so each becomes one OwnedFd.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<c_int>();
                let count = ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize) / size_of::<c_int>();
                for index in 0..count {
                    let fd = OwnedFd::from_raw_fd(ptr::read_unaligned(data.add(index)));
                    // Only the first is wanted; the others close on drop.
                    if passed.is_none() {
                        passed = Some(fd);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&raw const header, cmsg);
        }
    }
    Ok((received, passed))
}

/// Makes reads on `socket` give up after `timeout` (`SO_RCVTIMEO`), with
/// `WouldBlock`.
pub fn set_receive_timeout(socket: &impl AsFd, timeout: std::time::Duration) -> io::Result<()> {
    let value = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros().min(999_999) as i32),
    };
    // SAFETY: `value` is a live timeval and its size is passed; the kernel
    // reads only that.
    let code = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const value).cast(),
            socklen_of::<libc::timeval>(),
        )
    };
    if code == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL read and write one integer flag word of
    // a descriptor the caller keeps open.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags == -1 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives the calling thread the scheduling priority `nice` (-20 to 19;
/// `setpriority(PRIO_PROCESS, 0)`, which Linux applies to the calling
/// thread only).
pub fn set_own_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory of
    // ours.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clears this process's supplementary groups (`setgroups(0)`). glibc
/// applies it to every thread.
pub fn clear_supplementary_groups() -> io::Result<()> {
    // SAFETY: setgroups with a zero count reads no memory (the null list
    // is never dereferenced).
    if unsafe { libc::setgroups(0, ptr::null()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `work` with this thread's file-system ids (`setfsuid`,
/// `setfsgid`: Linux keeps them per thread) set to `ids`, so every path it
/// opens, creates, renames or removes is checked against those ids'
/// rights, not root's (root's capabilities over files are dropped with
/// them), then sets them back to the effective ids. Nothing changes when
/// `ids` are the effective ids already.
pub fn as_file_user<T>(ids: UserIds, work: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let (own_uid, own_gid) = (effective_uid(), effective_gid());
    if ids.uid == own_uid && ids.gid == own_gid {
        return work();
    }
    set_fs_ids(ids.uid, ids.gid)?;
    let result = work();
    set_fs_ids(own_uid, own_gid)?;
    result
}

/// Sets this thread's file-system ids, group first, and checks they took
/// (the calls report only the previous value).
fn set_fs_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setfsgid/setfsuid take one integer and touch no memory; a
    // call with an invalid id (-1) changes nothing and returns the current.
    let (gid_now, uid_now) = unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
        (libc::setfsgid(u32::MAX), libc::setfsuid(u32::MAX))
    };
    if u32::try_from(gid_now).ok() != Some(gid) || u32::try_from(uid_now).ok() != Some(uid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("cannot take file-system ids uid {uid}, gid {gid}"),
        ));
    }
    Ok(())
}

/// `openat(2)` of `name` in directory `dir` with `flags` (plus
/// `O_CLOEXEC`) and, when it creates, `mode`.
pub fn open_at(dir: &impl AsFd, name: &str, flags: c_int, mode: u32) -> io::Result<fs::File> {
    let name = c_name(name, "file")?;
    // SAFETY: `name` is NUL-terminated and outlives the call; openat
    // returns a new descriptor or -1.
    let fd = unsafe {
        libc::openat(
            dir.as_fd().as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned `fd` as a new descriptor owned by
    // nothing else.
    Ok(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `renameat(2)` of `from` to `to`, both in directory `dir`: names are
/// moved, never followed (a link at `to` is replaced, not written through).
pub fn rename_at(dir: &impl AsFd, from: &str, to: &str) -> io::Result<()> {
    let (from, to) = (c_name(from, "file")?, c_name(to, "file")?);
    let raw = dir.as_fd().as_raw_fd();
    // SAFETY: both names are NUL-terminated and outlive the call.
    if unsafe { libc::renameat(raw, from.as_ptr(), raw, to.as_ptr()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `unlinkat(2)` of `name` in directory `dir` (a link is removed, not its
/// target).
pub fn unlink_at(dir: &impl AsFd, name: &str) -> io::Result<()> {
    let name = c_name(name, "file")?;
    // SAFETY: `name` is NUL-terminated and outlives the call.
    if unsafe { libc::unlinkat(dir.as_fd().as_raw_fd(), name.as_ptr(), 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The (device, inode) of `name` in directory `dir`, not following a link
/// (`fstatat` with `AT_SYMLINK_NOFOLLOW`).
pub fn identity_at(dir: &impl AsFd, name: &str) -> io::Result<(u64, u64)> {
    let name = c_name(name, "file")?;
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated and `stat` is writable for the call.
    let code = unsafe {
        libc::fstatat(
            dir.as_fd().as_raw_fd(),
            name.as_ptr(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if code == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Ok((stat.st_dev, stat.st_ino))
}

/// Takes ownership of inherited descriptor `fd` if it is open and a pipe
/// (as a readiness pipe handed over at exec is); None otherwise.
pub fn take_inherited_fd(fd: c_int) -> Option<OwnedFd> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one stat into `stat`, which is writable; a
    // closed fd makes it fail without touching anything.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } == -1 {
        return None;
    }
    // SAFETY: fstat returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    if stat.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return None;
    }
    // SAFETY: `fd` is open (fstat succeeded); it was inherited across exec
    // for this process to take, and nothing else in it owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Not passed on to anything this process starts.
    // SAFETY: F_SETFD sets one flag on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(owned)
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
#[cfg(not(target_feature = "crt-static"))]
const LOOKUP_BUFFER_START: usize = 1024;
#[cfg(not(target_feature = "crt-static"))]
const LOOKUP_BUFFER_MAX: usize = 16 << 20;

/// User and group lookups for a static build: glibc's NSS loads its
/// modules (`libnss_files.so` and kin) at run time, which a static binary
/// cannot do reliably (they must match the glibc it was linked with), so a
/// static snow-fox reads `/etc/passwd` and `/etc/group` itself, as musl
/// does. Users and groups only NSS knows (LDAP, systemd's dynamic users)
/// are not found by a static build.
#[cfg(any(test, target_feature = "crt-static"))]
pub mod accounts {
    use std::{fs, io};

    use super::UserIds;

    /// The first `/etc/passwd` entry whose name and uid `wanted` accepts.
    pub fn user(wanted: impl Fn(&str, u32) -> bool) -> io::Result<Option<UserIds>> {
        Ok(user_in(&read("/etc/passwd")?, wanted))
    }

    /// The name, home and shell of user id `uid` in `/etc/passwd`.
    pub fn account(uid: u32) -> io::Result<Option<super::Account>> {
        Ok(account_in(&read("/etc/passwd")?, uid))
    }

    /// The name, home and shell of user id `uid` in passwd-format `text`
    /// (`name:password:uid:gid:gecos:home:shell`).
    pub fn account_in(text: &str, uid: u32) -> Option<super::Account> {
        entries(text).find_map(|fields| {
            let field = |index: usize| fields.get(index).copied().unwrap_or("").to_owned();
            (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| super::Account {
                name: field(0),
                home: field(5),
                shell: field(6),
            })
        })
    }

    /// The gid of group `name` in `/etc/group`.
    pub fn group(name: &str) -> io::Result<Option<u32>> {
        Ok(group_in(&read("/etc/group")?, name))
    }

    fn read(path: &str) -> io::Result<String> {
        match fs::read_to_string(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            other => other,
        }
    }

    /// The first entry of passwd-format `text` that `wanted` accepts
    /// (`name:password:uid:gid:...`; malformed lines are skipped).
    pub fn user_in(text: &str, wanted: impl Fn(&str, u32) -> bool) -> Option<UserIds> {
        entries(text).find_map(|fields| {
            let uid = fields.get(2)?.parse().ok()?;
            let gid = fields.get(3)?.parse().ok()?;
            wanted(fields[0], uid).then_some(UserIds { uid, gid })
        })
    }

    /// The gid of group `name` in group-format `text`
    /// (`name:password:gid:members`).
    pub fn group_in(text: &str, name: &str) -> Option<u32> {
        entries(text)
            .filter(|fields| fields[0] == name)
            .find_map(|fields| fields.get(2)?.parse().ok())
    }

    fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
        text.lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| line.split(':').collect())
    }
}

/// Runs one reentrant database query (`getpwnam_r` and kin), growing its
/// string buffer until the entry fits; `extract` reads the found entry.
#[cfg(not(target_feature = "crt-static"))]
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
    #[test]
    fn passwd_and_group_files_are_read_as_a_static_build_reads_them() {
        let passwd = "# comment\nroot:x:0:0:root:/root:/bin/sh\nbroken:x:y:1\n\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n";
        assert_eq!(
            accounts::user_in(passwd, |name, _| name == "nobody"),
            Some(UserIds {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(
            accounts::user_in(passwd, |_, uid| uid == 0),
            Some(UserIds { uid: 0, gid: 0 })
        );
        assert_eq!(accounts::user_in(passwd, |name, _| name == "broken"), None);
        let group = "root:x:0:\nadm:x:4:syslog,alice\nshort:x\n";
        assert_eq!(
            accounts::account_in(passwd, 0).map(|account| account.name),
            Some("root".to_owned())
        );
        assert_eq!(accounts::group_in(group, "adm"), Some(4));
        assert_eq!(accounts::group_in(group, "short"), None);
        assert_eq!(accounts::group_in(group, "ghost"), None);
        assert_eq!(
            accounts::user(|name, _| name == "root").unwrap(),
            lookup_user("root").unwrap()
        );
    }

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
