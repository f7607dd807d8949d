//! One run: the world, its schedule executed by concurrent workers as a runtime would call
//! (one call at a time per pod, many pods at once), the faults, then the runtime's replay
//! (DEL of every pod that got an ADD, then GC) and the end-of-run checks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::Options;
use super::check;
use super::report::{Tally, Violation};
use super::schedule::{self, Fault, Step};
use super::world::{self, NETWORKS, SoakPod, World};
use crate::ShimOutput;

/// Where a pod is in the runtime's eyes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Never added.
    Fresh,
    /// Its last ADD succeeded and no DEL came since.
    Live,
    /// Its last ADD or DEL failed: the runtime still owes it a DEL.
    NeedsDel,
    /// Deleted.
    Deleted,
}

#[derive(Debug)]
struct PodState {
    phase: Phase,
    added_ever: bool,
    object_deleted: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Run<'w> {
    seed: u64,
    world: &'w World,
    pods: Vec<Mutex<PodState>>,
    /// Pod calls hold it shared, GC alone: the runtime's valid list is exact while GC runs.
    gc_gate: RwLock<()>,
    /// One kill or restart at a time.
    plexusd: Mutex<()>,
    variants: Mutex<[usize; NETWORKS.len()]>,
    tally: Mutex<Tally>,
}

/// Runs the world of `seed` and returns what it tried and found.
pub fn run(seed: u64, options: &Options) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let kube = options.kube_share > 0 && seed % options.kube_share == 1;
    let pods = world::pods(options.pods, &mut rng);
    let steps = schedule::steps(&mut rng, options.steps, options.pods, kube);
    let started = Instant::now();
    let world = World::start(kube, pods, options.delegate_timeout_seconds);
    let built = started.elapsed();
    let run = Run {
        seed,
        world: &world,
        pods: (0..world.pods.len())
            .map(|_| {
                Mutex::new(PodState {
                    phase: Phase::Fresh,
                    added_ever: false,
                    object_deleted: false,
                })
            })
            .collect(),
        gc_gate: RwLock::new(()),
        plexusd: Mutex::new(()),
        variants: Mutex::new([0; NETWORKS.len()]),
        tally: Mutex::new(Tally {
            runs: 1,
            kube_runs: u64::from(kube),
            steps: steps.len() as u64,
            ..Tally::default()
        }),
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..options.workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(step) = steps.get(index) else { break };
                    let executed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run.execute(index, *step)
                    }));
                    if let Err(panic) = executed {
                        let detail = format!("{step:?}: {}", super::panic_message(panic.as_ref()));
                        run.violation(Some(index), "step_failed", detail);
                    }
                }
            });
        }
    });
    let stepped = started.elapsed();
    run.replay_and_check();
    eprintln!(
        "soak: seed {seed}: world {:.1} s, steps {:.1} s, replay {:.1} s",
        built.as_secs_f64(),
        (stepped - built).as_secs_f64(),
        (started.elapsed() - stepped).as_secs_f64()
    );
    let tally = std::mem::take(&mut *lock(&run.tally));
    drop(run);
    if !tally.violations.is_empty() {
        keep_log(&world, seed, options);
    }
    tally
}

/// plexusd's log of a run that broke a promise, for the operator to read.
fn keep_log(world: &World, seed: u64, options: &Options) {
    let path = options.log_dir.join(format!("plexusd-seed-{seed}.log"));
    if std::fs::create_dir_all(&options.log_dir).is_ok()
        && std::fs::write(&path, world.node.log()).is_ok()
    {
        eprintln!(
            "soak: plexusd's log of seed {seed} is in {}",
            path.display()
        );
    }
}

