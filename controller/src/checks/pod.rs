//! The pod rules: the networks annotation parsed as ADD parses it, every network it names
//! looked up and checked as ADD would, and the interfaces handed out as ADD hands them out.
//! Messages carry ADD's own wording, so a warning here reads like the error the pod would
//! otherwise meet on its node.

use futures::future::join_all;

use super::subject::PodSubject;
use super::{Finding, Lookup, NadLookup, json_error_position};
use crate::config::Config;
use crate::names::{IfName, Namespace, NetworkRef, ObjectName};
use crate::resolve::{self, Interfaces, Unversioned};
use crate::selection::{NETWORKS_ANNOTATION, Selection, SelectionError, parse_networks};
use crate::service::{DEFAULT_NETWORK_ANNOTATION, Error};

/// The cluster network in messages: which conf a node uses for it is not known here.
const CLUSTER_LABEL: &str = "(cluster network)";
/// The interface kubelet asks the cluster network for.
const RUNTIME_IFNAME: &str = "eth0";

/// What the pod rules take from plexusd's config: namespace isolation, where NADs named
/// without a namespace live, and the default networks that come before a pod's own.
pub struct PodRules {
    config: Config,
    default_networks: Vec<NetworkRef>,
}

impl PodRules {
    pub fn new(config: Config) -> Result<Self, String> {
        let default_networks = config.default_network_refs()?;
        Ok(Self {
            config,
            default_networks,
        })
    }
}

/// A network the pod asks for, by its annotations.
struct Wanted<'a> {
    field: Vec<&'static str>,
    /// `None` for the default-network annotation, which replaces the cluster network.
    selection: Option<&'a Selection>,
    namespace: Namespace,
    name: ObjectName,
}

impl Wanted<'_> {
    fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything wrong with a pod's (or pod template's) network annotations.
pub async fn check_pod(pod: &PodSubject, rules: &PodRules, lookup: &dyn NadLookup) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut wanted = Vec::new();
    if let Some(text) = pod.annotations.get(DEFAULT_NETWORK_ANNOTATION) {
        let field = field(pod, DEFAULT_NETWORK_ANNOTATION);
        match NetworkRef::parse(text.trim()) {
            Ok(network) => {
                let (namespace, name) = network.in_namespace(&rules.config.system_namespace);
                wanted.push(Wanted {
                    field,
                    selection: None,
                    namespace,
                    name,
                });
            }
            Err(source) => findings.push(Finding::invalid(
                field,
                Error::DefaultNetwork {
                    pod: pod.label.clone(),
                    source,
                }
                .to_string(),
            )),
        }
    }
    let selections = match pod.annotations.get(NETWORKS_ANNOTATION) {
        None => Vec::new(),
        Some(text) => parse_networks(text).unwrap_or_else(|source| {
            let position = matches!(source, SelectionError::Json(_))
                .then(|| json_error_position(text))
                .flatten();
            let message = Error::Selection {
                pod: pod.label.clone(),
                source: Box::new(source),
            };
            findings.push(
                Finding::invalid(field(pod, NETWORKS_ANNOTATION), message.to_string()).at(position),
            );
            Vec::new()
        }),
    };
    for selection in &selections {
        let (namespace, name) = selection.network.in_namespace(&pod.namespace);
        wanted.push(Wanted {
            field: field(pod, NETWORKS_ANNOTATION),
            selection: Some(selection),
            namespace,
            name,
        });
    }
    findings.extend(isolation(pod, rules, &wanted));
    findings.extend(networks(pod, lookup, &wanted).await);
    findings.extend(interfaces(pod, rules, &selections));
    findings
}

