//! The process calls std does not offer, behind safe helpers.
//!
//! Most are `rustix` calls (sessions, signals, pidfds, poll, `*at` file
//! calls, sockets and passed descriptors, rlimits, the pre-exec work of a
//! child). What rustix does not offer safely stays a libc call here, the
//! crate's only `unsafe` code, each a small block with its `// SAFETY:`
//! reason: user and group lookups (NSS), process-wide id changes (glibc
//! applies them to every thread; rustix only changes the calling one),
//! `wait4`'s rusage, `setfsuid`, `SO_PEERCRED` and `SO_PEERGROUPS`
//! (rustix's `UCred` cannot hold the pid 0 the kernel gives for a peer in
//! another pid namespace), `SIOCOUTQ`, `malloc_trim`, the `dup2` to a
//! chosen number in a child, `pre_exec` itself, and taking inherited
//! descriptors by number.
//! Every helper returns `io::Result` (or a plain value where the call
//! cannot fail). It owns no state, threads or channels; the spawner is the
//! only role that calls the process helpers.

use std::ffi::{CString, c_char, c_int};
use std::fs;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::{Errno, FdFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use rustix::process::{Pid, Resource, Signal, WaitOptions};

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
    let hook = || {
        rustix::process::setsid()?;
        Ok(())
    };
    // SAFETY: the hook runs in the forked child, where only
    // async-signal-safe calls are allowed. `setsid` is one (a raw system
    // call), and the hook allocates nothing: an `io::Error` from an errno
    // is a plain value.
    unsafe { command.pre_exec(hook) }
}

/// Makes `command`'s child get `fd` (open in the parent until the spawn
/// returns) as file descriptor `target`, without `FD_CLOEXEC`, so the
/// program it execs holds it: a readiness pipe's write end.
pub fn pass_fd(command: &mut Command, fd: BorrowedFd<'_>, target: c_int) {
    let source = fd.as_raw_fd();
    // SAFETY: the hook runs in the forked child, where only
    // async-signal-safe calls are allowed: `give_fd` is one (`dup2` or
    // `fcntl`), and the hook allocates nothing. `source` is open in the
    // child, a copy of the parent's descriptor, which the caller keeps
    // open until the spawn returns.
    unsafe {
        command.pre_exec(move || Ok(give_fd(source, target)?));
    }
}

/// Whether the peer of socket `fd` has closed it (or shut down its
/// writing), even while data it sent before is still unread: `poll(2)`
/// for `POLLRDHUP` without waiting.
pub fn peer_hung_up(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut polled = [PollFd::new(&fd, PollFlags::RDHUP)];
    rustix::event::poll(&mut polled, Some(&NO_WAIT))?;
    Ok(polled[0]
        .revents()
        .intersects(PollFlags::RDHUP | PollFlags::HUP))
}

/// A zero `poll(2)` timeout: report readiness without waiting.
const NO_WAIT: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// `flock(LOCK_EX | LOCK_NB)` on `file`: true when this process now holds
/// it, false when another open file holds it.
pub fn try_lock_exclusive(file: &impl AsFd) -> io::Result<bool> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Takes descriptor `fd`, inherited across exec from the parent, as this
/// process's own, checking it is an open socket and marking it
/// close-on-exec so children never inherit it.
pub fn take_inherited_socket(fd: c_int) -> io::Result<OwnedFd> {
    take_inherited(fd, FileType::Socket)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket"),
        )
    })
}

/// Takes ownership of inherited descriptor `fd` if it is open and a pipe
/// (as a readiness pipe handed over at exec is); None otherwise.
pub fn take_inherited_fd(fd: c_int) -> Option<OwnedFd> {
    take_inherited(fd, FileType::Fifo).ok().flatten()
}

