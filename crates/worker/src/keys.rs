//! Cache keys of LLB ops.
//!
//! ```text
//! key = Key::derive("kiln.cache.v1/<kind>", [definition, input₁, input₂, …])
//! ```
//!
//! * *definition*: the op's canonical kiln-llb encoding with the fields that
//!   must not matter removed (the proxy variables of RUN, which reach the
//!   process but never decide whether a step is cached, as in BuildKit);
//! * *input*: the input's cache key, or — for an input that has none (the
//!   build context, a download) — the content digests of exactly what the op
//!   reads from it, in the order it reads them;
//! * an image source is keyed by the manifest/image digest it resolved to and
//!   its platform only, not by its name: a moved tag is a miss, the same image
//!   under two names is one entry.
//!
//! Architecture invariant: keys never contain a timestamp, an inode number or
//! a host path, so the same build means the same keys on every machine.

use kiln_llb::Digest;
use kiln_llb::op::{Op, SourceOp};
use kiln_solver::Key;

/// Version of the key scheme. It changes when what goes into a key changes,
/// and when what a step makes for the same key changes (a cache written by
/// an older kiln must not be reused): v2, RUN layers no longer keep the
/// directories kiln created only as mount points.
pub const DOMAIN: &str = "kiln.cache.v2";

/// What an op's key says about one of its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputPart {
    /// The input's own cache key.
    Key(Key),
    /// Content digests of what the op reads from an input without a key.
    Content(Vec<Digest>),
}

/// The op as it enters a key: unstable fields cleared.
fn definition(op: &Op) -> Vec<u8> {
    match op {
        Op::Exec(e) if !e.proxy_env.is_empty() => {
            let mut e = e.clone();
            e.proxy_env = Default::default();
            kiln_llb::encode::encode(&Op::Exec(e), &[])
        }
        _ => kiln_llb::encode::encode(op, &[]),
    }
}

/// The key of `op` reading `inputs`.
pub fn op_key(op: &Op, inputs: &[InputPart]) -> Key {
    let def = definition(op);
    let mut owned: Vec<Vec<u8>> = Vec::with_capacity(inputs.len());
    for input in inputs {
        let mut part = Vec::new();
        match input {
            InputPart::Key(k) => {
                part.push(b'k');
                part.extend_from_slice(k.as_bytes());
            }
            InputPart::Content(ds) => {
                part.push(b'c');
                for d in ds {
                    part.extend_from_slice(d.as_bytes());
                }
            }
        }
        owned.push(part);
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + owned.len());
    parts.push(&def);
    parts.extend(owned.iter().map(Vec::as_slice));
    Key::derive(&format!("{DOMAIN}/{}", op.kind()), &parts)
}

/// The key of an image source: its digest and platform.
pub fn image_key(digest: &str, op: &SourceOp) -> Key {
    let platform = match op {
        SourceOp::Image { platform, .. } => platform.format(),
        _ => String::new(),
    };
    Key::derive(
        &format!("{DOMAIN}/image"),
        &[digest.as_bytes(), platform.as_bytes()],
    )
}

/// The key of a downloaded file: its URL, name and content digest (or the
/// checksum the Dockerfile pins).
/// The key of a git source: the remote, the commit it resolved to, the
/// subdirectory and what else shapes the checkout (see [`crate::ops::git`]).
pub fn git_key(remote: &str, commit: &str, subdir: &str, shape: &str) -> Key {
    Key::derive(
        &format!("{DOMAIN}/git"),
        &[
            remote.as_bytes(),
            commit.as_bytes(),
            subdir.as_bytes(),
            shape.as_bytes(),
        ],
    )
}

pub fn http_key(url: &str, filename: &str, content: &str) -> Key {
    Key::derive(
        &format!("{DOMAIN}/http"),
        &[url.as_bytes(), filename.as_bytes(), content.as_bytes()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_llb::op::{ExecOp, Mount, ProxyEnv};

    fn run(proxy: &str) -> Op {
        Op::Exec(ExecOp {
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            mounts: vec![Mount::root(Some(0))],
            network: Default::default(),
            security: Default::default(),
            hostname: String::new(),
            proxy_env: ProxyEnv {
                http_proxy: proxy.into(),
                ..ProxyEnv::default()
            },
            devices: vec![],
            platform: None,
        })
    }

    #[test]
    fn proxies_do_not_matter_inputs_do() {
        let k = Key::derive("x", &[b"base"]);
        let a = op_key(&run(""), &[InputPart::Key(k)]);
        assert_eq!(a, op_key(&run("http://proxy:3128"), &[InputPart::Key(k)]));
        assert_ne!(
            a,
            op_key(&run(""), &[InputPart::Key(Key::derive("x", &[b"other"]))])
        );
        let c = op_key(&run(""), &[InputPart::Content(vec![Digest::of(b"a")])]);
        assert_ne!(a, c);
        assert_ne!(
            c,
            op_key(&run(""), &[InputPart::Content(vec![Digest::of(b"b")])])
        );
    }
}
