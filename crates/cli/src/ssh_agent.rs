//! An SSH agent of kiln's own for `--ssh ID=KEYFILE[,KEYFILE…]`, as
//! BuildKit's `sshprovider` serves key files: the keys are read once, before
//! the build, and served on a socket in a directory only kiln's user can
//! enter; RUN steps reach it through the usual forwarder
//! (`RUN --mount=type=ssh`), as they reach an agent given by its socket.
//!
//! The agent answers two requests of the agent protocol
//! (draft-miller-ssh-agent): the list of identities and a signature; every
//! other request (adding or removing keys, locking, extensions) gets
//! `SSH_AGENT_FAILURE`, so a step can use the keys but not change them.
//!
//! Keys: OpenSSH private key files (`ssh-keygen`'s default: Ed25519, RSA,
//! ECDSA P-256/P-384; read here, see [`openssh_key`]) and PKCS#1 PEM RSA
//! files (`ssh-keygen -m PEM`, read by `rsa`); signatures are made by `ring`,
//! whose RSA and ECDSA are constant-time (the `rsa` crate's private-key
//! operation is not, RUSTSEC-2023-0071, and a step could time many
//! signatures). Passphrase-protected keys are refused: BuildKit asks for
//! the passphrase on a terminal; kiln says to load the key into an agent.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature as sig;

const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENT_IDENTITIES_ANSWER: u8 = 12;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
const SSH_AGENT_SIGN_RESPONSE: u8 = 14;
const SSH_AGENT_RSA_SHA2_256: u32 = 2;
const SSH_AGENT_RSA_SHA2_512: u32 = 4;

/// Largest request read (OpenSSH's agent: 256 KiB).
const MAX_MESSAGE: usize = 256 * 1024;

/// How a key signs.
enum Signer {
    Ed25519(sig::Ed25519KeyPair),
    Rsa(sig::RsaKeyPair),
    Ecdsa {
        pair: sig::EcdsaKeyPair,
        /// `ecdsa-sha2-nistp256`, …
        name: &'static str,
    },
}

/// One key the agent serves.
struct Key {
    /// The public key in the wire format (`string` of the identity).
    blob: Vec<u8>,
    comment: String,
    signer: Signer,
}

/// The keys of one `--ssh` id, read and checked.
pub struct Keys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("count", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Reads the private key files of one `--ssh` id.
pub fn read_keys(files: &[&str]) -> Result<Keys, String> {
    let mut keys = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("reading {f}: {e}"))?;
        keys.push(parse_key(&text).map_err(|e| format!("{f}: {e}"))?);
    }
    Ok(Keys { keys })
}

fn parse_key(text: &str) -> Result<Key, String> {
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        openssh_key(text)
    } else if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        if text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(passphrase());
        }
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        let rsa = rsa::RsaPrivateKey::from_pkcs1_pem(text)
            .map_err(|e| format!("not a valid PEM RSA private key: {e}"))?;
        Ok(Key {
            blob: rsa_blob(&rsa),
            comment: String::new(),
            signer: rsa_signer(&rsa)?,
        })
    } else if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        Err(passphrase())
    } else {
        Err(
            "not a private key kiln can read (OpenSSH `BEGIN OPENSSH PRIVATE KEY` or PEM \
             `BEGIN RSA PRIVATE KEY`; for another format, load the key into ssh-agent and give \
             its socket: --ssh ID=$SSH_AUTH_SOCK)"
                .to_owned(),
        )
    }
}