/// Takes inherited descriptor `fd` as this process's own, close-on-exec,
/// when it is open and of type `kind`; None when it is of another type.
fn take_inherited(fd: c_int, kind: FileType) -> io::Result<Option<OwnedFd>> {
    // SAFETY: the borrow lasts for the one fstat below, which only asks the
    // kernel about the number: a closed one makes it fail with EBADF.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let stat = rustix::fs::fstat(borrowed)?;
    if FileType::from_raw_mode(stat.st_mode) != kind {
        return Ok(None);
    }
    rustix::io::fcntl_setfd(borrowed, FdFlags::CLOEXEC)?;
    // SAFETY: the descriptor is open (fstat succeeded) and nothing else in
    // this process owns it: it was inherited across exec for this caller.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `pipe2(2)` with `O_CLOEXEC`: (read end, write end). (std's
/// `io::pipe` is newer than the crate's minimum Rust version.)
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Linux's real-time signals, `SIGRTMIN` (before libc takes its own) to
/// `SIGRTMAX`: rustix names only the others.
const REALTIME_SIGNALS: std::ops::RangeInclusive<i32> = 32..=64;

/// This process's pid, or its process group's id when `group`.
fn own_pid(group: bool) -> Pid {
    if group {
        rustix::process::getpgrp()
    } else {
        rustix::process::getpid()
    }
}

/// `kill(2)`: sends `signal` to process `pid`, or to process group `-pid`
/// when `pid` is negative; signal 0 only checks that it may. Refuses 0
/// (the caller's own group) and -1 (every process it may signal): no
/// caller means those.
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    let Some(target) = pid
        .checked_abs()
        .and_then(Pid::from_raw)
        .filter(|_| pid != -1)
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}, which means more than one process"),
        ));
    };
    let group = pid < 0;
    if signal == 0 {
        return Ok(if group {
            rustix::process::test_kill_process_group(target)
        } else {
            rustix::process::test_kill_process(target)
        }?);
    }
    let signal = match Signal::from_named_raw(signal) {
        Some(named) => named,
        None if REALTIME_SIGNALS.contains(&signal) && target != own_pid(group) => {
            // SAFETY: a real-time signal number, so valid and non-zero; it
            // goes to another process or group (checked just above), never
            // to this one, whose libc reserves some of those numbers.
            unsafe { Signal::from_raw_unchecked(signal) }
        }
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{signal} is not a signal number"),
            ));
        }
    };
    Ok(if group {
        rustix::process::kill_process_group(target, signal)
    } else {
        rustix::process::kill_process(target, signal)
    }?)
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
/// children at all. (The kernel looks at every child for it.)
pub fn reap_any() -> io::Result<Option<(u32, ExitStatusKind, Usage)>> {
    reap(-1)
}

/// `wait4(pid, WNOHANG)`: reaps child `pid` if it has exited, with what
/// it used; the kernel looks at that child alone. `None` while it runs,
/// or when it is no child of this process.
pub fn reap_child(pid: u32) -> io::Result<Option<(u32, ExitStatusKind, Usage)>> {
    match i32::try_from(pid) {
        Ok(pid) if pid > 0 => reap(pid),
        _ => Ok(None),
    }
}

