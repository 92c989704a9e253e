//! `version`: this routectl's version and commit, and beside them the version of the
//! routerd on this node (over its control socket) and the kind of cluster it runs, in
//! calicoctl's layout (values from column 20).
//!
//! calicoctl reads the cluster's version from a `ClusterInformation` resource; routerd has
//! none, and the daemon the operator is talking to is what matters when the two may differ
//! during an upgrade, so the node's routerd answers for the cluster.

use crate::status::NodeStatus;

/// The commit routectl was built from (`git rev-parse --short HEAD` at build time).
pub const GIT_COMMIT: &str = match option_env!("ROUTERD_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// The client lines.
pub fn client_lines(version: &str, commit: &str) -> String {
    format!("Client Version:    v{version}\nGit commit:        {commit}\n")
}

/// The cluster lines from the node's routerd: its version, and `routerd,bgp,<datastore>`
/// (calicoctl's `k8s,bgp,kdd`), the datastore named by its address's scheme.
pub fn cluster_lines(status: &NodeStatus) -> String {
    let datastore = status
        .datastore
        .address
        .split(':')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    format!(
        "Cluster Version:   v{}\nCluster Type:      routerd,bgp,{datastore}\n",
        status.version
    )
}
