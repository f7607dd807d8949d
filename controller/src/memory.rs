//! Keeps plexusd's memory small after a burst of pods: a runtime sized for a node agent, few
//! malloc arenas, and freed memory handed back to the kernel once the burst is over.
//!
//! What a burst of 50 parallel ADDs leaves behind, measured with the bench: glibc gives
//! every thread that contends for malloc an arena of its own (up to 8 per CPU), each keeps
//! the pages freed into it, and tokio keeps the blocking threads that wrote the records for
//! ten seconds (their stacks with them). None of that is needed once the pods are attached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// malloc arenas: two keep the worker threads from queueing on one lock without letting
/// every blocking thread of a burst grow an arena of its own.
const MALLOC_ARENAS: i32 = 2;

/// Blocking threads (record writes and fsyncs) at most, and how long an idle one lives. An
/// ADD's reply waits for none of them when the intent journal takes its intent (the journal
/// has a thread of its own); they write the records after the reply, and the intents the
/// journal cannot take. Eight let a burst's fsyncs share the filesystem's journal commits;
/// the stacks of a burst's threads are gone a second after it.
const MAX_BLOCKING_THREADS: usize = 8;
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Worker threads at most: plexusd mostly waits for its delegates, so more CPUs than this
/// add threads (and their memory) without adding throughput.
const MAX_WORKERS: usize = 4;

/// One worker per two CPUs, within 1..=[`MAX_WORKERS`]. plexusd's work is syscalls and waits
/// while its delegates want the CPUs: on a 2-CPU node a second worker only took CPU from
/// them, and every task it was woken to steal cost a cross-CPU wake-up. With one worker
/// there, the bench's ADD overhead dropped by 0.05-0.16 ms at 0-4 secondaries in every A/B
/// run, and 50 parallel ADDs stayed within their noise (README "Performance").
fn workers(cpus: usize) -> usize {
    (cpus / 2).clamp(1, MAX_WORKERS)
}

/// How often to look whether a burst is over.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// CNI requests answered since start; the trimmer compares it between its checks.
static ANSWERED: AtomicU64 = AtomicU64::new(0);

/// plexusd's runtime: one worker per two CPUs, at most [`MAX_WORKERS`], and a bounded
/// blocking pool whose idle threads go away quickly.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    limit_arenas();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers(cpus))
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .enable_all()
        .build()
}

/// A thread of its own for the API server's watches and writes (the kube source), with a
/// runtime whose tasks are spawned through the returned handle (`Handle::enter`). On the CNI
/// worker, an ADD's status patch and events (TLS, JSON) and the watch events they cause ran
/// just as the runtime's next request came in (its DEL, the next pod's ADD) and held it up:
/// 0.3-0.45 ms more between the shim and plexusd for a kube DEL right after its ADD than with
/// the files source (README "Performance"). The thread lives as long as the process.
pub fn api_thread() -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("plexus-api".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

fn limit_arenas() {
    // SAFETY: mallopt only sets a tunable of glibc's allocator; it is called before the
    // runtime starts any thread, and any value is valid (glibc ignores what it rejects).
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// Counts a CNI request as answered.
pub fn answered() {
    ANSWERED.fetch_add(1, Ordering::Relaxed);
}

/// Once a second: if requests were answered since the last look and none since the one
/// before (the burst is over), gives the memory freed into malloc's arenas back to the
/// kernel. Runs until the runtime stops.
pub async fn trim_after_bursts() {
    let mut seen = ANSWERED.load(Ordering::Relaxed);
    let mut trimmed = seen;
    loop {
        tokio::time::sleep(IDLE_CHECK).await;
        let now = ANSWERED.load(Ordering::Relaxed);
        if burst_over(seen, now, trimmed) {
            trimmed = now;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
        seen = now;
    }
}

/// Requests were answered since the last trim (`trimmed`), and none since the last look
/// (`seen`).
fn burst_over(seen: u64, now: u64, trimmed: u64) -> bool {
    now == seen && now != trimmed
}

fn trim() {
    // SAFETY: malloc_trim walks glibc's arenas under their own locks and only releases pages
    // that hold no allocation; it is safe to call from any thread at any time.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_is_spawned_through_the_api_thread_runs_there_and_not_on_the_caller() {
        let api = api_thread().unwrap();
        let on_api = {
            let _on_api = api.enter();
            tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
        };
        let caller = std::thread::current().name().map(str::to_owned);
        assert_eq!(on_api.await.unwrap().as_deref(), Some("plexus-api"));
        assert_ne!(caller.as_deref(), Some("plexus-api"));
    }

    #[test]
    fn one_worker_per_two_cpus_and_never_none_or_more_than_the_cap() {
        let workers: Vec<usize> = [1, 2, 3, 4, 6, 8, 64].map(workers).into();
        assert_eq!(workers, [1, 1, 1, 2, 3, 4, MAX_WORKERS]);
    }

    #[test]
    fn the_runtime_runs_tasks_and_blocking_work() {
        let runtime = runtime().unwrap();
        let sum = runtime.block_on(async {
            let blocking = tokio::task::spawn_blocking(|| 2 + 2);
            let task = tokio::spawn(async { 1 });
            blocking.await.unwrap() + task.await.unwrap()
        });
        assert_eq!(sum, 5);
    }

    #[test]
    fn trims_once_per_burst_and_only_when_it_is_over() {
        // Requests still coming in: wait.
        assert!(!burst_over(4, 9, 0));
        // Quiet for a look after answering some: trim.
        assert!(burst_over(9, 9, 0));
        // Quiet and already trimmed: nothing to do.
        assert!(!burst_over(9, 9, 9));
        // Nothing answered since start.
        assert!(!burst_over(0, 0, 0));
    }
}
