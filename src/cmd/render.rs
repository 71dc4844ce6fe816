//! `gitgate render`: fetch a repository (or the embedded example), render a
//! revision and print its desired set.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::render::{DesiredSet, RenderError, RenderOptions, Renderer};
use crate::source::scratch::ScratchDir;
use crate::source::{GitSource, RepoPath, SourceError};

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
    /// Render as the spoke of this cluster renders (`serve --cluster`):
    /// only the apps deployed to it.
    #[arg(long)]
    pub cluster: Option<String>,
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
    #[error(transparent)]
    Open(#[from] crate::desired::DesiredError),
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
    let url = crate::desired::open::source_url(args.repo.as_deref(), scratch.path())?;
    let cache = args.cache_dir.clone().unwrap_or_else(|| scratch.path().join("cache.git"));
    let source = GitSource::open(&url, &cache)?;
    source.fetch()?;
    let commit = source.resolve(&args.rev)?;
    let opts = RenderOptions {
        config_path: RepoPath::parse(&args.config)?,
        cluster: args.cluster.clone(),
        ..RenderOptions::default()
    };
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

/// `gitgate render`'s output, in this field order.
#[derive(serde::Serialize)]
pub struct RenderOutput {
    pub commit: String,
    pub tree: String,
    pub apps: Vec<AppOutput>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppOutput {
    pub name: String,
    pub project: String,
    pub path: String,
    pub destination: crate::render::config::Destination,
    pub sync_policy: crate::render::config::SyncPolicy,
    pub require_signed: bool,
    pub objects: Vec<ObjectOutput>,
    /// The sync hooks (`argocd.argoproj.io/hook`, `helm.sh/hook`); a hook
    /// with `generateName` is listed by that prefix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<ObjectOutput>,
}

#[derive(serde::Serialize)]
pub struct ObjectOutput {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub source: String,
    pub digest: String,
    pub commit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Value>,
}

/// The desired set as a document: commit, then apps with their objects
/// (and, with `with_manifests`, each object's manifest).
pub fn to_document(set: &DesiredSet, only_app: Option<&str>, with_manifests: bool) -> RenderOutput {
    let apps = set
        .apps()
        .iter()
        .filter(|app| only_app.is_none_or(|a| a == app.name))
        .map(|app| AppOutput {
            name: app.name.clone(),
            project: app.project.clone(),
            path: app.path.as_str().to_string(),
            destination: app.destination.clone(),
            sync_policy: app.sync_policy,
            require_signed: app.require_signed,
            objects: set.app_objects(&app.name).into_iter().map(|(k, o)| output(k, o, with_manifests)).collect(),
            hooks: set.app_hooks(&app.name).into_iter().map(|(k, o)| output(k, o, with_manifests)).collect(),
        })
        .collect();
    RenderOutput { commit: set.commit().to_string(), tree: set.tree().to_string(), apps }
}

fn output(key: crate::render::ObjectKey, o: &crate::render::DesiredObject, with_manifests: bool) -> ObjectOutput {
    ObjectOutput {
        group: key.group,
        kind: key.kind,
        namespace: key.namespace,
        name: key.name,
        source: o.source.to_string(),
        digest: o.digest_string(),
        commit: o.commit.to_string(),
        manifest: with_manifests.then(|| o.value()),
    }
}
