//! Why a command failed, which decides its exit code (README: exit codes).

use kiln_frontend::Diagnostic;

/// Why a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or a feature that has not landed: exit 2.
    Usage(String),
    /// A located problem in the Dockerfile: exit 1.
    Dockerfile(Box<Diagnostic>),
    /// The build failed (a step, a missing source): exit 1. The message is
    /// complete (step, location, output).
    Build(String),
    /// The build was cancelled (Ctrl-C): exit 1.
    Cancelled,
    /// Anything else that stops the command (a file that cannot be read): exit 1.
    Other(anyhow::Error),
    /// A registry or the network failed (pull, push, login): exit 3.
    Registry(anyhow::Error),
    /// kiln or the host failed (state directory, namespaces, mounts,
    /// rootless setup): exit 4.
    Internal(anyhow::Error),
    /// Everything has been printed; exit with this code (`--check` with
    /// warnings: 1).
    Status(u8),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Other(e)
    }
}

/// A registry client's failure: the registry's exit code (3).
impl From<kiln_registry::RegistryError> for Failure {
    fn from(e: kiln_registry::RegistryError) -> Failure {
        Failure::Registry(anyhow::Error::new(e))
    }
}

impl From<Diagnostic> for Failure {
    fn from(d: Diagnostic) -> Failure {
        Failure::Dockerfile(Box::new(d))
    }
}

/// The exit code of a failure and what it says (its first line for JSON,
/// and the whole text).
pub fn describe(f: &Failure) -> (u8, String, String) {
    match f {
        Failure::Usage(m) => (2, m.clone(), format!("error: {m}")),
        Failure::Dockerfile(d) => (2, d.message.clone(), format!("error: {}", d.render())),
        Failure::Build(m) => (
            1,
            m.lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or(m)
                .to_owned(),
            m.clone(),
        ),
        Failure::Cancelled => (
            1,
            "build cancelled".to_owned(),
            "error: build cancelled".to_owned(),
        ),
        Failure::Other(e) => (1, chain_message(e), format!("error: {}", chain_message(e))),
        Failure::Registry(e) => (3, chain_message(e), format!("error: {}", chain_message(e))),
        Failure::Internal(e) => (4, chain_message(e), format!("error: {}", chain_message(e))),
        Failure::Status(code) => (*code, String::new(), String::new()),
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text
/// the message already has (library errors often print their source in
/// their own message, which `{:#}` would repeat).
pub(crate) fn chain_message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
