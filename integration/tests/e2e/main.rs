//! End-to-end tests: the real `plexus` shim and `plexusd`, Debian's CNI plugins, and a network
//! namespace per node and per pod. Run as root (`make test`).

mod fixtures;

mod add;
mod annotations;
mod conflist;
mod cri;
mod devices;
mod disk;
mod failures;
mod flannel2;
mod hotplug;
mod image;
mod inspect;
mod kube;
mod lifecycle;
mod metrics;
mod multus;
mod shim;
mod soak;
mod socket;
mod validate;
mod webhook;
