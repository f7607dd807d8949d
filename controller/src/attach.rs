//! Runs a pod's delegates: ADD in order with rollback, DEL in reverse past failures, CHECK,
//! STATUS and GC, each delegate as a chain of plugins (CNI §3).

use serde_json::Value;
use tracing::Instrument;

use crate::cni::{
    CniResult, CniVersion, Command, DelegateCall, ExecError, Executor, NetconfError, NetworkConfig,
};
use crate::records::Attachment;
use crate::resolve::Delegate;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("network {network} ({command} on {ifname}): plugin {plugin}: {source}")]
    Delegate {
        network: String,
        ifname: String,
        command: Command,
        plugin: String,
        source: Box<ExecError>,
    },
    #[error(
        "network {network} ({command} on {ifname}): plugin {plugin} returned an unusable result: {reason}"
    )]
    BadResult {
        network: String,
        ifname: String,
        command: Command,
        plugin: String,
        reason: String,
    },
    #[error("network {network}: stored config is invalid: {source}")]
    Config {
        network: String,
        source: NetconfError,
    },
}

impl AttachError {
    pub fn cni_code(&self) -> u32 {
        match self {
            Self::Delegate { source, .. } => source.cni_code(),
            Self::BadResult { .. } => crate::cni::code::DECODING_FAILURE,
            Self::Config { source, .. } => source.cni_code(),
        }
    }

    /// The delegate's stderr, if it wrote any: it goes into the error details.
    pub fn stderr(&self) -> &str {
        match self {
            Self::Delegate { source, .. } => source.stderr(),
            _ => "",
        }
    }

    pub fn network(&self) -> &str {
        match self {
            Self::Delegate { network, .. }
            | Self::BadResult { network, .. }
            | Self::Config { network, .. } => network,
        }
    }
}

/// The container a call is about.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
}

/// Runs one plugin of a delegate's chain.
struct ChainStep<'a> {
    delegate: &'a Delegate,
    netconf: &'a NetworkConfig,
    target: Target<'a>,
    command: Command,
}

impl ChainStep<'_> {
    async fn run(
        &self,
        exec: &dyn Executor,
        index: usize,
        prev_result: Option<&Value>,
    ) -> Result<Vec<u8>, AttachError> {
        let d = self.delegate;
        let plugin = &self.netconf.plugins[index].plugin_type;
        let request = self.netconf.plugin_request(
            index,
            d.cni_name(),
            d.version,
            &d.runtime_config,
            prev_result,
            d.args_cni.as_ref(),
        );
        let call = DelegateCall {
            plugin_type: plugin.clone(),
            command: self.command,
            container_id: self.target.container_id.to_owned(),
            netns: self.target.netns.to_owned(),
            ifname: d.ifname.to_string(),
            cni_args: d.cni_args.clone(),
            stdin: request.to_string().into_bytes(),
        };
        let span = tracing::debug_span!("plugin", plugin = %plugin, command = %self.command);
        exec.run(call)
            .instrument(span)
            .await
            .map_err(|source| AttachError::Delegate {
                network: d.network.clone(),
                ifname: d.ifname.to_string(),
                command: self.command,
                plugin: plugin.clone(),
                source: Box::new(source),
            })
    }

    fn bad_result(&self, index: usize, reason: String) -> AttachError {
        AttachError::BadResult {
            network: self.delegate.network.clone(),
            ifname: self.delegate.ifname.to_string(),
            command: self.command,
            plugin: self.netconf.plugins[index].plugin_type.clone(),
            reason,
        }
    }
}

fn netconf(delegate: &Delegate) -> Result<NetworkConfig, AttachError> {
    delegate.netconf().map_err(|source| AttachError::Config {
        network: delegate.network.clone(),
        source,
    })
}

