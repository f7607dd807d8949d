//! The NAD rules: the config must be one plexusd's ADD accepts (the same parser, the same
//! wording), held to the letter where ADD is lenient (a version Plexus cannot speak, plugins
//! of a list that disagree with the list), and the device annotation must name a resource a
//! device plugin could register.

use serde_json::{Map, Value};

use super::{Finding, json_error_position};
use crate::cni::NetworkConfig;
use crate::cni::version::declared_version;
use crate::names::ResourceName;
use crate::resolve::Unversioned;

use super::subject::NadSubject;

/// The device plugin resource a NAD's pods get a device from (SR-IOV and the like).
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

const CONFIG: &[&str] = &["spec", "config"];

fn config_field() -> Vec<&'static str> {
    CONFIG.to_vec()
}

/// Where a config's findings go: a NAD's `spec.config`, or a conf file's whole text.
type Field = &'static [&'static str];

/// Everything wrong with, or worth knowing about, a NAD.
pub fn check_nad(nad: &NadSubject) -> Vec<Finding> {
    let label = nad.label();
    let mut findings = Vec::new();
    if let Some(resource) = nad.annotations.get(RESOURCE_NAME_ANNOTATION)
        && let Err(error) = ResourceName::parse(resource)
    {
        findings.push(Finding::invalid(
            vec!["metadata", "annotations", RESOURCE_NAME_ANNOTATION],
            format!("network {label}: {RESOURCE_NAME_ANNOTATION} annotation: {error}"),
        ));
    }
    match nad.inline_config() {
        Some(config) => findings.extend(check_config(&label, Some(&nad.name), config, CONFIG)),
        None => findings.push(Finding::advice(
            config_field(),
            format!(
                "network {label}: spec.config is empty: each node uses the conf file in its CNI conf dir whose JSON name is {:?} (a .conflist before a .conf), which cannot be checked here",
                nad.name
            ),
        )),
    }
    findings
}

/// On an update: pods keep the config they were attached with (their records hold it, and
/// DEL must undo exactly what ADD did), so a changed config only reaches new pods.
pub fn config_changed(old: &NadSubject, new: &NadSubject) -> Option<Finding> {
    (old.inline_config() != new.inline_config()).then(|| {
        Finding::advice(
            config_field(),
            format!(
                "network {}: pods attached already keep the config they were attached with; the new one applies to pods attached from now on",
                new.label()
            ),
        )
    })
}

/// A CNI conf file (`.conf`, `.conflist`), as the nodes' conf dir holds them: the NAD config
/// rules, and a name, which is how plexusd finds a conf file.
pub fn check_conf_file(label: &str, text: &str) -> Vec<Finding> {
    check_config(label, None, text, &[])
}

/// The config rules. `nad_name`: the NAD the config is in; `None` for a conf file.
fn check_config(label: &str, nad_name: Option<&str>, text: &str, field: Field) -> Vec<Finding> {
    let network = match Unversioned::parse(label, nad_name.unwrap_or_default(), text.as_bytes()) {
        Ok(network) => network,
        Err(error) => {
            return vec![
                Finding::invalid(field.to_vec(), error.to_string()).at(json_error_position(text)),
            ];
        }
    };
    // Unversioned::parse accepted the text, so it is a JSON object.
    let written: Map<String, Value> = serde_json::from_str(text).unwrap_or_default();
    let mut findings = Vec::new();
    findings.extend(version(label, &network.config, field));
    findings.extend(list_disagreements(label, &written, field));
    findings.extend(naming(label, nad_name, &written, field));
    findings
}

fn version(label: &str, config: &NetworkConfig, field: Field) -> Option<Finding> {
    match declared_version(config.cni_version.as_deref(), &config.cni_versions) {
        Ok(Some(_)) => None,
        Err(error) => Some(Finding::invalid(
            field.to_vec(),
            format!("network {label}: invalid config: {error}"),
        )),
        Ok(None) => {
            let plugin = config
                .plugins
                .first()
                .map(|p| p.plugin_type.as_str())
                .unwrap_or_default();
            Some(Finding::advice(
                field.to_vec(),
                format!(
                    "network {label}: the config has no cniVersion: each node asks plugin {plugin:?} which versions it speaks and uses the newest it shares with Plexus"
                ),
            ))
        }
    }
}