impl Run<'_> {
    fn violation(&self, step: Option<usize>, kind: &'static str, mut detail: String) {
        // A panic from the test world may carry all of plexusd's log; the run's log is kept.
        if detail.len() > 2000 {
            let cut = (0..=2000)
                .rev()
                .find(|&i| detail.is_char_boundary(i))
                .unwrap_or(0);
            detail.truncate(cut);
            detail.push_str(" …");
        }
        let violation = Violation {
            seed: self.seed,
            step,
            kind,
            detail,
        };
        eprintln!("soak: VIOLATION {violation}");
        lock(&self.tally).violations.push(violation);
    }

    /// Counts a call and checks that its reply is a CNI answer.
    fn record(&self, step: Option<usize>, kind: &str, output: &ShimOutput) {
        let failure = (!output.success()).then(|| {
            let error: serde_json::Value = serde_json::from_str(&output.stdout).unwrap_or_default();
            let msg = error["msg"].as_str().unwrap_or_default().to_owned();
            (error["code"].as_u64().unwrap_or_default(), msg)
        });
        lock(&self.tally).operation(kind, failure.as_ref().map(|(c, m)| (*c, m.as_str())));
        if let Some(problem) = check::reply_problem(output) {
            self.violation(step, "invalid_reply", format!("{kind}: {problem}"));
        }
    }

    fn execute(&self, index: usize, step: Step) {
        match step {
            Step::Pod { pod, roll } => self.pod_call(index, pod, roll),
            Step::Status => {
                let _shared = self.gc_gate.read();
                let output = self.world.node.status();
                self.record(Some(index), "STATUS", &output);
            }
            Step::Gc => self.gc(index),
            Step::Fault(fault) => {
                lock(&self.tally).fault(fault.label());
                self.fault(index, fault);
            }
        }
    }

    /// What the runtime does next with this pod, from its phase and the step's roll.
    fn pod_call(&self, index: usize, pod: usize, roll: u32) {
        // A runtime whose plugin is down retries later: calls wait out a restart (those in
        // flight when plexusd is killed still fail).
        drop(lock(&self.plexusd));
        let _shared = self.gc_gate.read();
        let soak_pod = &self.world.pods[pod];
        let mut state = lock(&self.pods[pod]);
        let roll = roll % 100;
        match (state.phase, state.object_deleted) {
            (Phase::Fresh, true) => {}
            (Phase::Live | Phase::NeedsDel, true) => self.del(index, soak_pod, &mut state, "DEL"),
            (Phase::Deleted, true) => self.del(index, soak_pod, &mut state, "DEL again"),
            (Phase::Fresh, false) => self.add(index, soak_pod, &mut state, "ADD"),
            (Phase::Live, false) => match roll {
                0..=39 => self.del(index, soak_pod, &mut state, "DEL"),
                40..=64 | 90..=99 => {
                    let output = self.world.node.check(&soak_pod.pod);
                    self.record(Some(index), "CHECK", &output);
                }
                _ => self.add(index, soak_pod, &mut state, "ADD again (no DEL)"),
            },
            (Phase::NeedsDel, false) if roll < 25 => {
                self.add(index, soak_pod, &mut state, "ADD again (no DEL)")
            }
            (Phase::NeedsDel, false) => self.del(index, soak_pod, &mut state, "DEL"),
            (Phase::Deleted, false) if roll < 40 => {
                self.del(index, soak_pod, &mut state, "DEL again")
            }
            (Phase::Deleted, false) => self.add(index, soak_pod, &mut state, "ADD"),
        }
    }

    fn add(&self, index: usize, pod: &SoakPod, state: &mut PodState, kind: &str) {
        state.added_ever = true;
        let output = self.world.node.add(&pod.pod);
        self.record(Some(index), kind, &output);
        if output.success() {
            state.phase = Phase::Live;
            if let Some(problem) = check::interfaces_problem(pod) {
                self.violation(Some(index), "wrong_interfaces", problem);
            }
        } else {
            state.phase = Phase::NeedsDel;
        }
    }

    fn del(&self, index: usize, pod: &SoakPod, state: &mut PodState, kind: &str) {
        let output = self.world.node.del(&pod.pod);
        self.record(Some(index), kind, &output);
        state.phase = if output.success() {
            Phase::Deleted
        } else {
            Phase::NeedsDel
        };
    }

    /// GC with the pods the runtime holds live. When it succeeds, no other pod may keep an
    /// interface or a record.
    fn gc(&self, index: usize) {
        let _exclusive = self.gc_gate.write();
        let states: Vec<MutexGuard<'_, PodState>> = self.pods.iter().map(lock).collect();
        let live: Vec<&crate::Pod> = self
            .world
            .pods
            .iter()
            .zip(&states)
            .filter(|(_, s)| s.phase == Phase::Live)
            .map(|(p, _)| &p.pod)
            .collect();
        let output = self.world.node.gc(&live);
        self.record(Some(index), "GC", &output);
        if !output.success() {
            return;
        }
        let records = self.world.node.records();
        for (pod, state) in self.world.pods.iter().zip(&states) {
            if state.phase == Phase::Live {
                continue;
            }
            let links = pod.pod.link_names();
            // The record, or a temp file of one.
            let prefix = format!("{}.", pod.pod.container_id);
            let recorded = records.iter().any(|r| r.starts_with(&prefix));
            if !links.is_empty() || recorded {
                self.violation(
                    Some(index),
                    "gc_left_behind",
                    format!(
                        "{} ({}) not in the valid list: interfaces {links:?}, record: {recorded}",
                        pod.pod.name, pod.pod.container_id
                    ),
                );
            }
        }
    }

    fn fault(&self, index: usize, fault: Fault) {
        let world = self.world;
        match fault {
            Fault::Kill => self.restart(true),
            Fault::Term => self.restart(false),
            Fault::KillDuringDelegate { roll, hang } => {
                self.kill_during_delegate(index, roll, hang)
            }
            Fault::DelegateMisbehaves(mode) => world.set_fault_mode(Some(mode)),
            Fault::DelegateHealed => world.set_fault_mode(None),
            Fault::NadEdited(network) => {
                let variant = {
                    let mut variants = lock(&self.variants);
                    let slot = network_slot(network);
                    variants[slot] += 1;
                    variants[slot]
                };
                world.set_network(network, variant);
            }
            Fault::NadDeleted(network) => world.delete_network(network),
            Fault::NadRestored(network) => {
                let variant = lock(&self.variants)[network_slot(network)];
                world.set_network(network, variant);
            }
            Fault::PodDeleted(pod) => {
                let mut state = lock(&self.pods[pod]);
                state.object_deleted = true;
                world.delete_pod_object(&world.pods[pod]);
            }
            // Not while plexusd restarts: it only becomes ready against a healthy API server.
            Fault::ApiPaused => self.between_restarts(|| self.with_api(|api| api.pause())),
            Fault::ApiFailing => {
                self.between_restarts(|| self.with_api(|api| api.fail_requests(true)))
            }
            Fault::ApiCompacted => self.between_restarts(|| self.with_api(|api| api.compact())),
            Fault::ApiHealed => self.heal_api(),
            Fault::DiskFull => world.node.records_mount().fill(),
            Fault::DiskReadOnly => world.node.records_mount().set_read_only(true, None),
            Fault::DiskHealed => heal_disk(world),
        }
    }

    fn with_api(&self, f: impl FnOnce(&crate::apiserver::ApiServer)) {
        if self.world.kube {
            f(self.world.node.fixture());
        }
    }

    fn between_restarts(&self, f: impl FnOnce()) {
        let _no_restart = lock(&self.plexusd);
        f();
    }

    fn heal_api(&self) {
        self.with_api(|api| {
            api.fail_requests(false);
            api.resume();
        });
    }

    /// Stops plexusd (SIGKILL, or SIGTERM and its grace) and starts it again. The API server
    /// is healed first: plexusd is only ready once its caches have synced.
    fn restart(&self, kill: bool) {
        let _one = lock(&self.plexusd);
        if kill {
            self.world.node.kill_plexusd();
        } else {
            self.world.node.stop_plexusd();
        }
        self.heal_api();
        self.world.node.start_plexusd();
    }

    /// An ADD whose fault delegate has done its work and is still running (slow, or hung)
    /// when plexusd is SIGKILLed; after the restart the runtime owes the pod a DEL.
    fn kill_during_delegate(&self, index: usize, roll: u32, hang: bool) {
        let candidates: Vec<usize> = (0..self.world.pods.len())
            .filter(|&i| self.world.pods[i].uses_fault_network())
            .collect();
        let Some(&pod) = candidates.get(roll as usize % candidates.len().max(1)) else {
            return;
        };
        let _shared = self.gc_gate.read();
        let soak_pod = &self.world.pods[pod];
        let mut state = lock(&self.pods[pod]);
        if state.object_deleted {
            return;
        }
        self.world
            .set_container_fault(soak_pod, Some(if hang { "hang" } else { "slow" }));
        let marker = self.world.running_marker(soak_pod);
        state.added_ever = true;
        let output = std::thread::scope(|scope| {
            let add = scope.spawn(|| self.world.node.add(&soak_pod.pod));
            let deadline = Instant::now() + Duration::from_secs(60);
            while !marker.exists() && !add.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if marker.exists() {
                self.restart(true);
            }
            add.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        self.record(Some(index), "ADD (plexusd killed in a delegate)", &output);
        // However it ended, the runtime saw no success it can trust only if it got one.
        state.phase = if output.success() {
            Phase::Live
        } else {
            Phase::NeedsDel
        };
        self.world.set_container_fault(soak_pod, None);
    }

    /// The runtime's view replayed: every fault healed, DEL for every pod that got an ADD,
    /// then GC with nothing valid; then nothing may be left.
    fn replay_and_check(&self) {
        let world = self.world;
        world.set_fault_mode(None);
        for pod in &world.pods {
            world.set_container_fault(pod, None);
        }
        self.heal_api();
        heal_disk(world);
        for (pod, state) in world.pods.iter().zip(&self.pods) {
            if !lock(state).added_ever {
                continue;
            }
            let output = world.node.del(&pod.pod);
            self.record(None, "replay DEL", &output);
            if !output.success() {
                self.violation(
                    None,
                    "replay_del_failed",
                    format!(
                        "{} ({}): {}",
                        pod.pod.name, pod.pod.container_id, output.stdout
                    ),
                );
            }
        }
        let output = world.node.gc(&[]);
        self.record(None, "replay GC", &output);
        if !output.success() {
            self.violation(None, "replay_gc_failed", output.stdout.clone());
        }
        for (kind, detail) in check::leftovers(&world.node, &world.pods) {
            self.violation(None, kind, detail);
        }
        let plexusd = world.node.plexusd_pid();
        for stray in check::stray_processes(&world.node, plexusd) {
            self.violation(None, "process_left", format!("while plexusd runs: {stray}"));
        }
        world.node.stop_plexusd();
        for stray in check::stray_processes(&world.node, None) {
            self.violation(
                None,
                "process_left",
                format!("after plexusd stopped: {stray}"),
            );
        }
        check::kill_strays(&world.node);
    }
}

fn network_slot(network: &str) -> usize {
    NETWORKS.iter().position(|n| *n == network).unwrap_or(0)
}

fn heal_disk(world: &World) {
    let mount = world.node.records_mount();
    mount.set_read_only(false, world.node.plexusd_pid());
    mount.drain();
}