/// ADD through the chain; the last plugin's result, in the delegate's version, is returned.
pub async fn add_chain(
    exec: &dyn Executor,
    delegate: &Delegate,
    target: Target<'_>,
) -> Result<Value, AttachError> {
    let netconf = netconf(delegate)?;
    let step = ChainStep {
        delegate,
        netconf: &netconf,
        target,
        command: Command::Add,
    };
    let mut prev: Option<Value> = None;
    for index in 0..netconf.plugins.len() {
        let stdout = step.run(exec, index, prev.as_ref()).await?;
        prev = Some(
            normalize_result(&stdout, delegate.version)
                .map_err(|reason| step.bad_result(index, reason))?,
        );
    }
    prev.ok_or_else(|| step.bad_result(0, "the chain has no plugins".into()))
}

/// A plugin's result as the next plugin and the record need it: in the chain's version.
/// A result already in that version is kept as it is, so keys Plexus does not model survive.
fn normalize_result(stdout: &[u8], version: CniVersion) -> Result<Value, String> {
    let (result, written_in) = CniResult::parse(stdout, version).map_err(|e| e.to_string())?;
    if written_in == version {
        let mut raw: Value = serde_json::from_slice(stdout).map_err(|e| e.to_string())?;
        if let Some(object) = raw.as_object_mut() {
            object.insert("cniVersion".into(), version.as_str().into());
        }
        return Ok(raw);
    }
    Ok(result.to_json(version))
}

/// DEL through the chain in reverse, stopping at the first error (CNI §3 Deleting).
pub async fn del_chain(
    exec: &dyn Executor,
    delegate: &Delegate,
    result: Option<&Value>,
    target: Target<'_>,
) -> Result<(), AttachError> {
    let netconf = netconf(delegate)?;
    let step = ChainStep {
        delegate,
        netconf: &netconf,
        target,
        command: Command::Del,
    };
    let prev = result.filter(|_| delegate.version.del_gets_prev_result());
    for index in (0..netconf.plugins.len()).rev() {
        step.run(exec, index, prev).await?;
    }
    Ok(())
}

/// CHECK through the chain in ADD order. Configs with `disableCheck` and versions before 0.4.0
/// have no CHECK and count as passed.
pub async fn check_chain(
    exec: &dyn Executor,
    delegate: &Delegate,
    result: &Value,
    target: Target<'_>,
) -> Result<(), AttachError> {
    let netconf = netconf(delegate)?;
    if netconf.disable_check || !delegate.version.supports_check() {
        return Ok(());
    }
    let step = ChainStep {
        delegate,
        netconf: &netconf,
        target,
        command: Command::Check,
    };
    for index in 0..netconf.plugins.len() {
        step.run(exec, index, Some(result)).await?;
    }
    Ok(())
}

/// STATUS through the chain, for delegates that speak 1.1.0.
pub async fn status_chain(exec: &dyn Executor, delegate: &Delegate) -> Result<(), AttachError> {
    let netconf = netconf(delegate)?;
    if !delegate.version.supports_status_and_gc() {
        return Ok(());
    }
    let step = ChainStep {
        delegate,
        netconf: &netconf,
        target: Target {
            container_id: "",
            netns: "",
        },
        command: Command::Status,
    };
    for index in 0..netconf.plugins.len() {
        step.run(exec, index, None).await?;
    }
    Ok(())
}

/// ADD every delegate in order. When one fails, everything this ADD did is deleted again, in
/// reverse, including the failed chain itself (CNI-0.4.0 list error handling), and the first
/// error is returned. On success the results come back in delegate order.
pub async fn attach_all(
    exec: &dyn Executor,
    delegates: &[Delegate],
    target: Target<'_>,
) -> Result<Vec<Value>, AttachError> {
    let mut results = Vec::with_capacity(delegates.len());
    for delegate in delegates {
        let span =
            tracing::info_span!("attach", network = %delegate.network, ifname = %delegate.ifname);
        match add_chain(exec, delegate, target).instrument(span).await {
            Ok(result) => results.push(result),
            Err(error) => {
                tracing::warn!(%error, "ADD failed; rolling back");
                let done: Vec<Attachment> = delegates
                    .iter()
                    .zip(results.into_iter().map(Some).chain(std::iter::once(None)))
                    .map(|(delegate, result)| Attachment {
                        delegate: delegate.clone(),
                        result,
                    })
                    .collect();
                for failure in detach_all(exec, &done, target).await {
                    tracing::warn!(error = %failure, "rollback DEL failed; the runtime's DEL will retry");
                }
                return Err(error);
            }
        }
    }
    Ok(results)
}

