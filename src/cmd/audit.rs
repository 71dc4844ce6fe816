//! The audit CLI: `gitgate audit verify`, `gitgate audit query`, and the
//! `--audit-*` / `--notify*` flags of `gitgate serve`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use prometheus_client::registry::Registry;

use crate::audit::chain::ClusterRule;
use crate::audit::checkpoint;
use crate::audit::fleet::{self, ChainSpec, FleetError};
use crate::audit::log::{self, AuditLog, Options};
use crate::audit::notify::{Notifier, NotifyConfig};
use crate::audit::query::{self, Filter, ObjectFilter};
use crate::audit::record::{EventKind, Outcome, now_micros};
use crate::audit::verify::{expand, verify_fleet_chain, verify_with};
use crate::audit::{AuditError, AuditMetrics, DEFAULT_LOG_PATH};

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain and the signed checkpoints; name the first
    /// broken record (exit status 1 when broken).
    Verify(VerifyArgs),
    /// Find records: who changed what, in which commit.
    Query(QueryArgs),
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Log files (rotated ones too) or directories holding them; with
    /// --fleet, one chain per cluster: NAME=PATH or PATH.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Each positional is one cluster's chain (NAME=PATH or PATH, a log
    /// file or its directory): verify each on its own, one line per
    /// cluster; exit status 1 when any is broken.
    #[arg(long, conflicts_with_all = ["checkpoints", "checkpoints_from_cluster"])]
    pub fleet: bool,
    /// Checkpoint files (default: `<stem>.checkpoints.jsonl` next to the logs).
    #[arg(long)]
    pub checkpoints: Vec<PathBuf>,
    /// The trusted checkpoint key: the PKCS#8 key file, or a file holding
    /// the base64 Ed25519 public key. Without it, checkpoints are checked
    /// against the key they name (which a forger could replace).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Also check against the checkpoints gitgate keeps in ConfigMaps
    /// (`gitgate-audit-<replica>`) in the cluster, so a cut tail shows even
    /// when the side file went with the log.
    #[arg(long)]
    pub checkpoints_from_cluster: bool,
    /// kubeconfig for --checkpoints-from-cluster (default: in-cluster, then
    /// $KUBECONFIG, then ~/.kube/config).
    #[arg(long, requires = "checkpoints_from_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// gitgate's namespace, for --checkpoints-from-cluster.
    #[arg(long, env = "GITGATE_NAMESPACE", default_value = "gitgate")]
    pub namespace: String,
    /// Whose checkpoints to use (repeatable; default: the replicas named by
    /// the first and last records of the files).
    #[arg(long = "replica", requires = "checkpoints_from_cluster")]
    pub replicas: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// Log files or directories (default: the default log directory); with
    /// --fleet, one chain per cluster: NAME=PATH or PATH.
    pub files: Vec<PathBuf>,
    /// Each positional is one cluster's chain (NAME=PATH or PATH, a log
    /// file or its directory): merge their records by time, each showing
    /// its cluster (a CLUSTER column; "cluster" in JSON).
    #[arg(long)]
    pub fleet: bool,
    /// Records traced to this commit (a prefix of its ID).
    #[arg(long)]
    pub commit: Option<String>,
    /// NAMESPACE/KIND/NAME (empty namespace for cluster-scoped) or KIND/NAME.
    #[arg(long)]
    pub object: Option<String>,
    /// Records of this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Records at or after this RFC 3339 time, or this long ago (15m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// allow, warn, deny, done, refused or failed.
    #[arg(long)]
    pub decision: Option<String>,
    /// admission, apply, prune, driftReverted, breakGlassOpened, …
    #[arg(long)]
    pub event: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The audit flags of `gitgate serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeAuditArgs {
    /// The audit log (JSON Lines, hash-chained).
    #[arg(long, env = "GITGATE_AUDIT_LOG", default_value = DEFAULT_LOG_PATH)]
    pub audit_log: PathBuf,
    /// Admit changes even when they cannot be recorded (default: deny them).
    #[arg(long, env = "GITGATE_AUDIT_FAIL_OPEN")]
    pub audit_fail_open: bool,
    /// Also write every record to stdout, for log shippers.
    #[arg(long, env = "GITGATE_AUDIT_STDOUT")]
    pub audit_stdout: bool,
    /// Rotate the log when it would grow past this many bytes (0: never).
    #[arg(long, default_value_t = 128 * 1024 * 1024)]
    pub audit_rotate_bytes: u64,
    /// Ed25519 PKCS#8 key that signs checkpoints (mount it from a Secret);
    /// generated when absent. Default: `checkpoint.pk8` next to the log.
    #[arg(long, env = "GITGATE_AUDIT_KEY")]
    pub audit_key: Option<PathBuf>,
    /// How often appended records are made durable (`fdatasync`), between
    /// 1ms and 1s. A crash of gitgate loses nothing it acknowledged; a power
    /// loss can lose the records of the last interval, and no checkpoint
    /// ever covers records that were not yet durable.
    #[arg(long, env = "GITGATE_AUDIT_SYNC_INTERVAL", default_value = "10ms", value_parser = sync_interval)]
    pub audit_sync_interval: std::time::Duration,
    /// Write a signed checkpoint every N records (and at least every 10 s).
    #[arg(long, default_value_t = 1000)]
    pub audit_checkpoint_every: u64,
    /// This replica's name in records (default: POD_NAME, HOSTNAME).
    #[arg(long, env = "GITGATE_REPLICA")]
    pub audit_replica: Option<String>,
    /// Slack-compatible webhook URL for every notification trigger.
    #[arg(long, env = "GITGATE_NOTIFY_URL")]
    pub notify_url: Option<String>,
    /// TRIGGER=URL for one trigger (deny, break-glass, sync-failed,
    /// drift-reverted, unsigned-commit, promotion); repeatable.
    #[arg(long = "notify")]
    pub notify: Vec<String>,
}

impl ServeAuditArgs {
    /// Opens the log for `serve`, registering its metrics and starting the
    /// notifier on the current runtime. `cluster` (a spoke's `--cluster`)
    /// is written into every record.
    pub fn open(&self, registry: &mut Registry, cluster: Option<&str>) -> Result<Arc<AuditLog>, AuditError> {
        let metrics = AuditMetrics::register(registry);
        let notifier = match NotifyConfig::from_flags(self.notify_url.as_deref(), &self.notify)? {
            Some(c) => Some(Notifier::start(c, metrics.notifications.clone())?),
            None => None,
        };
        let key = self
            .audit_key
            .clone()
            .unwrap_or_else(|| self.audit_log.parent().unwrap_or(Path::new("")).join("checkpoint.pk8"));
        let mut opts = Options::new(&self.audit_log).with_checkpoints(key);
        if let Some(c) = opts.checkpoints.as_mut() {
            c.every_records = self.audit_checkpoint_every.max(1);
        }
        if let Some(r) = &self.audit_replica {
            opts.replica.clone_from(r);
        }
        opts.cluster = cluster.map(str::to_owned);
        opts.rotate_bytes = self.audit_rotate_bytes;
        opts.sync_interval = self.audit_sync_interval;
        opts.stdout = self.audit_stdout;
        opts.metrics = metrics;
        opts.notifier = notifier;
        let log = AuditLog::open(opts)?;
        tracing::info!(path = %log.path().display(), head = ?log.head().map(|h| h.seq), cluster = ?log.cluster(), fail_open = self.audit_fail_open, "audit log open");
        Ok(Arc::new(log))
    }
}

fn sync_interval(input: &str) -> Result<std::time::Duration, String> {
    let d = crate::config::parse_duration(input).map_err(|e| e.to_string())?;
    if !(std::time::Duration::from_millis(1)..=std::time::Duration::from_secs(1)).contains(&d) {
        return Err(format!("{input} is outside 1ms..1s"));
    }
    Ok(d)
}

pub fn run(args: AuditArgs) -> Result<ExitCode, AuditError> {
    match args.command {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Query(a) => query(a),
    }
}

/// The checkpoints kept in the cluster for the replicas that wrote `files`.
fn cluster_checkpoints(a: &VerifyArgs) -> Result<Vec<checkpoint::Checkpoint>, AuditError> {
    let replicas: BTreeSet<String> = if a.replicas.is_empty() {
        crate::audit::cluster::replicas_of(&expand(&a.files)?)
    } else {
        a.replicas.iter().cloned().collect()
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|source| AuditError::Io {
        op: "start a runtime for",
        path: PathBuf::from("the cluster client"),
        source,
    })?;
    let (cps, bad) = rt.block_on(async {
        let client = crate::audit::cluster::client(a.kubeconfig.as_deref()).await?;
        crate::audit::cluster::fetch(client, &a.namespace, &replicas).await
    })?;
    for (cm, line, e) in bad {
        eprintln!("warning: ConfigMap {}/{cm} line {line} is not a checkpoint: {e}", a.namespace);
    }
    let names: Vec<&str> = replicas.iter().map(String::as_str).collect();
    eprintln!(
        "{} checkpoint(s) from the cluster (namespace {}, replica(s) {})",
        cps.len(),
        a.namespace,
        names.join(", ")
    );
    Ok(cps)
}

fn verify(a: VerifyArgs) -> Result<ExitCode, AuditError> {
    if a.fleet {
        return verify_fleet(&a);
    }
    let extra = if a.checkpoints_from_cluster { cluster_checkpoints(&a)? } else { Vec::new() };
    let report = verify_with(&a.files, &a.checkpoints, extra, a.key.as_deref())?;
    for (seq, why) in &report.bad_checkpoints {
        println!("BAD CHECKPOINT for record {seq}: {why}");
    }
    match &report.verdict {
        Ok(s) => {
            let range = match (s.first, &s.last) {
                (Some(f), Some(l)) => format!("records {f}..={}, head {}", l.seq, l.hash),
                _ => "no records".to_owned(),
            };
            println!(
                "{}: {} records in {} file(s) ({range}); {} checkpoint(s) matched{}{}",
                if report.ok() { "OK" } else { "FAILED" },
                s.records,
                report.files.len(),
                s.checkpoints_matched,
                if s.checkpoints_before > 0 {
                    format!(", {} before the first record given", s.checkpoints_before)
                } else {
                    String::new()
                },
                if report.key_pinned { "" } else { " (key not pinned: pass --key)" }
            );
        }
        Err(b) => println!("BROKEN: {b}"),
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Builds the filter from the query flags.
pub fn filter(a: &QueryArgs) -> Result<Filter, AuditError> {
    Ok(Filter {
        commit: a.commit.clone(),
        object: a.object.as_deref().map(ObjectFilter::parse).transpose()?,
        user: a.user.clone(),
        since: a.since.as_deref().map(|s| query::parse_since(s, now_micros())).transpose()?,
        decision: a
            .decision
            .as_deref()
            .map(|d| {
                Outcome::parse(d).ok_or_else(|| AuditError::Invalid {
                    what: "--decision",
                    reason: format!("{d:?} is not one of allow, warn, deny, done, refused, failed"),
                })
            })
            .transpose()?,
        event: a
            .event
            .as_deref()
            .map(|e| {
                EventKind::parse(e).ok_or_else(|| AuditError::Invalid {
                    what: "--event",
                    reason: format!("{e:?} is not an event kind"),
                })
            })
            .transpose()?,
    })
}

fn query(a: QueryArgs) -> Result<ExitCode, AuditError> {
    let filter = filter(&a)?;
    if a.fleet {
        return query_fleet(&a, &filter);
    }
    let paths = if a.files.is_empty() { log::chain_files(Path::new(DEFAULT_LOG_PATH)) } else { expand(&a.files)? };
    let found = query::run(&paths, &filter)?;
    match a.output {
        Output::Table => print!("{}", query::table(&found.records)),
        Output::Json => {
            let json = serde_json::to_string_pretty(&found.records).map_err(|source| AuditError::Encode { source })?;
            println!("{json}");
        }
    }
    if found.unreadable > 0 {
        eprintln!("warning: {} line(s) are not records; run `gitgate audit verify`", found.unreadable);
    }
    Ok(ExitCode::SUCCESS)
}

/// The chains of `--fleet`: each positional parsed, its NAME unique, its
/// path present and holding logs, and no file in two chains.
fn fleet_chains(args: &[PathBuf]) -> Result<Vec<(ChainSpec, Vec<PathBuf>)>, AuditError> {
    let specs = args
        .iter()
        .map(|a| match a.to_str() {
            Some(s) => ChainSpec::parse(s),
            None => Ok(ChainSpec { name: None, path: a.clone() }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    fleet::check_names(&specs)?;
    let mut chains = Vec::with_capacity(specs.len());
    for spec in specs {
        let name = spec.name.clone().unwrap_or_else(|| spec.path.display().to_string());
        if !spec.path.exists() {
            return Err(FleetError::Missing { name, path: spec.path }.into());
        }
        // A file brings its rotated files along: its whole chain.
        let files =
            if spec.path.is_dir() { expand(std::slice::from_ref(&spec.path))? } else { log::chain_files(&spec.path) };
        if files.is_empty() {
            return Err(FleetError::NoLogs { name, path: spec.path }.into());
        }
        chains.push((spec, files));
    }
    let named: Vec<(String, Vec<PathBuf>)> = chains
        .iter()
        .map(|(spec, files)| (spec.name.clone().unwrap_or_else(|| spec.path.display().to_string()), files.clone()))
        .collect();
    fleet::check_disjoint(&named)?;
    Ok(chains)
}

fn rule_for(spec: &ChainSpec) -> ClusterRule {
    spec.name.as_ref().map_or_else(ClusterRule::consistent, ClusterRule::given)
}

/// The cluster the first record of a chain's files names, if any does.
fn first_cluster(files: &[PathBuf]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Cluster {
        cluster: Option<String>,
    }
    files.iter().find_map(|f| {
        let mut line = Vec::new();
        BufReader::new(File::open(f).ok()?).read_until(b'\n', &mut line).ok()?;
        serde_json::from_slice::<Cluster>(line.trim_ascii_end()).ok()?.cluster
    })
}

fn verify_fleet(a: &VerifyArgs) -> Result<ExitCode, AuditError> {
    let chains = fleet_chains(&a.files)?;
    let mut all_ok = true;
    for (spec, files) in chains {
        let report = verify_fleet_chain(&files, a.key.as_deref(), rule_for(&spec))?;
        let found = match &report.verdict {
            Ok(s) => s.cluster.clone(),
            Err(_) => first_cluster(&files),
        };
        let name = spec.display_name(found.as_deref());
        for (seq, why) in &report.bad_checkpoints {
            println!("{name}: BAD CHECKPOINT for record {seq}: {why}");
        }
        match &report.verdict {
            Ok(s) => {
                let last = match (&s.last, &s.last_time) {
                    (Some(h), Some(t)) => format!(", last record {} at {t}", h.seq),
                    (Some(h), None) => format!(", last record {}", h.seq),
                    _ => String::new(),
                };
                println!(
                    "{name}: {}: {} records in {} file(s){last}; {} checkpoint(s) matched{}",
                    if report.ok() { "OK" } else { "FAILED" },
                    s.records,
                    report.files.len(),
                    s.checkpoints_matched,
                    if report.key_pinned { "" } else { " (key not pinned: pass --key)" }
                );
            }
            Err(b) => println!("{name}: BROKEN: {b}"),
        }
        all_ok &= report.ok();
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn query_fleet(a: &QueryArgs, filter: &Filter) -> Result<ExitCode, AuditError> {
    let chains = fleet_chains(&a.files)?;
    let mut named = Vec::with_capacity(chains.len());
    let mut unreadable = 0;
    for (spec, files) in chains {
        let mut rule = rule_for(&spec);
        let label = spec.name.clone().unwrap_or_else(|| spec.path.display().to_string());
        let found = query::scan(&files, filter, |r, path, line| {
            rule.check(r.cluster.as_deref()).map_err(|problem| {
                AuditError::from(FleetError::Mislabelled {
                    chain: label.clone(),
                    seq: r.seq,
                    at: format!(" ({}:{line})", path.display()),
                    why: problem.to_string(),
                })
            })
        })?;
        unreadable += found.unreadable;
        named.push((spec.display_name(rule.cluster()), found.records));
    }
    let merged = fleet::merge(named)?;
    let mut text = match a.output {
        Output::Table => query::fleet_table(&merged),
        Output::Json => serde_json::to_string_pretty(&merged).map_err(|source| AuditError::Encode { source })?,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(AuditError::Io { op: "write the records to", path: PathBuf::from("stdout"), source: e });
        }
        _ => {}
    }
    if unreadable > 0 {
        eprintln!("warning: {unreadable} line(s) are not records; run `gitgate audit verify --fleet`");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::ServeAuditArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        audit: ServeAuditArgs,
    }

    #[test]
    fn the_sync_interval_defaults_to_10ms_and_refuses_values_outside_1ms_to_1s() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()));
        assert_eq!(parse(&[]).unwrap().audit.audit_sync_interval, Duration::from_millis(10));
        let cli = parse(&["--audit-sync-interval", "50ms"]).unwrap();
        assert_eq!(cli.audit.audit_sync_interval, Duration::from_millis(50));
        for bad in ["0ms", "2s", "soon"] {
            let err = parse(&["--audit-sync-interval", bad]).err().unwrap().to_string();
            assert!(err.contains("--audit-sync-interval"), "{bad}: {err}");
        }
        let err = parse(&["--audit-sync-interval", "2s"]).err().unwrap().to_string();
        assert!(err.contains("outside 1ms..1s"), "{err}");
    }
}