/// A list runs every plugin with the list's `cniVersion` and `name` (CNI §3 Deriving request
/// configuration), so a plugin that names others is silently overruled: a mistake the spec
/// rules out, and one the author would not see until the plugin misbehaves.
fn list_disagreements(label: &str, written: &Map<String, Value>, field: Field) -> Vec<Finding> {
    let Some(Value::Array(plugins)) = written.get("plugins") else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    for (index, plugin) in plugins.iter().enumerate() {
        for key in ["cniVersion", "name"] {
            let Some(own) = plugin.get(key).filter(|v| !v.is_null()) else {
                continue;
            };
            let list = written.get(key).filter(|v| !v.is_null());
            if list == Some(own) {
                continue;
            }
            let list = list.map_or_else(|| "names none".to_owned(), |l| format!("says {l}"));
            findings.push(Finding::invalid(
                field.to_vec(),
                format!(
                    "network {label}: invalid config: plugins[{index}] says {key} {own} but the list {list}; every plugin of a list runs with the list's {key} (CNI §3)"
                ),
            ));
        }
    }
    if let Some(plugin_type) = written.get("type") {
        findings.push(Finding::advice(
            field.to_vec(),
            format!(
                "network {label}: the top-level type {plugin_type} is ignored: a config with a plugins list is a conflist"
            ),
        ));
    }
    findings
}

