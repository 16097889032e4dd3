//! `type=s3`: S3-compatible object storage, with BuildKit's attribute names
//! and layout (`cache/remotecache/s3/s3.go`): blobs at
//! `<prefix><blobs_prefix><digest>`, the current cache manifest at
//! `<prefix><manifests_prefix><name>` for each `name` (`;`-separated). The
//! objects are kiln's own cache format, not BuildKit's.
//!
//! Requests are signed (SigV4, presigned URLs) by `rusty-s3`, which does no
//! I/O, and sent with `ureq`, blocking, as the rest of the worker. Objects are
//! written with one `PUT` each (S3 takes up to 5 GiB so).
//!
//! Credentials: `access_key_id` / `secret_access_key` / `session_token`,
//! else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`,
//! else the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`,
//! `~/.aws/credentials`, profile `AWS_PROFILE` or `default`), else none
//! (unsigned requests, for a public bucket). The region likewise:
//! `region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the shared config file
//! (`AWS_CONFIG_FILE`, `~/.aws/config`). Messages never show a secret.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_llb::Digest;
use kiln_oci::Descriptor;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use ureq::{Agent, SendBody};

use super::attrs::Attrs;
use super::error::CacheError;
use super::transport::{Current, Cx, Remote, Transport, read_cache};
use crate::error::Error;
use crate::state::State;

/// How long a presigned URL is good for (one request, sent at once).
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);

/// Largest cache manifest read back.
const MANIFEST_LIMIT: u64 = 16 << 20;

/// BuildKit's attributes that kiln does not implement: refused, not ignored.
const UNSUPPORTED: &[&str] = &[
    "touch_refresh",
    "upload_parallelism",
    "disable_accept_encoding",
    "retry_mode",
    "retry_max_attempts",
];

/// `type=s3,…` as parsed; credentials and region not yet resolved.
#[derive(Clone)]
pub struct S3 {
    bucket: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    path_style: bool,
    prefix: String,
    blobs_prefix: String,
    manifests_prefix: String,
    names: Vec<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("prefix", &self.prefix)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Parses `type=s3`'s attributes.
pub fn parse(a: &mut Attrs) -> Result<Arc<dyn Transport>, String> {
    let flag = a.flag.name();
    for k in UNSUPPORTED {
        if a.has(k) {
            return Err(format!(
                "{flag} type=s3: {k}= is not supported by kiln's s3 cache (its attributes are \
                 bucket, region, endpoint_url, use_path_style, prefix, blobs_prefix, \
                 manifests_prefix, name, access_key_id, secret_access_key, session_token, and \
                 mode, mounts, ignore-error, compression, max-records with --cache-to)"
            ));
        }
    }
    let names: Vec<String> = match a.take("name") {
        Some(n) => n
            .split(';')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
        None => vec!["kiln".to_owned()],
    };
    if names.is_empty() {
        return Err(format!("{flag} type=s3: name= names no cache"));
    }
    let s3 = S3 {
        bucket: a.take("bucket"),
        region: a.take("region"),
        endpoint_url: a.take("endpoint_url"),
        path_style: a.boolean("use_path_style")?.unwrap_or(false),
        prefix: a.take("prefix").unwrap_or_default(),
        blobs_prefix: a
            .take("blobs_prefix")
            .unwrap_or_else(|| "blobs/".to_owned()),
        manifests_prefix: a
            .take("manifests_prefix")
            .unwrap_or_else(|| "manifests/".to_owned()),
        names,
        access_key_id: a.take("access_key_id"),
        secret_access_key: a.take("secret_access_key"),
        session_token: a.take("session_token"),
    };
    if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
        return Err(format!(
            "{flag} type=s3: access_key_id and secret_access_key go together"
        ));
    }
    if let Some(e) = &s3.endpoint_url
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        return Err(format!(
            "{flag} type=s3: endpoint_url={e:?}: expected an http:// or https:// URL"
        ));
    }
    Ok(Arc::new(s3))
}

impl Transport for S3 {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn describe(&self) -> String {
        format!(
            "s3://{}/{}{}{}",
            self.bucket.as_deref().unwrap_or("$AWS_BUCKET"),
            self.prefix,
            self.manifests_prefix,
            self.names[0]
        )
    }

