//! Work that follows a CNI reply (an ADD's record made durable, a DEL's record unlinked),
//! started once the reply is on its way rather than before it.
//!
//! Handing a job to tokio's blocking pool wakes one of its threads at once. On the bench's
//! 2-vCPU VM that thread was woken on the worker's own vCPU and ran first, and its I/O woke
//! the kernel's block workers there too, so the reply written next waited 0.08–0.16 ms for
//! work meant to follow it (README "Performance", the ninth round). A job handed over from a
//! task spawned here reaches the pool only once the request's task yields, which it does
//! after hyper has written the reply.

/// Runs `job` on the blocking pool once the calling task has yielded; without a runtime
/// (the record store's own tests), here and now.
pub fn after_reply(job: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(async move {
            drop(tokio::task::spawn_blocking(job));
        })),
        Err(_) => job(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_job_starts_only_once_its_caller_yields() {
        // On the worker, as a request's task is: `block_on`'s own thread is not a worker.
        tokio::spawn(async {
            let (done, finished) = mpsc::channel();
            after_reply(move || done.send(()).expect("the test waits"));
            // The reply being written: the caller busy, without yielding.
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                finished.try_recv().is_err(),
                "the job ran before its caller yielded"
            );
            tokio::task::yield_now().await;
            assert!(finished.recv_timeout(Duration::from_secs(10)).is_ok());
        })
        .await
        .expect("the test task");
    }

    #[test]
    fn without_a_runtime_the_job_runs_at_once() {
        let (done, finished) = mpsc::channel();
        after_reply(move || done.send(()).expect("the test waits"));
        assert!(finished.try_recv().is_ok());
    }
}
