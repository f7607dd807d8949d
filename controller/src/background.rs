//! Work that follows a CNI reply (an ADD's record made durable, a DEL's record unlinked),
//! started once the reply is on its way rather than before it.
//!
//! Handing a job to tokio's blocking pool wakes one of its threads at once. On the bench's
//! 2-vCPU VM that thread was woken on the worker's own vCPU and ran first, and its I/O woke
//! the kernel's block workers there too, so the reply written next waited 0.08–0.16 ms for
//! work meant to follow it (README "Performance", the ninth round). A job handed over from a
//! task spawned here reaches the pool only once the request's task yields, which it does
//! after hyper has written the reply.
//!
//! [`InOrder`] does the same for writes that must keep their order (a pod's status patches,
//! its events): queueing one of them wakes the thread that writes it, which ran before the
//! reply just as a blocking thread did.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

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

/// Calls made once the caller has yielded, in the order they were handed over.
///
/// One flush at a time runs them: calls handed over while it runs join its queue rather than
/// start a flush of their own, which on a runtime with several workers could overtake it (a
/// pod's older status would then be queued after its newer one and win).
#[derive(Default)]
pub struct InOrder {
    pending: Arc<Mutex<Pending>>,
}

type Call = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Pending {
    calls: VecDeque<Call>,
    /// A flush is scheduled or running; it takes every call queued until it ends.
    flushing: bool,
}

impl InOrder {
    /// Queues `call` after every call handed over before it; without a runtime (tests of the
    /// callers), the queue runs here and now.
    pub fn after_reply(&self, call: impl FnOnce() + Send + 'static) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.calls.push_back(Box::new(call));
            if std::mem::replace(&mut pending.flushing, true) {
                return;
            }
        }
        let pending = Arc::clone(&self.pending);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { flush(&pending) })),
            Err(_) => flush(&pending),
        }
    }
}

/// Runs the queued calls, outside the lock, until none is left.
fn flush(pending: &Mutex<Pending>) {
    loop {
        let calls = {
            let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.calls.is_empty() {
                pending.flushing = false;
                return;
            }
            std::mem::take(&mut pending.calls)
        };
        for call in calls {
            call();
        }
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

    /// Numbers handed over to `queue`, recorded as their calls run.
    fn hand_over(queue: &InOrder, ran: &Arc<Mutex<Vec<u32>>>, number: u32) {
        let ran = Arc::clone(ran);
        queue.after_reply(move || {
            ran.lock().unwrap().push(number);
            // A write that takes a while, so later hand-overs come during the flush.
            std::thread::sleep(Duration::from_micros(200));
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn calls_wait_for_their_caller_to_yield_and_keep_their_order() {
        tokio::spawn(async {
            let (queue, ran) = (InOrder::default(), Arc::new(Mutex::new(Vec::new())));
            for number in 1..=3 {
                hand_over(&queue, &ran, number);
            }
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                ran.lock().unwrap().is_empty(),
                "a call ran before the reply"
            );
            tokio::task::yield_now().await;
            while ran.lock().unwrap().len() < 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(*ran.lock().unwrap(), [1, 2, 3]);
        })
        .await
        .expect("the test task");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_handed_over_during_a_flush_run_after_it_on_any_worker() {
        let (queue, ran) = (
            Arc::new(InOrder::default()),
            Arc::new(Mutex::new(Vec::new())),
        );
        // Requests on both workers, each handing over the next two numbers in turn (a status
        // and an event), so a flush has more than one call to run when others come.
        let next = Arc::new(Mutex::new(1..=400));
        let requests: Vec<_> = (0..4)
            .map(|_| {
                let (queue, ran, next) = (Arc::clone(&queue), Arc::clone(&ran), Arc::clone(&next));
                tokio::spawn(async move {
                    loop {
                        {
                            let mut next = next.lock().unwrap();
                            let (Some(first), Some(second)) = (next.next(), next.next()) else {
                                return;
                            };
                            hand_over(&queue, &ran, first);
                            hand_over(&queue, &ran, second);
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for request in requests {
            request.await.expect("a request task");
        }
        while ran.lock().unwrap().len() < 400 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ran = ran.lock().unwrap().clone();
        assert_eq!(ran, (1..=400).collect::<Vec<_>>());
    }

    #[test]
    fn without_a_runtime_calls_run_at_once_and_those_they_hand_over_after_them() {
        let (queue, ran) = (
            Arc::new(InOrder::default()),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (inner_queue, inner_ran) = (Arc::clone(&queue), Arc::clone(&ran));
        queue.after_reply(move || {
            hand_over(&inner_queue, &inner_ran, 2);
            inner_ran.lock().unwrap().push(1);
        });
        hand_over(&queue, &ran, 3);
        assert_eq!(*ran.lock().unwrap(), [1, 2, 3]);
    }

    #[test]
    fn without_a_runtime_the_job_runs_at_once() {
        let (done, finished) = mpsc::channel();
        after_reply(move || done.send(()).expect("the test waits"));
        assert!(finished.try_recv().is_ok());
    }
}
