//! `gitgate fleet diff A B`: the parity proof. Renders the desired set
//! each cluster's spoke renders (`serve --cluster`) and lists what differs
//! and why; with `--live`, also the two clusters as the fleet's hub sees
//! them (objects, content in force, drift). Exit code as diff(1): 0 the
//! same, 1 different, 2 trouble (a cluster unknown live).

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
    /// Also compare the live clusters, as the fleet's hub at --server sees
    /// them (`serve --hub --fleet FILE`): objects only one runs, other Git
    /// content in force, drift.
    #[arg(long)]
    pub live: bool,
    #[command(flatten)]
    pub conn: super::sync::ServerArgs,
}

/// What `fleet diff --live` prints as JSON.
#[derive(serde::Serialize)]
struct Both<'a> {
    git: &'a ParityReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<&'a crate::fleet::live::ParityGroup>,
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
    let live = if args.live { Some(live(args)?) } else { None };
    match args.output {
        FleetOutput::Json => {
            println!("{}", serde_json::to_string_pretty(&Both { git: &report, live: live.as_ref() })?)
        }
        FleetOutput::Text => {
            print!("{}", text(args, &report));
            if let Some(g) = &live {
                print!("{}", live_text(args, g));
            }
        }
    }
    Ok(match live.map(|g| g.state) {
        Some(crate::fleet::live::ParityState::Unknown) => ExitCode::from(2),
        Some(crate::fleet::live::ParityState::Diverged) => ExitCode::from(1),
        _ if !report.same() => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// The two clusters as the hub last saw them, compared.
fn live(args: &FleetDiffArgs) -> anyhow::Result<crate::fleet::live::ParityGroup> {
    let view = args.conn.fleet()?;
    let spoke = |name: &str| {
        view.spokes.iter().find(|s| s.cluster == name).with_context(|| format!("the hub reads no spoke named {name}"))
    };
    let members = [spoke(&args.cluster_a)?, spoke(&args.cluster_b)?];
    let name = format!("{} and {}", args.cluster_a, args.cluster_b);
    // Two members of one parity group differ as that group allows.
    let allowed = match (&members[0].parity_group, &members[1].parity_group) {
        (Some(a), Some(b)) if a == b => view.allowed.get(a).map_or(&[][..], Vec::as_slice),
        _ => &[],
    };
    Ok(crate::fleet::live::compare(&name, &members, allowed))
}

fn live_text(args: &FleetDiffArgs, g: &crate::fleet::live::ParityGroup) -> String {
    use crate::fleet::live::ParityState;
    let mut out = String::new();
    for d in &g.differences {
        out.push_str(&format!("live: {}\n", d.describe()));
    }
    let (a, b) = (&args.cluster_a, &args.cluster_b);
    out.push_str(&match g.state {
        ParityState::Unknown => format!("live: {}\n", g.reason),
        ParityState::Identical => format!(
            "{a} and {b} are the same live: {} object(s) identical{}\n",
            g.identical,
            if g.sealed > 0 { format!(", {} sealed per cluster", g.sealed) } else { String::new() }
        ),
        ParityState::Diverged => {
            format!("{a} and {b} are different live: {} identical, {} different\n", g.identical, g.differences.len())
        }
    });
    out
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
