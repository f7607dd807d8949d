//! `plexusd inspect`: what plexusd attached on this node, and why an ADD failed. The report is
//! built from the records and the recent failures, served read-only at `GET /v1/inspect`;
//! [`client`] asks for it over the socket and [`render`] prints it.

pub mod client;
pub mod render;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::cni::CniResult;
use crate::failures::Failure;
use crate::names::{ContainerId, IfName, NameError, PodKey};
use crate::records::{Attachment, Pending, PodRecord};

/// Everything `GET /v1/inspect` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub containers: Vec<ContainerView>,
    /// Records that could not be read, each with its path and the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// How far a container got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Every attachment has its ADD result.
    Attached,
    /// Some attachments are only intended: a crash during ADD, or DELs that failed and wait
    /// for the runtime's next DEL.
    Incomplete,
    /// No record: the last ADD failed and its rollback removed everything.
    Failed,
}

/// One container: its pod, its attachments, and the last failed ADD of its pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub container_id: ContainerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub netns: String,
    /// The runtime's CNI_IFNAME; unknown for a failed ADD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<IfName>,
    pub state: ContainerState,
    /// The Multus cache file the record was adopted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_from: Option<PathBuf>,
    pub attachments: Vec<AttachmentView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Failure>,
}

/// One attachment as an operator looks at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentView {
    pub network: String,
    pub interface: IfName,
    /// The pod-side addresses, with their prefix length.
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The delegate's plugin types, in chain order.
    pub plugins: Vec<String>,
    pub cni_version: String,
    /// The cluster network (eth0, or what the default-network annotation chose).
    pub default: bool,
    /// False while only intended: its ADD result was never recorded.
    pub attached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_us: Option<u64>,
    /// A hot-plug change in flight, or a detach that failed and is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// Which containers a report covers: `?pod=NS/NAME` and `?container=ID` narrow it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub pod: Option<PodKey>,
    pub container: Option<ContainerId>,
}

impl Filter {
    /// Parses the query string of `GET /v1/inspect`.
    pub fn from_query(query: Option<&str>) -> Result<Self, NameError> {
        let mut filter = Self::default();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value.replace("%2F", "/").replace("%2f", "/");
            match key {
                "pod" => filter.pod = Some(parse_pod(&value)?),
                "container" => filter.container = Some(ContainerId::parse(&value)?),
                _ => {}
            }
        }
        Ok(filter)
    }

    /// The query string that asks for this filter.
    pub fn to_query(&self) -> String {
        let mut pairs = Vec::new();
        if let Some(pod) = &self.pod {
            pairs.push(format!("pod={pod}"));
        }
        if let Some(container) = &self.container {
            pairs.push(format!("container={container}"));
        }
        pairs.join("&")
    }

    fn admits(&self, container: &ContainerId, pod: Option<&PodKey>) -> bool {
        self.container.as_ref().is_none_or(|c| c == container)
            && self.pod.as_ref().is_none_or(|p| pod == Some(p))
    }
}

/// `namespace/name`, as `--pod` takes it.
pub fn parse_pod(text: &str) -> Result<PodKey, NameError> {
    let Some((namespace, name)) = text.split_once('/') else {
        return Err(NameError {
            kind: "pod",
            value: text.to_owned(),
            why: "expected NAMESPACE/NAME",
        });
    };
    Ok(PodKey {
        namespace: crate::names::Namespace::parse(namespace)?,
        name: crate::names::ObjectName::parse(name)?,
    })
}

