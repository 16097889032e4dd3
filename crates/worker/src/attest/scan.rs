//! An SBOM generator image (`--sbom generator=IMAGE`) as graph ops, as
//! BuildKit's `CreateSBOMScanner` makes them: the generator's image, its
//! entrypoint and cmd run with its env and workdir in an exec op (as root,
//! with the build's RUN sandbox), the target's root filesystem mounted
//! read-only at `/run/src/core/sbom`, each extra target (the context, the
//! stages that ask for a scan) at `/run/src/extras/sbom-<name>`, a tmpfs at
//! `/tmp`, and the statements written to `/run/out/`.
//!
//! BuildKit makes `/run/out/` a scratch mount and takes it as the result; a
//! kiln exec op has its root as its only result, so the generator's root
//! gets an empty `/run/out` first (a file op) and the statements are read
//! from the exec's root ([`super::sbom`]'s `read_bundle`).

use std::collections::BTreeMap;

use kiln_llb::op::{
    ExecOp, FileAction, FileOp, InputIndex, Mkdir, Mount, MountKind, Network, ProxyEnv, Rm,
    Security, SourceOp,
};
use kiln_llb::{Definition, Digest, Graph, GraphError, ImageConfig, Op, Platform, VertexMeta};

/// Where the generator writes its statements.
pub const OUT_DIR: &str = "/run/out";
const CORE: &str = "/run/src/core/sbom";
const EXTRAS: &str = "/run/src/extras";

/// A generator image, resolved for the build platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generator {
    /// The normalized reference (`docker.io/library/scanner:latest`).
    pub reference: String,
    /// The manifest digest it resolved to.
    pub digest: Option<String>,
    /// Its configuration: entrypoint, cmd, env, workdir.
    pub config: ImageConfig,
    /// The platform it runs as (the build platform, as BuildKit's).
    pub platform: Platform,
    /// The `--attest type=sbom` attributes other than `generator=`: each is
    /// `BUILDKIT_SCAN_<KEY>=<value>` in its environment, as BuildKit passes
    /// them.
    pub params: BTreeMap<String, String>,
}

/// Why a generator cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScanGraphError {
    #[error("SBOM generator {image} has no entrypoint or cmd to run")]
    NoCommand { image: String },
    #[error("the scan by SBOM generator {image}: {source}")]
    Graph {
        image: String,
        #[source]
        source: GraphError,
    },
}