/// DEL every attachment in reverse order. One failure does not stop the rest (NPWG §7.2);
/// the failures come back with the indexes of the attachments that are not fully gone.
pub async fn detach_all(
    exec: &dyn Executor,
    attachments: &[Attachment],
    target: Target<'_>,
) -> Vec<DetachFailure> {
    let mut failures = Vec::new();
    for (index, attachment) in attachments.iter().enumerate().rev() {
        let delegate = &attachment.delegate;
        let span =
            tracing::info_span!("detach", network = %delegate.network, ifname = %delegate.ifname);
        if let Err(error) = del_chain(exec, delegate, attachment.result.as_ref(), target)
            .instrument(span)
            .await
        {
            failures.push(DetachFailure { index, error });
        }
    }
    failures
}

#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct DetachFailure {
    pub index: usize,
    pub error: AttachError,
}

/// GC for every delegate network that speaks 1.1.0 and allows it, each with the pairs still
/// valid for it (SPECS §8: grouped by CNI name). Errors are collected, not fatal.
pub async fn gc_networks(
    exec: &dyn Executor,
    kept: &[crate::records::PodRecord],
) -> Vec<AttachError> {
    let mut networks: std::collections::BTreeMap<&str, (&Delegate, Vec<Value>)> =
        Default::default();
    for record in kept {
        for attachment in &record.attachments {
            let d = &attachment.delegate;
            let pair = serde_json::json!({"containerID": record.container_id.as_str(), "ifname": d.ifname.as_str()});
            networks
                .entry(d.cni_name())
                .or_insert_with(|| (d, Vec::new()))
                .1
                .push(pair);
        }
    }
    let mut errors = Vec::new();
    for (delegate, valid) in networks.into_values() {
        if let Err(error) = gc_chain(exec, delegate, valid).await {
            errors.push(error);
        }
    }
    errors
}

async fn gc_chain(
    exec: &dyn Executor,
    delegate: &Delegate,
    valid: Vec<Value>,
) -> Result<(), AttachError> {
    let netconf = netconf(delegate)?;
    if netconf.disable_gc || !delegate.version.supports_status_and_gc() {
        return Ok(());
    }
    let mut first_error = None;
    for (index, plugin) in netconf.plugins.iter().enumerate() {
        let mut request = netconf.plugin_request(
            index,
            delegate.cni_name(),
            delegate.version,
            &Default::default(),
            None,
            None,
        );
        if let Some(object) = request.as_object_mut() {
            // libcni sends both spellings: the key was renamed after the 1.1.0 tag.
            object.insert(
                "cni.dev/valid-attachments".into(),
                Value::Array(valid.clone()),
            );
            object.insert("cni.dev/attachments".into(), Value::Array(valid.clone()));
        }
        let call = DelegateCall {
            plugin_type: plugin.plugin_type.clone(),
            command: Command::Gc,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            cni_args: String::new(),
            stdin: request.to_string().into_bytes(),
        };
        // One plugin's failure does not stop the rest of the chain (CNI §3 GC).
        if let Err(source) = exec.run(call).await {
            first_error.get_or_insert(AttachError::Delegate {
                network: delegate.network.clone(),
                ifname: String::new(),
                command: Command::Gc,
                plugin: plugin.plugin_type.clone(),
                source: Box::new(source),
            });
        }
    }
    first_error.map_or(Ok(()), Err)
}
