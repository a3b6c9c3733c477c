//! What the integration tests and the benches both need: temporary
//! directories and polling with a deadline (never a fixed sleep to wait
//! for something). The benches include this file by path.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sf-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` every `interval` until it returns `Some`, panicking once
/// `limit` has passed.
pub fn poll_until<T>(
    what: &str,
    limit: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(interval);
    }
}

/// The pids of processes whose whole argv is `argv`, from /proc: how the
/// cluster tests and the failover bench find their own `sleep`s.
pub fn processes_running(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|arg| [arg.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            (fs::read(entry.path().join("cmdline")).ok()? == wanted).then_some(pid)
        })
        .collect()
}

/// The bytes in the log file `base` and its rotated siblings (`base.N`).
pub fn stream_bytes(base: &Path) -> u64 {
    let name = base.file_name().unwrap().to_str().unwrap();
    fs::read_dir(base.parent().unwrap())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| {
                    entry
                        .file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(name))
                })
                .filter_map(|entry| entry.metadata().ok())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The fields of a /proc `stat` file after the command name, which is in
/// parentheses and may itself hold spaces and parentheses: `[0]` is the
/// state, `[1]` the parent, `[3]` the session, `[11]` and `[12]` utime and
/// stime. None when the file cannot be read (the process is gone).
pub fn stat_fields(path: &Path) -> Option<Vec<String>> {
    let stat = fs::read_to_string(path).ok()?;
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// [`stat_fields`] of process `pid`.
pub fn pid_stat(pid: u32) -> Option<Vec<String>> {
    stat_fields(Path::new(&format!("/proc/{pid}/stat")))
}

/// utime + stime of a /proc `stat` file, in clock ticks (100 a second on
/// Linux); 0 when it cannot be read.
pub fn stat_cpu_ticks(path: &Path) -> u64 {
    let fields = stat_fields(path).unwrap_or_default();
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}
