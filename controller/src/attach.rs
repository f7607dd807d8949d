//! Runs a pod's delegates: ADD in order with rollback, DEL in reverse past failures, CHECK,
//! STATUS and GC, each delegate as a chain of plugins (CNI §3).

use std::time::Instant;

use serde_json::Value;
use tracing::Instrument;

use crate::clock::Timestamp;
use crate::cni::lookahead::Lookahead;
use crate::cni::{
    CniResult, CniVersion, Command, DelegateCall, ExecError, Executor, NetconfError, NetworkConfig,
};
use crate::records::{Attached, Attachment};
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

    /// The plugin was stopped before it was given its config (`ExecError::Held`).
    pub fn never_ran(&self) -> bool {
        matches!(self, Self::Delegate { source, .. } if matches!(**source, ExecError::Held { .. }))
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
    /// The call of plugin `index`, with its config as `stdin`.
    fn call(&self, index: usize, stdin: Vec<u8>) -> DelegateCall {
        let d = self.delegate;
        // STATUS takes no attachment parameters (CNI §2 STATUS); libcni sends them empty.
        let attachment = self.command != Command::Status;
        DelegateCall {
            network: d.network.clone(),
            plugin_type: self.netconf.plugins[index].plugin_type.clone(),
            command: self.command,
            container_id: self.target.container_id.to_owned(),
            netns: self.target.netns.to_owned(),
            ifname: if attachment {
                d.ifname.to_string()
            } else {
                String::new()
            },
            cni_args: if attachment {
                d.cni_args.clone()
            } else {
                String::new()
            },
            stdin,
        }
    }

    /// The order this step's command runs the chain in: DEL in reverse (CNI §3 Deleting).
    fn order(&self) -> Box<dyn Iterator<Item = usize> + Send> {
        let plugins = 0..self.netconf.plugins.len();
        match self.command {
            Command::Del => Box::new(plugins.rev()),
            _ => Box::new(plugins),
        }
    }

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
        let call = self.call(index, request.to_string().into_bytes());
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

/// Delegates with their configs parsed once, for the plan and for running their chains.
type Parsed<'d> = Vec<(&'d Delegate, Result<NetworkConfig, AttachError>)>;

fn parse_all<'d>(delegates: impl Iterator<Item = &'d Delegate>) -> Parsed<'d> {
    delegates.map(|d| (d, netconf(d))).collect()
}

/// The plugin calls `command` makes for `parsed`, in the order given, each chain in its
/// command's order, without their configs: what [`Lookahead`] starts ahead. A delegate whose
/// config does not parse ends the plan; its chain fails before any plugin of it runs.
fn plan(parsed: &Parsed<'_>, command: Command, target: Target<'_>) -> Vec<DelegateCall> {
    let mut calls = Vec::new();
    for (delegate, netconf) in parsed {
        let Ok(netconf) = netconf else {
            break;
        };
        let step = ChainStep {
            delegate,
            netconf,
            target,
            command,
        };
        calls.extend(step.order().map(|index| step.call(index, Vec::new())));
    }
    calls
}

/// ADD through the chain; the last plugin's result, in the delegate's version, is returned.
pub async fn add_chain(
    exec: &dyn Executor,
    delegate: &Delegate,
    target: Target<'_>,
) -> Result<Value, AttachError> {
    add_parsed(exec, delegate, &netconf(delegate)?, target).await
}