/// An OpenSSH private key file (OpenSSH's PROTOCOL.key): read here rather
/// than with the `ssh-key` crate, whose 0.6 refuses an ECDSA key whose
/// private scalar has a leading zero byte (one P-256 key in 256 that
/// `ssh-keygen` makes: "length invalid").
fn openssh_key(text: &str) -> Result<Key, String> {
    use base64::Engine as _;
    let bad = |what: &str| format!("not a valid OpenSSH private key: {what}");
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::trim)
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|e| bad(&e.to_string()))?;
    let mut b = raw
        .strip_prefix(b"openssh-key-v1\0".as_slice())
        .ok_or_else(|| bad("no openssh-key-v1 header"))?;
    let truncated = || bad("truncated");
    let cipher = take_string(&mut b).ok_or_else(truncated)?;
    let _kdf = take_string(&mut b).ok_or_else(truncated)?;
    let _kdf_options = take_string(&mut b).ok_or_else(truncated)?;
    if cipher != b"none" {
        return Err(passphrase());
    }
    if take_u32(&mut b).ok_or_else(truncated)? != 1 {
        return Err(bad("more than one key in the file"));
    }
    let blob = take_string(&mut b).ok_or_else(truncated)?.to_vec();
    let mut p = take_string(&mut b).ok_or_else(truncated)?;
    let (c1, c2) = (take_u32(&mut p), take_u32(&mut p));
    if c1.is_none() || c1 != c2 {
        return Err(bad("its check numbers differ"));
    }
    let kind = take_string(&mut p).ok_or_else(truncated)?.to_vec();
    let mut field = || take_string(&mut p).ok_or_else(truncated);
    let rejected = |e: ring::error::KeyRejected| format!("the key is rejected: {e}");
    let signer = match kind.as_slice() {
        b"ssh-ed25519" => {
            let public = field()?;
            let private = field()?;
            let seed = private.get(..32).ok_or_else(truncated)?;
            let pair =
                sig::Ed25519KeyPair::from_seed_and_public_key(seed, public).map_err(rejected)?;
            Signer::Ed25519(pair)
        }
        b"ssh-rsa" => {
            let mut big = || field().map(rsa::BigUint::from_bytes_be);
            let (n, e, d, _iqmp, p1, q) = (big()?, big()?, big()?, big()?, big()?, big()?);
            let rsa = rsa::RsaPrivateKey::from_components(n, e, d, vec![p1, q])
                .map_err(|e| format!("unsupported RSA key: {e}"))?;
            rsa_signer(&rsa)?
        }
        b"ecdsa-sha2-nistp256" | b"ecdsa-sha2-nistp384" => {
            let (alg, size, name) = if kind.as_slice() == b"ecdsa-sha2-nistp256" {
                (
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    32,
                    "ecdsa-sha2-nistp256",
                )
            } else {
                (
                    &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                    48,
                    "ecdsa-sha2-nistp384",
                )
            };
            let _curve = field()?;
            let point = field()?;
            // An mpint: no leading zeros, or one before a set top bit.
            let d = field()?;
            let d = &d[d.iter().take_while(|b| **b == 0).count()..];
            if d.len() > size {
                return Err(bad("the private scalar is too long"));
            }
            let mut scalar = vec![0u8; size - d.len()];
            scalar.extend_from_slice(d);
            let pair = sig::EcdsaKeyPair::from_private_key_and_public_key(
                alg,
                &scalar,
                point,
                &SystemRandom::new(),
            )
            .map_err(rejected)?;
            Signer::Ecdsa { pair, name }
        }
        other => {
            return Err(format!(
                "{} keys are not supported by kiln's agent (Ed25519, RSA, ECDSA P-256 and P-384 \
                 are); load the key into ssh-agent and give its socket: --ssh ID=$SSH_AUTH_SOCK",
                String::from_utf8_lossy(other)
            ));
        }
    };
    let comment = String::from_utf8_lossy(field()?).into_owned();
    Ok(Key {
        blob,
        comment,
        signer,
    })
}

/// Ring's key pair of an RSA key, from its PKCS#1 DER.
fn rsa_signer(rsa: &rsa::RsaPrivateKey) -> Result<Signer, String> {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    let der = rsa
        .to_pkcs1_der()
        .map_err(|e| format!("unsupported RSA key: {e}"))?;
    let pair = sig::RsaKeyPair::from_der(der.as_bytes())
        .map_err(|e| format!("the key is rejected: {e}"))?;
    Ok(Signer::Rsa(pair))
}

/// The public key blob of an RSA key (`ssh-rsa`, e, n), for a PEM file,
/// which holds none (an OpenSSH file gives its own).
fn rsa_blob(rsa: &rsa::RsaPrivateKey) -> Vec<u8> {
    use rsa::traits::PublicKeyParts as _;
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-rsa");
    put_mpint(&mut blob, &rsa.e().to_bytes_be());
    put_mpint(&mut blob, &rsa.n().to_bytes_be());
    blob
}

fn passphrase() -> String {
    "the key is protected by a passphrase, which kiln does not ask for: load it into \
     ssh-agent (ssh-add KEYFILE) and give the agent's socket: --ssh ID=$SSH_AUTH_SOCK"
        .to_owned()
}

