//! Where things go when the configuration does not say: one rule, used by
//! the node and by the client, so both find the same socket.
//!
//! Root uses the system directories (`/run`, `/var/lib`, `/var/log`).
//! Anyone else uses the XDG directories, then `$HOME`, then a private
//! directory in `/tmp` named after the user id. An XDG or `HOME` variable
//! that is unset, empty or relative is ignored, as the XDG specification
//! asks. Whoever creates `/tmp/snow-fox-$UID` must make it mode 0700 and
//! check that an existing one belongs to the user: another user could have
//! made it first.

use std::env;
use std::path::{Path, PathBuf};

use crate::sys;

/// The default log file of stream `stream` (`stdout` or `stderr`) of
/// instance `index` of service `id`: `<log_dir>/<id>.<index>.<stream>.log`.
/// The node writes it and `snow-fox-client logs` reads it.
pub fn log_file(log_dir: &Path, id: &str, index: u32, stream: &str) -> PathBuf {
    log_dir.join(format!("{id}.{index}.{stream}.log"))
}

/// The listening socket's default path.
pub fn default_socket_path() -> PathBuf {
    Environment::current().socket_path()
}

/// The default directory for the node's state.
pub fn default_state_dir() -> PathBuf {
    Environment::current().state_dir()
}

/// The default `spawner_state_dir` beside `state_dir`: its name with
/// `-spawner` appended (`/var/lib/snow-fox-spawner`).
pub fn spawner_state_dir(state_dir: &Path) -> PathBuf {
    let mut name = state_dir.as_os_str().to_owned();
    name.push("-spawner");
    PathBuf::from(name)
}

/// The default directory for service logs.
pub fn default_log_dir() -> PathBuf {
    Environment::current().log_dir()
}

/// What the rule depends on, read once so the rule itself is pure.
struct Environment {
    uid: u32,
    runtime_dir: Option<PathBuf>,
    state_home: Option<PathBuf>,
    home: Option<PathBuf>,
}

impl Environment {
    fn current() -> Environment {
        Environment {
            uid: sys::effective_uid(),
            runtime_dir: absolute_path_from("XDG_RUNTIME_DIR"),
            state_home: absolute_path_from("XDG_STATE_HOME"),
            home: absolute_path_from("HOME"),
        }
    }

    fn is_root(&self) -> bool {
        self.uid == 0
    }

    fn socket_path(&self) -> PathBuf {
        let dir = if self.is_root() {
            PathBuf::from("/run/snow-fox")
        } else if let Some(runtime_dir) = &self.runtime_dir {
            runtime_dir.clone()
        } else {
            self.private_tmp_dir()
        };
        dir.join("snow-fox.sock")
    }

    fn state_dir(&self) -> PathBuf {
        if self.is_root() {
            PathBuf::from("/var/lib/snow-fox")
        } else if let Some(state_home) = &self.state_home {
            state_home.join("snow-fox")
        } else if let Some(home) = &self.home {
            home.join(".local/state/snow-fox")
        } else {
            self.private_tmp_dir().join("state")
        }
    }

    fn log_dir(&self) -> PathBuf {
        if self.is_root() {
            PathBuf::from("/var/log/snow-fox")
        } else {
            self.state_dir().join("log")
        }
    }

    fn private_tmp_dir(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/snow-fox-{}", self.uid))
    }
}

fn absolute_path_from(variable: &str) -> Option<PathBuf> {
    env::var_os(variable)
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
}

/// How much of the end of a file [`tail_lines`] reads.
const TAIL_BYTES: u64 = 8192;
/// How long a line [`tail_lines`] keeps, in characters.
const TAIL_LINE_CHARS: usize = 200;

/// The last `count` non-empty lines of the regular file at `path` (each
/// cut at 200 characters), for a failed start's reason and `status ID`;
/// `None` when there is no such file or nothing in it. It is opened
/// without following a symlink and without blocking (a FIFO put in its
/// place would hang the reader), and only its last 8 KiB are read.
pub fn tail_lines(path: &Path, count: usize) -> Option<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let metadata = file.metadata().ok()?;
    if !metadata.is_file() {
        return None;
    }
    let from = metadata.len().saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text
        .lines()
        // A read from the middle starts inside a line.
        .skip(usize::from(from > 0))
        .map(str::trim_end)
        .filter(|line| !line.is_empty())
        .map(|line| line.chars().take(TAIL_LINE_CHARS).collect())
        .collect();
    let keep = lines.len().saturating_sub(count);
    lines.drain(..keep);
    (!lines.is_empty()).then_some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(
        runtime_dir: Option<&str>,
        state_home: Option<&str>,
        home: Option<&str>,
    ) -> Environment {
        Environment {
            uid: 1000,
            runtime_dir: runtime_dir.map(PathBuf::from),
            state_home: state_home.map(PathBuf::from),
            home: home.map(PathBuf::from),
        }
    }

    #[test]
    fn root_uses_the_system_directories() {
        let root = Environment {
            uid: 0,
            ..user(Some("/run/user/0"), Some("/root/.state"), Some("/root"))
        };
        assert_eq!(
            root.socket_path(),
            PathBuf::from("/run/snow-fox/snow-fox.sock")
        );
        assert_eq!(root.state_dir(), PathBuf::from("/var/lib/snow-fox"));
        assert_eq!(root.log_dir(), PathBuf::from("/var/log/snow-fox"));
    }

    #[test]
    fn a_user_with_xdg_directories() {
        let alice = user(Some("/run/user/1000"), Some("/home/a/.st"), Some("/home/a"));
        assert_eq!(
            alice.socket_path(),
            PathBuf::from("/run/user/1000/snow-fox.sock")
        );
        assert_eq!(alice.state_dir(), PathBuf::from("/home/a/.st/snow-fox"));
        assert_eq!(alice.log_dir(), PathBuf::from("/home/a/.st/snow-fox/log"));
    }

    #[test]
    fn a_user_with_only_a_home() {
        let alice = user(None, None, Some("/home/a"));
        assert_eq!(
            alice.socket_path(),
            PathBuf::from("/tmp/snow-fox-1000/snow-fox.sock")
        );
        assert_eq!(
            alice.state_dir(),
            PathBuf::from("/home/a/.local/state/snow-fox")
        );
        assert_eq!(
            alice.log_dir(),
            PathBuf::from("/home/a/.local/state/snow-fox/log")
        );
    }

    #[test]
    fn a_user_with_nothing() {
        let nobody = user(None, None, None);
        assert_eq!(
            nobody.socket_path(),
            PathBuf::from("/tmp/snow-fox-1000/snow-fox.sock")
        );
        assert_eq!(
            nobody.state_dir(),
            PathBuf::from("/tmp/snow-fox-1000/state")
        );
        assert_eq!(
            nobody.log_dir(),
            PathBuf::from("/tmp/snow-fox-1000/state/log")
        );
    }

    #[test]
    fn the_public_rule_reads_this_process() {
        assert_eq!(default_socket_path(), Environment::current().socket_path());
        assert!(default_state_dir().is_absolute());
        assert!(default_log_dir().is_absolute());
    }
}