    fn connect(&self, _: &Cx<'_>) -> Result<Arc<dyn Remote>, Error> {
        let what = self.describe();
        let config_err = |reason: String| {
            Error::Cache(CacheError::S3Config {
                what: what.clone(),
                reason,
            })
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        let bucket = self
            .bucket
            .clone()
            .or_else(|| env("AWS_BUCKET"))
            .ok_or_else(|| config_err("bucket= (or $AWS_BUCKET) is required".to_owned()))?;
        let region = self
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| {
                shared_value(
                    &config_file(),
                    &format!("profile {profile}"),
                    &profile,
                    "region",
                )
            })
            .ok_or_else(|| {
                config_err(
                    "region= (or $AWS_REGION, or a region in ~/.aws/config) is required".to_owned(),
                )
            })?;
        let credentials = match (&self.access_key_id, &self.secret_access_key) {
            (Some(k), Some(s)) => Some(credentials(k, s, self.session_token.clone())),
            _ => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(k), Some(s)) => Some(credentials(&k, &s, env("AWS_SESSION_TOKEN"))),
                _ => {
                    let file = credentials_file();
                    let get = |k: &str| shared_value(&file, &profile, &profile, k);
                    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                        (Some(k), Some(s)) => Some(credentials(&k, &s, get("aws_session_token"))),
                        _ => None,
                    }
                }
            },
        };
        let endpoint = self
            .endpoint_url
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = endpoint
            .parse()
            .map_err(|e| config_err(format!("endpoint_url: {e}")))?;
        let style = if self.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, bucket, region)
            .map_err(|e| config_err(format!("bucket: {e}")))?;
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            // A redirect (another region's endpoint) is an error with S3's
            // code: a presigned URL is good for one host only.
            .max_redirects(0)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Arc::new(S3Remote {
            what,
            bucket,
            credentials,
            agent,
            blobs: format!("{}{}", self.prefix, self.blobs_prefix),
            manifests: self
                .names
                .iter()
                .map(|n| format!("{}{}{n}", self.prefix, self.manifests_prefix))
                .collect(),
        }))
    }
}

fn credentials(key: &str, secret: &str, token: Option<String>) -> Credentials {
    match token {
        Some(t) => Credentials::new_with_token(key, secret, t),
        None => Credentials::new(key, secret),
    }
}

fn home_file(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".aws").join(name))
}

fn credentials_file() -> Option<PathBuf> {
    home_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
}

fn config_file() -> Option<PathBuf> {
    home_file("AWS_CONFIG_FILE", "config")
}

/// Value `key` of section `[section]` (or `[alt]`) of an AWS shared file
/// (an INI file: `key = value` lines, `#` and `;` comments).
fn shared_value(file: &Option<PathBuf>, section: &str, alt: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file.as_ref()?).ok()?;
    ini_value(&text, section, alt, key)
}

fn ini_value(text: &str, section: &str, alt: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let s = s.trim();
            inside = s == section || s == alt;
            continue;
        }
        if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(v.trim().to_owned());
        }
    }
    None
}

/// A bucket, its keys and the client.
pub struct S3Remote {
    what: String,
    bucket: Bucket,
    credentials: Option<Credentials>,
    agent: Agent,
    /// `<prefix><blobs_prefix>`.
    blobs: String,
    /// `<prefix><manifests_prefix><name>` for each name; the first is read.
    manifests: Vec<String>,
}

impl std::fmt::Debug for S3Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Remote")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

/// A response's status and body reader.
type Answer = ureq::http::Response<ureq::Body>;

impl S3Remote {
    fn blob_key(&self, digest: &Digest) -> String {
        format!("{}{digest}", self.blobs)
    }

    fn request_err(&self, method: &'static str, key: &str) -> impl FnOnce(ureq::Error) -> Error {
        let (what, key) = (self.what.clone(), key.to_owned());
        move |e| {
            // The URL is presigned: its query holds the access key id, the
            // signature and any session token. Never in a message.
            let e = match e {
                ureq::Error::BadUri(_) => ureq::Error::BadUri("(presigned URL)".to_owned()),
                ureq::Error::RequireHttpsOnly(_) => {
                    ureq::Error::RequireHttpsOnly("(presigned URL)".to_owned())
                }
                e => e,
            };
            Error::Cache(CacheError::S3Request {
                what,
                method,
                key,
                source: Box::new(e),
            })
        }
    }

    fn status_err(&self, method: &'static str, key: &str, mut resp: Answer) -> Error {
        // The S3 error document's <Code>, never the whole body.
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_string()
            .unwrap_or_default();
        let code = body
            .split_once("<Code>")
            .and_then(|(_, r)| r.split_once("</Code>"))
            .map(|(c, _)| c.to_owned());
        Error::Cache(CacheError::S3Status {
            what: self.what.clone(),
            method,
            key: key.to_owned(),
            status: resp.status().as_u16(),
            code,
        })
    }

    fn get(&self, key: &str) -> Result<Option<Answer>, Error> {
        let url = self
            .bucket
            .get_object(self.credentials.as_ref(), key)
            .sign(SIGNED_FOR);
        let resp = self
            .agent
            .get(url.as_str())
            .call()
            .map_err(self.request_err("GET", key))?;
        match resp.status().as_u16() {
            200 => Ok(Some(resp)),
            404 => Ok(None),
            _ => Err(self.status_err("GET", key, resp)),
        }
    }

