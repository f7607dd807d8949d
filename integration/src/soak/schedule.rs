//! A run's schedule: a seeded, random list of steps. What a step does to a pod depends on
//! the pod's state when it runs (as a runtime would decide), so the schedule stays valid
//! whatever the interleaving of the concurrent workers.

use super::world::{FAULT_MODES, NETWORKS};

/// What the runtime does with one pod; the executor turns it into a CNI call from the pod's
/// state and the step's roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A runtime call for one pod: ADD, ADD again without DEL, DEL, DEL again, or CHECK.
    Pod {
        pod: usize,
        roll: u32,
    },
    /// STATUS.
    Status,
    /// GC with the runtime's valid list.
    Gc,
    Fault(Fault),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of plexusd wherever it is, then a restart.
    Kill,
    /// SIGTERM of plexusd (it finishes what is in flight), then a restart.
    Term,
    /// An ADD of a pod with the fault network whose delegate is slow or hangs; plexusd is
    /// SIGKILLed while the delegate runs, then restarted.
    KillDuringDelegate {
        roll: u32,
        hang: bool,
    },
    /// The fault delegate misbehaves for every container until `DelegateHealed`.
    DelegateMisbehaves(&'static str),
    DelegateHealed,
    /// A NAD's config is replaced by its other variant.
    NadEdited(&'static str),
    /// A NAD is deleted, and comes back with `NadRestored`.
    NadDeleted(&'static str),
    NadRestored(&'static str),
    /// A pod object is deleted (the runtime only deletes the pod from then on).
    PodDeleted(usize),
    /// The test API server (kube runs): stops serving, answers 500, or compacts (410 Gone).
    ApiPaused,
    ApiFailing,
    ApiCompacted,
    ApiHealed,
    /// The records tmpfs is full, or read-only, until `DiskHealed`.
    DiskFull,
    DiskReadOnly,
    DiskHealed,
}

impl Fault {
    /// The fault's kind, for the report.
    pub fn label(&self) -> String {
        match self {
            Self::Kill => "sigkill".into(),
            Self::Term => "sigterm".into(),
            Self::KillDuringDelegate { hang: true, .. } => "sigkill_during_hanging_delegate".into(),
            Self::KillDuringDelegate { hang: false, .. } => "sigkill_during_slow_delegate".into(),
            Self::DelegateMisbehaves(mode) => format!("delegate_{}", mode.replace('-', "_")),
            Self::DelegateHealed => "delegate_healed".into(),
            Self::NadEdited(_) => "nad_edited".into(),
            Self::NadDeleted(_) => "nad_deleted".into(),
            Self::NadRestored(_) => "nad_restored".into(),
            Self::PodDeleted(_) => "pod_object_deleted".into(),
            Self::ApiPaused => "api_paused".into(),
            Self::ApiFailing => "api_500".into(),
            Self::ApiCompacted => "api_410".into(),
            Self::ApiHealed => "api_healed".into(),
            Self::DiskFull => "records_disk_full".into(),
            Self::DiskReadOnly => "records_disk_read_only".into(),
            Self::DiskHealed => "records_disk_healed".into(),
        }
    }
}

/// The steps of the run with `seed`: mostly pod calls, with faults mixed in. A fault that
/// lasts is healed a few steps later.
pub fn steps(rng: &mut fastrand::Rng, count: usize, pods: usize, kube: bool) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::with_capacity(count + count / 4);
    // Lasting faults put their end here, to be inserted later: (position, step).
    let mut healing: Vec<(usize, Step)> = Vec::new();
    for position in 0..count {
        while let Some(i) = healing.iter().position(|(at, _)| *at <= position) {
            steps.push(healing.swap_remove(i).1);
        }
        let heal_at = |rng: &mut fastrand::Rng| position + rng.usize(2..12);
        let step = match rng.u32(0..1000) {
            0..=719 => Step::Pod {
                pod: rng.usize(0..pods),
                roll: rng.u32(..),
            },
            720..=759 => Step::Status,
            760..=799 => Step::Gc,
            800..=829 => Step::Fault(Fault::Kill),
            830..=844 => Step::Fault(Fault::Term),
            845..=879 => Step::Fault(Fault::KillDuringDelegate {
                roll: rng.u32(..),
                hang: rng.bool(),
            }),
            880..=904 => {
                healing.push((heal_at(rng), Step::Fault(Fault::DelegateHealed)));
                Step::Fault(Fault::DelegateMisbehaves(
                    FAULT_MODES[rng.usize(..FAULT_MODES.len())],
                ))
            }
            905..=924 => Step::Fault(Fault::NadEdited(NETWORKS[rng.usize(..NETWORKS.len())])),
            925..=939 => {
                let network = NETWORKS[rng.usize(..NETWORKS.len())];
                healing.push((heal_at(rng), Step::Fault(Fault::NadRestored(network))));
                Step::Fault(Fault::NadDeleted(network))
            }
            940..=949 => Step::Fault(Fault::PodDeleted(rng.usize(0..pods))),
            950..=974 if kube => {
                let fault = match rng.u32(0..3) {
                    0 => Fault::ApiPaused,
                    1 => Fault::ApiFailing,
                    _ => Fault::ApiCompacted,
                };
                healing.push((heal_at(rng), Step::Fault(Fault::ApiHealed)));
                Step::Fault(fault)
            }
            950..=974 => Step::Status,
            _ => {
                healing.push((heal_at(rng), Step::Fault(Fault::DiskHealed)));
                Step::Fault(if rng.bool() {
                    Fault::DiskFull
                } else {
                    Fault::DiskReadOnly
                })
            }
        };
        steps.push(step);
    }
    steps.extend(healing.into_iter().map(|(_, step)| step));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_schedule_and_every_lasting_fault_is_healed() {
        let schedule = |seed| steps(&mut fastrand::Rng::with_seed(seed), 300, 20, true);
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
        let all = schedule(7);
        let count = |f: &dyn Fn(&Step) -> bool| all.iter().filter(|s| f(s)).count();
        let disk_faults = count(&|s| {
            matches!(
                s,
                Step::Fault(Fault::DiskFull) | Step::Fault(Fault::DiskReadOnly)
            )
        });
        assert_eq!(
            disk_faults,
            count(&|s| matches!(s, Step::Fault(Fault::DiskHealed)))
        );
        assert!(count(&|s| matches!(s, Step::Pod { .. })) > 150);
    }

    #[test]
    fn files_runs_have_no_api_faults() {
        let all = steps(&mut fastrand::Rng::with_seed(3), 500, 20, false);
        assert!(!all.iter().any(|s| matches!(
            s,
            Step::Fault(Fault::ApiPaused | Fault::ApiFailing | Fault::ApiCompacted)
        )));
    }
}