/// `wait4(which, WNOHANG)`, retried on EINTR and on stops and continues.
fn reap(which: c_int) -> io::Result<Option<(u32, ExitStatusKind, Usage)>> {
    loop {
        let mut status: c_int = 0;
        let mut usage = MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `status` and `usage` are live, writable values of the
        // types wait4 fills, for the whole call.
        let pid = unsafe { libc::wait4(which, &mut status, libc::WNOHANG, usage.as_mut_ptr()) };
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
/// service's configuration names them (a [`Rlimit`] carries the number,
/// `resource as u32`).
pub const RLIMITS: [(&str, Resource); 16] = [
    ("as", Resource::As),
    ("core", Resource::Core),
    ("cpu", Resource::Cpu),
    ("data", Resource::Data),
    ("fsize", Resource::Fsize),
    ("locks", Resource::Locks),
    ("memlock", Resource::Memlock),
    ("msgqueue", Resource::Msgqueue),
    ("nice", Resource::Nice),
    ("nofile", Resource::Nofile),
    ("nproc", Resource::Nproc),
    ("rss", Resource::Rss),
    ("rtprio", Resource::Rtprio),
    ("rttime", Resource::Rttime),
    ("sigpending", Resource::Sigpending),
    ("stack", Resource::Stack),
];

/// The resource of `RLIMIT_*` number `number`, if [`RLIMITS`] has it.
fn resource(number: u32) -> Option<Resource> {
    RLIMITS
        .iter()
        .find(|(_, resource)| *resource as u32 == number)
        .map(|(_, resource)| *resource)
}

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
pub fn getrlimit(number: u32) -> io::Result<(u64, u64)> {
    let resource = resource(number).ok_or_else(|| io::Error::from(Errno::INVAL))?;
    let value = rustix::process::getrlimit(resource);
    let or_infinity = |limit: Option<u64>| limit.unwrap_or(RLIM_INFINITY);
    Ok((or_infinity(value.current), or_infinity(value.maximum)))
}

/// The name of rlimit `resource` in [`RLIMITS`], or its number.
pub fn rlimit_name(number: u32) -> String {
    RLIMITS
        .iter()
        .find(|(_, resource)| *resource as u32 == number)
        .map_or_else(|| number.to_string(), |(name, _)| (*name).to_owned())
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

/// What a child does between its clone and its exec, after `setsid`, in this
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

/// The stack of a child between its clone and its exec: it only runs
/// `child_main`, system calls and a 1 KiB buffer.
const CHILD_STACK: usize = 64 * 1024;

/// Everything a child needs between its clone and its exec, prepared by
/// the caller beforehand (allocations, lookups, the path search), so
/// that the child itself only makes system calls (see [`spawn`]).
#[derive(Debug, Default)]
pub struct ChildPlan<'a> {
    /// The paths to exec, tried in order while they are not found or not
    /// executable (as `execvp` tries `PATH`).
    pub programs: Vec<CString>,
    /// Its arguments, the first the program as it was named.
    pub args: Vec<CString>,
    /// Its whole environment, `NAME=value` each.
    pub env: Vec<CString>,
    /// Its stdin, stdout and stderr; None keeps the spawner's.
    pub stdio: [Option<OwnedFd>; 3],
    /// The directory it changes to.
    pub work_dir: Option<CString>,
    /// Where it appends its own `/proc/self/stat` line, in one
    /// `write(2)`, before it execs: its pid and start time, written by
    /// the child itself, for the spawner's record (`spawner/record.rs`).
    /// Best effort: a child that cannot read its stat still execs.
    pub stat_to: Option<BorrowedFd<'a>>,
    /// A descriptor the program gets under this number, without
    /// `FD_CLOEXEC`: a readiness pipe's write end.
    pub pass: Option<(OwnedFd, c_int)>,
    /// Its cgroups, rlimits and ids.
    pub setup: ChildSetup,
}

/// A child being started: its plan, with the pointer arrays `execve`
/// takes and the rlimits in rustix's form, built before the clone.
struct Cloned<'p, 'a> {
    plan: &'p ChildPlan<'a>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    rlimits: Vec<(Resource, rustix::process::Rlimit)>,
    /// The errno of the step that failed, written by the child before it
    /// exits; 0 while none did.
    failure: AtomicI32,
}

/// Starts the child `plan` describes and returns its pid once it runs
/// its program. Like `posix_spawn`, it clones with `CLONE_VM |
/// CLONE_VFORK`: the child borrows the spawner's memory until its exec,
/// while the calling thread waits, instead of `fork` copying the page
/// tables of the whole node (in thread mode, of every thread's memory)
/// and leaving the node to take a copy-on-write fault on each page it
/// writes next — costs that grow with the node. Between the clone and
/// the exec the child, in this order: resets every caught signal to its
/// default (it shares the spawner's memory, so no handler of the node may
/// run in it), takes its stdio, enters its work dir, calls `setsid` (it
/// leads a new session and process group, whose id is its pid, with no
/// controlling terminal, so a signal to the group reaches its whole
/// tree), appends its stat line to `stat_to`, carries out `setup` (see
/// [`ChildSetup`]), gets `pass`'s descriptor, unblocks every signal and
/// execs. When a step fails, that step's error is returned and the child,
/// which exited, is reaped.
pub fn spawn(plan: &ChildPlan<'_>) -> io::Result<u32> {
    if plan.programs.is_empty() {
        return Err(Errno::NOENT.into());
    }
    let rlimits = plan
        .setup
        .rlimits
        .iter()
        .map(|limit| {
            let finite = |value: u64| (value != RLIM_INFINITY).then_some(value);
            let value = rustix::process::Rlimit {
                current: finite(limit.soft),
                maximum: finite(limit.hard),
            };
            Ok((resource(limit.resource).ok_or(Errno::INVAL)?, value))
        })
        .collect::<Result<Vec<_>, Errno>>()?;
    let null_ended = |strings: &[CString]| -> Vec<*const c_char> {
        strings
            .iter()
            .map(|string| string.as_ptr())
            .chain(std::iter::once(ptr::null()))
            .collect()
    };
    let child = Cloned {
        plan,
        argv: null_ended(&plan.args),
        envp: null_ended(&plan.env),
        rlimits,
        failure: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    let end = stack.as_mut_ptr_range().end;
    let top = end.wrapping_sub(end.addr() % 16);
    let mut blocked = MaybeUninit::<libc::sigset_t>::uninit();
    let mut before = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset fills the set it is given, and pthread_sigmask
    // reads that filled set and writes the old mask into `before`. Every
    // signal is blocked in this thread until the child has exec'd: a
    // signal arriving in the child before it reset its handlers would run
    // a handler of the node's on the memory it shares with the node.
    let before = unsafe {
        libc::sigfillset(blocked.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, blocked.as_ptr(), before.as_mut_ptr());
        before.assume_init()
    };
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: the child runs `child_main` on `stack`, which outlives it
    // here: with CLONE_VFORK, clone returns only once the child has
    // exec'd or exited, and `stack` and `child` are dropped after. `top`
    // is the stack's 16-byte aligned end (stacks grow down). The child
    // only reads `child` (which nothing changes meanwhile: this thread
    // waits) and writes its atomic `failure`.
    let pid = unsafe {
        libc::clone(
            child_main,
            top.cast(),
            flags,
            (&raw const child).cast_mut().cast(),
        )
    };
    let cloned = if pid == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid.unsigned_abs())
    };
    // SAFETY: restores this thread's mask from a set pthread_sigmask wrote.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, ptr::null_mut());
    }
    drop(stack);
    let pid = cloned?;
    match child.failure.load(Ordering::Acquire) {
        0 => Ok(pid),
        errno => {
            let _ = wait_for_child(pid);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child of [`spawn`], on its own stack in the spawner's memory:
/// never returns, and neither allocates nor takes a lock.
extern "C" fn child_main(child: *mut std::ffi::c_void) -> c_int {
    // SAFETY: `spawn` passes a pointer to its `Cloned`, alive until clone
    // returns there, after this child has exec'd or exited.
    let child = unsafe { &*child.cast::<Cloned<'_, '_>>() };
    let failed = match child.prepare() {
        Ok(()) => child.exec(),
        Err(errno) => errno,
    };
    child
        .failure
        .store(failed.raw_os_error(), Ordering::Release);
    // SAFETY: `_exit` ends the child at once, without running the exit
    // handlers or flushing the buffers of the memory it shares with the
    // node.
    unsafe { libc::_exit(127) }
}

impl Cloned<'_, '_> {
    /// Everything the child does before its exec (see [`spawn`]).
    fn prepare(&self) -> Result<(), Errno> {
        default_signal_handlers();
        for (target, fd) in (0..).zip(&self.plan.stdio) {
            if let Some(fd) = fd {
                give_fd(fd.as_raw_fd(), target)?;
            }
        }
        if let Some(dir) = &self.plan.work_dir {
            rustix::process::chdir(dir.as_c_str())?;
        }
        rustix::process::setsid()?;
        if let Some(fd) = self.plan.stat_to {
            write_own_stat(fd);
        }
        for procs in &self.plan.setup.cgroup_procs {
            if rustix::io::write(procs, b"0")? != 1 {
                return Err(Errno::IO);
            }
        }
        for (resource, value) in &self.rlimits {
            rustix::process::setrlimit(*resource, *value)?;
        }
        // rustix's id changes are per-thread system calls: the child is a
        // process of one thread, so they change all of it.
        if let Some(ids) = self.plan.setup.ids {
            if rustix::process::getuid().is_root() {
                rustix::thread::set_thread_groups(&[])?;
            }
            rustix::thread::set_thread_gid(rustix::process::Gid::from_raw_unchecked(ids.gid))?;
            rustix::thread::set_thread_uid(rustix::process::Uid::from_raw_unchecked(ids.uid))?;
        }
        if let Some((fd, target)) = &self.plan.pass {
            give_fd(fd.as_raw_fd(), *target)?;
        }
        let mut none = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset fills the set, which sigprocmask then reads:
        // the program starts with no signal blocked, as std gives it.
        unsafe {
            libc::sigemptyset(none.as_mut_ptr());
            libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), ptr::null_mut());
        }
        Ok(())
    }

    /// Execs the first program that can be run; the error if none could.
    fn exec(&self) -> Errno {
        let mut failed = Errno::NOENT;
        let mut denied = false;
        for program in &self.plan.programs {
            // SAFETY: `program` is a C string and `argv`/`envp` arrays of C
            // strings ended by a null pointer, all alive in the memory the
            // child shares with `spawn`, which waits.
            unsafe {
                libc::execve(program.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
            }
            failed = Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::NOEXEC);
            match failed {
                Errno::ACCESS => denied = true,
                Errno::NOENT | Errno::NOTDIR | Errno::STALE | Errno::NODEV | Errno::TIMEDOUT => {}
                _ => return failed,
            }
        }
        if denied { Errno::ACCESS } else { failed }
    }
}

/// Resets every signal the node catches to its default action, in a
/// child about to exec (SIGPIPE too, which Rust ignores and std's
/// children get back); signals ignored otherwise stay ignored.
fn default_signal_handlers() {
    for signal in 1..=libc::SIGRTMAX() {
        let mut old = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: sigaction only reads the disposition into `old` (a
        // zeroed sigaction is valid: plain integers and a null-able
        // pointer); it refuses the numbers glibc keeps for itself.
        if unsafe { libc::sigaction(signal, ptr::null(), old.as_mut_ptr()) } != 0 {
            continue;
        }
        // SAFETY: filled in by sigaction just above.
        let handler = unsafe { old.assume_init_ref() }.sa_sigaction;
        if handler == libc::SIG_DFL || (handler == libc::SIG_IGN && signal != libc::SIGPIPE) {
            continue;
        }
        let mut default = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: a zeroed sigaction is the default action, SIG_DFL (0),
        // with no flags and an empty mask.
        unsafe {
            libc::sigaction(signal, default.as_mut_ptr(), ptr::null_mut());
        }
    }
}

/// Makes `source` this process's descriptor `target`, without
/// `FD_CLOEXEC` (when it already is `target`, `dup2` would leave the flag
/// set, so the flag is cleared instead). Async-signal-safe.
fn give_fd(source: c_int, target: c_int) -> Result<(), Errno> {
    // SAFETY: `dup2` and `fcntl` on descriptor numbers touch no memory;
    // `source` is open in the caller's child until it execs.
    let result = unsafe {
        if source == target {
            libc::fcntl(target, libc::F_SETFD, 0)
        } else {
            libc::dup2(source, target)
        }
    };
    if result == -1 {
        return Err(Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::BADF));
    }
    Ok(())
}

/// Appends this process's `/proc/self/stat` line to `fd` in one write;
/// best effort. Async-signal-safe: raw `open`, `read`, `write` and
/// `close`, a buffer on the stack.
fn write_own_stat(fd: BorrowedFd<'_>) {
    let Ok(stat) = rustix::fs::open(
        c"/proc/self/stat",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let mut buffer = [0u8; 1024];
    let mut length = 0usize;
    while length < buffer.len() {
        match rustix::io::read(&stat, &mut buffer[length..]) {
            Ok(0) | Err(_) => break,
            Ok(read) => length += read,
        }
    }
    drop(stat);
    let _ = rustix::io::write(fd, &buffer[..length]);
}

/// `waitpid(pid, 0)`: waits for child `pid` to end and reaps it.
pub fn wait_for_child(pid: u32) -> io::Result<ExitStatusKind> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(Errno::CHILD)?;
    loop {
        let status = match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => status,
            Ok(None) | Err(Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        };
        if let Some(code) = status.exit_status() {
            return Ok(ExitStatusKind::Code(code));
        }
        if let Some(signal) = status.terminating_signal() {
            return Ok(ExitStatusKind::Signal(signal));
        }
    }
}

/// Marks this process a child subreaper: orphans of its descendants (the
/// grandchildren of a service that double-forks) are re-parented to it
/// rather than to init, so the spawner reaps them and none stays a zombie.
pub fn become_child_subreaper() -> io::Result<()> {
    Ok(rustix::process::set_child_subreaper(Some(
        rustix::process::getpid(),
    ))?)
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
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let page = rustix::param::page_size() as u64;
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
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pid {pid} out of range"),
            )
        })?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Which of `fds` are readable, without waiting: `poll(2)` with a zero
