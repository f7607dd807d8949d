//! Holds back the first plugin call of an ADD until its intent is on disk.
//!
//! The intent record has to be durable before any delegate can change anything, but a plugin
//! changes nothing before it has read its config on stdin. So the first plugin is started
//! while the intent is being made durable (`records::journal`) and only fed once that is done:
//! the exec (about a millisecond here, more for a Go plugin's start-up) hides the write
//! instead of following it.

use std::sync::Mutex;

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::{DelegateCall, ExecError, Executor};

/// An executor whose first call waits for `ready`; every later call runs as usual (it comes
/// after the first one finished, so after `ready` said yes).
pub struct FirstCallWaits<'a> {
    inner: &'a dyn Executor,
    ready: Mutex<Option<oneshot::Receiver<bool>>>,
}

impl<'a> FirstCallWaits<'a> {
    pub fn new(inner: &'a dyn Executor, ready: oneshot::Receiver<bool>) -> Self {
        Self {
            inner,
            ready: Mutex::new(Some(ready)),
        }
    }

    fn take_ready(&self) -> Option<oneshot::Receiver<bool>> {
        self.ready.lock().ok().and_then(|mut ready| ready.take())
    }
}

impl Executor for FirstCallWaits<'_> {
    fn run(&self, call: DelegateCall) -> BoxFuture<'_, Result<Vec<u8>, ExecError>> {
        match self.take_ready() {
            Some(ready) => self.inner.run_when(call, ready),
            None => self.inner.run(call),
        }
    }

    fn run_when(
        &self,
        call: DelegateCall,
        ready: oneshot::Receiver<bool>,
    ) -> BoxFuture<'_, Result<Vec<u8>, ExecError>> {
        self.inner.run_when(call, ready)
    }

    fn supported_versions<'b>(&'b self, plugin_type: &'b str) -> BoxFuture<'b, Vec<String>> {
        self.inner.supported_versions(plugin_type)
    }
}