/// NPWG §3.4.2 and §3.4.3: a NAD config without `name` takes the NAD's, and the two should
/// match. A conf file is found by its name, so it must have one.
fn naming(
    label: &str,
    nad_name: Option<&str>,
    written: &Map<String, Value>,
    field: Field,
) -> Option<Finding> {
    let name = written
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let message = match (name, nad_name) {
        (None, None) => {
            return Some(Finding::invalid(
                field.to_vec(),
                format!(
                    "network {label}: invalid config: a conf file must have a name: it is how plexusd and the runtime find it"
                ),
            ));
        }
        (None, Some(nad_name)) => {
            format!(
                "network {label}: the config has no name: nodes use the NAD's name {nad_name:?}"
            )
        }
        (Some(name), Some(nad_name)) if name != nad_name => format!(
            "network {label}: the config's name {name:?} is not the NAD's name {nad_name:?}; the multi-net spec recommends they match (IPAM state and GC go by the config's name)"
        ),
        (Some(_), _) => return None,
    };
    Some(Finding::advice(field.to_vec(), message))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::checks::{Severity, TextPosition};

    fn nad(config: Option<&str>) -> NadSubject {
        NadSubject {
            namespace: "tenant".into(),
            name: "east".into(),
            annotations: BTreeMap::new(),
            config: config.map(str::to_owned),
        }
    }

    fn findings(config: &Value) -> Vec<Finding> {
        check_nad(&nad(Some(&config.to_string())))
    }

    fn only(findings: &[Finding]) -> &Finding {
        assert_eq!(findings.len(), 1, "{findings:#?}");
        &findings[0]
    }

    #[test]
    fn a_complete_config_has_nothing_to_say() {
        for config in [
            json!({"cniVersion": "1.0.0", "name": "east", "type": "macvlan", "master": "eth1"}),
            json!({"cniVersion": "0.4.0", "cniVersions": ["1.1.0"], "name": "east", "plugins": [
                {"type": "bridge", "ipam": {"type": "host-local"}},
                {"type": "tuning", "cniVersion": "0.4.0", "name": "east"},
            ]}),
        ] {
            assert_eq!(findings(&config), [], "{config}");
        }
    }

    #[test]
    fn every_invalid_config_is_refused_with_the_wording_of_add() {
        let cases: &[(&str, &str)] = &[
            ("{\"name\": \"east\", \"type\": ", "could not be decoded"),
            ("[1, 2]", "not a JSON object"),
            (
                r#"{"cniVersion": "1.0.0", "name": "east"}"#,
                "neither a plugins list nor a type",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "east", "plugins": [{"master": "eth1"}]}"#,
                "plugins[0] has no type",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "east", "type": "/opt/cni/bin/macvlan"}"#,
                "contains a path separator",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "east", "type": "macvlan", "ipam": {"type": "../x"}}"#,
                "ipam.type",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "east west", "type": "macvlan"}"#,
                "network name \"east west\"",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "east", "plugins": []}"#,
                "plugins is empty",
            ),
            (
                r#"{"cniVersion": "0.2.0", "name": "east", "type": "macvlan"}"#,
                "incompatible CNI version \"0.2.0\"",
            ),
            (
                r#"{"cniVersion": "1.0", "name": "east", "type": "macvlan"}"#,
                "\"1.0\" is not a CNI version",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "east", "plugins": [{"type": "bridge"}, {"type": "tuning", "cniVersion": "0.3.1"}]}"#,
                "plugins[1] says cniVersion \"0.3.1\" but the list says \"1.0.0\"",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "east", "plugins": [{"type": "bridge", "name": "other"}]}"#,
                "plugins[0] says name \"other\"",
            ),
        ];
        for (config, wanted) in cases {
            let findings = check_nad(&nad(Some(config)));
            let finding = findings
                .iter()
                .find(|f| f.is_invalid())
                .unwrap_or_else(|| panic!("{config}: accepted: {findings:?}"));
            assert!(
                finding
                    .message
                    .starts_with("network tenant/east: invalid config: "),
                "{}",
                finding.message
            );
            assert!(
                finding.message.contains(wanted),
                "{config}: {}",
                finding.message
            );
            assert_eq!(finding.field, ["spec", "config"]);
        }
    }

    #[test]
    fn a_json_error_says_where_in_the_config_it_is() {
        let finding = check_nad(&nad(Some(
            "{\n  \"name\": \"east\",\n  \"type\" \"macvlan\"\n}",
        )))
        .remove(0);
        assert_eq!(
            finding.position,
            Some(TextPosition {
                line: 3,
                column: 10
            })
        );
        assert!(finding.message.contains("line 3"), "{}", finding.message);
    }

    #[test]
    fn an_empty_config_is_allowed_with_a_note_on_the_conf_file() {
        for config in [None, Some(""), Some("  \n")] {
            let finding = only(&check_nad(&nad(config))).clone();
            assert_eq!(finding.severity, Severity::Advice);
            assert!(finding.message.contains("conf file"), "{}", finding.message);
        }
    }

    #[test]
    fn what_a_node_fills_in_is_said_but_allowed() {
        let cases = [
            (json!({"name": "east", "type": "macvlan"}), "no cniVersion"),
            (json!({"cniVersion": "1.0.0", "type": "macvlan"}), "no name"),
            (
                json!({"cniVersion": "1.0.0", "name": "west", "type": "macvlan"}),
                "is not the NAD's name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "east", "type": "bridge", "plugins": [{"type": "macvlan"}]}),
                "top-level type \"bridge\" is ignored",
            ),
        ];
        for (config, wanted) in cases {
            let found = findings(&config);
            let finding = only(&found);
            assert_eq!(finding.severity, Severity::Advice, "{config}");
            assert!(finding.message.contains(wanted), "{}", finding.message);
        }
    }

    #[test]
    fn the_resource_name_annotation_must_be_an_extended_resource() {
        let config = json!({"cniVersion": "1.0.0", "name": "east", "type": "sriov"}).to_string();
        let mut subject = nad(Some(&config));
        subject
            .annotations
            .insert(RESOURCE_NAME_ANNOTATION.into(), "intel.com/sriov_vf".into());
        assert_eq!(check_nad(&subject), []);
        subject
            .annotations
            .insert(RESOURCE_NAME_ANNOTATION.into(), "sriov vf".into());
        let finding = only(&check_nad(&subject)).clone();
        assert!(finding.is_invalid());
        assert_eq!(
            finding.field,
            ["metadata", "annotations", RESOURCE_NAME_ANNOTATION]
        );
        assert!(
            finding
                .message
                .contains("invalid resource name \"sriov vf\""),
            "{}",
            finding.message
        );
    }

    #[test]
    fn a_conf_file_gets_the_config_rules_and_must_be_named() {
        let good = json!({"cniVersion": "1.0.0", "name": "cbr0", "plugins": [{"type": "bridge"}]});
        assert_eq!(check_conf_file("10-cbr0.conflist", &good.to_string()), []);
        let nameless = check_conf_file("10-x.conf", r#"{"cniVersion": "1.0.0", "type": "bridge"}"#);
        assert!(
            nameless[0].is_invalid() && nameless[0].message.contains("must have a name"),
            "{nameless:?}"
        );
        assert_eq!(nameless[0].field, Vec::<&str>::new());
        let pathy = check_conf_file(
            "10-x.conf",
            r#"{"cniVersion": "1.0.0", "name": "x", "type": "./bridge"}"#,
        );
        assert!(
            pathy[0]
                .message
                .starts_with("network 10-x.conf: invalid config"),
            "{pathy:?}"
        );
    }

    #[test]
    fn a_changed_config_reminds_that_attached_pods_keep_theirs() {
        let old = nad(Some(r#"{"type": "a"}"#));
        assert_eq!(config_changed(&old, &old.clone()), None);
        let new = nad(Some(r#"{"type": "b"}"#));
        let finding = config_changed(&old, &new).unwrap();
        assert!(
            finding.message.contains("keep the config"),
            "{}",
            finding.message
        );
    }
}
