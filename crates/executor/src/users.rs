//! The user a RUN step runs as: `USER name`, `uid`, `name:group`, `uid:gid`
//! resolved in the container's `/etc/passwd` and `/etc/group`, with the rules
//! of `moby/sys/user.GetExecUser` as BuildKit uses them (checked against
//! BuildKit: `USER 1234` is uid 1234, gid 0, HOME `/`; `USER app` gets app's
//! primary group, its supplementary groups from `/etc/group` membership and
//! its home; an explicit group means no supplementary groups). The primary
//! gid is always one of the supplementary groups too, as BuildKit's
//! `ensureAdditionalGids` makes it since v0.11 (CVE-2023-25173: without it a
//! process could use its supplementary groups to bypass primary-group
//! restrictions).
//!
//! Pure functions on file contents, so they are tested without a container.

/// Who the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary gid first.
    pub groups: Vec<u32>,
    /// Home directory, for `HOME` when the environment has none.
    pub home: String,
}

/// A user that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("invalid user {0:?}")]
    Invalid(String),
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(GroupEntry {
            name: f.first()?,
            gid: f.get(2)?.parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// The uid and primary gid of user `name` in passwd-format `text`.
pub fn user_ids(text: &str, name: &str) -> Option<(u32, u32)> {
    passwd_entries(text)
        .find(|e| e.name == name)
        .map(|e| (e.uid, e.gid))
}

/// The gid of group `name` in group-format `text`.
pub fn group_id(text: &str, name: &str) -> Option<u32> {
    group_entries(text).find(|e| e.name == name).map(|e| e.gid)
}

fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Resolves `spec` (`""` is root) against the passwd and group texts (`None`
/// when the file does not exist in the image).
pub fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, UserError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let mut out = ExecUser {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        home: "/".to_owned(),
    };
    let mut name: Option<&str> = None;
    if user.is_empty() {
        if let Some(e) = passwd_entries(passwd).find(|e| e.uid == 0) {
            out.gid = e.gid;
            out.home = e.home.to_owned();
            name = Some(e.name);
        } else {
            out.home = "/root".to_owned();
        }
    } else if let Some(uid) = numeric(user) {
        out.uid = uid;
        if let Some(e) = passwd_entries(passwd).find(|e| e.uid == uid) {
            out.gid = e.gid;
            out.home = e.home.to_owned();
            name = Some(e.name);
        }
    } else {
        let e = passwd_entries(passwd)
            .find(|e| e.name == user)
            .ok_or_else(|| UserError::NoUser(user.to_owned()))?;
        out.uid = e.uid;
        out.gid = e.gid;
        out.home = e.home.to_owned();
        name = Some(e.name);
    }
    match grp {
        Some("") => return Err(UserError::Invalid(spec.to_owned())),
        Some(g) => {
            out.gid = match numeric(g) {
                Some(gid) => gid,
                None => {
                    group_entries(group)
                        .find(|e| e.name == g)
                        .ok_or_else(|| UserError::NoGroup(g.to_owned()))?
                        .gid
                }
            };
        }
        None => {
            if let Some(n) = name {
                for e in group_entries(group) {
                    if e.members.contains(&n) && !out.groups.contains(&e.gid) {
                        out.groups.push(e.gid);
                    }
                }
            }
        }
    }
    if !out.groups.contains(&out.gid) {
        out.groups.insert(0, out.gid);
    }
    if out.home.is_empty() {
        out.home = "/".to_owned();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\napp:x:1000:1000::/srv:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\nother:x:3000:root,app\n";

    fn r(spec: &str) -> Result<ExecUser, UserError> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn as_docker_does() {
        assert_eq!(
            r(""),
            Ok(ExecUser {
                uid: 0,
                gid: 0,
                groups: vec![0, 3000],
                home: "/root".into()
            })
        );
        assert_eq!(
            r("nobody"),
            Ok(ExecUser {
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
                home: "/nonexistent".into()
            })
        );
        assert_eq!(
            r("app"),
            Ok(ExecUser {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 2000, 3000],
                home: "/srv".into()
            })
        );
        assert_eq!(
            r("1234"),
            Ok(ExecUser {
                uid: 1234,
                gid: 0,
                groups: vec![0],
                home: "/".into()
            })
        );
        assert_eq!(
            r("1234:55"),
            Ok(ExecUser {
                uid: 1234,
                gid: 55,
                groups: vec![55],
                home: "/".into()
            })
        );
        assert_eq!(
            r("app:extra"),
            Ok(ExecUser {
                uid: 1000,
                gid: 2000,
                groups: vec![2000],
                home: "/srv".into()
            })
        );
        assert_eq!(
            r("1000"),
            Ok(ExecUser {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 2000, 3000],
                home: "/srv".into()
            })
        );
        assert_eq!(r("ghost"), Err(UserError::NoUser("ghost".into())));
        assert_eq!(r("app:ghosts"), Err(UserError::NoGroup("ghosts".into())));
        assert_eq!(
            resolve("", None, None),
            Ok(ExecUser {
                uid: 0,
                gid: 0,
                groups: vec![0],
                home: "/root".into()
            })
        );
    }

    #[test]
    fn primary_gid_is_a_supplementary_group_once() {
        // BuildKit's testUserAdditionalGids, on busybox's files.
        let passwd = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n";
        let group = "root:x:0:\ndaemon:x:1:\nwheel:x:10:root\n";
        let ids = |spec: &str| {
            let u = resolve(spec, Some(passwd), Some(group)).unwrap();
            (u.uid, u.gid, u.groups)
        };
        assert_eq!(ids(""), (0, 0, vec![0, 10]));
        assert_eq!(ids("1234"), (1234, 0, vec![0]));
        assert_eq!(ids("1234:1234"), (1234, 1234, vec![1234]));
        assert_eq!(ids("daemon"), (1, 1, vec![1]));
        // A user listed in its own primary group has it once.
        let group = "root:x:0:root\nwheel:x:10:root\n";
        let u = resolve("root", Some(passwd), Some(group)).unwrap();
        assert_eq!(u.groups, vec![0, 10]);
    }
}