/// timeout. A pidfd is readable once its process ended; a pipe's read end
/// once it holds data or its write ends are all closed.
pub fn readable_fds(fds: &[BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    loop {
        match rustix::event::poll(&mut polled, Some(&NO_WAIT)) {
            Ok(_) => break,
            Err(Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(polled.iter().map(|fd| !fd.revents().is_empty()).collect())
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The effective group id of this process.
pub fn effective_gid() -> u32 {
    rustix::process::getegid().as_raw()
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
    Ok(rustix::thread::set_name(&name)?)
}

/// Looks `name` up in the passwd database (`getpwnam_r`, so through NSS;
/// a static build reads `/etc/passwd` itself, see [`accounts`]).
pub fn lookup_user(name: &str) -> io::Result<Option<UserIds>> {
    #[cfg(target_feature = "crt-static")]
    return c_name(name, "user").and_then(|_| accounts::user(|entry_name, _| entry_name == name));
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
    return c_name(name, "group").and_then(|_| accounts::group(name));
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
    let socket = seqpacket_socket(SocketFlags::NONBLOCK)?;
    rustix::net::bind(&socket, &abstract_address(name)?)?;
    rustix::net::listen(&socket, 16)?;
    Ok(socket)
}

/// A blocking `SOCK_SEQPACKET` socket connected to the abstract name
/// `name`.
pub fn seqpacket_connect(name: &[u8]) -> io::Result<OwnedFd> {
    let socket = seqpacket_socket(SocketFlags::empty())?;
    rustix::net::connect(&socket, &abstract_address(name)?)?;
    Ok(socket)
}

/// Accepts one connection on `listener`, non-blocking and close-on-exec;
/// `None` when none is waiting.
pub fn seqpacket_accept(listener: &impl AsFd) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(socket) => return Ok(Some(socket)),
            Err(Errno::INTR) => {}
            Err(Errno::WOULDBLOCK) => return Ok(None),
            Err(error) => return Err(error.into()),
        }
    }
}

fn seqpacket_socket(flags: SocketFlags) -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | flags,
        None,
    )?)
}