/// The graph that runs `generator` on `def`'s target and extras, and its
/// exec vertex (whose root holds the statements under [`OUT_DIR`]).
/// `name` names the platform in the step's progress name (`linux/amd64`).
pub fn scan_graph(
    def: &Definition,
    generator: &Generator,
    name: &str,
) -> Result<(Graph, Digest), ScanGraphError> {
    let image = &generator.reference;
    let graph_err = |source| ScanGraphError::Graph {
        image: image.clone(),
        source,
    };
    let cfg = &generator.config;
    let args: Vec<String> = cfg
        .entrypoint
        .iter()
        .flatten()
        .chain(cfg.cmd.iter().flatten())
        .cloned()
        .collect();
    if args.is_empty() {
        return Err(ScanGraphError::NoCommand {
            image: image.clone(),
        });
    }
    let mut g = def.graph.clone();
    g.merge(&def.sbom_extras.graph);
    // As BuildKit, the scan runs again when a scanned step ignores the cache.
    let ignore_cache = g.vertices().any(|v| v.meta.ignore_cache);
    let internal = |title: String| VertexMeta {
        name: title,
        stage: None,
        location: None,
        ignore_cache,
    };
    let source = g
        .add(
            Op::Source(SourceOp::Image {
                reference: image.clone(),
                digest: generator.digest.clone(),
                platform: generator.platform.clone(),
            }),
            Vec::new(),
            internal(format!("[internal] load SBOM generator {image}")),
        )
        .map_err(graph_err)?;
    let root = g
        .add(
            Op::File(FileOp {
                base: Some(0),
                actions: vec![
                    FileAction::Rm(Rm {
                        path: OUT_DIR.to_owned(),
                        allow_not_found: true,
                        allow_wildcard: false,
                    }),
                    FileAction::Mkdir(Mkdir {
                        path: OUT_DIR.to_owned(),
                        mode: 0o755,
                        parents: true,
                        chown: None,
                    }),
                ],
            }),
            vec![source],
            internal(format!("[internal] {OUT_DIR} of SBOM generator {image}")),
        )
        .map_err(graph_err)?;
    let mut inputs = vec![root];
    let mut input_of = |d: Digest| -> InputIndex {
        let i = inputs.iter().position(|x| *x == d).unwrap_or_else(|| {
            inputs.push(d);
            inputs.len() - 1
        });
        InputIndex::try_from(i).unwrap_or(InputIndex::MAX)
    };
    let read_only = |target: String, input: Option<InputIndex>| Mount {
        target,
        input,
        source: "/".to_owned(),
        readonly: true,
        output: false,
        kind: MountKind::Bind,
    };
    let mut mounts = vec![
        Mount::root(Some(0)),
        Mount {
            target: "/tmp".to_owned(),
            input: None,
            source: "/".to_owned(),
            readonly: false,
            output: false,
            kind: MountKind::Tmpfs { size: 0 },
        },
        read_only(CORE.to_owned(), def.target.map(&mut input_of)),
    ];
    let extras = &def.sbom_extras;
    let mut extra_mounts: BTreeMap<String, Option<InputIndex>> = BTreeMap::new();
    if extras.context {
        let ctx = g
            .add(
                Op::Source(SourceOp::Local {
                    name: "context".to_owned(),
                }),
                Vec::new(),
                internal("[internal] load build context".to_owned()),
            )
            .map_err(graph_err)?;
        extra_mounts.insert("context".to_owned(), Some(input_of(ctx)));
    }
    for (stage, root) in &extras.stages {
        extra_mounts.insert(stage.clone(), root.map(&mut input_of));
    }
    for (stage, input) in &extra_mounts {
        mounts.push(read_only(format!("{EXTRAS}/sbom-{stage}"), *input));
    }
    let mut env = cfg.env.clone();
    env.push(format!("BUILDKIT_SCAN_DESTINATION={OUT_DIR}/"));
    env.push(format!("BUILDKIT_SCAN_SOURCE={CORE}"));
    if !extra_mounts.is_empty() {
        env.push(format!("BUILDKIT_SCAN_SOURCE_EXTRAS={EXTRAS}/"));
    }
    for (k, v) in &generator.params {
        env.push(format!("BUILDKIT_SCAN_{k}={v}"));
    }
    let cwd = if cfg.working_dir.is_empty() {
        "/".to_owned()
    } else {
        cfg.working_dir.clone()
    };
    let exec = g
        .add(
            Op::Exec(ExecOp {
                args,
                env,
                cwd,
                user: String::new(),
                mounts,
                network: Network::Default,
                security: Security::Sandbox,
                hostname: String::new(),
                proxy_env: ProxyEnv::default(),
                devices: Vec::new(),
                platform: Some(Box::new(generator.platform.clone())),
            }),
            inputs,
            internal(format!("[{name}] generating sbom using {image}")),
        )
        .map_err(graph_err)?;
    Ok((g, exec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_llb::SbomExtras;

    fn generator(entrypoint: Option<Vec<String>>, cmd: Option<Vec<String>>) -> Generator {
        Generator {
            reference: "example.com/scanner:latest".to_owned(),
            digest: None,
            config: ImageConfig {
                entrypoint,
                cmd,
                env: vec!["PATH=/bin".to_owned()],
                working_dir: "/work".to_owned(),
                ..ImageConfig::default()
            },
            platform: Platform::host(),
            params: BTreeMap::from([("EXTRA".to_owned(), "1".to_owned())]),
        }
    }

    fn definition(extras: SbomExtras) -> Definition {
        Definition {
            graph: Graph::new(),
            target: None,
            target_stage: 0,
            stages: Vec::new(),
            context_paths: Vec::new(),
            source_date_epoch: None,
            sbom_extras: extras,
        }
    }

    fn exec_of(g: &Graph, d: &Digest) -> ExecOp {
        match g.get(d).map(|v| &v.op) {
            Some(Op::Exec(e)) => e.clone(),
            other => panic!("not an exec: {other:?}"),
        }
    }

    #[test]
    fn runs_entrypoint_and_cmd_with_the_protocol_env() {
        let def = definition(SbomExtras::default());
        let g = generator(
            Some(vec!["sh".to_owned()]),
            Some(vec!["/scan.sh".to_owned()]),
        );
        let (graph, exec) = scan_graph(&def, &g, "linux/amd64").expect("graph");
        let e = exec_of(&graph, &exec);
        assert_eq!(e.args, ["sh", "/scan.sh"]);
        assert_eq!(e.cwd, "/work");
        assert!(e.user.is_empty());
        assert_eq!(
            e.env,
            [
                "PATH=/bin",
                "BUILDKIT_SCAN_DESTINATION=/run/out/",
                "BUILDKIT_SCAN_SOURCE=/run/src/core/sbom",
                "BUILDKIT_SCAN_EXTRA=1",
            ]
        );
        let targets: Vec<&str> = e.mounts.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/", "/tmp", "/run/src/core/sbom"]);
        assert!(e.mounts[2].readonly && e.mounts[2].input.is_none());
        assert_eq!(
            graph.get(&exec).map(|v| v.meta.name.as_str()),
            Some("[linux/amd64] generating sbom using example.com/scanner:latest")
        );
    }

    #[test]
    fn extras_are_mounted_by_name() {
        let def = definition(SbomExtras {
            context: true,
            stages: vec![("build".to_owned(), None)],
            graph: Graph::new(),
        });
        let g = generator(None, Some(vec!["scan".to_owned()]));
        let (graph, exec) = scan_graph(&def, &g, "linux/amd64").expect("graph");
        let e = exec_of(&graph, &exec);
        let targets: Vec<&str> = e.mounts.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/",
                "/tmp",
                "/run/src/core/sbom",
                "/run/src/extras/sbom-build",
                "/run/src/extras/sbom-context",
            ]
        );
        assert!(
            e.env
                .contains(&"BUILDKIT_SCAN_SOURCE_EXTRAS=/run/src/extras/".to_owned())
        );
    }

    #[test]
    fn a_generator_without_a_command_is_refused() {
        let def = definition(SbomExtras::default());
        let err = scan_graph(&def, &generator(None, None), "linux/amd64").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SBOM generator example.com/scanner:latest has no entrypoint or cmd to run"
        );
    }
}
