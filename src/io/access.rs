//! Who may connect: root, the node's own user, the users of `allow_users`
//! and the members of `allow_groups`, decided from the peer credentials the
//! kernel recorded at `connect()`. Names are resolved once, at start.

use crate::sys::{self, PeerCredentials};

use super::IoError;

/// The resolved allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Root, the node's effective user and the `allow_users`.
    uids: Vec<u32>,
    /// The `allow_groups`, the first one owning the socket.
    gids: Vec<u32>,
    /// The node's own user.
    own_uid: u32,
}

impl Access {
    /// Resolves `allow_users` and `allow_groups` (names, or numeric ids) to
    /// ids, for a node running as `own_uid`. A name the databases do not
    /// know is an error: a typo must not silently lock someone out, or let
    /// nobody in.
    pub fn resolve(users: &[String], groups: &[String], own_uid: u32) -> Result<Access, IoError> {
        let mut uids = vec![0, own_uid];
        for name in users {
            uids.push(resolve_id(name, "allow_users", |name| {
                sys::lookup_user(name).map(|user| user.map(|user| user.uid))
            })?);
        }
        let gids = groups
            .iter()
            .map(|name| resolve_id(name, "allow_groups", sys::lookup_group))
            .collect::<Result<Vec<u32>, IoError>>()?;
        uids.sort_unstable();
        uids.dedup();
        Ok(Access {
            uids,
            gids,
            own_uid,
        })
    }

    /// Whether `peer` may use the node.
    pub fn allows(&self, peer: &PeerCredentials) -> bool {
        self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
            || peer.groups.iter().any(|gid| self.gids.contains(gid))
    }

    /// The group that owns the socket (mode 0660), if groups are allowed.
    pub fn socket_group(&self) -> Option<u32> {
        self.gids.first().copied()
    }

    /// Whether anyone beyond root and the node's user is allowed, so the
    /// socket must be reachable by others and peer credentials decide.
    pub fn admits_others(&self) -> bool {
        !self.gids.is_empty() || self.uids.iter().any(|&uid| uid != 0 && uid != self.own_uid)
    }
}

/// A name's id from `lookup`, or the name itself when it is a number.
fn resolve_id(
    name: &str,
    key: &'static str,
    lookup: impl Fn(&str) -> std::io::Result<Option<u32>>,
) -> Result<u32, IoError> {
    let unknown = |source| IoError::Allow {
        key,
        name: name.to_owned(),
        source,
    };
    match lookup(name) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => name.parse().map_err(|_| unknown(None)),
        Err(error) => Err(unknown(Some(error))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> PeerCredentials {
        PeerCredentials {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_and_the_nodes_user_are_always_allowed() {
        let access = Access::resolve(&[], &[], sys::effective_uid()).unwrap();
        assert!(access.allows(&peer(0, 0, &[])));
        assert!(access.allows(&peer(sys::effective_uid(), 12345, &[])));
        assert!(!access.allows(&peer(54321, 54321, &[54321])));
        assert_eq!(access.socket_group(), None);
        assert!(!access.admits_others());
    }

    #[test]
    fn users_by_name_or_number_and_groups_by_any_membership() {
        let users = ["root".to_owned(), "4242".to_owned()];
        let groups = ["root".to_owned(), "777".to_owned()];
        let access = Access::resolve(&users, &groups, sys::effective_uid()).unwrap();
        assert!(access.allows(&peer(4242, 1, &[])));
        assert!(access.allows(&peer(5000, 777, &[])));
        assert!(access.allows(&peer(5000, 5000, &[9, 777])));
        assert!(!access.allows(&peer(5000, 5000, &[9])));
        assert_eq!(access.socket_group(), Some(0));
        assert!(access.admits_others());
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_it() {
        let error = Access::resolve(&["sf-no-such-user".to_owned()], &[], 0).unwrap_err();
        assert!(error.to_string().contains("sf-no-such-user"), "{error}");
        let error = Access::resolve(&[], &["sf-no-such-group".to_owned()], 0).unwrap_err();
        assert!(error.to_string().contains("allow_groups"), "{error}");
    }
}
