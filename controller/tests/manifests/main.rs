//! What the repository ships for users (examples/) is what plexusd accepts: the example NADs
//! and pods, the demo's cluster network, the deploy ConfigMap, and the webhook's manifests.
//! One test binary, so the workspace links plexus-controller into tests once.

mod examples;
mod webhook_deploy;
mod yaml;
