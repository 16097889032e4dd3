//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`, and the registry
//! client every command that talks to registries shares.

use std::io::{Read as _, Write as _};

use anyhow::Context as _;
use kiln_llb::Platform;
use kiln_oci::{Compression, MediaTypes};
use kiln_reference::Reference;
use kiln_registry::auth::Auth;
use kiln_registry::{Client, RegistryConfig};

use crate::args::{LoginArgs, LogoutArgs, PullArgs, PushArgs};
use crate::failure::Failure;
use crate::globals::Globals;

/// Docker Hub, as `docker login` without a server names it.
const DEFAULT_SERVER: &str = "docker.io";

/// The client for this invocation: kiln's registry configuration, the
/// `--insecure-registry` hosts plus `insecure`, Docker's credentials.
pub fn client(globals: &Globals, insecure: &[String]) -> Result<Client, Failure> {
    let mut config = RegistryConfig::load(globals.registry_config.as_deref())
        .context("reading the registry configuration")?;
    for h in globals.insecure_registries.iter().chain(insecure) {
        config.add_insecure(h);
    }
    let auth = Auth::from_env().context("reading registry credentials")?;
    Ok(Client::new(config, auth).context("setting up the registry client")?)
}

fn parse_ref(name: &str) -> Result<Reference, Failure> {
    Reference::parse_normalized(name)
        .map(Reference::with_default_tag)
        .map_err(|e| Failure::Usage(format!("invalid reference {name:?}: {e}")))
}