async fn add_parsed(
    exec: &dyn Executor,
    delegate: &Delegate,
    netconf: &NetworkConfig,
    target: Target<'_>,
) -> Result<Value, AttachError> {
    let step = ChainStep {
        delegate,
        netconf,
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
pub(crate) fn normalize_result(stdout: &[u8], version: CniVersion) -> Result<Value, String> {
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
    del_parsed(exec, delegate, &netconf(delegate)?, result, target).await
}

async fn del_parsed(
    exec: &dyn Executor,
    delegate: &Delegate,
    netconf: &NetworkConfig,
    result: Option<&Value>,
    target: Target<'_>,
) -> Result<(), AttachError> {
    let step = ChainStep {
        delegate,
        netconf,
        target,
        command: Command::Del,
    };
    let prev = result.filter(|_| delegate.version.del_gets_prev_result());
    for index in step.order() {
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

/// A failed ADD after its rollback: the error, and what the rollback could not remove.
#[derive(Debug)]
pub struct AddFailure {
    pub error: AttachError,
    /// Attachments that were made and whose DEL failed: they must stay recorded so the
    /// runtime's DEL tries them again.
    pub leftovers: Vec<Attachment>,
}

/// ADD every delegate in order. When one fails, the later ones are never tried, and what this
/// ADD did is deleted again in reverse: first the failed chain itself (CNI-0.4.0 list error
/// handling), then every delegate that succeeded.
pub async fn attach_all(
    exec: &dyn Executor,
    delegates: &[Delegate],
    target: Target<'_>,
) -> Result<Vec<Value>, AddFailure> {
    let added = attach_all_timed(exec, delegates, target).await?;
    Ok(added.into_iter().map(|a| a.result).collect())
}

/// One delegate's ADD result, with when its chain finished and how long it took.
#[derive(Debug, Clone)]
pub struct Added {
    pub result: Value,
    pub attached: Attached,
}

/// [`attach_all`], keeping each delegate's timing for the record (`plexusd inspect`).
pub async fn attach_all_timed(
    exec: &dyn Executor,
    delegates: &[Delegate],
    target: Target<'_>,
) -> Result<Vec<Added>, AddFailure> {
    let parsed = parse_all(delegates.iter());
    let ahead = Lookahead::new(exec, plan(&parsed, Command::Add, target));
    let mut added = Vec::with_capacity(delegates.len());
    for (delegate, netconf) in parsed {
        let span =
            tracing::info_span!("attach", network = %delegate.network, ifname = %delegate.ifname);
        let started = Instant::now();
        let outcome = async { add_parsed(&ahead, delegate, &netconf?, target).await }
            .instrument(span)
            .await;
        match outcome {
            Ok(result) => added.push(Added {
                result,
                attached: Attached {
                    at: Timestamp::now(),
                    took_us: Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)),
                },
            }),
            Err(error) => {
                tracing::warn!(%error, "ADD failed; rolling back");
                // The next plugin, started ahead, is killed unfed before anything is undone.
                drop(ahead);
                // Its ADD failed, so the plugin should have undone its own work; a DEL that
                // fails too (macvlan on a missing master, say) is logged, not kept, or every
                // later DEL of the pod would fail on it forever. A plugin stopped before it
                // read its config did nothing at all, and gets no DEL.
                if !error.never_ran()
                    && let Err(del_error) = del_chain(exec, delegate, None, target).await
                {
                    tracing::warn!(error = %del_error, "DEL of the failed chain failed");
                }
                let leftovers = rollback(exec, attachments(delegates, added), target).await;
                return Err(AddFailure { error, leftovers });
            }
        }
    }
    Ok(added)
}

/// What the ADDs of `delegates` made, as attachments; `added` holds the first ones' results
/// (all of them, or those before the one that failed).
pub fn attachments(delegates: &[Delegate], added: Vec<Added>) -> Vec<Attachment> {
    delegates
        .iter()
        .zip(added)
        .map(|(delegate, added)| {
            Attachment::added(delegate.clone(), added.result).at(added.attached)
        })
        .collect()
}

/// Deletes attachments this ADD made, in reverse; returns those whose DEL failed.
pub async fn rollback(
    exec: &dyn Executor,
    done: Vec<Attachment>,
    target: Target<'_>,
) -> Vec<Attachment> {
    let failed: Vec<usize> = detach_all(exec, &done, target)
        .await
        .into_iter()
        .map(|failure| {
            tracing::warn!(error = %failure, "rollback DEL failed; kept for the runtime's DEL");
            failure.index
        })
        .collect();
    done.into_iter()
        .enumerate()
        .filter(|(i, _)| failed.contains(i))
        .map(|(_, a)| a)
        .collect()
}

/// DEL every attachment in reverse order. One failure does not stop the rest (NPWG §7.2);
/// the failures come back with the indexes of the attachments that are not fully gone.
pub async fn detach_all(
    exec: &dyn Executor,
    attachments: &[Attachment],
    target: Target<'_>,
) -> Vec<DetachFailure> {
    let parsed = parse_all(attachments.iter().rev().map(|a| &a.delegate));
    let ahead = Lookahead::new(exec, plan(&parsed, Command::Del, target));
    let mut failures = Vec::new();
    let in_reverse = attachments.iter().enumerate().rev();
    for ((index, attachment), (delegate, netconf)) in in_reverse.zip(parsed) {
        let span =
            tracing::info_span!("detach", network = %delegate.network, ifname = %delegate.ifname);
        let result = attachment.result.as_ref();
        let outcome = async { del_parsed(&ahead, delegate, &netconf?, result, target).await }
            .instrument(span)
            .await;
        if let Err(error) = outcome {
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
            network: delegate.network.clone(),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cni::code;
    use crate::records::PodRecord;
    use crate::testing::{RecordedCall, RecordingExecutor, Reply, chain};

    const TARGET: Target<'static> = Target {
        container_id: "c0ffee",
        netns: "/var/run/netns/pod",
    };

    fn lines(list: &[&str]) -> Vec<String> {
        list.iter().map(|l| (*l).to_owned()).collect()
    }

    fn answer(call: &RecordedCall) -> &Value {
        call.answer.as_ref().expect("the call succeeded")
    }

    /// eth0 (bridge, portmap), net1 (macvlan), net2 (ipvlan, tuning, sbr).
    fn three_delegates() -> Vec<Delegate> {
        vec![
            Delegate::test("cluster", chain("cluster", "1.0.0", &["bridge", "portmap"])).cluster(),
            Delegate::test("ns1/mac", chain("mac", "1.0.0", &["macvlan"])).on("net1"),
            Delegate::test(
                "ns1/ipv",
                chain("ipv", "1.0.0", &["ipvlan", "tuning", "sbr"]),
            )
            .on("net2"),
        ]
    }

    #[tokio::test]
    async fn add_runs_delegates_in_order_and_each_chain_in_order() {
        let exec = RecordingExecutor::new();
        let delegates = three_delegates();
        let results = attach_all(&exec, &delegates, TARGET).await.unwrap();
        assert_eq!(
            exec.lines(),
            lines(&[
                "ADD bridge eth0",
                "ADD portmap eth0",
                "ADD macvlan net1",
                "ADD ipvlan net2",
                "ADD tuning net2",
                "ADD sbr net2",
            ])
        );
        let calls = exec.calls();
        for call in &calls {
            assert_eq!(call.container_id, "c0ffee");
            assert_eq!(call.netns, "/var/run/netns/pod");
            assert_eq!(call.cni_args, "IgnoreUnknown=1");
            assert_eq!(call.stdin["cniVersion"], "1.0.0");
        }
        let names: Vec<&Value> = calls.iter().map(|c| &c.stdin["name"]).collect();
        assert_eq!(names, ["cluster", "cluster", "mac", "ipv", "ipv", "ipv"]);
        // The last plugin of each chain gives the delegate's result.
        assert_eq!(results.len(), 3);
        assert_eq!(&results[0], answer(&calls[1]));
        assert_eq!(&results[1], answer(&calls[2]));
        assert_eq!(&results[2], answer(&calls[5]));
    }

    #[tokio::test]
    async fn only_the_second_plugin_of_a_chain_on_gets_the_previous_plugins_result() {
        let exec = RecordingExecutor::new();
        attach_all(&exec, &three_delegates(), TARGET).await.unwrap();
        let calls = exec.calls();
        // (call, the call whose result it must get as prevResult)
        let expected: [(usize, Option<usize>); 6] = [
            (0, None),
            (1, Some(0)),
            (2, None),
            (3, None),
            (4, Some(3)),
            (5, Some(4)),
        ];
        for (index, prev) in expected {
            let got = calls[index].prev_result();
            let want = prev.map(|p| answer(&calls[p]));
            assert_eq!(got, want, "{}", calls[index].line());
        }
    }

    #[tokio::test]
    async fn a_failing_delegate_stops_the_add_and_everything_done_is_deleted_in_reverse() {
        let exec = RecordingExecutor::new().fails("tuning", Command::Add, 11, "no room");
        let delegates = vec![
            Delegate::test("cluster", chain("cluster", "1.0.0", &["bridge"])).cluster(),
            Delegate::test("ns1/old", chain("old", "0.3.1", &["macvlan"])).on("net1"),
            Delegate::test(
                "ns1/ipv",
                chain("ipv", "0.4.0", &["ipvlan", "tuning", "sbr"]),
            )
            .on("net2"),
            Delegate::test("ns1/last", chain("last", "1.0.0", &["vlan"])).on("net3"),
        ];
        let failure = attach_all(&exec, &delegates, TARGET).await.unwrap_err();
        assert!(failure.leftovers.is_empty(), "everything was rolled back");
        let error = failure.error;
        assert_eq!(
            exec.lines(),
            lines(&[
                "ADD bridge eth0",
                "ADD macvlan net1",
                "ADD ipvlan net2",
                "ADD tuning net2",
                // The failed chain entirely, the plugin ADD never reached included.
                "DEL sbr net2",
                "DEL tuning net2",
                "DEL ipvlan net2",
                "DEL macvlan net1",
                "DEL bridge eth0",
            ]),
            "delegate 4 is never run"
        );
        let calls = exec.calls();
        for del in &calls[4..7] {
            assert_eq!(del.prev_result(), None, "the failed chain has no result");
        }
        assert_eq!(
            calls[7].prev_result(),
            None,
            "a 0.3.1 DEL takes no prevResult"
        );
        let cluster_result = answer(&calls[0]);
        assert_eq!(calls[8].prev_result(), Some(cluster_result));
        assert_eq!(calls[8].stdin["cniVersion"], "1.0.0");

        assert_eq!(error.cni_code(), 11, "the delegate's code is kept");
        assert_eq!(error.network(), "ns1/ipv");
        assert_eq!(error.stderr(), "tuning ADD failed on purpose");
        let text = error.to_string();
        for needle in ["ns1/ipv", "tuning", "ADD", "net2", "no room"] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
    }

    #[tokio::test]
    async fn a_failing_rollback_del_does_not_stop_the_rollback_or_hide_the_add_error() {
        let exec = RecordingExecutor::new()
            .fails("vlan", Command::Add, 7, "no master")
            .fails("macvlan", Command::Del, 5, "netlink busy");
        let delegates = vec![
            Delegate::test("cluster", chain("cluster", "1.1.0", &["bridge"])).cluster(),
            Delegate::test("ns1/mac", chain("mac", "1.1.0", &["macvlan"])).on("net1"),
            Delegate::test("ns1/vlan", chain("vlan", "1.1.0", &["vlan"])).on("net2"),
        ];
        let failure = attach_all(&exec, &delegates, TARGET).await.unwrap_err();
        let error = failure.error;
        let kept: Vec<&str> = failure
            .leftovers
            .iter()
            .map(|a| a.delegate.network.as_str())
            .collect();
        assert_eq!(
            kept,
            ["ns1/mac"],
            "what could not be rolled back stays for the runtime's DEL"
        );
        assert!(failure.leftovers[0].result.is_some());
        assert_eq!(
            exec.lines(),
            lines(&[
                "ADD bridge eth0",
                "ADD macvlan net1",
                "ADD vlan net2",
                "DEL vlan net2",
                "DEL macvlan net1",
                "DEL bridge eth0",
            ])
        );
        assert_eq!(error.cni_code(), 7);
        assert_eq!(error.network(), "ns1/vlan");
    }

    #[tokio::test]
    async fn del_passes_the_add_result_from_version_0_4_0_on() {
        let result = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]});
        for version in CniVersion::ALL {
            let exec = RecordingExecutor::new();
            let delegate = Delegate::test("n", chain("n", version.as_str(), &["a", "b"]));
            del_chain(&exec, &delegate, Some(&result), TARGET)
                .await
                .unwrap();
            assert_eq!(
                exec.lines(),
                lines(&["DEL b net1", "DEL a net1"]),
                "{version}"
            );
            for call in exec.calls() {
                let want = (version >= CniVersion::V0_4_0).then_some(&result);
                assert_eq!(call.prev_result(), want, "{version}");
            }
        }
    }

    #[tokio::test]
    async fn del_within_a_chain_stops_at_the_first_error() {
        let exec = RecordingExecutor::new().fails("tuning", Command::Del, 5, "stuck");
        let delegate = Delegate::test("n", chain("n", "1.0.0", &["ipvlan", "tuning", "sbr"]));
        let error = del_chain(&exec, &delegate, None, TARGET).await.unwrap_err();
        assert_eq!(exec.lines(), lines(&["DEL sbr net1", "DEL tuning net1"]));
        assert_eq!(error.cni_code(), 5);
    }

    #[tokio::test]
    async fn detach_all_continues_past_failures_and_reports_their_indexes() {
        let exec = RecordingExecutor::new()
            .fails("macvlan", Command::Del, 5, "netlink busy")
            .fails("bridge", Command::Del, 11, "try later");
        let attachments: Vec<Attachment> = three_delegates()
            .into_iter()
            .map(|d| Attachment::added(d, json!({"cniVersion": "1.0.0"})))
            .collect();
        let failures = detach_all(&exec, &attachments, TARGET).await;
        assert_eq!(
            exec.lines(),
            lines(&[
                "DEL sbr net2",
                "DEL tuning net2",
                "DEL ipvlan net2",
                "DEL macvlan net1",
                "DEL portmap eth0",
                "DEL bridge eth0",
            ])
        );
        let reported: Vec<(usize, u32, &str)> = failures
            .iter()
            .map(|f| (f.index, f.error.cni_code(), f.error.network()))
            .collect();
        assert_eq!(reported, [(1, 5, "ns1/mac"), (0, 11, "cluster")]);
        assert!(
            failures[0].to_string().contains("macvlan"),
            "{}",
            failures[0]
        );
    }

    #[tokio::test]
    async fn detach_all_of_nothing_failing_reports_nothing() {
        let exec = RecordingExecutor::new();
        let attachments = vec![Attachment::intended(three_delegates().remove(1))];
        assert!(detach_all(&exec, &attachments, TARGET).await.is_empty());
        assert_eq!(
            exec.calls()[0].prev_result(),
            None,
            "no result, no prevResult"
        );
    }

    #[tokio::test]
    async fn check_runs_in_add_order_with_the_result_unless_the_config_has_no_check() {
        let result =
            json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]});
        let mut no_check = chain("n", "1.0.0", &["a", "b"]);
        no_check["disableCheck"] = json!(true);
        let mut no_check_string = chain("n", "1.0.0", &["a", "b"]);
        no_check_string["disableCheck"] = json!("true");
        let cases = [
            (
                chain("n", "1.1.0", &["a", "b"]),
                &["CHECK a net1", "CHECK b net1"][..],
            ),
            (
                chain("n", "0.4.0", &["a", "b"]),
                &["CHECK a net1", "CHECK b net1"],
            ),
            (chain("n", "0.3.1", &["a", "b"]), &[]),
            (chain("n", "0.3.0", &["a", "b"]), &[]),
            (no_check, &[]),
            (no_check_string, &[]),
        ];
        for (config, expected) in cases {
            let exec = RecordingExecutor::new();
            let delegate = Delegate::test("n", config.clone());
            check_chain(&exec, &delegate, &result, TARGET)
                .await
                .unwrap();
            assert_eq!(exec.lines(), lines(expected), "{config}");
            for call in exec.calls() {
                assert_eq!(call.prev_result(), Some(&result), "{config}");
            }
        }
    }

    #[tokio::test]
    async fn a_failing_check_keeps_the_plugins_code() {
        let exec = RecordingExecutor::new().fails("a", Command::Check, 999, "address gone");
        let delegate = Delegate::test("ns/n", chain("n", "1.0.0", &["a", "b"]));
        let error = check_chain(&exec, &delegate, &json!({}), TARGET)
            .await
            .unwrap_err();
        assert_eq!(exec.lines(), lines(&["CHECK a net1"]));
        assert_eq!(error.cni_code(), 999);
        assert!(error.to_string().contains("CHECK"), "{error}");
    }

    #[tokio::test]
    async fn a_result_in_another_version_is_converted_to_the_chains_version() {
        let v1_result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "net1", "sandbox": "/var/run/netns/pod"}],
            "ips": [{"interface": 0, "address": "10.0.0.2/24"}, {"address": "fd00::2/64"}],
            "vendor.example/extra": true,
        });
        let exec = RecordingExecutor::new().answers("macvlan", Command::Add, v1_result);
        let delegate = Delegate::test("n", chain("n", "0.4.0", &["macvlan", "tuning"]));
        add_chain(&exec, &delegate, TARGET).await.unwrap();
        let converted = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "net1", "sandbox": "/var/run/netns/pod"}],
            "ips": [
                {"version": "4", "interface": 0, "address": "10.0.0.2/24"},
                {"version": "6", "address": "fd00::2/64"},
            ],
        });
        assert_eq!(exec.calls()[1].prev_result(), Some(&converted));

        let v04_result = json!({
            "cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "10.0.0.2/24"}],
        });
        let exec = RecordingExecutor::new().answers("macvlan", Command::Add, v04_result);
        let delegate = Delegate::test("n", chain("n", "1.1.0", &["macvlan"]));
        let result = add_chain(&exec, &delegate, TARGET).await.unwrap();
        assert_eq!(
            result,
            json!({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}]})
        );
    }

    #[tokio::test]
    async fn a_result_already_in_the_chains_version_keeps_unknown_keys() {
        let cases = [
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "x-note": 1}], "vendor.example/extra": {"a": [1]}}),
            // No cniVersion counts as the request's (libcni fixupResultVersion).
            json!({"ips": [{"address": "10.0.0.2/24", "x-note": 1}], "vendor.example/extra": {"a": [1]}}),
            json!({"cniVersion": "", "ips": [{"address": "10.0.0.2/24", "x-note": 1}], "vendor.example/extra": {"a": [1]}}),
        ];
        for stdout in cases {
            let exec = RecordingExecutor::new().answers("macvlan", Command::Add, stdout.clone());
            let delegate = Delegate::test("n", chain("n", "1.0.0", &["macvlan"]));
            let result = add_chain(&exec, &delegate, TARGET).await.unwrap();
            let mut expected = stdout.clone();
            expected["cniVersion"] = json!("1.0.0");
            assert_eq!(result, expected, "{stdout}");
        }
    }

    #[tokio::test]
    async fn an_unusable_result_fails_the_add_naming_the_plugin() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "printed nothing"),
            (b"not json", "decoded"),
            (
                br#"{"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}}"#,
                "0.1.0/0.2.0",
            ),
            (
                br#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}"#,
                "ips[0].address",
            ),
        ];
        for (stdout, needle) in cases {
            let exec = RecordingExecutor::new().prints("tuning", Command::Add, stdout);
            let delegate =
                Delegate::test("ns/n", chain("n", "1.0.0", &["macvlan", "tuning", "sbr"]));
            let error = add_chain(&exec, &delegate, TARGET).await.unwrap_err();
            assert!(matches!(error, AttachError::BadResult { .. }), "{error:?}");
            assert_eq!(error.cni_code(), code::DECODING_FAILURE);
            let text = error.to_string();
            assert!(text.contains("tuning") && text.contains("ns/n"), "{text}");
            assert!(text.contains(needle), "{needle} missing in {text}");
            assert_eq!(
                exec.lines(),
                lines(&["ADD macvlan net1", "ADD tuning net1"])
            );
        }
    }

    #[tokio::test]
    async fn runtime_config_reaches_only_the_plugins_that_declare_the_capability() {
        let config = json!({
            "cniVersion": "1.0.0",
            "name": "n",
            "plugins": [
                {"type": "macvlan", "capabilities": {"ips": true}},
                {"type": "tuning", "capabilities": {"mac": true, "ips": false}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        let delegate = Delegate::test("ns/n", config)
            .with_runtime_config(json!({
                "ips": ["10.1.0.5/24"],
                "mac": "c2:11:22:33:44:55",
                "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            }))
            .with_args_cni(json!({"foo": "bar"}))
            .with_cni_args("IgnoreUnknown=1;foo=bar");
        let exec = RecordingExecutor::new();
        add_chain(&exec, &delegate, TARGET).await.unwrap();
        let calls = exec.calls();
        let runtime_configs: Vec<Option<&Value>> =
            calls.iter().map(RecordedCall::runtime_config).collect();
        assert_eq!(
            runtime_configs,
            [
                Some(&json!({"ips": ["10.1.0.5/24"]})),
                Some(&json!({"mac": "c2:11:22:33:44:55"})),
                Some(
                    &json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
                ),
            ]
        );
        for call in &calls {
            assert_eq!(
                call.stdin["args"]["cni"],
                json!({"foo": "bar"}),
                "{}",
                call.line()
            );
            assert_eq!(call.cni_args, "IgnoreUnknown=1;foo=bar");
            assert!(call.stdin.get("capabilities").is_none(), "{}", call.line());
        }
    }

    #[tokio::test]
    async fn status_asks_every_plugin_of_a_1_1_0_network_and_nothing_older() {
        for (version, expected) in [
            ("1.1.0", &["STATUS bridge", "STATUS portmap"][..]),
            ("1.0.0", &[]),
        ] {
            let exec = RecordingExecutor::new();
            let delegate = Delegate::test("c", chain("c", version, &["bridge", "portmap"]));
            status_chain(&exec, &delegate).await.unwrap();
            assert_eq!(exec.lines(), lines(expected), "{version}");
            for call in exec.calls() {
                let attachment = [
                    &call.container_id,
                    &call.netns,
                    &call.ifname,
                    &call.cni_args,
                ];
                assert!(attachment.iter().all(|p| p.is_empty()), "{call:?}");
                assert_eq!(call.stdin["cniVersion"], version);
            }
        }
        let exec = RecordingExecutor::new().fails("bridge", Command::Status, 50, "no bridge");
        let delegate = Delegate::test("c", chain("c", "1.1.0", &["bridge", "portmap"]));
        let error = status_chain(&exec, &delegate).await.unwrap_err();
        assert_eq!(error.cni_code(), 50);
    }

    fn valid_pairs(call: &RecordedCall, key: &str) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = call.stdin[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing in {}", call.stdin))
            .iter()
            .map(|p| {
                (
                    p["containerID"].as_str().unwrap().to_owned(),
                    p["ifname"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        pairs.sort();
        pairs
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(c, i)| ((*c).to_owned(), (*i).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn gc_sends_each_1_1_0_network_the_attachments_still_valid_for_it() {
        let cluster = || {
            Delegate::test("cluster", chain("cluster", "1.1.0", &["bridge", "portmap"])).cluster()
        };
        // Two NADs in different namespaces whose configs share the CNI name "shared".
        let shared_a = || Delegate::test("ns1/shared", chain("shared", "1.1.0", &["macvlan"]));
        let shared_b = || Delegate::test("ns2/shared", chain("shared", "1.1.0", &["macvlan"]));
        let old = || Delegate::test("ns1/old", chain("old", "1.0.0", &["ipvlan"])).on("net2");
        let mut no_gc_config = chain("nogc", "1.1.0", &["vlan"]);
        no_gc_config["disableGC"] = json!(true);
        let no_gc = Delegate::test("ns1/nogc", no_gc_config).on("net3");
        let result = json!({"cniVersion": "1.1.0"});
        let kept = vec![
            PodRecord::test(
                "c1",
                vec![
                    Attachment::added(cluster(), result.clone()),
                    Attachment::added(shared_a(), result.clone()),
                    Attachment::added(old(), result.clone()),
                    Attachment::added(shared_a().on("net4"), result.clone()),
                ],
            ),
            PodRecord::test(
                "c2",
                vec![
                    Attachment::added(cluster(), result.clone()),
                    Attachment::added(shared_b(), result.clone()),
                    Attachment::added(no_gc, result.clone()),
                ],
            ),
        ];
        let exec = RecordingExecutor::new();
        let errors = gc_networks(&exec, &kept).await;
        assert!(errors.is_empty(), "{errors:?}");

        let mut seen = exec.lines();
        seen.sort();
        assert_eq!(seen, lines(&["GC bridge", "GC macvlan", "GC portmap"]));
        let expected = [
            (
                "bridge",
                "cluster",
                pairs(&[("c1", "eth0"), ("c2", "eth0")]),
            ),
            (
                "portmap",
                "cluster",
                pairs(&[("c1", "eth0"), ("c2", "eth0")]),
            ),
            (
                "macvlan",
                "shared",
                pairs(&[("c1", "net1"), ("c1", "net4"), ("c2", "net1")]),
            ),
        ];
        for (plugin, name, valid) in expected {
            let call = exec
                .calls()
                .into_iter()
                .find(|c| c.plugin == plugin)
                .unwrap();
            assert_eq!(call.stdin["name"], name);
            assert_eq!(call.stdin["cniVersion"], "1.1.0");
            assert_eq!(call.container_id, "");
            assert_eq!(call.ifname, "");
            assert_eq!(
                valid_pairs(&call, "cni.dev/valid-attachments"),
                valid,
                "{plugin}"
            );
            assert_eq!(valid_pairs(&call, "cni.dev/attachments"), valid, "{plugin}");
            assert_eq!(call.prev_result(), None);
            assert_eq!(call.runtime_config(), None);
        }
    }

    #[tokio::test]
    async fn gc_continues_past_a_failing_plugin_and_returns_every_error() {
        let exec = RecordingExecutor::new()
            .fails("bridge", Command::Gc, 11, "locked")
            .fails("macvlan", Command::Gc, 5, "io");
        let kept = vec![PodRecord::test(
            "c1",
            vec![
                Attachment::added(
                    Delegate::test("cluster", chain("cluster", "1.1.0", &["bridge", "portmap"]))
                        .cluster(),
                    json!({}),
                ),
                Attachment::added(
                    Delegate::test("ns1/mac", chain("mac", "1.1.0", &["macvlan"])),
                    json!({}),
                ),
            ],
        )];
        let errors = gc_networks(&exec, &kept).await;
        let mut seen = exec.lines();
        seen.sort();
        assert_eq!(seen, lines(&["GC bridge", "GC macvlan", "GC portmap"]));
        let mut reported: Vec<(u32, &str)> =
            errors.iter().map(|e| (e.cni_code(), e.network())).collect();
        reported.sort();
        assert_eq!(reported, [(5, "ns1/mac"), (11, "cluster")]);
    }

    #[tokio::test]
    async fn a_plugin_fixed_after_a_failed_del_is_deleted_by_the_next_del() {
        let exec = RecordingExecutor::new().fails("macvlan", Command::Del, 5, "busy");
        let attachments = vec![Attachment::added(
            Delegate::test("ns1/mac", chain("mac", "1.0.0", &["macvlan"])),
            json!({"cniVersion": "1.0.0"}),
        )];
        assert_eq!(detach_all(&exec, &attachments, TARGET).await.len(), 1);
        exec.set("macvlan", Command::Del, Reply::Success);
        assert!(detach_all(&exec, &attachments, TARGET).await.is_empty());
        assert_eq!(
            exec.lines(),
            lines(&["DEL macvlan net1", "DEL macvlan net1"])
        );
    }
}