/// The address of abstract name `name` (a leading NUL, then the name).
fn abstract_address(name: &[u8]) -> io::Result<SocketAddrUnix> {
    SocketAddrUnix::new_abstract_name(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("abstract socket name of {} bytes is too long", name.len()),
        )
    })
}

/// Room for the control message of one packet: up to four descriptors
/// (only one is ever sent; more are received, and closed, only from a
/// peer that misbehaves).
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(4));

/// Sends `bytes` as one packet on `socket`, with `fd` as `SCM_RIGHTS`
/// when given; never raises SIGPIPE.
pub fn send_packet(socket: &impl AsFd, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    let fds: &[BorrowedFd<'_>] = fd.as_slice();
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("no room to pass a descriptor"));
    }
    loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// Receives one packet from `socket` into `buffer`: its length (0 at EOF)
/// and the descriptor passed with it, if any (close-on-exec). A packet
/// longer than `buffer` is cut to it.
pub fn recv_packet(socket: &impl AsFd, buffer: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        let mut iov = [IoSliceMut::new(buffer)];
        match rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(message) => break message.bytes,
            Err(Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    };
    // Only the first descriptor is wanted; any others close on drop.
    let passed = control
        .drain()
        .filter_map(|message| match message {
            RecvAncillaryMessage::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .next();
    Ok((received, passed))
}

/// Makes reads on `socket` give up after `timeout` (`SO_RCVTIMEO`), with
/// `WouldBlock`; a zero `timeout` means never.
pub fn set_receive_timeout(socket: &impl AsFd, timeout: std::time::Duration) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_timeout(
        socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(timeout).filter(|timeout| !timeout.is_zero()),
    )?)
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    Ok(rustix::io::ioctl_fionbio(fd, true)?)
}