    fn put_reader(&self, key: &str, len: u64, body: Box<dyn Read + Send>) -> Result<(), Error> {
        let url = self
            .bucket
            .put_object(self.credentials.as_ref(), key)
            .sign(SIGNED_FOR);
        let resp = self
            .agent
            .put(url.as_str())
            .header("Content-Length", len.to_string())
            .send(SendBody::from_owned_reader(body))
            .map_err(self.request_err("PUT", key))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.status_err("PUT", key, resp)),
        }
    }
}

impl Remote for S3Remote {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn current(&self, cx: &Cx<'_>) -> Result<Option<Current>, Error> {
        let key = &self.manifests[0];
        let Some(mut resp) = self.get(key)? else {
            return Ok(None);
        };
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_to_vec()
            .map_err(self.request_err("GET", key))?;
        let digest = Digest::of(&bytes);
        let desc = Descriptor::new(
            kiln_oci::media::OCI_MANIFEST,
            cx.state.content.put_bytes(&bytes)?,
        );
        let cache = match read_cache(cx, self, &desc) {
            Ok(c) => Some(c),
            Err(e) => {
                (cx.log)(&format!(
                    "warning: {}: {key} does not name a kiln cache: {e}",
                    self.what
                ));
                None
            }
        };
        Ok(Some(Current { digest, cache }))
    }

    fn has(&self, desc: &Descriptor) -> Result<bool, Error> {
        let key = self.blob_key(&desc.digest);
        let url = self
            .bucket
            .head_object(self.credentials.as_ref(), &key)
            .sign(SIGNED_FOR);
        let resp = self
            .agent
            .head(url.as_str())
            .call()
            .map_err(self.request_err("HEAD", &key))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_err("HEAD", &key, resp)),
        }
    }

    fn fetch(&self, state: &State, desc: &Descriptor) -> Result<(), Error> {
        if state.content.has(&desc.digest)? {
            return Ok(());
        }
        let key = self.blob_key(&desc.digest);
        let Some(resp) = self.get(&key)? else {
            return Err(Error::Cache(CacheError::S3Status {
                what: self.what.clone(),
                method: "GET",
                key,
                status: 404,
                code: Some("NoSuchKey".to_owned()),
            }));
        };
        let reader = resp.into_body().into_reader();
        state
            .content
            .put_reader(io::BufReader::new(reader), Some(&desc.digest))
            .map_err(|e| match e {
                kiln_oci::ContentError::Mismatch { actual, .. } => {
                    Error::Cache(CacheError::Corrupt {
                        what: format!("{}: {key}", self.what),
                        actual,
                    })
                }
                e => e.into(),
            })?;
        Ok(())
    }

    fn put(&self, state: &State, desc: &Descriptor) -> Result<(), Error> {
        let key = self.blob_key(&desc.digest);
        let path = state.content.path(&desc.digest);
        let file = std::fs::File::open(&path).map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        self.put_reader(&key, desc.size, Box::new(file))
    }

    /// The manifest's bytes under each name (the last writer wins: the
    /// export checks afterwards, see `super::export`).
    fn write_index(&self, cx: &Cx<'_>, desc: &Descriptor) -> Result<(), Error> {
        let bytes = cx.state.content.read(&desc.digest)?;
        for key in &self.manifests {
            self.put_reader(
                key,
                bytes.len() as u64,
                Box::new(io::Cursor::new(bytes.clone())),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::spec::CacheTo;

    #[test]
    fn reads_the_shared_files() {
        let text = "[default]\nregion = eu-west-1\n# c\n[profile ci]\nregion=us-east-2\n";
        assert_eq!(
            ini_value(text, "profile ci", "ci", "region").as_deref(),
            Some("us-east-2")
        );
        assert_eq!(
            ini_value(text, "profile default", "default", "region").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(ini_value(text, "x", "x", "region"), None);
    }

    #[test]
    fn parses_buildkit_attributes_and_refuses_the_rest() {
        let t = CacheTo::parse(
            "type=s3,bucket=b,region=r,endpoint_url=http://127.0.0.1:9000,use_path_style=true,\
             prefix=p/,name=a;b,mode=max,mounts=true,secret_access_key=SECRET,access_key_id=AK",
        )
        .unwrap();
        let tr = t.location.transport().unwrap();
        assert_eq!(tr.kind(), "s3");
        assert_eq!(tr.describe(), "s3://b/p/manifests/a");
        assert!(!format!("{tr:?}").contains("SECRET"));
        let e = CacheTo::parse("type=s3,bucket=b,touch_refresh=1h").unwrap_err();
        assert!(e.contains("touch_refresh= is not supported"), "{e}");
        let e =
            CacheTo::parse("type=s3,bucket=b,bogus=1,access_key_id=AK,secret_access_key=SECRET")
                .unwrap_err();
        assert!(e.contains("unknown attribute \"bogus\""), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        let e = CacheTo::parse("type=s3,bucket=b,access_key_id=x").unwrap_err();
        assert!(e.contains("go together"), "{e}");
    }
}
