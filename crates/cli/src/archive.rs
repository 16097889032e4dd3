//! `kiln save` and `kiln load` (like `docker save` / `docker load`).

use std::io::{IsTerminal as _, Read, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kiln_oci::MediaTypes;
use kiln_worker::images::Found;
use kiln_worker::lock::LockKind;

use crate::args::{LoadArgs, SaveArgs, SaveFormat};
use crate::failure::Failure;
use crate::store::{find, lock, normalize, open};

/// `kiln save`.
pub fn save(root: Option<&Path>, args: &SaveArgs) -> Result<(), Failure> {
    if args.output.is_none() && std::io::stdout().is_terminal() {
        return Err(Failure::Usage(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect".to_owned(),
        ));
    }
    let state = open(root)?;
    let _lock = lock(&state, LockKind::Shared)?;
    let types = match args.format {
        SaveFormat::Docker => MediaTypes::Docker,
        SaveFormat::Oci => MediaTypes::Oci,
    };
    let mut images = Vec::new();
    for r in &args.images {
        let (id, manifest, names) = match find(&state, r)? {
            Found::Name(n, r) => (r.id, r.manifest, vec![n]),
            Found::Id(id) => (id, None, Vec::new()),
        };
        let img = kiln_worker::archive::export_named(&state, &id, manifest.as_ref(), names, types)
            .map_err(|e| Failure::Other(anyhow::Error::new(e).context(format!("saving {r}"))))?;
        images.push(img);
    }
    let write = |w: &mut dyn std::io::Write| -> Result<(), Failure> {
        let r = match args.format {
            SaveFormat::Docker => kiln_oci::write_docker_archive(&state.content, w, &images),
            SaveFormat::Oci => kiln_oci::write_oci_archive(&state.content, w, &images),
        };
        r.map(drop)
            .map_err(|e| Failure::Other(anyhow::Error::new(e)))
    };
    match &args.output {
        Some(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let tmp = tempfile::NamedTempFile::new_in(&dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
                write(&mut w)?;
                w.flush()
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            write(&mut out)?;
            out.flush().context("writing to stdout")?;
        }
    }
    Ok(())
}

/// `kiln load`.
pub fn load(root: Option<&Path>, args: &LoadArgs) -> Result<(), Failure> {
    let input: Box<dyn Read> = match &args.input {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
        )),
        None => {
            if std::io::stdin().is_terminal() {
                return Err(Failure::Usage(
                    "requested load from stdin, but stdin is empty (use -i FILE)".to_owned(),
                ));
            }
            Box::new(std::io::stdin().lock())
        }
    };
    let state = crate::store::open_for_layers(root)?;
    let _lock = lock(&state, LockKind::Shared)?;
    let loaded = kiln_worker::archive::load(&state, input, &normalize)
        .map_err(|e| Failure::Other(anyhow::Error::new(e)))?;
    if !args.quiet {
        let mut out = std::io::stdout().lock();
        for (id, names) in loaded {
            if names.is_empty() {
                let _ = writeln!(out, "Loaded image ID: {id}");
            }
            for n in names {
                let shown = match kiln_oci::export::familiar_tag(&n) {
                    Some((repo, tag)) => format!("{repo}:{tag}"),
                    None => n,
                };
                let _ = writeln!(out, "Loaded image: {shown}");
            }
        }
    }
    Ok(())
}
