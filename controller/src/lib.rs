//! plexusd: the Plexus node controller. The `plexus` shim forwards each CNI call here.

/// CIDR prefixes and MAC addresses shared by annotations and results.
pub mod addr;
/// A pod's delegates run in order, rolled back, deleted, checked and garbage-collected.
pub mod attach;
/// CNI spec types, version conversion and the delegate executor.
pub mod cni;
/// The CNI conf dir: the cluster network and NADs without an inline config.
pub mod confdir;
/// plexusd's config file.
pub mod config;
/// Plexus's own `00-plexus.conflist`, generated from the cluster network's config.
pub mod conflist;
/// Following a directory's changes (manifests, the CNI conf dir).
pub mod dirwatch;
/// Networks that follow a running pod's annotation: what changes, and when.
pub mod hotplug;
/// Files put on the node atomically: the shim in the CNI bin dir, the conflist.
pub mod install;
/// Per-container serialization of operations.
pub mod locks;
/// Prometheus metrics and the executor wrapper that times delegates.
pub mod metrics;
/// Validated identifiers (container ids, interface names, Kubernetes names).
pub mod names;
/// plexusd's own netlink work inside pod namespaces (default-route moves).
pub mod netlink;
/// `plexusd probe`: kubelet's exec probe against the unix socket.
pub mod probe;
/// The on-disk attachment records.
pub mod records;
/// The socket protocol's request, parsed at the edge.
pub mod request;
/// Selections and networks turned into delegates.
pub mod resolve;
/// The `k8s.v1.cni.cncf.io/networks` annotation parser.
pub mod selection;
/// The HTTP server on the unix socket.
pub mod server;
/// The CNI commands end to end.
pub mod service;
/// Where NADs and pods come from.
pub mod source;
/// network-status entries and the runtime's merged result.
pub mod status;
#[cfg(test)]
pub mod testing;
