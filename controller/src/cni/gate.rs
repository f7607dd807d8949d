//! Holds back every plugin call of an ADD until its intent is on disk.
//!
//! The intent record has to be durable before any delegate can change anything, but a plugin
//! changes nothing before it has read its config on stdin. So the first plugin is started
//! while the intent is being made durable (`records::journal`) and only fed once that is done:
//! the exec (about a millisecond here, more for a Go plugin's start-up) hides the write
//! instead of following it. Every call waits for the same answer, not just the first, so
//! that no order of starts and runs can feed a plugin before the intent is durable.

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::oneshot;

use super::{DelegateCall, ExecError, Executor, Outcome, Pending};

/// An executor whose calls are fed only once `ready` has said yes; a no (or a dropped
/// sender) fails them with [`ExecError::Held`], their plugins killed unfed.
pub struct Gated<'a> {
    inner: &'a dyn Executor,
    ready: Shared<BoxFuture<'static, bool>>,
}

impl<'a> Gated<'a> {
    pub fn new(inner: &'a dyn Executor, ready: oneshot::Receiver<bool>) -> Self {
        Self {
            inner,
            ready: ready.map(|answer| answer == Ok(true)).boxed().shared(),
        }
    }
}

impl Executor for Gated<'_> {
    fn run(&self, call: DelegateCall) -> Outcome<'_> {
        super::exec::run_started(self, call)
    }

    fn start(&self, call: DelegateCall) -> Pending<'_> {
        let plugin = call.plugin_type.clone();
        let inner = self.inner.start(call);
        let ready = self.ready.clone();
        Pending::new(move |stdin, turn| {
            Box::pin(async move {
                if !ready.await {
                    // Dropping it kills the plugin before it read a byte.
                    drop(inner);
                    return Err(ExecError::Held { plugin });
                }
                inner.run_since(stdin, turn).await
            })
        })
    }

    fn supported_versions<'b>(&'b self, plugin_type: &'b str) -> BoxFuture<'b, Vec<String>> {
        self.inner.supported_versions(plugin_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::Command;
    use crate::testing::RecordingExecutor;

    fn call() -> DelegateCall {
        DelegateCall {
            network: "tenant/data".into(),
            plugin_type: "bridge".into(),
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "net1".into(),
            cni_args: String::new(),
            stdin: br#"{"cniVersion":"1.0.0"}"#.to_vec(),
        }
    }

    #[tokio::test]
    async fn every_call_waits_for_the_intent_and_runs_once_it_is_durable() {
        let recorder = RecordingExecutor::new();
        let (durable, ready) = oneshot::channel();
        let gated = Gated::new(&recorder, ready);
        let first = gated.run(call());
        let second = gated.start(call()).run(call().stdin);
        let both = futures::future::join(first, second);
        tokio::pin!(both);
        tokio::select! {
            _ = &mut both => panic!("a plugin ran before the intent was durable"),
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
        assert!(recorder.lines().is_empty());
        durable.send(true).unwrap();
        let (first, second) = both.await;
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(recorder.lines(), ["ADD bridge net1", "ADD bridge net1"]);
    }

    #[tokio::test]
    async fn no_call_runs_when_the_intent_failed_or_was_never_answered() {
        let recorder = RecordingExecutor::new();
        for answer in [Some(false), None] {
            let (durable, ready) = oneshot::channel();
            match answer {
                Some(answer) => durable.send(answer).unwrap(),
                None => drop(durable),
            }
            let gated = Gated::new(&recorder, ready);
            let err = gated.run(call()).await.unwrap_err();
            assert!(matches!(err, ExecError::Held { .. }), "{err}");
            assert_eq!(err.cni_code(), crate::cni::code::IO_FAILURE);
        }
        assert!(recorder.lines().is_empty());
    }
}