/// An agent's socket, bound and listening in a directory of its own (mode
/// 0700); nothing answers until [`Agent::serve`]. Dropped, the directory
/// and the socket go (connections being served end with the process).
#[derive(Debug)]
pub struct Agent {
    dir: tempfile::TempDir,
    listener: Option<UnixListener>,
    keys: Option<Keys>,
}

impl Agent {
    /// Binds the socket. No thread is started: the process may still have
    /// to be single-threaded (unshare) when this is made.
    pub fn bind(keys: Keys) -> io::Result<Agent> {
        let dir = tempfile::Builder::new().prefix("kiln-ssh-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let listener = UnixListener::bind(dir.path().join("agent.sock"))?;
        Ok(Agent {
            dir,
            listener: Some(listener),
            keys: Some(keys),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// Starts answering, on a thread per connection.
    pub fn serve(&mut self) {
        let (Some(listener), Some(keys)) = (self.listener.take(), self.keys.take()) else {
            return;
        };
        let keys = Arc::new(keys);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let keys = Arc::clone(&keys);
                std::thread::spawn(move || {
                    let _ = serve_connection(conn, &keys);
                });
            }
        });
    }
}

/// Answers requests on `conn` until it closes.
fn serve_connection(mut conn: UnixStream, keys: &Keys) -> io::Result<()> {
    loop {
        let mut len = [0u8; 4];
        match conn.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_MESSAGE {
            return Ok(());
        }
        let mut msg = vec![0u8; len];
        conn.read_exact(&mut msg)?;
        let reply = answer(keys, &msg).unwrap_or_else(|| vec![SSH_AGENT_FAILURE]);
        let mut out = Vec::with_capacity(reply.len() + 4);
        put_u32(&mut out, reply.len());
        out.extend_from_slice(&reply);
        conn.write_all(&out)?;
    }
}

/// The answer to one request (`None`: failure).
fn answer(keys: &Keys, msg: &[u8]) -> Option<Vec<u8>> {
    let (&kind, mut body) = msg.split_first()?;
    match kind {
        SSH_AGENTC_REQUEST_IDENTITIES => {
            let mut out = vec![SSH_AGENT_IDENTITIES_ANSWER];
            put_u32(&mut out, keys.keys.len());
            for k in &keys.keys {
                put_string(&mut out, &k.blob);
                put_string(&mut out, k.comment.as_bytes());
            }
            Some(out)
        }
        SSH_AGENTC_SIGN_REQUEST => {
            let blob = take_string(&mut body)?;
            let data = take_string(&mut body)?;
            let flags = take_u32(&mut body)?;
            let key = keys.keys.iter().find(|k| k.blob == blob)?;
            let signature = sign(&key.signer, data, flags)?;
            let mut out = vec![SSH_AGENT_SIGN_RESPONSE];
            put_string(&mut out, &signature);
            Some(out)
        }
        _ => None,
    }
}

/// The signature blob of `data` (`string` algorithm, then the signature
/// in that algorithm's encoding).
fn sign(signer: &Signer, data: &[u8], flags: u32) -> Option<Vec<u8>> {
    let rng = SystemRandom::new();
    let mut out = Vec::new();
    match signer {
        Signer::Ed25519(k) => {
            put_string(&mut out, b"ssh-ed25519");
            put_string(&mut out, k.sign(data).as_ref());
        }
        Signer::Rsa(k) => {
            // SHA-1 (`ssh-rsa`, no flag) is refused, as OpenSSH ≥ 8.8 does
            // by default: clients then ask for SHA-2.
            let (name, padding): (&str, &'static dyn sig::RsaEncoding) =
                if flags & SSH_AGENT_RSA_SHA2_512 != 0 {
                    ("rsa-sha2-512", &sig::RSA_PKCS1_SHA512)
                } else if flags & SSH_AGENT_RSA_SHA2_256 != 0 {
                    ("rsa-sha2-256", &sig::RSA_PKCS1_SHA256)
                } else {
                    return None;
                };
            let mut s = vec![0u8; k.public().modulus_len()];
            k.sign(padding, &rng, data, &mut s).ok()?;
            put_string(&mut out, name.as_bytes());
            put_string(&mut out, &s);
        }
        Signer::Ecdsa { pair, name } => {
            let s = pair.sign(&rng, data).ok()?;
            let (r, s) = s.as_ref().split_at(s.as_ref().len() / 2);
            let mut inner = Vec::new();
            put_mpint(&mut inner, r);
            put_mpint(&mut inner, s);
            put_string(&mut out, name.as_bytes());
            put_string(&mut out, &inner);
        }
    }
    Some(out)
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, s.len());
    out.extend_from_slice(s);
}

/// An unsigned big-endian integer as an SSH `mpint`: no leading zero
/// bytes, and one zero byte before a set top bit.
fn put_mpint(out: &mut Vec<u8>, n: &[u8]) {
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    if n.first().is_some_and(|b| b & 0x80 != 0) {
        put_u32(out, n.len() + 1);
        out.push(0);
        out.extend_from_slice(n);
    } else {
        put_string(out, n);
    }
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    let (n, rest) = b.split_first_chunk::<4>()?;
    *b = rest;
    Some(u32::from_be_bytes(*n))
}

fn take_string<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = take_u32(b)? as usize;
    if b.len() < n {
        return None;
    }
    let (s, rest) = b.split_at(n);
    *b = rest;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn request(path: &Path, msg: &[u8]) -> Vec<u8> {
        let mut c = UnixStream::connect(path).unwrap();
        let mut out = Vec::new();
        put_string(&mut out, msg);
        c.write_all(&out).unwrap();
        let mut len = [0u8; 4];
        c.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
        c.read_exact(&mut reply).unwrap();
        reply
    }

