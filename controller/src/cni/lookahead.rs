//! Starts each plugin of a pod's sequence while the plugin before it runs.
//!
//! A pod's plugins run strictly one after another (NPWG §7.3): none is given its config before
//! the one before it has answered. But a plugin does nothing before it has read its config,
//! and its exec and start-up (a Go plugin's runtime: about 1.3 ms here) need nothing from the
//! plugin before it. So the next plugin of a known sequence is started as soon as the current
//! one has its config, and waits for its own on stdin while the current one works: the pod
//! pays for one start-up instead of one per plugin. The executor decides whether a start is
//! early (`PluginExecutor`: one waiting plugin per CPU at most); `delegateStartAhead: false`
//! turns it off for plugins that act on their environment before reading their config.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Instant;

use futures::future::BoxFuture;

use super::{DelegateCall, Executor, Outcome, Pending};

/// An executor that knows the calls to come (`plan`, without their stdin) and starts the
/// next one as soon as it has fed the current one. A call that is not the one planned next
/// (a failure took the sequence elsewhere: a rollback, a chain cut short) kills what was
/// started ahead, unfed, and ends the look-ahead.
pub struct Lookahead<'a> {
    inner: &'a dyn Executor,
    ahead: Mutex<Ahead<'a>>,
}

struct Ahead<'a> {
    plan: VecDeque<DelegateCall>,
    next: Option<(DelegateCall, Pending<'a>)>,
    /// When the sequence began: the first call's turn, however long it waits for its config.
    began: Option<Instant>,
}

impl<'a> Lookahead<'a> {
    /// Starts the plan's first call at once.
    pub fn new(inner: &'a dyn Executor, plan: Vec<DelegateCall>) -> Self {
        let lookahead = Self {
            inner,
            ahead: Mutex::new(Ahead {
                plan: plan.into(),
                next: None,
                began: Some(Instant::now()),
            }),
        };
        lookahead.start_next(&mut lookahead.lock());
        lookahead
    }