/// The report for `filter`: every recorded container, then the failed ADDs that left no
/// record, each with the newest failure of its pod.
pub fn build(records: Vec<PodRecord>, failures: &[Failure], filter: &Filter) -> Report {
    let mut containers: Vec<ContainerView> = records
        .into_iter()
        .filter(|r| filter.admits(&r.container_id, r.pod.as_ref()))
        .map(|record| {
            let last_error = newest_concerning(failures, record.pod.as_ref(), &record.container_id);
            recorded(record, last_error)
        })
        .collect();
    for failure in failures {
        let seen = containers
            .iter()
            .any(|c| c.container_id == failure.container_id);
        if !seen && filter.admits(&failure.container_id, failure.pod.as_ref()) {
            let last_error =
                newest_concerning(failures, failure.pod.as_ref(), &failure.container_id);
            containers.push(failed(failure, last_error));
        }
    }
    containers.sort_by(|a, b| {
        let key = |c: &ContainerView| {
            (
                c.pod.as_ref().map(ToString::to_string),
                c.container_id.to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    Report {
        containers,
        problems: Vec::new(),
    }
}

/// `failures` are newest first, so the first that concerns the pod is its last error.
fn newest_concerning(
    failures: &[Failure],
    pod: Option<&PodKey>,
    container: &ContainerId,
) -> Option<Failure> {
    failures
        .iter()
        .find(|f| f.concerns(pod, container))
        .cloned()
}

fn recorded(record: PodRecord, last_error: Option<Failure>) -> ContainerView {
    let attachments: Vec<AttachmentView> = record.attachments.iter().map(attachment_view).collect();
    let state = if attachments.iter().all(|a| a.attached) {
        ContainerState::Attached
    } else {
        ContainerState::Incomplete
    };
    ContainerView {
        container_id: record.container_id,
        pod: record.pod,
        uid: record.pod_uid,
        netns: record.netns,
        ifname: Some(record.ifname),
        state,
        adopted_from: record.adopted.map(|a| a.from),
        attachments,
        last_error,
    }
}

fn failed(failure: &Failure, last_error: Option<Failure>) -> ContainerView {
    ContainerView {
        container_id: failure.container_id.clone(),
        pod: failure.pod.clone(),
        uid: failure.uid.clone(),
        netns: failure.netns.clone(),
        ifname: None,
        state: ContainerState::Failed,
        adopted_from: None,
        attachments: Vec::new(),
        last_error,
    }
}

fn attachment_view(attachment: &Attachment) -> AttachmentView {
    let delegate = &attachment.delegate;
    let plugins = delegate
        .netconf()
        .map(|n| n.plugins.into_iter().map(|p| p.plugin_type).collect())
        .unwrap_or_default();
    let result = attachment
        .result
        .as_ref()
        .and_then(|r| CniResult::parse(r.to_string().as_bytes(), delegate.version).ok())
        .map(|(r, _)| r);
    let sandbox = result.as_ref().and_then(CniResult::first_sandbox_interface);
    let ips = result
        .iter()
        .flat_map(|r| &r.ips)
        .filter(|ip| ip.interface == sandbox)
        .map(|ip| ip.address.to_string())
        .collect();
    let mac = result
        .as_ref()
        .zip(sandbox)
        .and_then(|(r, i)| r.interfaces.get(i))
        .and_then(|i| i.mac.clone());
    AttachmentView {
        network: delegate.network.clone(),
        interface: delegate.ifname.clone(),
        ips,
        mac,
        plugins,
        cni_version: delegate.version.as_str().to_owned(),
        default: delegate.is_default,
        attached: attachment.result.is_some(),
        attached_at: attachment.attached.map(|a| a.at),
        took_us: attachment.attached.and_then(|a| a.took_us),
        pending: attachment.pending,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::records::Attached;
    use crate::resolve::Delegate;
    use crate::testing::chain;

    fn pod(text: &str) -> Option<PodKey> {
        Some(parse_pod(text).unwrap())
    }

    fn id(text: &str) -> ContainerId {
        ContainerId::parse(text).unwrap()
    }

    fn web_record() -> PodRecord {
        let cluster =
            Delegate::test("cluster", chain("cluster", "1.0.0", &["bridge", "portmap"])).cluster();
        let east = Delegate::test("tenant/east", chain("east", "0.3.1", &["macvlan"])).on("net1");
        let later = Delegate::test("tenant/later", chain("later", "1.0.0", &["vlan"])).on("net2");
        PodRecord {
            pod: pod("tenant/web"),
            pod_uid: Some("uid-1".into()),
            ..PodRecord::test(
                "c-web",
                vec![
                    Attachment::added(
                        cluster,
                        json!({"cniVersion": "1.0.0",
                            "interfaces": [{"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"}, {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/x"}],
                            "ips": [{"address": "198.18.0.2/24", "interface": 1}]}),
                    )
                    .at(Attached {
                        at: Timestamp::from_millis(1_000),
                        took_us: Some(2_500),
                    }),
                    Attachment::added(
                        east,
                        json!({"cniVersion": "0.3.1",
                            "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/x"}],
                            "ips": [{"version": "4", "address": "198.18.20.2/24", "interface": 0}, {"version": "6", "address": "fd00::2/64", "interface": 0}]}),
                    ),
                    Attachment::intended(later),
                ],
            )
        }
    }

    fn failure(container: &str, pod_name: Option<&str>, at: u64, message: &str) -> Failure {
        Failure {
            at: Timestamp::from_millis(at),
            container_id: id(container),
            pod: pod_name.and_then(|name| pod(&format!("tenant/{name}"))),
            uid: None,
            netns: "/run/netns/y".into(),
            code: 7,
            message: message.into(),
            details: String::new(),
        }
    }

    #[test]
    fn a_record_becomes_a_view_of_its_attachments() {
        let report = build(vec![web_record()], &[], &Filter::default());
        let web = &report.containers[0];
        assert_eq!(web.state, ContainerState::Incomplete);
        assert_eq!(web.uid.as_deref(), Some("uid-1"));
        let [eth0, net1, net2] = &web.attachments[..] else {
            panic!("{web:?}")
        };
        assert_eq!(eth0.interface.as_str(), "eth0");
        assert_eq!(eth0.ips, ["198.18.0.2/24"]);
        assert_eq!(eth0.mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(eth0.plugins, ["bridge", "portmap"]);
        assert!(eth0.default && eth0.attached);
        assert_eq!(eth0.took_us, Some(2_500));
        assert_eq!(net1.ips, ["198.18.20.2/24", "fd00::2/64"]);
        assert_eq!(net1.cni_version, "0.3.1");
        assert_eq!(net1.attached_at, None);
        assert!(!net2.attached && net2.ips.is_empty());
    }

    #[test]
    fn a_failed_add_without_a_record_is_shown_with_its_error() {
        let failures = [
            failure("c-db-2", Some("db"), 30, "network tenant/x not found"),
            failure("c-db-1", Some("db"), 20, "older"),
            failure("c-web-0", Some("web"), 10, "web once failed"),
        ];
        let report = build(vec![web_record()], &failures, &Filter::default());
        let summary: Vec<(String, ContainerState, String)> = report
            .containers
            .iter()
            .map(|c| {
                (
                    c.container_id.to_string(),
                    c.state,
                    c.last_error
                        .as_ref()
                        .map(|f| f.message.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "c-db-1".into(),
                    ContainerState::Failed,
                    "network tenant/x not found".into()
                ),
                (
                    "c-db-2".into(),
                    ContainerState::Failed,
                    "network tenant/x not found".into()
                ),
                (
                    "c-web".into(),
                    ContainerState::Incomplete,
                    "web once failed".into()
                ),
                (
                    "c-web-0".into(),
                    ContainerState::Failed,
                    "web once failed".into()
                ),
            ]
        );
    }

    #[test]
    fn filters_narrow_by_pod_and_by_container() {
        let failures = [failure("c-db", Some("db"), 30, "boom")];
        let by_pod = Filter::from_query(Some("pod=tenant%2Fdb")).unwrap();
        let report = build(vec![web_record()], &failures, &by_pod);
        assert_eq!(report.containers.len(), 1);
        assert_eq!(report.containers[0].container_id, id("c-db"));
        let by_container = Filter::from_query(Some("container=c-web")).unwrap();
        let report = build(vec![web_record()], &failures, &by_container);
        assert_eq!(report.containers.len(), 1);
        assert_eq!(report.containers[0].container_id, id("c-web"));
        let nothing = Filter::from_query(Some("pod=other/web")).unwrap();
        assert!(
            build(vec![web_record()], &failures, &nothing)
                .containers
                .is_empty()
        );
    }

    #[test]
    fn a_filter_round_trips_through_its_query_and_bad_values_are_refused() {
        let filter = Filter {
            pod: pod("tenant/web"),
            container: Some(id("abc")),
        };
        assert_eq!(
            Filter::from_query(Some(&filter.to_query())).unwrap(),
            filter
        );
        assert_eq!(Filter::from_query(None).unwrap(), Filter::default());
        assert!(Filter::from_query(Some("pod=web")).is_err());
        assert!(Filter::from_query(Some("pod=Tenant/web")).is_err());
        assert!(Filter::from_query(Some("container=a/b")).is_err());
    }
}
