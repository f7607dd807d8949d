//! plexusd: the Plexus node controller. The `plexus` shim forwards each CNI call here.

/// CIDR prefixes and MAC addresses shared by annotations and results.
pub mod addr;
/// A pod's delegates run in order, rolled back, deleted, checked and garbage-collected.
pub mod attach;
/// Work that follows a CNI reply, started once the reply is on its way.
pub mod background;
/// What the admission webhook and `plexusd validate` check in NADs, pods and pod templates.
pub mod checks;
/// Wall-clock instants as records and `plexusd inspect` show them.
pub mod clock;
/// CNI spec types, version conversion and the delegate executor.
pub mod cni;
/// The CNI conf dir: the cluster network and NADs without an inline config.
pub mod confdir;
/// plexusd's config file.
pub mod config;
/// Plexus's own `00-plexus.conflist`, generated from the cluster network's config.
pub mod conflist;
/// Which device each attachment runs with: device plugins, DRA claims, device-info.
pub mod devices;
/// Following a directory's changes (manifests, the CNI conf dir).
pub mod dirwatch;
/// The most recent failed ADDs, for `plexusd inspect`.
pub mod failures;
/// Networks that follow a running pod's annotation: what changes, and when.
pub mod hotplug;
/// `plexusd inspect`: the report of what is attached on the node, and its client.
pub mod inspect;
/// Files put on the node atomically: the shim in the CNI bin dir, the conflist.
pub mod install;
/// Per-container serialization of operations.
pub mod locks;
/// plexusd's runtime and allocator limits, and trimming after bursts of pods.
pub mod memory;
/// Prometheus metrics and the executor wrapper that times delegates.
pub mod metrics;
/// Multus's per-container cache, read to adopt the pods Multus attached.
pub mod multus;
/// Validated identifiers (container ids, interface names, Kubernetes names).
pub mod names;
/// plexusd's own netlink work inside pod namespaces (default-route moves).
pub mod netlink;
/// `plexusd probe`: kubelet's exec probe against the unix socket.
pub mod probe;
/// Property tests of the parsers, the result conversion and the interface naming.
#[cfg(test)]
mod properties;
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
/// The socket's gate: caller credentials, connection and request limits, read timeouts.
pub mod socket;
/// Where NADs and pods come from.
pub mod source;
/// network-status entries and the runtime's merged result.
pub mod status;
#[cfg(test)]
pub mod testing;
/// `plexusd validate`: the admission checks, offline, on manifest files.
pub mod validate;
/// `plexusd webhook`: the admission checks as a validating admission webhook.
pub mod webhook;
