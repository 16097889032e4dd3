//! `type=local`: an OCI layout directory (`index.json` names the cache
//! manifest, `blobs/sha256/<hex>` holds the rest). Exporters on one machine,
//! or one shared file system, take turns under the directory's lock.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_llb::Digest;
use kiln_oci::{Descriptor, MediaTypes, media};

use super::attrs::{Attrs, Flag};
use super::error::CacheError;
use super::transport::{Current, Cx, Remote, Transport, read_cache};
use crate::error::Error;
use crate::state::{State, write_atomic};

/// The annotation naming the cache manifest in a local cache directory.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The lock file exporters to one local cache directory take turns with.
const LOCAL_LOCK: &str = ".kiln-cache.lock";

/// `type=local,dest=DIR` / `type=local,src=DIR`.
#[derive(Debug, Clone)]
pub struct Local {
    dir: PathBuf,
}

/// Parses `type=local`'s attributes.
pub fn parse(a: &mut Attrs) -> Result<Arc<dyn Transport>, String> {
    let key = match a.flag {
        Flag::CacheTo => "dest",
        Flag::CacheFrom => "src",
    };
    Ok(Arc::new(Local {
        dir: PathBuf::from(a.required(key)?),
    }))
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Io { what, source }
}

impl Local {
    /// The blob file `digest`.
    fn blob(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }
}

impl Transport for Local {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn connect(&self, _: &Cx<'_>) -> Result<Arc<dyn Remote>, Error> {
        Ok(Arc::new(self.clone()))
    }
}

impl Remote for Local {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn current(&self, cx: &Cx<'_>) -> Result<Option<Current>, Error> {
        let index_path = self.dir.join("index.json");
        let bytes = match fs::read(&index_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &index_path)(e)),
        };
        let what = index_path.display().to_string();
        let index: kiln_oci::Index = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Cache(CacheError::Invalid {
                what: what.clone(),
                reason: format!("invalid OCI index: {e}"),
            })
        })?;
        let Some(d) = index
            .manifests
            .iter()
            .rev()
            .find(|d| media::is_manifest(&d.media_type))
        else {
            return Err(CacheError::Invalid {
                what,
                reason: "no manifest in this OCI layout".to_owned(),
            }
            .into());
        };
        let cache = read_cache(cx, self, d)?;
        Ok(Some(Current {
            digest: d.digest,
            cache: Some(cache),
        }))
    }

    fn has(&self, desc: &Descriptor) -> Result<bool, Error> {
        Ok(fs::metadata(self.blob(&desc.digest)).is_ok_and(|m| m.len() == desc.size))
    }

    fn fetch(&self, state: &State, desc: &Descriptor) -> Result<(), Error> {
        if state.content.has(&desc.digest)? {
            return Ok(());
        }
        let p = self.blob(&desc.digest);
        let f = fs::File::open(&p).map_err(io_err("reading", &p))?;
        // put_reader checks the digest: a cache is input.
        state
            .content
            .put_reader(io::BufReader::new(f), Some(&desc.digest))
            .map_err(|e| match e {
                kiln_oci::ContentError::Mismatch { actual, .. } => {
                    Error::Cache(CacheError::Corrupt {
                        what: p.display().to_string(),
                        actual,
                    })
                }
                e => e.into(),
            })?;
        Ok(())
    }

    fn put(&self, state: &State, desc: &Descriptor) -> Result<(), Error> {
        let blob_dir = self.dir.join("blobs").join("sha256");
        fs::create_dir_all(&blob_dir).map_err(io_err("creating", &blob_dir))?;
        let dest = self.blob(&desc.digest);
        let src = state.content.path(&desc.digest);
        let tmp = blob_dir.join(format!(".tmp-{}", desc.digest.hex()));
        if fs::hard_link(&src, &tmp).is_err() {
            fs::copy(&src, &tmp).map_err(io_err("copying into", &tmp))?;
        }
        fs::rename(&tmp, &dest).map_err(io_err("renaming into", &dest))
    }

    /// An `index.json` naming only this cache (replaced atomically).
    fn write_index(&self, _: &Cx<'_>, desc: &Descriptor) -> Result<(), Error> {
        let mut entry = desc.clone();
        entry
            .annotations
            .insert(REF_NAME.to_owned(), "cache".to_owned());
        let index = kiln_oci::Index::new(MediaTypes::Oci, vec![entry]);
        let body = serde_json::to_vec(&index).map_err(|e| Error::Io {
            what: "encoding the cache index".to_owned(),
            source: io::Error::other(e),
        })?;
        write_atomic(
            &self.dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        Ok(write_atomic(&self.dir.join("index.json"), &body)?)
    }

    fn exclusive(&self) -> Result<Option<Box<dyn Send>>, Error> {
        fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        let lock_path = self.dir.join(LOCAL_LOCK);
        let lock = fs::File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
        lock.lock().map_err(io_err("locking", &lock_path))?;
        Ok(Some(Box::new(lock)))
    }
}
