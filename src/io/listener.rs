//! The node's UNIX socket: bound once at start, a stale file replaced, a
//! live one refused, the file removed when the node ends. Its mode follows
//! the [`Access`] list: 0600 when only root and the node's user may
//! connect, 0660 owned by the first `allow_groups` group, or 0666 when only
//! `allow_users` widen it (file modes cannot name a list of users; peer
//! credentials decide).

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::net::UnixListener;

use super::Access;
use crate::sys::UserIds;

/// Why the node's socket could not be bound.
#[derive(Debug)]
pub enum ListenError {
    /// Another node answers on the path.
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket's directory belongs to another user (neither root nor
    /// this one).
    ForeignDirectory {
        /// The directory.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
    },
    /// A filesystem or socket call failed.
    Io {
        /// What was being done.
        doing: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::InUse { path } => write!(
                f,
                "another node is already listening on {} (stop it, or give this one --socket)",
                path.display()
            ),
            ListenError::ForeignDirectory { path, owner } => write!(
                f,
                "the socket directory {} belongs to uid {owner}, not to this user or root; \
                 remove it or choose another --socket",
                path.display()
            ),
            ListenError::Io {
                doing,
                path,
                source,
            } => write!(f, "cannot {doing} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ListenError::InUse { .. } | ListenError::ForeignDirectory { .. } => None,
            ListenError::Io { source, .. } => Some(source),
        }
    }
}

/// The bound listening socket. Dropping it removes the socket file, if the
/// file is still the one it bound (another node may have replaced it).
#[derive(Debug)]
pub struct BoundSocket {
    pub(super) listener: UnixListener,
    path: PathBuf,
    identity: (u64, u64),
}

impl BoundSocket {
    /// Binds `path` with the mode `access` calls for, creating its
    /// directory if needed (0700, or 0711 when others are allowed, so they
    /// can reach the socket). A socket file nobody answers on is replaced;
    /// a live one is [`ListenError::InUse`]. With `owner` (root binding for
    /// the unprivileged node process of privilege separation), the socket
    /// is given to that user (and to its group, or the allowed group), and
    /// a directory of that user's is accepted too.
    pub fn bind(
        path: &Path,
        access: &Access,
        owner: Option<UserIds>,
    ) -> Result<BoundSocket, ListenError> {
        let io_error = |doing, source| ListenError::Io {
            doing,
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(if access.admits_others() { 0o711 } else { 0o700 })
                .create(dir)
                .map_err(|source| ListenError::Io {
                    doing: "create the socket directory",
                    path: dir.to_owned(),
                    source,
                })?;
            check_owner(dir, owner.map(|owner| owner.uid))?;
        }
        if path.exists() {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ListenError::InUse {
                        path: path.to_owned(),
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    log::info!("replacing stale socket {}", path.display());
                    fs::remove_file(path)
                        .map_err(|source| io_error("remove the stale socket", source))?;
                }
                Err(source) => return Err(io_error("check the existing socket", source)),
            }
        }
        let listener = UnixListener::bind(path).map_err(|source| io_error("bind", source))?;
        let group = access.socket_group();
        if owner.is_some() || group.is_some() {
            std::os::unix::fs::chown(
                path,
                owner.map(|owner| owner.uid),
                group.or(owner.map(|owner| owner.gid)),
            )
            .map_err(|source| io_error("give the node's user or the allowed group", source))?;
        }
        let mode = match group {
            Some(_) => 0o660,
            None if access.admits_others() => 0o666,
            None => 0o600,
        };
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|source| io_error("set the mode of", source))?;
        let metadata = fs::metadata(path).map_err(|source| io_error("inspect", source))?;
        Ok(BoundSocket {
            listener,
            path: path.to_owned(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Refuses a socket directory that another user (neither root, this user
/// nor `node_uid`) owns: in a shared directory such as `/tmp`, someone
/// else could have created `/tmp/snow-fox-$UID` first and would then
/// control the socket's name.
fn check_owner(dir: &Path, node_uid: Option<u32>) -> Result<(), ListenError> {
    let owner = fs::metadata(dir)
        .map_err(|source| ListenError::Io {
            doing: "inspect the socket directory",
            path: dir.to_owned(),
            source,
        })?
        .uid();
    let us = crate::sys::effective_uid();
    if owner == us || owner == 0 || Some(owner) == node_uid {
        return Ok(());
    }
    Err(ListenError::ForeignDirectory {
        path: dir.to_owned(),
        owner,
    })
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let ours = fs::metadata(&self.path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity);
        if !ours {
            return;
        }
        match fs::remove_file(&self.path) {
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => log::info!(
                "socket {} stays (its directory is root's, and the node process is not): \
                 the next start replaces it",
                self.path.display()
            ),
            Err(error) => log::warn!("cannot remove socket {}: {error}", self.path.display()),
            Ok(()) => {}
        }
    }
}
