//! `gitgate render`: fetch a repository (or the embedded example), render a
//! revision and print its desired set.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::{DesiredSet, RenderError, RenderOptions, Renderer, example};
use crate::source::scratch::ScratchDir;
use crate::source::{GitSource, RepoPath, SourceError, local};

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// Repository URL (https://, ssh://, git://, file://) or local path; a
    /// directory that is not a Git repository is committed into a temporary
    /// one first. Default: the embedded example repository (examples/gitops).
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch, tag or commit.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Only this app.
    #[arg(long)]
    pub app: Option<String>,
    /// Output: yaml (a summary: identities, sources, digests, commits) or
    /// json (the same with every object's manifest).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
    /// Path of the apps file in the repository.
    #[arg(long, default_value = "gitgate.yaml")]
    pub config: String,
    /// Bare cache directory to fetch into (default: a temporary one).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Render(Box<RenderError>),
    #[error("no app named {0:?} in the desired set")]
    NoSuchApp(String),
    #[error("failed to prepare {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to print the output")]
    Output(#[source] std::io::Error),
}

impl From<RenderError> for CommandError {
    fn from(e: RenderError) -> Self {
        CommandError::Render(Box::new(e))
    }
}

/// Runs `gitgate render`.
pub fn run(args: RenderArgs) -> Result<(), CommandError> {
    let scratch = ScratchDir::new("render").map_err(|e| CommandError::Io { what: "a temp dir".into(), source: e })?;
    let url = match &args.repo {
        None => {
            let dir = scratch.path().join("example");
            write_example(&dir)?;
            local::init_from_dir(&dir, scratch.path())?.display().to_string()
        }
        Some(r) if !r.contains("://") && Path::new(r).is_dir() && !local::is_git_repo(Path::new(r)) => {
            local::init_from_dir(Path::new(r), scratch.path())?.display().to_string()
        }
        Some(r) => r.clone(),
    };
    let cache = args.cache_dir.clone().unwrap_or_else(|| scratch.path().join("cache.git"));
    let source = GitSource::open(&url, &cache)?;
    source.fetch()?;
    let commit = source.resolve(&args.rev)?;
    let opts = RenderOptions { config_path: RepoPath::parse(&args.config)?, ..RenderOptions::default() };
    let set = Renderer::new(opts).desired(&source.repo(), commit)?;
    if let Some(app) = &args.app
        && set.app(app).is_none()
    {
        return Err(CommandError::NoSuchApp(app.clone()));
    }
    let with_manifests = matches!(args.output, OutputFormat::Json);
    let doc = to_document(&set, args.app.as_deref(), with_manifests);
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&doc).unwrap_or_default(),
        OutputFormat::Yaml => serde_saphyr::to_string(&doc).unwrap_or_default(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end()).map_err(CommandError::Output)?;
    Ok(())
}

/// Writes the embedded example repository into `dir`.
pub fn write_example(dir: &Path) -> Result<(), CommandError> {
    for (rel, content) in example::FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CommandError::Io { what: parent.display().to_string(), source: e })?;
        }
        std::fs::write(&path, content).map_err(|e| CommandError::Io { what: path.display().to_string(), source: e })?;
    }
    Ok(())
}

/// The desired set as a document: commit, then apps with their objects.
pub fn to_document(set: &DesiredSet, only_app: Option<&str>, with_manifests: bool) -> Value {
    let mut apps = Vec::new();
    for app in set.apps() {
        if only_app.is_some_and(|a| a != app.name) {
            continue;
        }
        let objects: Vec<Value> = set
            .app_objects(&app.name)
            .into_iter()
            .map(|(key, o)| {
                let mut v = json!({
                    "group": key.group,
                    "kind": key.kind,
                    "namespace": key.namespace,
                    "name": key.name,
                    "source": &*o.source,
                    "digest": o.digest_string(),
                    "commit": o.commit.to_string(),
                });
                if with_manifests && let Value::Object(m) = &mut v {
                    m.insert("manifest".into(), o.value());
                }
                v
            })
            .collect();
        apps.push(json!({
            "name": app.name,
            "project": app.project,
            "path": app.path.as_str(),
            "destination": {"cluster": app.destination.cluster, "namespace": app.destination.namespace},
            "syncPolicy": app.sync_policy,
            "requireSigned": app.require_signed,
            "objects": objects,
        }));
    }
    json!({
        "commit": set.commit().to_string(),
        "tree": set.tree().to_string(),
        "apps": apps,
    })
}
