//! `--chown` names resolved in the destination's `/etc/passwd` and
//! `/etc/group`, as BuildKit's file op reads them (`readUser`): a user name
//! gives its uid and primary gid, a numeric user gives that number for both,
//! a group (name or number) overrides the gid.
//!
//! One deliberate difference: BuildKit silently uses 0 for a name it cannot
//! find; kiln refuses with an error naming the user and the file, because a
//! file owned by root where the Dockerfile asked for `app` is a security bug
//! waiting to happen (Docker's classic builder refuses too).
//!
//! The passwd and group files are parsed by `kiln_executor::users`, the same
//! code that resolves `USER` for RUN steps.

use kiln_executor::users::{group_id, user_ids};
use kiln_llb::op::{Chown, IdOrName};

/// Why an owner cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unknown user {name:?}: no such entry in {file} of the destination")]
    UnknownUser { name: String, file: &'static str },
    #[error("unknown group {name:?}: no such entry in {file} of the destination")]
    UnknownGroup { name: String, file: &'static str },
}

/// Resolves `chown` against the destination's passwd and group files (their
/// text, `None` when the file does not exist).
pub fn resolve_chown(
    chown: &Chown,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<(u32, u32), UserError> {
    let (uid, mut gid) = match &chown.user {
        IdOrName::Id(n) => (*n, *n),
        IdOrName::Name(name) => {
            passwd
                .and_then(|t| user_ids(t, name))
                .ok_or_else(|| UserError::UnknownUser {
                    name: name.clone(),
                    file: "/etc/passwd",
                })?
        }
    };
    match &chown.group {
        None => {}
        Some(IdOrName::Id(n)) => gid = *n,
        Some(IdOrName::Name(name)) => {
            gid = group
                .and_then(|t| group_id(t, name))
                .ok_or_else(|| UserError::UnknownGroup {
                    name: name.clone(),
                    file: "/etc/group",
                })?;
        }
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n#comment\nbin:x:2:3:bin:/bin:/bin/sh\napp:x:1000:1001::/srv:/bin/sh\n";
    const GROUP: &str = "root:x:0:\ndaemon:x:1:\napp:x:1001:\n";

    fn chown(user: &str, group: Option<&str>) -> Chown {
        Chown {
            user: IdOrName::parse(user),
            group: group.map(IdOrName::parse),
        }
    }

    #[test]
    fn as_buildkit() {
        let r = |c: Chown| resolve_chown(&c, Some(PASSWD), Some(GROUP));
        assert_eq!(r(chown("bin", None)), Ok((2, 3)));
        assert_eq!(r(chown("bin", Some("daemon"))), Ok((2, 1)));
        assert_eq!(r(chown("7", None)), Ok((7, 7)));
        assert_eq!(r(chown("7", Some("9"))), Ok((7, 9)));
        assert_eq!(r(chown("app", Some("app"))), Ok((1000, 1001)));
        assert_eq!(
            r(chown("nosuch", None)),
            Err(UserError::UnknownUser {
                name: "nosuch".into(),
                file: "/etc/passwd"
            })
        );
        assert_eq!(
            r(chown("0", Some("nogroup"))),
            Err(UserError::UnknownGroup {
                name: "nogroup".into(),
                file: "/etc/group"
            })
        );
        assert_eq!(resolve_chown(&chown("1", None), None, None), Ok((1, 1)));
    }
}
