//! Networks that follow a running pod (`dynamicNetworks`): when a pod's networks annotation
//! changes, its recorded attachments are brought in line with it. `plan` decides what stays,
//! goes and comes; `reconciler` decides when, from the sources' pod updates. The change itself
//! is the service's (`Plexus::follow_annotation`), next to ADD and DEL, whose code it uses.

pub mod plan;
pub mod reconciler;
