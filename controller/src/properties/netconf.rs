//! NAD configs (a single plugin or a conflist): any input parses or fails with an error, and
//! a valid config keeps its name, version, flags and plugins in order; one without a name
//! takes the NAD's.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::any_json;
use crate::cni::NetworkConfig;
use crate::resolve::Unversioned;

fn plugin_type() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,12}"
}

fn capabilities() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["portMappings", "mac", "ips", "bandwidth", "deviceID"]),
        any::<bool>(),
        0..3,
    )
    .prop_map(|caps| {
        caps.into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect()
    })
}

/// A plugin object: a type, maybe an IPAM, capabilities, and keys Plexus knows nothing of.
fn plugin() -> impl Strategy<Value = Map<String, Value>> {
    (
        plugin_type(),
        prop::option::of(plugin_type()),
        capabilities(),
        prop::collection::btree_map("x-[a-z]{1,6}", any_json(), 0..3),
    )
        .prop_map(|(plugin_type, ipam, capabilities, extra)| {
            let mut plugin: Map<String, Value> = extra.into_iter().collect();
            plugin.insert("type".into(), plugin_type.into());
            if let Some(ipam) = ipam {
                plugin.insert("ipam".into(), json!({"type": ipam}));
            }
            if !capabilities.is_empty() {
                plugin.insert("capabilities".into(), Value::Object(capabilities));
            }
            plugin
        })
}

#[derive(Debug, Clone)]
struct Generated {
    name: Option<String>,
    version: Option<&'static str>,
    disable_check: bool,
    plugins: Vec<Map<String, Value>>,
    /// Written as a conflist; else (one plugin only) as a single-plugin config.
    conflist: bool,
}

impl Generated {
    fn to_json(&self) -> Value {
        let mut top = if self.conflist {
            let plugins = self.plugins.iter().cloned().map(Value::Object).collect();
            let mut top = Map::new();
            top.insert("plugins".into(), Value::Array(plugins));
            top
        } else {
            self.plugins[0].clone()
        };
        if let Some(name) = &self.name {
            top.insert("name".into(), name.clone().into());
        }
        if let Some(version) = self.version {
            top.insert("cniVersion".into(), version.into());
        }
        if self.disable_check {
            top.insert("disableCheck".into(), true.into());
        }
        Value::Object(top)
    }
}

fn config() -> impl Strategy<Value = Generated> {
    (
        prop::option::of("[a-z0-9][a-z0-9_.-]{0,15}"),
        prop::option::of(prop::sample::select(vec![
            "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "9.9.9",
        ])),
        any::<bool>(),
        prop::collection::vec(plugin(), 1..4),
        any::<bool>(),
    )
        .prop_map(
            |(name, version, disable_check, plugins, conflist)| Generated {
                name,
                version,
                disable_check,
                conflist: conflist || plugins.len() > 1,
                plugins,
            },
        )
}

proptest! {
    #![proptest_config(super::cases(512))]

    #[test]
    fn any_bytes_parse_as_a_config_or_fail_without_panicking(
        bytes in prop::collection::vec(any::<u8>(), 0..96),
    ) {
        let _ = NetworkConfig::parse(&bytes);
        let _ = Unversioned::parse("ns/nad", "nad", &bytes);
    }

    #[test]
    fn any_json_parses_as_a_config_or_fails_without_panicking(value in any_json()) {
        let bytes = value.to_string().into_bytes();
        let _ = NetworkConfig::parse(&bytes);
        let _ = Unversioned::parse("ns/nad", "nad", &bytes);
    }

    #[test]
    fn any_plugins_list_parses_or_fails_without_panicking(
        plugins in prop::collection::vec(any_json(), 0..4),
        name in any_json(),
    ) {
        let config = json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        let _ = Unversioned::parse("ns/nad", "nad", config.to_string().as_bytes());
    }
}

proptest! {
    #![proptest_config(super::cases(256))]

    #[test]
    fn a_valid_config_keeps_its_name_version_flags_and_plugins(generated in config()) {
        let text = generated.to_json().to_string();
        let parsed = NetworkConfig::parse(text.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed.name.as_deref(), generated.name.as_deref());
        prop_assert_eq!(parsed.cni_version.as_deref(), generated.version);
        prop_assert_eq!(parsed.disable_check, generated.disable_check);
        let types: Vec<&str> = parsed.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
        let expected: Vec<&str> = generated
            .plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap_or_default())
            .collect();
        prop_assert_eq!(types, expected);
        for (plugin, raw) in parsed.plugins.iter().zip(&generated.plugins) {
            for (capability, on) in raw.get("capabilities").and_then(Value::as_object).into_iter().flatten() {
                prop_assert_eq!(plugin.declares(capability), on.as_bool() == Some(true));
            }
            if generated.conflist {
                // Unknown keys reach the plugin unchanged.
                prop_assert_eq!(&plugin.raw, raw);
            }
        }
    }

    #[test]
    fn a_nad_config_without_a_name_takes_the_nads(mut generated in config()) {
        generated.name = None;
        let text = generated.to_json().to_string();
        let nad = Unversioned::parse("ns/storage", "storage", text.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(nad.config.name.as_deref(), Some("storage"));
        prop_assert_eq!(nad.raw["name"].as_str(), Some("storage"));
        let known = matches!(generated.version, Some(v) if v != "9.9.9");
        prop_assert_eq!(nad.version.is_some(), known);
    }
}
