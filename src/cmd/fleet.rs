//! `gitgate fleet diff A B`: the parity proof, from Git alone. Renders the
//! desired set each cluster's spoke renders (`serve --cluster`) and lists
//! what differs and why. Exit code as diff(1): 0 the same, 1 different,
//! 2 trouble.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use crate::fleet::{Difference, ParityReport};
use crate::render::{RenderOptions, Renderer};
use crate::source::scratch::ScratchDir;
use crate::source::{GitSource, RepoPath};

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Compare what Git gives two clusters, object by object.
    Diff(FleetDiffArgs),
}

#[derive(Args, Debug)]
pub struct FleetDiffArgs {
    /// A cluster of the repository's gitgate.yaml.
    pub cluster_a: String,
    /// Another cluster of it.
    pub cluster_b: String,
    /// Repository URL or local path (default: the embedded example).
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch, tag or commit.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Path of the apps file in the repository.
    #[arg(long, default_value = "gitgate.yaml")]
    pub config: String,
    /// Bare cache directory to fetch into (default: a temporary one).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Output: text (one line per difference) or json.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = FleetOutput::Text)]
    pub output: FleetOutput,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FleetOutput {
    Text,
    Json,
}

pub fn run(command: FleetCommand) -> anyhow::Result<ExitCode> {
    match command {
        // Trouble is 2, as diff(1) says it: 1 means the clusters differ.
        FleetCommand::Diff(args) => diff(&args).or_else(|e| {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(2))
        }),
    }
}

fn diff(args: &FleetDiffArgs) -> anyhow::Result<ExitCode> {
    let scratch = ScratchDir::new("fleet").context("failed to make a temp dir")?;
    let url = crate::desired::open::source_url(args.repo.as_deref(), scratch.path())?;
    let cache = args.cache_dir.clone().unwrap_or_else(|| scratch.path().join("cache.git"));
    let source = GitSource::open(&url, &cache)?;
    source.fetch()?;
    let commit = source.resolve(&args.rev)?;
    let config_path = RepoPath::parse(&args.config)?;
    let render = |cluster: &str| {
        let opts =
            RenderOptions { config_path: config_path.clone(), cluster: Some(cluster.into()), ..Default::default() };
        Renderer::new(opts)
            .desired(&source.repo(), commit)
            .with_context(|| format!("failed to render cluster {cluster}"))
    };
    let (a, b) = (render(&args.cluster_a)?, render(&args.cluster_b)?);
    let report = crate::fleet::compare(&a, &b);
    match args.output {
        FleetOutput::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        FleetOutput::Text => print!("{}", text(args, &report)),
    }
    Ok(if report.same() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn text(args: &FleetDiffArgs, report: &ParityReport) -> String {
    let (a, b) = (&args.cluster_a, &args.cluster_b);
    let mut out = String::new();
    for d in &report.differences {
        let line = match d {
            Difference::OnlyA { object, app, file } => format!("only in {a}: {object} (app {app}, {file})"),
            Difference::OnlyB { object, app, file } => format!("only in {b}: {object} (app {app}, {file})"),
            Difference::Changed { object, field, why, .. } => format!("differs: {object} {field}: {why}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let verdict = if report.same() { "the same" } else { "different" };
    out.push_str(&format!(
        "{a} and {b} are {verdict} in Git: {} object(s) identical, {} different\n",
        report.identical,
        report.differences.len()
    ));
    out
}