    #[test]
    fn mpint_encoding() {
        let mut out = Vec::new();
        put_mpint(&mut out, &[0, 0, 0x7f, 1]);
        assert_eq!(out, [0, 0, 0, 2, 0x7f, 1]);
        out.clear();
        put_mpint(&mut out, &[0x80, 1]);
        assert_eq!(out, [0, 0, 0, 3, 0, 0x80, 1]);
    }

    #[test]
    fn refuses_what_it_does_not_do_and_bad_requests() {
        let keys = Keys { keys: Vec::new() };
        assert_eq!(answer(&keys, &[]), None);
        // Add identity, remove all, lock, extension.
        for kind in [17u8, 19, 22, 27] {
            assert_eq!(answer(&keys, &[kind]), None);
        }
        // A sign request for a key it does not hold, and a truncated one.
        let mut req = vec![SSH_AGENTC_SIGN_REQUEST];
        put_string(&mut req, b"blob");
        put_string(&mut req, b"data");
        put_u32(&mut req, 0);
        assert_eq!(answer(&keys, &req), None);
        assert_eq!(answer(&keys, &req[..7]), None);
    }

    #[test]
    fn no_answer_before_serve_and_the_directory_is_private() {
        let agent = Agent::bind(Keys { keys: Vec::new() }).unwrap();
        let mode = std::fs::metadata(agent.dir.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let mut agent = agent;
        agent.serve();
        let reply = request(&agent.path(), &[SSH_AGENTC_REQUEST_IDENTITIES]);
        assert_eq!(reply, [SSH_AGENT_IDENTITIES_ANSWER, 0, 0, 0, 0]);
        let dir = agent.dir.path().to_path_buf();
        drop(agent);
        assert!(!dir.exists(), "the socket's directory goes with the agent");
    }

    #[test]
    fn reads_an_ecdsa_key_whose_scalar_starts_with_zero() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/ssh-keys");
        let f = dir.join("p256-leading-zero-scalar");
        let keys = read_keys(&[f.to_str().unwrap()]).unwrap();
        // The identity is the public key of the .pub file.
        use base64::Engine as _;
        let public = std::fs::read_to_string(dir.join("p256-leading-zero-scalar.pub")).unwrap();
        let blob = base64::engine::general_purpose::STANDARD
            .decode(public.split_whitespace().nth(1).unwrap())
            .unwrap();
        assert_eq!(keys.keys[0].blob, blob);
        let Signer::Ecdsa { pair, .. } = &keys.keys[0].signer else {
            panic!("not ECDSA")
        };
        // A signature the public key verifies (ring's fixed r||s form).
        let s = pair.sign(&SystemRandom::new(), b"data").unwrap();
        use ring::signature::KeyPair as _;
        sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
            .verify(b"data", s.as_ref())
            .unwrap();
    }

