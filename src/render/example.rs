//! The example GitOps repository (`examples/gitops/`), embedded so that
//! `gitgate render` and `gitgate serve` work from any directory. A test
//! checks this list against the directory.

pub const FILES: &[(&str, &str)] = &[
    ("apps/guestbook/base/deployment.yaml", include_str!("../../examples/gitops/apps/guestbook/base/deployment.yaml")),
    (
        "apps/guestbook/base/kustomization.yaml",
        include_str!("../../examples/gitops/apps/guestbook/base/kustomization.yaml"),
    ),
    ("apps/guestbook/base/migrate.yaml", include_str!("../../examples/gitops/apps/guestbook/base/migrate.yaml")),
    ("apps/guestbook/base/service.yaml", include_str!("../../examples/gitops/apps/guestbook/base/service.yaml")),
    (
        "apps/guestbook/overlays/production/kustomization.yaml",
        include_str!("../../examples/gitops/apps/guestbook/overlays/production/kustomization.yaml"),
    ),
    (
        "apps/guestbook/overlays/production/replicas.yaml",
        include_str!("../../examples/gitops/apps/guestbook/overlays/production/replicas.yaml"),
    ),
    (
        "apps/guestbook/overlays/staging/kustomization.yaml",
        include_str!("../../examples/gitops/apps/guestbook/overlays/staging/kustomization.yaml"),
    ),
    ("apps/redis/base/kustomization.yaml", include_str!("../../examples/gitops/apps/redis/base/kustomization.yaml")),
    ("apps/redis/base/redis.yaml", include_str!("../../examples/gitops/apps/redis/base/redis.yaml")),
    (
        "apps/redis/overlays/production/kustomization.yaml",
        include_str!("../../examples/gitops/apps/redis/overlays/production/kustomization.yaml"),
    ),
    (
        "apps/redis/overlays/staging/kustomization.yaml",
        include_str!("../../examples/gitops/apps/redis/overlays/staging/kustomization.yaml"),
    ),
    ("gitgate.yaml", include_str!("../../examples/gitops/gitgate.yaml")),
    ("platform/namespaces.yaml", include_str!("../../examples/gitops/platform/namespaces.yaml")),
];
