//! `kiln build URL` and `kiln build -`: the main build context made into a
//! directory in the state's scratch space (`kiln_worker::remote`), and the
//! flags rewritten to build from it as from a local context: `-f` names a
//! file inside it (default `Dockerfile`, else `dockerfile`), its
//! `.dockerignore` does not apply (BuildKit reads a remote context whole); as buildx, `-f -` reads the Dockerfile from stdin
//! and an absolute `-f` names a local file. When the URL or stdin gives a Dockerfile rather
//! than an archive, the context is empty and that is the Dockerfile,
//! whatever `-f` says (as BuildKit and the docker cli).

use std::path::{Path, PathBuf};

use kiln_frontend::SourceFile;
use kiln_worker::state::State;

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::options::MainContext;

/// A remote context, made local for this build.
pub struct Remote {
    /// The flags with CONTEXT the directory and `-f` the Dockerfile's path.
    pub args: BuildArgs,
    /// The Dockerfile, named as the user would name it in the context.
    pub file: SourceFile,
    /// What the fetch saw (the time and commit of the context).
    pub fetched: kiln_worker::remote::Fetched,
    /// Where it all lives; removed with the build.
    scratch: tempfile::TempDir,
}

impl Remote {
    /// The directory of the context.
    pub fn dir(&self) -> PathBuf {
        self.scratch.path().join("context")
    }
}

/// Fetches (or reads) the context `main` names into scratch space.
pub fn materialize(state: &State, args: &BuildArgs, main: &MainContext) -> Result<Remote, Failure> {
    let scratch = state
        .scratch()
        .map_err(|e| Failure::Internal(anyhow::Error::new(e)))?;
    let dir = scratch.path().join("context");
    std::fs::create_dir(&dir)
        .map_err(|e| Failure::Internal(anyhow::anyhow!("creating {}: {e}", dir.display())))?;
    let failed = |e: kiln_worker::Error| {
        Failure::Other(anyhow::anyhow!(
            "failed to read the build context {}: {e}",
            args.context
        ))
    };
    let fetched = match main {
        MainContext::Local => {
            return Err(Failure::Internal(anyhow::anyhow!(
                "a local context is not fetched"
            )));
        }
        MainContext::Stdin => {
            kiln_worker::remote::read(state, std::io::stdin().lock(), &dir).map_err(failed)?
        }
        MainContext::Git {
            remote,
            git_ref,
            subdir,
            checksum,
            keep_git_dir,
            skip_submodules,
        } => {
            let spec = kiln_worker::ops::git::ContextSpec {
                remote,
                git_ref,
                subdir,
                checksum,
                keep_git_dir: *keep_git_dir,
                skip_submodules: *skip_submodules,
            };
            kiln_worker::remote::git(state, &spec, &dir).map_err(failed)?
        }
        MainContext::Http { url } => kiln_worker::remote::http(state, url, &dir).map_err(failed)?,
    };
    let given = args.file.as_deref();
    let (name, path, bytes) = match &fetched.dockerfile {
        // As buildx: with a remote context, `-f -` is the Dockerfile on
        // stdin and an absolute `-f` a local file; a relative one is in the
        // context.
        _ if given == Some("-") || given.is_some_and(|f| Path::new(f).is_absolute()) => {
            let bytes = match given {
                Some("-") => {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf).map_err(
                        |e| Failure::Usage(format!("reading the Dockerfile from stdin: {e}")),
                    )?;
                    buf
                }
                _ => std::fs::read(given.unwrap_or_default()).map_err(|e| {
                    Failure::Usage(format!(
                        "reading Dockerfile {}: {e}",
                        given.unwrap_or_default()
                    ))
                })?,
            };
            let path = scratch.path().join("Dockerfile");
            std::fs::write(&path, &bytes).map_err(|e| {
                Failure::Internal(anyhow::anyhow!("writing {}: {e}", path.display()))
            })?;
            let name = match given {
                Some("-") => "stdin".to_owned(),
                _ => given.unwrap_or_default().to_owned(),
            };
            (name, path, bytes)
        }
        Some(bytes) => {
            let path = scratch.path().join("Dockerfile");
            std::fs::write(&path, bytes).map_err(|e| {
                Failure::Internal(anyhow::anyhow!("writing {}: {e}", path.display()))
            })?;
            (
                given.unwrap_or("Dockerfile").to_owned(),
                path,
                bytes.clone(),
            )
        }
        None => {
            // Inside the context, never above it.
            let rel = |f: &str| {
                kiln_frontend::paths::join(&["/", f])
                    .trim_start_matches('/')
                    .to_owned()
            };
            let mut rel_name = rel(given.unwrap_or("Dockerfile"));
            if given.is_none() && !dir.join(&rel_name).exists() && dir.join("dockerfile").exists() {
                rel_name = "dockerfile".to_owned();
            }
            let path = dir.join(&rel_name);
            let bytes = read_in(&path, &rel_name, &args.context)?;
            (rel_name, path, bytes)
        }
    };
    let file = SourceFile::from_bytes(name, bytes)?;
    let mut local = args.clone();
    local.context = dir.display().to_string();
    local.file = Some(path.display().to_string());
    Ok(Remote {
        args: local,
        file,
        fetched,
        scratch,
    })
}

fn read_in(path: &Path, rel: &str, context: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        Failure::Usage(format!(
            "reading Dockerfile {rel} of the build context {context}: {e}"
        ))
    })
}
