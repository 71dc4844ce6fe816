//! The tracker: fetch, render, publish; a commit that does not render
//! leaves the last good desired set in force; a webhook trigger fetches at
//! once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gitgate::desired::tracker::{Synced, Tracker};
use gitgate::render::{RenderOptions, Renderer};
use gitgate::source::GitSource;
use support::*;

fn tracker(repo: &Repo) -> (tempfile::TempDir, Arc<Tracker>) {
    let (t, cache) = cache_dir();
    let src = Arc::new(GitSource::open(&repo.url(), &cache).unwrap());
    (t, Arc::new(Tracker::new(src, "main", Arc::new(Renderer::new(RenderOptions::default())))))
}

const CONFIG: &str = "apps:\n  - {name: web, path: web, destination: {namespace: web}}\n";

#[tokio::test]
async fn a_bad_commit_keeps_the_last_good_desired_set() {
    let repo = Repo::new();
    repo.write("gitgate.yaml", CONFIG);
    repo.write("web/cm.yaml", &configmap("web", "1"));
    let good = repo.commit("good");
    let (_t, tr) = tracker(&repo);
    assert!(tr.current().is_none());
    assert_eq!(tr.sync_once().await.unwrap(), Synced::Updated(oid(&good)));
    assert_eq!(tr.sync_once().await.unwrap(), Synced::Unchanged(oid(&good)));

    repo.write("gitgate.yaml", "apps:\n  - {name: web, path: web, destination: {namespace: web}\n");
    let bad = repo.commit("broken yaml");
    let err = tr.sync_once().await.unwrap_err();
    assert!(err.to_string().contains(&bad), "{err}");
    assert_eq!(tr.current().unwrap().commit(), oid(&good), "the last good commit stays in force");
    let why = tr.last_error().unwrap();
    assert!(why.contains("gitgate.yaml:"), "{why}");

    repo.write("gitgate.yaml", CONFIG);
    repo.write("web/cm.yaml", &configmap("web", "2"));
    let fixed = repo.commit("fixed");
    assert_eq!(tr.sync_once().await.unwrap(), Synced::Updated(oid(&fixed)));
    assert!(tr.last_error().is_none());
    let set = tr.current().unwrap();
    assert_eq!(set.get("", "ConfigMap", "web", "web").unwrap().commit, oid(&fixed));
}

#[tokio::test]
async fn a_trigger_fetches_at_once() {
    let repo = Repo::new();
    repo.write("gitgate.yaml", CONFIG);
    repo.write("web/cm.yaml", &configmap("web", "1"));
    let first = repo.commit("first");
    let (_t, tr) = tracker(&repo);
    let mut rx = tr.subscribe();
    let task = tokio::spawn(tr.clone().run(Duration::from_secs(3600)));
    tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|s| s.as_ref().is_some_and(|s| s.commit() == oid(&first))),
    )
    .await
    .expect("first sync")
    .unwrap();

    repo.write("web/cm.yaml", &configmap("web", "2"));
    let second = repo.commit("second");
    tr.trigger().notify_one();
    tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|s| s.as_ref().is_some_and(|s| s.commit() == oid(&second))),
    )
    .await
    .expect("a trigger syncs without waiting for the interval")
    .unwrap();
    task.abort();
}