fn stderr_log(quiet: bool) -> impl Fn(&str) + Sync {
    move |line: &str| {
        if !quiet {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

/// On a terminal (and not quiet): a live byte bar per blob while it moves,
/// the client reporting to it. Without a terminal the lines stay as they
/// are (docker pull prints no byte counts there either).
fn live(quiet: bool, client: Client) -> (Option<std::sync::Arc<crate::progress_tty::Tty>>, Client) {
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return (None, client);
    }
    let tty = std::sync::Arc::new(crate::progress_tty::Tty::transfers_only());
    let t = tty.clone();
    let client = client.with_progress(std::sync::Arc::new(move |x| t.transfer(x)));
    (Some(tty), client)
}

/// `kiln pull`: the manifest, config and layer blobs into the store, the
/// name recorded. Layers are unpacked the first time a build uses them.
pub fn pull(globals: &Globals, args: &PullArgs) -> Result<(), Failure> {
    let reference = parse_ref(&args.name)?;
    let platform = match &args.platform {
        Some(p) => p
            .parse::<Platform>()
            .map_err(|e| Failure::Usage(format!("invalid --platform {p:?}: {e}")))?,
        None => Platform::host(),
    };
    let state = crate::store::open_for_layers(globals.root.as_deref())?;
    let _lock = crate::store::lock(&state, kiln_worker::lock::LockKind::Shared)?;
    let (tty, client) = live(args.quiet, client(globals, &[])?);
    let plain = stderr_log(args.quiet);
    let log = |line: &str| match &tty {
        Some(t) => t.plain_line(line),
        None => plain(line),
    };
    let pulled = kiln_worker::registry::pull(&state, &client, &reference, &platform, &log);
    if let Some(t) = &tty {
        t.close();
    }
    let pulled = pulled.map_err(|e| Failure::Registry(anyhow::Error::new(e)))?;
    let log = plain;
    log(&format!("Digest: {}", pulled.resolved));
    log(&format!(
        "Status: {} for {}",
        if pulled.downloaded > 0 {
            "Downloaded newer image"
        } else {
            "Image is up to date"
        },
        reference.familiar()
    ));
    let _ = writeln!(std::io::stdout().lock(), "{reference}");
    Ok(())
}

/// `kiln push`: an image of the local store to the registry its name says.
pub fn push(globals: &Globals, args: &PushArgs) -> Result<(), Failure> {
    let reference = parse_ref(&args.name)?;
    if reference.digest().is_some() {
        return Err(Failure::Usage(format!(
            "cannot push {}: push a tag, not a digest",
            args.name
        )));
    }
    let name = reference.to_string();
    let state = crate::store::open(globals.root.as_deref())?;
    let _lock = crate::store::lock(&state, kiln_worker::lock::LockKind::Shared)?;
    let image = state
        .images
        .get(&name)
        .context("reading the image store")?
        .ok_or_else(|| {
            Failure::Other(anyhow::anyhow!(
                "no such image: {} (see the names in the store with `kiln images`)",
                reference.familiar()
            ))
        })?;
    let manifest =
        kiln_worker::registry::manifest_for(&state, &image, Compression::gzip(), MediaTypes::Oci)
            .map_err(|e| Failure::Other(anyhow::Error::new(e)))?;
    let (tty, client) = live(args.quiet, client(globals, &[])?);
    let plain = stderr_log(args.quiet);
    let log = |line: &str| match &tty {
        Some(t) => t.plain_line(line),
        None => plain(line),
    };
    // An image built with attestations: the store keeps the index that
    // carries them, pushed as the build would have pushed it.
    let index = stored_attestation_index(&state, &image.id, &manifest);
    let digest = match &index {
        Some((idx, all)) => {
            kiln_worker::registry::push_index(&state, &client, idx, all, &[name], &log)
        }
        None => kiln_worker::registry::push(&state, &client, &manifest, &[name], &log),
    };
    if let Some(t) = &tty {
        t.close();
    }
    let digest = digest.map_err(|e| Failure::Registry(anyhow::Error::new(e)))?;
    if args.quiet {
        let _ = writeln!(std::io::stdout().lock(), "{digest}");
    }
    Ok(())
}

/// The attestation index the store keeps for image `id` and the manifests
/// it lists, when its image manifest is `manifest` (the one a push of the
/// image sends).
fn stored_attestation_index(
    state: &kiln_worker::State,
    id: &kiln_llb::Digest,
    manifest: &kiln_oci::Descriptor,
) -> Option<(kiln_oci::Descriptor, Vec<kiln_oci::Descriptor>)> {
    let digest = kiln_worker::attest::stored_index(state, id)?;
    let bytes = state.content.read(&digest).ok()?;
    let index: kiln_oci::Index = serde_json::from_slice(&bytes).ok()?;
    if !index.manifests.iter().any(|m| m.digest == manifest.digest) {
        return None;
    }
    let desc = kiln_oci::Descriptor {
        media_type: if index.media_type.is_empty() {
            kiln_oci::media::OCI_INDEX.to_owned()
        } else {
            index.media_type.clone()
        },
        digest,
        size: bytes.len() as u64,
        urls: Vec::new(),
        annotations: Default::default(),
        platform: None,
    };
    Some((desc, index.manifests))
}

fn server(s: Option<&str>) -> String {
    let s = s.unwrap_or(DEFAULT_SERVER);
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_SERVER.to_owned(),
        other => other.to_owned(),
    }
}

/// `kiln login`: checks the credentials against the registry, then stores
/// them where Docker would.
pub fn login(globals: &Globals, args: &LoginArgs) -> Result<(), Failure> {
    let host = server(args.server.as_deref());
    let user = match &args.username {
        Some(u) => u.clone(),
        None => return Err(Failure::Usage("kiln login needs --username".to_owned())),
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => {
            return Err(Failure::Usage(
                "--password and --password-stdin are mutually exclusive".to_owned(),
            ));
        }
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .context("reading the password from stdin")?;
            p.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => {
            return Err(Failure::Usage(
                "kiln login needs --password or --password-stdin".to_owned(),
            ));
        }
    };
    let mut config = RegistryConfig::load(globals.registry_config.as_deref())
        .context("reading the registry configuration")?;
    for h in &globals.insecure_registries {
        config.add_insecure(h);
    }
    let auth = Auth::from_env().context("reading registry credentials")?;
    let trial = auth.with_credentials(&host, &user, &password);
    Client::new(config, trial)
        .context("setting up the registry client")?
        .ping(&host)
        .with_context(|| format!("logging in to {host}"))
        .map_err(Failure::Registry)?;
    let stored = auth
        .login(&host, &user, &password)
        .with_context(|| format!("storing the credentials of {host}"))?;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "Credentials stored in {stored}");
    let _ = writeln!(err, "Login Succeeded");
    Ok(())
}

/// `kiln logout`.
pub fn logout(_globals: &Globals, args: &LogoutArgs) -> Result<(), Failure> {
    let host = server(args.server.as_deref());
    let auth = Auth::from_env().context("reading registry credentials")?;
    let removed = auth
        .logout(&host)
        .with_context(|| format!("removing the credentials of {host}"))?;
    let mut err = std::io::stderr().lock();
    if removed {
        let _ = writeln!(err, "Removing login credentials for {host}");
    } else {
        let _ = writeln!(err, "Not logged in to {host}");
    }
    Ok(())
}