    fn lock(&self) -> MutexGuard<'_, Ahead<'a>> {
        // Nothing in here panics while holding it; were it poisoned, the data is still whole.
        self.ahead.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start_next(&self, ahead: &mut Ahead<'a>) {
        ahead.next = ahead
            .plan
            .pop_front()
            .map(|call| (call.clone(), self.inner.start(call)));
    }
}

impl Executor for Lookahead<'_> {
    fn run(&self, call: DelegateCall) -> Outcome<'_> {
        super::exec::run_started(self, call)
    }

    fn start(&self, call: DelegateCall) -> Pending<'_> {
        let mut ahead = self.lock();
        if let Some((planned, pending)) = ahead.next.take() {
            if planned.same_process(&call) {
                let began = ahead.began.take();
                return Pending::new(move |stdin, turn| {
                    let mut run = pending.run_since(stdin, began.unwrap_or(turn));
                    Box::pin(async move {
                        // Fed first, and only then is the next one spawned: its spawn
                        // (a tenth of a millisecond or two) runs beside this plugin
                        // instead of before it.
                        let first = futures::poll!(&mut run);
                        self.start_next(&mut self.lock());
                        match first {
                            Poll::Ready(outcome) => outcome,
                            Poll::Pending => run.await,
                        }
                    })
                });
            }
            // Off the plan: what was started ahead is killed unfed before this one starts.
            drop(pending);
        }
        ahead.plan.clear();
        ahead.began = None;
        self.inner.start(call)
    }

    fn supported_versions<'b>(&'b self, plugin_type: &'b str) -> BoxFuture<'b, Vec<String>> {
        self.inner.supported_versions(plugin_type)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cni::Command;

    /// Logs when each call is started, fed and dropped unfed, and the turn each was fed with.
    #[derive(Default)]
    struct Log(Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<Instant>>>);

    /// A started call: logs "killed" when dropped without being fed.
    struct Unfed {
        name: String,
        log: Arc<Mutex<Vec<String>>>,
        fed: bool,
    }

    impl Drop for Unfed {
        fn drop(&mut self) {
            if !self.fed {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("killed {}", self.name));
            }
        }
    }

    impl Log {
        fn push(&self, line: String) {
            self.0.lock().unwrap().push(line);
        }

        fn lines(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Executor for Log {
        fn run(&self, call: DelegateCall) -> Outcome<'_> {
            self.push(format!("run {}", call.ifname));
            Box::pin(async { Ok(Vec::new()) })
        }

        fn start(&self, call: DelegateCall) -> Pending<'_> {
            self.push(format!("start {}", call.ifname));
            let mut unfed = Unfed {
                name: call.ifname.clone(),
                log: Arc::clone(&self.0),
                fed: false,
            };
            let turns = Arc::clone(&self.1);
            Pending::new(move |stdin, turn| {
                turns.lock().unwrap().push(turn);
                unfed.fed = true;
                let log = Arc::clone(&unfed.log);
                log.lock().unwrap().push(format!(
                    "fed {} {}",
                    unfed.name,
                    String::from_utf8_lossy(&stdin)
                ));
                let done = format!("done {}", unfed.name);
                Box::pin(async move {
                    // A plugin takes a while: the first poll finds it still running.
                    tokio::task::yield_now().await;
                    log.lock().unwrap().push(done);
                    Ok(Vec::new())
                })
            })
        }

        fn supported_versions<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Vec<String>> {
            Box::pin(async { Vec::new() })
        }
    }

    /// How every sequence here begins: eth0 fed, then net1 started ahead while eth0 runs.
    const ETH0_THEN_NET1_AHEAD: [&str; 4] = [
        "start eth0",
        "fed eth0 config-eth0",
        "start net1",
        "done eth0",
    ];

    fn call(ifname: &str) -> DelegateCall {
        DelegateCall {
            network: format!("tenant/{ifname}"),
            plugin_type: "bridge".into(),
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: ifname.into(),
            cni_args: String::new(),
            stdin: Vec::new(),
        }
    }

    fn fed(ifname: &str) -> DelegateCall {
        DelegateCall {
            stdin: format!("config-{ifname}").into_bytes(),
            ..call(ifname)
        }
    }

    #[tokio::test]
    async fn each_call_starts_the_next_and_is_fed_only_at_its_turn() {
        let log = Log::default();
        let ahead = Lookahead::new(&log, vec![call("eth0"), call("net1"), call("net2")]);
        assert_eq!(log.lines(), ["start eth0"]);
        for ifname in ["eth0", "net1", "net2"] {
            ahead.run(fed(ifname)).await.unwrap();
        }
        assert_eq!(
            log.lines(),
            [
                &ETH0_THEN_NET1_AHEAD[..],
                &[
                    "fed net1 config-net1",
                    "start net2",
                    "done net1",
                    "fed net2 config-net2",
                    "done net2",
                ],
            ]
            .concat()
        );
    }

    #[tokio::test]
    async fn a_call_off_the_plan_kills_what_was_started_ahead_and_ends_the_lookahead() {
        let log = Log::default();
        let ahead = Lookahead::new(&log, vec![call("eth0"), call("net1"), call("net2")]);
        ahead.run(fed("eth0")).await.unwrap();
        // eth0 failed, say: the sequence goes to its rollback instead of net1.
        let rollback = DelegateCall {
            command: Command::Del,
            ..fed("eth0")
        };
        ahead.run(rollback).await.unwrap();
        ahead.run(fed("net2")).await.unwrap();
        assert_eq!(
            log.lines(),
            [
                &ETH0_THEN_NET1_AHEAD[..],
                &[
                    "killed net1",
                    "start eth0",
                    "fed eth0 config-eth0",
                    "done eth0",
                    "start net2",
                    "fed net2 config-net2",
                    "done net2",
                ],
            ]
            .concat()
        );
    }

    #[tokio::test]
    async fn what_was_started_ahead_and_never_run_is_killed_with_the_lookahead() {
        let log = Log::default();
        let ahead = Lookahead::new(&log, vec![call("eth0"), call("net1")]);
        ahead.run(fed("eth0")).await.unwrap();
        drop(ahead);
        assert_eq!(
            log.lines(),
            [&ETH0_THEN_NET1_AHEAD[..], &["killed net1"],].concat()
        );
    }

    #[tokio::test]
    async fn the_first_calls_turn_is_when_the_sequence_began_and_the_others_when_they_are_fed() {
        let log = Log::default();
        let began = Instant::now();
        let ahead = Lookahead::new(&log, vec![call("eth0"), call("net1")]);
        let created = Instant::now();
        // The first call waits (for the intent, say) before it is fed.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        ahead.run(fed("eth0")).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let second = Instant::now();
        ahead.run(fed("net1")).await.unwrap();
        let turns = log.1.lock().unwrap().clone();
        assert!(turns[0] >= began && turns[0] <= created, "{turns:?}");
        assert!(turns[1] >= second, "{turns:?}");
    }
}