    #[test]
    fn refuses_unreadable_formats_with_a_way_out() {
        let e = parse_key("hello").err().unwrap();
        assert!(e.contains("--ssh ID=$SSH_AUTH_SOCK"), "{e}");
        let e = parse_key("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
            .err()
            .unwrap();
        assert!(e.contains("passphrase"), "{e}");
    }

    /// OpenSSH's own tools against the agent: `ssh-add -l` lists each key
    /// with the fingerprint `ssh-keygen -l` gives its public key, and a
    /// signature `ssh-keygen -Y sign` asks the agent for verifies; each key
    /// type and file format kiln reads (skipped, saying so, without
    /// openssh-client).
    #[test]
    fn openssh_lists_the_keys_and_verifies_their_signatures() {
        use std::process::{Command, Stdio};
        if Command::new("ssh-keygen").arg("-V").output().is_err()
            || Command::new("ssh-add").arg("-V").output().is_err()
        {
            eprintln!("skipped: needs ssh-keygen and ssh-add (Debian: openssh-client)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (name, args) in [
            ("ed", &["-t", "ed25519"][..]),
            ("rsa-pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"][..]),
            ("rsa", &["-t", "rsa", "-b", "3072"][..]),
            ("p256", &["-t", "ecdsa", "-b", "256"][..]),
            ("p384", &["-t", "ecdsa", "-b", "384"][..]),
        ] {
            let f = dir.path().join(name);
            let st = Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-C", name, "-f"])
                .arg(&f)
                .args(args)
                .status()
                .unwrap();
            assert!(st.success(), "ssh-keygen {name}");
            files.push(f.display().to_string());
        }
        let paths: Vec<&str> = files.iter().map(String::as_str).collect();
        let mut agent = Agent::bind(read_keys(&paths).unwrap()).unwrap();
        agent.serve();
        let sock = agent.path();
        let listed = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert!(listed.status.success(), "ssh-add -l: {listed:?}");
        let listed = String::from_utf8(listed.stdout).unwrap();
        let msg = dir.path().join("msg");
        std::fs::write(&msg, b"signed through kiln's agent\n").unwrap();
        for f in &files {
            let pubkey = format!("{f}.pub");
            let fp = Command::new("ssh-keygen")
                .args(["-l", "-f", &pubkey])
                .output()
                .unwrap();
            let fp = String::from_utf8(fp.stdout).unwrap();
            let fp: Vec<&str> = fp.split_whitespace().take(2).collect();
            assert!(
                listed
                    .lines()
                    .any(|l| l.split_whitespace().take(2).eq(fp.iter().copied())),
                "{f}: {fp:?} not in ssh-add -l: {listed}"
            );
            let _ = std::fs::remove_file(dir.path().join("msg.sig"));
            let signed = Command::new("ssh-keygen")
                .args(["-Y", "sign", "-n", "file", "-f", &pubkey])
                .arg(&msg)
                .env("SSH_AUTH_SOCK", &sock)
                .output()
                .unwrap();
            assert!(
                signed.status.success(),
                "{f}: ssh-keygen -Y sign: {signed:?}"
            );
            let check = Command::new("ssh-keygen")
                .args(["-Y", "check-novalidate", "-n", "file", "-s"])
                .arg(dir.path().join("msg.sig"))
                .stdin(Stdio::from(std::fs::File::open(&msg).unwrap()))
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "{f}: the signature does not verify: {check:?}"
            );
        }
        assert_eq!(listed.lines().count(), files.len(), "{listed}");
        // RSA with SHA-256 (flag 2), which `ssh-keygen -Y` does not ask
        // for, checked with ring's verifier; no flag (SHA-1) is refused.
        let keys = read_keys(&[files[1].as_str()]).unwrap();
        let Signer::Rsa(k) = &keys.keys[0].signer else {
            panic!("not RSA")
        };
        let blob = sign(&keys.keys[0].signer, b"data", SSH_AGENT_RSA_SHA2_256).unwrap();
        let mut b = blob.as_slice();
        assert_eq!(take_string(&mut b).unwrap(), b"rsa-sha2-256");
        let s = take_string(&mut b).unwrap();
        sig::UnparsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, k.public().as_ref())
            .verify(b"data", s)
            .unwrap();
        assert_eq!(sign(&keys.keys[0].signer, b"data", 0), None);
    }
}