/// Gives the calling thread the scheduling priority `nice` (-20 to 19;
/// `setpriority(PRIO_PROCESS, 0)`, which Linux applies to the calling
/// thread only).
pub fn set_own_nice(nice: i32) -> io::Result<()> {
    Ok(rustix::process::setpriority_process(None, nice)?)
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
    let flags = OFlags::from_bits_retain(flags as u32) | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, &name, flags, Mode::from_raw_mode(mode))?;
    Ok(fs::File::from(fd))
}

/// `renameat(2)` of `from` to `to`, both in directory `dir`: names are
/// moved, never followed (a link at `to` is replaced, not written through).
pub fn rename_at(dir: &impl AsFd, from: &str, to: &str) -> io::Result<()> {
    let (from, to) = (c_name(from, "file")?, c_name(to, "file")?);
    Ok(rustix::fs::renameat(dir, &from, dir, &to)?)
}

/// `unlinkat(2)` of `name` in directory `dir` (a link is removed, not its
/// target).
pub fn unlink_at(dir: &impl AsFd, name: &str) -> io::Result<()> {
    let name = c_name(name, "file")?;
    Ok(rustix::fs::unlinkat(dir, &name, AtFlags::empty())?)
}

/// The (device, inode) of `name` in directory `dir`, not following a link
/// (`fstatat` with `AT_SYMLINK_NOFOLLOW`).
pub fn identity_at(dir: &impl AsFd, name: &str) -> io::Result<(u64, u64)> {
    let name = c_name(name, "file")?;
    let stat = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok((stat.st_dev, stat.st_ino))
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
    use std::sync::{MutexGuard, PoisonError};

    use super::*;

    /// The spawner's tests in this process reap with `waitpid(-1)`: a
    /// test that starts children of its own holds their lock meanwhile.
    fn serial() -> MutexGuard<'static, ()> {
        crate::spawner::tests::PROCESS_TESTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

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
        assert!(lookup_group("a\0b").is_err());
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
        let _serial = serial();
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
        assert_eq!(peer.gid, effective_gid());
    }

    #[test]
    fn kill_refuses_pids_that_mean_many_processes() {
        assert!(kill(0, 0).is_err());
        assert!(kill(-1, 0).is_err());
        assert!(kill(i32::MIN, 0).is_err());
        kill(std::process::id() as i32, 0).unwrap();
    }

    #[test]
    fn a_real_time_signal_reaches_a_child_but_never_this_process() {
        let _serial = serial();
        let own = std::process::id() as i32;
        assert!(kill(own, 40).is_err());
        assert!(kill(own, 65).is_err());
        assert!(kill(own, -9).is_err());
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        kill(child.id() as i32, 40).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(40)
        );
    }

    #[test]
    fn a_packet_carries_its_descriptor_and_is_cut_to_the_buffer() {
        let name = format!("snow-fox-sys-test-{}", std::process::id());
        let listener = seqpacket_listen(name.as_bytes()).unwrap();
        assert!(
            seqpacket_listen(name.as_bytes()).is_err(),
            "a name held twice"
        );
        assert!(seqpacket_accept(&listener).unwrap().is_none());
        let ours = seqpacket_connect(name.as_bytes()).unwrap();
        let theirs = seqpacket_accept(&listener).unwrap().unwrap();
        assert_eq!(
            peer_credentials(&theirs).unwrap().pid,
            std::process::id() as i32
        );
        assert!(seqpacket_listen(&[b'x'; 200]).is_err());
        let (reader, writer) = pipe().unwrap();
        send_packet(&ours, b"hello, pipe", Some(writer.as_fd())).unwrap();
        drop(writer);
        let mut buffer = [0u8; 5];
        set_nonblocking(&theirs).unwrap();
        let (len, passed) = recv_packet(&theirs, &mut buffer).unwrap();
        assert_eq!((len, &buffer), (5, b"hello"));
        let passed = passed.unwrap();
        let flags = rustix::io::fcntl_getfd(&passed).unwrap();
        assert!(
            flags.contains(FdFlags::CLOEXEC),
            "received fd not close-on-exec"
        );
        rustix::io::write(&passed, b"x").unwrap();
        drop(passed);
        let mut byte = [0u8; 1];
        assert_eq!(rustix::io::read(&reader, &mut byte).unwrap(), 1);
        assert_eq!(
            rustix::io::read(&reader, &mut byte).unwrap(),
            0,
            "a copy stayed open"
        );
        send_packet(&ours, b"bare", None).unwrap();
        let (len, passed) = recv_packet(&theirs, &mut buffer).unwrap();
        assert_eq!((len, passed.is_none()), (4, true));
        assert!(recv_packet(&theirs, &mut buffer).unwrap_err().kind() == io::ErrorKind::WouldBlock);
        assert!(!peer_hung_up(theirs.as_fd()).unwrap());
        drop(ours);
        // A child another test forks at this moment holds a copy of every
        // descriptor until its exec closes them (close-on-exec), so the
        // hang-up may come a moment after the drop: polled, with a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !peer_hung_up(theirs.as_fd()).unwrap() {
            assert!(std::time::Instant::now() < deadline, "no hang-up seen");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(recv_packet(&theirs, &mut buffer).unwrap().0, 0);
    }

    #[test]
    fn an_inherited_descriptor_of_the_wrong_type_is_left_alone() {
        let (reader, _writer) = pipe().unwrap();
        let number = reader.as_raw_fd();
        let error = take_inherited_socket(number).unwrap_err();
        assert!(error.to_string().contains("not a socket"), "{error}");
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(take_inherited_fd(socket.as_raw_fd()).is_none());
        // Both are still open: the refusals took nothing.
        rustix::fs::fstat(&reader).unwrap();
        rustix::fs::fstat(&socket).unwrap();
        assert!(take_inherited_fd(i32::MAX).is_none());
        assert!(take_inherited_socket(i32::MAX).is_err());
    }

    fn c_strings(items: &[&str]) -> Vec<CString> {
        items
            .iter()
            .map(|item| CString::new(*item).unwrap())
            .collect()
    }

    #[test]
    fn a_spawned_child_has_its_limits_ids_session_and_own_stat_record() {
        let _serial = serial();
        let as_root = effective_uid() == 0;
        let nobody = UserIds {
            uid: 65534,
            gid: 65534,
        };
        let (record, record_writer) = pipe().unwrap();
        let (ready, ready_writer) = pipe().unwrap();
        let (output, output_writer) = pipe().unwrap();
        // A number the record's pipe does not hold, which dup2 would close.
        let target = (60..).find(|n| *n != record_writer.as_raw_fd()).unwrap();
        let script = format!(
            "ulimit -n; id -u; id -G; ps -o sid= -p $$; pwd; echo $SF_TEST; \
             grep -E '^Sig(Blk|Ign)' /proc/self/status; echo up >&{target}"
        );
        let plan = ChildPlan {
            // The first is not found, so the second runs (as execvp would).
            programs: c_strings(&["/nonexistent/bash", "/bin/bash"]),
            args: c_strings(&["bash", "-c", &script]),
            env: c_strings(&["SF_TEST=given", "PATH=/usr/bin:/bin"]),
            stdio: [None, Some(output_writer), None],
            work_dir: Some(CString::new("/tmp").unwrap()),
            stat_to: Some(record_writer.as_fd()),
            pass: Some((ready_writer, target)),
            setup: ChildSetup {
                cgroup_procs: Vec::new(),
                rlimits: vec![Rlimit {
                    resource: Resource::Nofile as u32,
                    soft: 77,
                    hard: 78,
                }],
                ids: as_root.then_some(nobody),
            },
        };
        let pid = spawn(&plan).unwrap();
        drop(plan);
        drop(record_writer);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut fs::File::from(output), &mut text).unwrap();
        assert_eq!(wait_for_child(pid).unwrap(), ExitStatusKind::Code(0));
        let lines: Vec<String> = text.lines().map(|line| line.trim().to_owned()).collect();
        let (uid, groups) = if as_root {
            ("65534".to_owned(), "65534".to_owned())
        } else {
            (effective_uid().to_string(), lines[2].clone())
        };
        // Nothing blocked, and only what this test process ignores is
        // ignored, but for SIGPIPE, which Rust ignores and children get
        // back: the node's own signal state stays its own.
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let own = status
            .lines()
            .find_map(|line| line.strip_prefix("SigIgn:"))
            .unwrap();
        let pipe_bit = 1u64 << (libc::SIGPIPE - 1);
        let ignored = u64::from_str_radix(own.trim(), 16).unwrap() & !pipe_bit;
        let ignored = format!("SigIgn:\t{ignored:016x}");
        assert_eq!(
            lines,
            [
                "77",
                &uid,
                &groups,
                &pid.to_string(),
                "/tmp",
                "given",
                "SigBlk:\t0000000000000000",
                &ignored,
            ]
        );
        let mut text = String::new();
        std::io::Read::read_to_string(&mut fs::File::from(ready), &mut text).unwrap();
        assert_eq!(text, "up\n");
        let mut stat = String::new();
        std::io::Read::read_to_string(&mut fs::File::from(record), &mut stat).unwrap();
        assert!(stat.starts_with(&format!("{pid} (")), "{stat:?}");
        assert!(parse_start_time(&stat).is_some(), "{stat:?}");
    }

    #[test]
    fn a_child_that_cannot_exec_or_set_up_is_an_error_and_is_reaped() {
        let _serial = serial();
        let unknown_limit = ChildPlan {
            programs: c_strings(&["/bin/true"]),
            args: c_strings(&["true"]),
            setup: ChildSetup {
                rlimits: vec![Rlimit {
                    resource: 999,
                    soft: 1,
                    hard: 1,
                }],
                ..ChildSetup::default()
            },
            ..ChildPlan::default()
        };
        assert_eq!(
            spawn(&unknown_limit).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        let missing = ChildPlan {
            programs: c_strings(&["/nonexistent/a", "/nonexistent/b"]),
            args: c_strings(&["a"]),
            ..ChildPlan::default()
        };
        assert_eq!(
            spawn(&missing).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        let bad_dir = ChildPlan {
            programs: c_strings(&["/bin/true"]),
            args: c_strings(&["true"]),
            work_dir: Some(CString::new("/nonexistent").unwrap()),
            ..ChildPlan::default()
        };
        assert_eq!(
            spawn(&bad_dir).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        // Each failed child was reaped: none is left to wait for.
        assert_eq!(reap_any().unwrap(), None);
    }

    #[test]
    fn own_usage_is_counted_in_whole_pages() {
        let page = rustix::param::page_size() as u64;
        assert!(page >= 4096 && page.is_power_of_two(), "page size {page}");
        let (_, rss) = process_usage(std::process::id()).unwrap();
        assert!(rss > 0 && rss % page == 0, "rss {rss}");
    }

    #[test]
    fn rlimits_are_read_by_number_and_unknown_numbers_refused() {
        let limits = fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (soft, hard) = getrlimit(Resource::Nofile as u32).unwrap();
        assert_eq!(fields[3..5], [soft.to_string(), hard.to_string()]);
        assert!(getrlimit(999).is_err());
        assert_eq!(rlimit_name(Resource::Nofile as u32), "nofile");
        assert_eq!(rlimit_name(999), "999");
    }
}