fn field(pod: &PodSubject, annotation: &'static str) -> Vec<&'static str> {
    let mut path = pod.metadata_at.to_vec();
    path.extend(["annotations", annotation]);
    path
}

/// ADD's messages about a network name the network, not the pod; here the pod comes first.
fn about_pod(pod: &PodSubject, message: String) -> String {
    if message.starts_with("pod ") {
        message
    } else {
        format!("pod {}: {message}", pod.label)
    }
}

fn isolation(pod: &PodSubject, rules: &PodRules, wanted: &[Wanted<'_>]) -> Vec<Finding> {
    wanted
        .iter()
        .filter(|w| !rules.config.may_use(&pod.namespace, &w.namespace))
        .map(|w| {
            let error = Error::Isolated {
                pod: pod.label.clone(),
                network: w.label(),
            };
            Finding::invalid(w.field.clone(), error.to_string())
        })
        .collect()
}

/// Each network looked up; one that exists is checked as ADD would check it for this pod.
async fn networks(pod: &PodSubject, lookup: &dyn NadLookup, wanted: &[Wanted<'_>]) -> Vec<Finding> {
    let found = join_all(wanted.iter().map(|w| lookup.nad(&w.namespace, &w.name))).await;
    let mut findings = Vec::new();
    for (w, found) in wanted.iter().zip(found) {
        let label = w.label();
        let problem = match found {
            Lookup::Unknown(None) => continue,
            Lookup::Unknown(Some(why)) => {
                findings.push(Finding::advice(
                    w.field.clone(),
                    format!(
                        "pod {}: network {label} was not checked: looking it up failed: {why}",
                        pod.label
                    ),
                ));
                continue;
            }
            Lookup::Missing => Error::UnknownNetwork {
                pod: pod.label.clone(),
                network: label,
            }
            .to_string(),
            Lookup::Found(nad) => {
                let Some(config) = nad.inline_config() else {
                    continue;
                };
                let checked = Unversioned::parse(&label, w.name.as_str(), config.as_bytes())
                    .and_then(|network| match w.selection {
                        Some(selection) => {
                            resolve::requested_runtime_config(selection, &label, &network.config)
                                .map(drop)
                        }
                        None => Ok(()),
                    });
                match checked {
                    Ok(()) => continue,
                    Err(error) => error.to_string(),
                }
            }
        };
        findings.push(Finding::invalid(w.field.clone(), about_pod(pod, problem)));
    }
    findings
}

/// The interfaces ADD would hand out: plexusd's default networks first, then the
/// selections, each on its own or the next `net<N>`.
fn interfaces(pod: &PodSubject, rules: &PodRules, selections: &[Selection]) -> Vec<Finding> {
    let Ok(runtime_ifname) = IfName::parse(RUNTIME_IFNAME) else {
        return Vec::new();
    };
    let mut interfaces = Interfaces::new(CLUSTER_LABEL, &runtime_ifname);
    for network in &rules.default_networks {
        let (namespace, name) = network.in_namespace(&pod.namespace);
        // plexusd's own defaults are the operator's concern, not this pod's.
        let _ = interfaces.assign(&format!("{namespace}/{name}"), None);
    }
    selections
        .iter()
        .filter_map(|selection| {
            let (namespace, name) = selection.network.in_namespace(&pod.namespace);
            interfaces
                .assign(&format!("{namespace}/{name}"), selection.interface.as_ref())
                .err()
        })
        .map(|error| {
            Finding::invalid(
                field(pod, NETWORKS_ANNOTATION),
                about_pod(pod, error.to_string()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;

    use futures::future::BoxFuture;
    use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
    use serde_json::json;

    use super::*;
    use crate::checks::Severity;

    /// NADs by `namespace/name`; a name listed in `failing` fails to look up.
    #[derive(Default)]
    struct Nads {
        known: HashMap<String, Option<String>>,
        failing: Vec<String>,
    }

    impl Nads {
        fn with(mut self, label: &str, config: Option<serde_json::Value>) -> Self {
            self.known
                .insert(label.to_owned(), config.map(|c| c.to_string()));
            self
        }
    }

    impl NadLookup for Nads {
        fn nad<'a>(
            &'a self,
            namespace: &'a Namespace,
            name: &'a ObjectName,
        ) -> BoxFuture<'a, Lookup> {
            let label = format!("{namespace}/{name}");
            Box::pin(async move {
                if self.failing.contains(&label) {
                    return Lookup::Unknown(Some("timed out".into()));
                }
                match self.known.get(&label) {
                    None => Lookup::Missing,
                    Some(config) => Lookup::Found(Arc::new(NetworkAttachmentDefinition::new(
                        name.as_str(),
                        NetworkAttachmentDefinitionSpec {
                            config: config.clone(),
                        },
                    ))),
                }
            })
        }
    }

    fn macvlan(name: &str, capabilities: serde_json::Value) -> Option<serde_json::Value> {
        Some(
            json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "capabilities": capabilities}),
        )
    }

    fn nads() -> Nads {
        Nads::default()
            .with("tenant/east", macvlan("east", json!({})))
            .with(
                "tenant/static",
                macvlan("static", json!({"ips": true, "mac": true})),
            )
            .with("kube-system/storage", None)
            .with("other/far", macvlan("far", json!({})))
    }

    fn pod(annotations: &[(&str, &str)]) -> PodSubject {
        PodSubject {
            label: "tenant/web".into(),
            namespace: Namespace::parse("tenant").unwrap(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            metadata_at: &["metadata"],
            is_template: false,
        }
    }

    fn rules(yaml: &str) -> PodRules {
        let config: Config =
            serde_saphyr::from_str(if yaml.is_empty() { "{}" } else { yaml }).unwrap();
        PodRules::new(config).unwrap()
    }

    async fn check(networks: &str, lookup: &Nads) -> Vec<Finding> {
        check_pod(&pod(&[(NETWORKS_ANNOTATION, networks)]), &rules(""), lookup).await
    }

    #[tokio::test]
    async fn a_pod_whose_networks_exist_and_fit_has_nothing_to_say() {
        for networks in [
            "east",
            "east, tenant/static@data, kube-system/storage",
            r#"[{"name": "static", "ips": ["198.18.0.5/24"], "mac": "c2:00:00:00:00:01", "interface": "data"}]"#,
        ] {
            assert_eq!(check(networks, &nads()).await, [], "{networks}");
        }
        assert_eq!(check_pod(&pod(&[]), &rules(""), &nads()).await, []);
    }

    #[tokio::test]
    async fn every_mistake_in_the_annotation_is_found_with_the_wording_of_add() {
        let cases: &[(&str, &str)] = &[
            ("east,", "entry 2: is empty"),
            ("[{\"name\": \"east\"", "not valid JSON"),
            ("east@eth 0", "invalid interface name \"eth 0\""),
            ("east@averyveryverylongname", "longer than 15 bytes"),
            (r#"[{"name": "static", "ips": ["198.18.0.500"]}]"#, "ips"),
            (r#"[{"name": "static", "mac": "c2:00:00:00:00"}]"#, "mac"),
            (
                "east@data,static@data",
                "interface \"data\" is already requested by entry 1",
            ),
            (
                "east,static@net1",
                "interface net1 is already used by network tenant/east",
            ),
            (
                "east@eth0",
                "interface eth0 is already used by network (cluster network)",
            ),
            (
                "westt",
                "network tenant/westt not found: no NetworkAttachmentDefinition tenant/westt",
            ),
            (
                r#"[{"name": "east", "mac": "c2:00:00:00:00:01"}]"#,
                "no plugin of the network declares the \"mac\" capability",
            ),
        ];
        for (networks, wanted) in cases {
            let findings = check(networks, &nads()).await;
            assert_eq!(findings.len(), 1, "{networks}: {findings:#?}");
            let finding = &findings[0];
            assert_eq!(finding.severity, Severity::Invalid, "{networks}");
            assert!(
                finding.message.starts_with("pod tenant/web: "),
                "{}",
                finding.message
            );
            assert!(
                finding.message.contains(wanted),
                "{networks}: {}",
                finding.message
            );
            assert_eq!(
                finding.field,
                ["metadata", "annotations", NETWORKS_ANNOTATION]
            );
        }
    }

    #[tokio::test]
    async fn a_json_mistake_says_where_in_the_annotation_it_is() {
        let findings = check("[\n  {\"name\": \"east\",}\n]", &nads()).await;
        assert_eq!(findings[0].position.map(|p| p.line), Some(2));
    }

    #[tokio::test]
    async fn a_broken_nad_is_reported_for_the_pod_that_selects_it() {
        let lookup = nads().with("tenant/broken", Some(json!({"name": "broken"})));
        let findings = check("broken", &lookup).await;
        assert!(
            findings[0]
                .message
                .contains("network tenant/broken: invalid config"),
            "{findings:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_lookup_is_advice_and_an_offline_one_says_nothing() {
        let mut lookup = nads();
        lookup.failing.push("tenant/east".into());
        let findings = check("east", &lookup).await;
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Advice);
        assert!(
            findings[0].message.contains("timed out"),
            "{}",
            findings[0].message
        );

        struct Offline;
        impl NadLookup for Offline {
            fn nad<'a>(&'a self, _: &'a Namespace, _: &'a ObjectName) -> BoxFuture<'a, Lookup> {
                Box::pin(async { Lookup::Unknown(None) })
            }
        }
        assert_eq!(check("anything,else", &Nads::default()).await.len(), 2);
        let offline = check_pod(
            &pod(&[(NETWORKS_ANNOTATION, "anything")]),
            &rules(""),
            &Offline,
        )
        .await;
        assert_eq!(offline, []);
    }

    #[tokio::test]
    async fn the_default_network_annotation_is_looked_up_in_the_system_namespace() {
        let lookup = nads();
        let ok = check_pod(
            &pod(&[(DEFAULT_NETWORK_ANNOTATION, "storage")]),
            &rules(""),
            &lookup,
        )
        .await;
        assert_eq!(ok, []);
        let missing = check_pod(
            &pod(&[(DEFAULT_NETWORK_ANNOTATION, "east")]),
            &rules(""),
            &lookup,
        )
        .await;
        assert!(
            missing[0].message.contains("kube-system/east not found"),
            "{missing:?}"
        );
        assert_eq!(
            missing[0].field,
            ["metadata", "annotations", DEFAULT_NETWORK_ANNOTATION]
        );
        let bad = check_pod(
            &pod(&[(DEFAULT_NETWORK_ANNOTATION, "Bad_Name")]),
            &rules(""),
            &lookup,
        )
        .await;
        assert!(
            bad[0]
                .message
                .contains("invalid v1.multus-cni.io/default-network annotation"),
            "{bad:?}"
        );
    }

    #[tokio::test]
    async fn namespace_isolation_and_default_networks_follow_plexusds_config() {
        let isolated = rules("namespaceIsolation: true\nglobalNamespaces: [kube-system]\n");
        let findings = check_pod(
            &pod(&[(NETWORKS_ANNOTATION, "other/far,kube-system/storage")]),
            &isolated,
            &nads(),
        )
        .await;
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0]
                .message
                .contains("may not use network other/far"),
            "{}",
            findings[0].message
        );

        // A default network takes net1, so the pod's own net1 clashes with it.
        let with_default = rules("defaultNetworks: [storage]\n");
        let findings = check_pod(
            &pod(&[(NETWORKS_ANNOTATION, "east@net1")]),
            &with_default,
            &nads(),
        )
        .await;
        assert!(
            findings[0]
                .message
                .contains("already used by network kube-system/storage"),
            "{findings:?}"
        );
    }
}
