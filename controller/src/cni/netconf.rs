//! A CNI network configuration, as found in a NAD's `spec.config` or a conf file (SPECS §1),
//! and the per-plugin request body built from it (SPECS §10).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::version::CniVersion;

/// Why a network configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetconfError {
    /// Not JSON, or not a JSON object (CNI code 6).
    #[error("network configuration could not be decoded: {0}")]
    Decode(String),
    /// JSON, but not a valid network configuration (CNI code 7).
    #[error("invalid network configuration: {0}")]
    Invalid(String),
}

impl NetconfError {
    /// The CNI error code: 6 (decoding failure) or 7 (invalid network config).
    pub fn cni_code(&self) -> u32 {
        match self {
            Self::Decode(_) => 6,
            Self::Invalid(_) => 7,
        }
    }
}

fn invalid(msg: impl Into<String>) -> NetconfError {
    NetconfError::Invalid(msg.into())
}

/// A network configuration: a conflist, or a single-plugin config run as a one-element list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkConfig {
    /// May be missing in a NAD's `spec.config` (the caller inserts the NAD's name); an empty
    /// string counts as missing, as in Multus.
    pub name: Option<String>,
    /// As written; [`super::version::pick_config_version`] chooses from these.
    pub cni_version: Option<String>,
    pub cni_versions: Vec<String>,
    pub disable_check: bool,
    pub disable_gc: bool,
    /// Parsed and checked (true needs `plugins`); Plexus never loads plugins from a directory.
    pub load_only_inlined_plugins: bool,
    pub plugins: Vec<PluginConfig>,
}

/// One plugin object of the chain.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PluginConfig {
    /// The `type`: a plain file name (non-empty, no `/` or `\`, not `.` or `..`).
    pub plugin_type: String,
    pub capabilities: BTreeMap<String, bool>,
    /// The whole plugin object, unknown keys included, unchanged.
    pub raw: Map<String, Value>,
}

/// CNI §1: an alphanumeric first, then alphanumerics, `_`, `.` or `-`.
fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A binary name that cannot escape CNI_PATH.
fn check_binary_name(what: &str, name: &str) -> Result<(), NetconfError> {
    if name.contains(['/', '\\']) {
        return Err(invalid(format!(
            "{what} {name:?} contains a path separator; it must be a plain file name"
        )));
    }
    if name == "." || name == ".." || name.contains('\0') {
        return Err(invalid(format!("{what} {name:?} is not a valid file name")));
    }
    Ok(())
}

/// `disableCheck`/`disableGC`: a bool, or "true"/"false" in any case (libcni); null is false.
fn flag(obj: &Map<String, Value>, key: &str) -> Result<bool, NetconfError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(Value::String(s)) => Err(invalid(format!("{key} is {s:?}; expected true or false"))),
        Some(other) => Err(invalid(format!("{key} is {other}; expected true or false"))),
    }
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, NetconfError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("{key} is {other}; expected a string"))),
    }
}

fn string_list(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, NetconfError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(invalid(format!("{key} contains {other}; expected strings"))),
            })
            .collect(),
        Some(other) => Err(invalid(format!(
            "{key} is {other}; expected a list of strings"
        ))),
    }
}

impl PluginConfig {
    /// Validates one plugin object; `at` names it in errors.
    fn from_object(raw: Map<String, Value>, at: &str) -> Result<Self, NetconfError> {
        let plugin_type = match raw.get("type") {
            None | Some(Value::Null) => return Err(invalid(format!("{at} has no type"))),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(invalid(format!("{at} has an empty type")));
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(invalid(format!("{at} type is {other}; expected a string"))),
        };
        check_binary_name(&format!("{at} type"), &plugin_type)?;

        match raw.get("ipam") {
            None | Some(Value::Null) => {}
            Some(Value::Object(ipam)) => match ipam.get("type") {
                None | Some(Value::Null) => {}
                Some(Value::String(t)) => check_binary_name(&format!("{at} ipam.type"), t)?,
                Some(other) => {
                    return Err(invalid(format!(
                        "{at} ipam.type is {other}; expected a string"
                    )));
                }
            },
            Some(other) => {
                return Err(invalid(format!("{at} ipam is {other}; expected an object")));
            }
        }

        let capabilities = match raw.get("capabilities") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(caps)) => caps
                .iter()
                .map(|(name, value)| match value {
                    Value::Bool(b) => Ok((name.clone(), *b)),
                    other => Err(invalid(format!(
                        "{at} capability {name:?} is {other}; expected true or false"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(invalid(format!(
                    "{at} capabilities is {other}; expected an object"
                )));
            }
        };

        Ok(Self {
            plugin_type,
            capabilities,
            raw,
        })
    }

    /// Does this plugin set capability `cap` to true? (Names are case-sensitive.)
    pub fn declares(&self, cap: &str) -> bool {
        self.capabilities.get(cap).copied().unwrap_or(false)
    }

    /// The request body for this plugin; see [`NetworkConfig::plugin_request`].
    pub fn request(
        &self,
        name: &str,
        version: CniVersion,
        runtime_config: &Map<String, Value>,
        prev_result: Option<&Value>,
        args_cni: Option<&Map<String, Value>>,
    ) -> Value {
        let mut out = self.raw.clone();
        out.remove("capabilities");
        out.retain(|key, _| !key.starts_with("cni.dev/"));
        out.insert("name".to_owned(), Value::from(name));
        out.insert("cniVersion".to_owned(), Value::from(version.as_str()));

        let rc: Map<String, Value> = runtime_config
            .iter()
            .filter(|(cap, _)| self.declares(cap))
            .map(|(cap, value)| (cap.clone(), value.clone()))
            .collect();
        if !rc.is_empty() {
            out.insert("runtimeConfig".to_owned(), Value::Object(rc));
        }

        match prev_result {
            Some(prev) => out.insert("prevResult".to_owned(), prev.clone()),
            None => out.remove("prevResult"),
        };

        if let Some(extra) = args_cni.filter(|a| !a.is_empty()) {
            let args = out
                .entry("args")
                .or_insert_with(|| Value::Object(Map::new()));
            if !args.is_object() {
                *args = Value::Object(Map::new());
            }
            if let Value::Object(args) = args {
                let cni = args
                    .entry("cni")
                    .or_insert_with(|| Value::Object(Map::new()));
                if !cni.is_object() {
                    *cni = Value::Object(Map::new());
                }
                if let Value::Object(cni) = cni {
                    for (key, value) in extra {
                        cni.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        Value::Object(out)
    }
}

impl NetworkConfig {
    /// Parses a conflist (`plugins`) or a single-plugin config (top-level `type`, no `plugins`),
    /// which becomes a one-element list whose plugin object is the whole config and which keeps
    /// its own `name` and `cniVersion` (libcni `ConfListFromConf`). When both keys are present
    /// `plugins` wins, as in libcni and Multus.
    pub fn parse(bytes: &[u8]) -> Result<Self, NetconfError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| NetconfError::Decode(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(NetconfError::Decode(
                "the configuration is not a JSON object".to_owned(),
            ));
        };

        let name = optional_string(&obj, "name")?.filter(|n| !n.is_empty());
        if let Some(n) = &name
            && !valid_network_name(n)
        {
            return Err(invalid(format!(
                "network name {n:?} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
            )));
        }
        let cni_version = optional_string(&obj, "cniVersion")?;
        let cni_versions = string_list(&obj, "cniVersions")?;
        let disable_check = flag(&obj, "disableCheck")?;
        let disable_gc = flag(&obj, "disableGC")?;
        let load_only_inlined_plugins = flag(&obj, "loadOnlyInlinedPlugins")?;

        let plugins = match obj.get("plugins") {
            Some(Value::Array(list)) => {
                if list.is_empty() {
                    return Err(invalid("plugins is empty"));
                }
                list.iter()
                    .enumerate()
                    .map(|(i, plugin)| match plugin {
                        Value::Object(raw) => {
                            PluginConfig::from_object(raw.clone(), &format!("plugins[{i}]"))
                        }
                        other => Err(invalid(format!(
                            "plugins[{i}] is {other}; expected an object"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(Value::Null) | None => {
                if load_only_inlined_plugins {
                    return Err(invalid(
                        "loadOnlyInlinedPlugins is true but there is no plugins list",
                    ));
                }
                if !obj.contains_key("type") {
                    return Err(invalid(
                        "the configuration has neither a plugins list nor a type",
                    ));
                }
                vec![PluginConfig::from_object(obj, "the plugin")?]
            }
            Some(other) => return Err(invalid(format!("plugins is {other}; expected a list"))),
        };

        Ok(Self {
            name,
            cni_version,
            cni_versions,
            disable_check,
            disable_gc,
            load_only_inlined_plugins,
            plugins,
        })
    }

    /// The request body for plugin `index` (SPECS §10); `Value::Null` if there is no such
    /// plugin (use [`PluginConfig::request`] when iterating the plugins).
    /// Starts from the plugin object; removes `capabilities` and any `cni.dev/...` key; sets
    /// `name` and `cniVersion`; sets `runtimeConfig` to the entries of `runtime_config` whose
    /// capability this plugin declares true (when there are none, nothing is inserted and a
    /// `runtimeConfig` written in the config itself stays, as libcni does); sets `prevResult`
    /// when given and removes it otherwise; merges `args_cni` into `args.cni` with its values
    /// winning. Every other key is copied unchanged.
    pub fn plugin_request(
        &self,
        index: usize,
        name: &str,
        version: CniVersion,
        runtime_config: &Map<String, Value>,
        prev_result: Option<&Value>,
        args_cni: Option<&Map<String, Value>>,
    ) -> Value {
        self.plugins.get(index).map_or(Value::Null, |p| {
            p.request(name, version, runtime_config, prev_result, args_cni)
        })
    }

    /// Does any plugin declare capability `cap` true? (NPWG: an attachment fails when a
    /// requested capability is declared nowhere.)
    pub fn declares(&self, cap: &str) -> bool {
        self.plugins.iter().any(|p| p.declares(cap))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: &Value) -> Result<NetworkConfig, NetconfError> {
        NetworkConfig::parse(&serde_json::to_vec(v).unwrap())
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn request(conf: &NetworkConfig, index: usize, rc: &Value) -> Value {
        conf.plugin_request(
            index,
            "net",
            CniVersion::V1_0_0,
            &obj(rc.clone()),
            None,
            None,
        )
    }

    fn chain() -> NetworkConfig {
        parse(&json!({
            "cniVersion": "1.0.0",
            "name": "chain",
            "plugins": [
                {"type": "macvlan", "master": "eth1", "ipam": {"type": "static"}, "capabilities": {"ips": true}},
                {"type": "tuning", "capabilities": {"mac": true, "portMappings": false}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            ]
        }))
        .unwrap()
    }

    #[test]
    fn a_conflist_parses_with_its_top_level_keys() {
        let conf = parse(&json!({
            "cniVersion": "0.4.0",
            "cniVersions": ["1.0.0", "1.1.0"],
            "name": "macvlan-net.1_a",
            "disableCheck": true,
            "disableGC": false,
            "plugins": [{"type": "macvlan"}, {"type": "tuning", "capabilities": {"mac": true}}],
        }))
        .unwrap();
        assert_eq!(conf.name.as_deref(), Some("macvlan-net.1_a"));
        assert_eq!(conf.cni_version.as_deref(), Some("0.4.0"));
        assert_eq!(conf.cni_versions, ["1.0.0", "1.1.0"]);
        assert!(conf.disable_check);
        assert!(!conf.disable_gc);
        let types: Vec<&str> = conf
            .plugins
            .iter()
            .map(|p| p.plugin_type.as_str())
            .collect();
        assert_eq!(types, ["macvlan", "tuning"]);
        assert_eq!(conf.plugins[1].capabilities.get("mac"), Some(&true));
    }

    #[test]
    fn unknown_plugin_keys_reach_the_request_unchanged() {
        let conf = parse(&json!({
            "cniVersion": "1.0.0",
            "name": "br",
            "plugins": [{
                "type": "bridge", "bridge": "br0", "isGateway": true, "vendorThing": {"deep": [1, 2, {"x": null}]},
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/16"}]]},
                "args": {"other": 1},
            }]
        }))
        .unwrap();
        let req = request(&conf, 0, &json!({}));
        let mut expected = Value::Object(conf.plugins[0].raw.clone());
        expected["name"] = json!("net");
        expected["cniVersion"] = json!("1.0.0");
        assert_eq!(req, expected);
        assert_eq!(req["vendorThing"], json!({"deep": [1, 2, {"x": null}]}));
    }

    #[test]
    fn the_request_carries_the_chosen_name_and_version_over_the_configs() {
        let conf =
            parse(&json!({"cniVersion": "0.3.1", "name": "old", "type": "macvlan"})).unwrap();
        let req = conf.plugin_request(
            0,
            "ns1-macvlan",
            CniVersion::V1_1_0,
            &Map::new(),
            None,
            None,
        );
        assert_eq!(req["name"], "ns1-macvlan");
        assert_eq!(req["cniVersion"], "1.1.0");
    }

    #[test]
    fn plugin_types_and_ipam_types_must_be_plain_file_names() {
        for bad in [
            "../x",
            "/opt/cni/bin/bridge",
            "sub/dir",
            "..\\x",
            "a\\b",
            ".",
            "..",
            "nul\0byte",
        ] {
            let err = parse(&json!({"name": "n", "plugins": [{"type": bad}]})).unwrap_err();
            assert_eq!(err.cni_code(), 7, "{bad}");
            assert!(err.to_string().contains("plugins[0] type"), "{err}");
            let err =
                parse(&json!({"name": "n", "type": "macvlan", "ipam": {"type": bad}})).unwrap_err();
            assert_eq!(err.cni_code(), 7, "{bad}");
            assert!(err.to_string().contains("ipam.type"), "{err}");
        }
        for good in ["bridge", "host-local", "whereabouts", "my.plugin_v2", "..x"] {
            assert!(
                parse(&json!({"name": "n", "type": good, "ipam": {"type": good}})).is_ok(),
                "{good}"
            );
        }
        assert!(
            parse(&json!({"name": "n", "type": "macvlan", "ipam": {}})).is_ok(),
            "ipam without a type"
        );
    }

    #[test]
    fn disable_flags_accept_booleans_and_true_false_strings() {
        let cases = [
            (json!(true), Some(true)),
            (json!(false), Some(false)),
            (json!("true"), Some(true)),
            (json!("TRUE"), Some(true)),
            (json!("False"), Some(false)),
            (Value::Null, Some(false)),
            (json!("yes"), None),
            (json!(""), None),
            (json!(1), None),
            (json!(["true"]), None),
        ];
        for (value, want) in cases {
            for key in ["disableCheck", "disableGC"] {
                let mut conf = json!({"name": "n", "plugins": [{"type": "bridge"}]});
                conf[key] = value.clone();
                match (parse(&conf), want) {
                    (Ok(c), Some(w)) => {
                        let got = if key == "disableCheck" {
                            c.disable_check
                        } else {
                            c.disable_gc
                        };
                        assert_eq!(got, w, "{key}: {value}");
                    }
                    (Err(e), None) => {
                        assert_eq!(e.cni_code(), 7);
                        assert!(e.to_string().contains(key), "{e}");
                    }
                    (got, want) => panic!("{key}: {value}: got {got:?}, want {want:?}"),
                }
            }
        }
        let absent = parse(&json!({"name": "n", "plugins": [{"type": "bridge"}]})).unwrap();
        assert!(!absent.disable_check && !absent.disable_gc);
    }

    #[test]
    fn a_single_plugin_config_becomes_a_one_element_list() {
        let single = json!({
            "cniVersion": "0.3.0",
            "name": "macvlan-conf",
            "type": "macvlan",
            "master": "eth0",
            "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": "192.168.1.0/24"},
        });
        let conf = parse(&single).unwrap();
        assert_eq!(conf.name.as_deref(), Some("macvlan-conf"));
        assert_eq!(conf.cni_version.as_deref(), Some("0.3.0"));
        assert_eq!(conf.plugins.len(), 1);
        assert_eq!(conf.plugins[0].plugin_type, "macvlan");
        assert_eq!(Value::Object(conf.plugins[0].raw.clone()), single);
        let req = conf.plugin_request(
            0,
            "macvlan-conf",
            CniVersion::V0_3_0,
            &Map::new(),
            None,
            None,
        );
        assert_eq!(req, single);
        assert!(
            conf.plugin_request(1, "x", CniVersion::V0_3_0, &Map::new(), None, None)
                .is_null()
        );
    }

    #[test]
    fn plugins_win_over_a_top_level_type() {
        let conf = parse(&json!({"name": "n", "type": "ignored", "plugins": [{"type": "bridge"}]}))
            .unwrap();
        assert_eq!(conf.plugins.len(), 1);
        assert_eq!(conf.plugins[0].plugin_type, "bridge");
    }

    #[test]
    fn malformed_configs_are_rejected_with_the_right_code() {
        let decode: &[&[u8]] = &[b"", b"{", b"not json", b"[]", b"\"x\"", b"42"];
        for bytes in decode {
            let err = NetworkConfig::parse(bytes).unwrap_err();
            assert!(matches!(err, NetconfError::Decode(_)), "{bytes:?}: {err:?}");
            assert_eq!(err.cni_code(), 6);
        }
        let invalid = [
            (json!({"name": "n"}), "neither"),
            (json!({"name": "n", "plugins": null}), "neither"),
            (json!({"name": "n", "plugins": []}), "empty"),
            (
                json!({"name": "n", "plugins": {"type": "bridge"}}),
                "plugins",
            ),
            (json!({"name": "n", "plugins": ["bridge"]}), "plugins[0]"),
            (
                json!({"name": "n", "plugins": [{"type": "bridge"}, {"master": "eth0"}]}),
                "plugins[1] has no type",
            ),
            (
                json!({"name": "n", "plugins": [{"type": ""}]}),
                "empty type",
            ),
            (
                json!({"name": "n", "plugins": [{"type": 7}]}),
                "plugins[0] type",
            ),
            (
                json!({"name": "n", "type": "macvlan", "ipam": "host-local"}),
                "ipam",
            ),
            (
                json!({"name": "n", "type": "macvlan", "ipam": {"type": 1}}),
                "ipam.type",
            ),
            (
                json!({"name": "n", "type": "macvlan", "capabilities": {"mac": "yes"}}),
                "capability \"mac\"",
            ),
            (
                json!({"name": "n", "type": "macvlan", "capabilities": ["mac"]}),
                "capabilities",
            ),
            (json!({"name": 5, "type": "macvlan"}), "name"),
            (
                json!({"name": "n", "cniVersion": 1.0, "type": "macvlan"}),
                "cniVersion",
            ),
            (
                json!({"name": "n", "cniVersions": "1.0.0", "type": "macvlan"}),
                "cniVersions",
            ),
            (
                json!({"name": "n", "cniVersions": [1], "type": "macvlan"}),
                "cniVersions",
            ),
            (
                json!({"name": "n", "loadOnlyInlinedPlugins": true, "type": "macvlan"}),
                "loadOnlyInlinedPlugins",
            ),
        ];
        for (input, needle) in invalid {
            let err = parse(&input).unwrap_err();
            assert!(matches!(err, NetconfError::Invalid(_)), "{input}: {err:?}");
            assert_eq!(err.cni_code(), 7);
            assert!(err.to_string().contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn network_names_follow_the_cni_rule() {
        for good in ["a", "9", "macvlan-conf", "net_1.v2", "A-b_c.d"] {
            let conf = parse(&json!({"name": good, "type": "bridge"})).unwrap();
            assert_eq!(conf.name.as_deref(), Some(good));
        }
        for bad in [
            "-net", "_net", ".net", "net/1", "net 1", "nét", "net\\1", "a:b",
        ] {
            let err = parse(&json!({"name": bad, "type": "bridge"})).unwrap_err();
            assert_eq!(err.cni_code(), 7, "{bad}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        for missing in [
            json!({"type": "bridge"}),
            json!({"name": null, "type": "bridge"}),
            json!({"name": "", "type": "bridge"}),
        ] {
            assert_eq!(parse(&missing).unwrap().name, None, "{missing}");
        }
    }

    #[test]
    fn load_only_inlined_plugins_is_parsed() {
        let conf = parse(&json!({"name": "n", "loadOnlyInlinedPlugins": "true", "plugins": [{"type": "bridge"}]})).unwrap();
        assert!(conf.load_only_inlined_plugins);
    }

    #[test]
    fn runtime_config_goes_only_to_plugins_that_declare_the_capability() {
        let conf = chain();
        let rc = json!({
            "mac": "c2:11:22:33:44:55",
            "ips": ["10.1.0.5/16"],
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1000},
        });
        let macvlan = request(&conf, 0, &rc);
        assert_eq!(macvlan["runtimeConfig"], json!({"ips": ["10.1.0.5/16"]}));
        let tuning = request(&conf, 1, &rc);
        assert_eq!(
            tuning["runtimeConfig"],
            json!({"mac": "c2:11:22:33:44:55"}),
            "portMappings: false is not a declaration"
        );
        let portmap = request(&conf, 2, &rc);
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
        assert!(
            macvlan["runtimeConfig"].get("mac").is_none(),
            "a plugin without mac gets no runtimeConfig.mac"
        );
    }

    #[test]
    fn runtime_config_is_left_out_when_nothing_applies() {
        let conf = chain();
        let req = request(
            &conf,
            1,
            &json!({"portMappings": [], "ips": ["10.1.0.5/16"]}),
        );
        assert!(req.get("runtimeConfig").is_none(), "{req}");
        let plain = parse(&json!({"name": "n", "type": "bridge"})).unwrap();
        assert!(
            request(&plain, 0, &json!({"mac": "c2:11:22:33:44:55"}))
                .get("runtimeConfig")
                .is_none()
        );
    }

    #[test]
    fn capability_names_are_case_sensitive() {
        let conf =
            parse(&json!({"name": "n", "type": "portmap", "capabilities": {"portmappings": true}}))
                .unwrap();
        assert!(!conf.declares("portMappings"));
        let req = request(&conf, 0, &json!({"portMappings": []}));
        assert!(req.get("runtimeConfig").is_none());
    }

    #[test]
    fn a_runtime_config_written_in_the_config_stays_unless_replaced() {
        let conf = parse(&json!({"name": "n", "type": "tuning", "capabilities": {"mac": true}, "runtimeConfig": {"mac": "0a:00:00:00:00:01"}})).unwrap();
        let kept = request(&conf, 0, &json!({}));
        assert_eq!(kept["runtimeConfig"], json!({"mac": "0a:00:00:00:00:01"}));
        let replaced = request(&conf, 0, &json!({"mac": "c2:11:22:33:44:55"}));
        assert_eq!(
            replaced["runtimeConfig"],
            json!({"mac": "c2:11:22:33:44:55"})
        );
    }

    #[test]
    fn capabilities_and_cni_dev_keys_are_removed_from_the_request() {
        let conf = parse(&json!({"name": "n", "type": "tuning", "capabilities": {"mac": true}, "cni.dev/valid-attachments": [], "cni.devices": 1})).unwrap();
        let req = request(&conf, 0, &json!({"mac": "c2:11:22:33:44:55"}));
        assert!(req.get("capabilities").is_none(), "{req}");
        assert!(req.get("cni.dev/valid-attachments").is_none(), "{req}");
        assert_eq!(
            req["cni.devices"], 1,
            "only the cni.dev/ prefix is reserved"
        );
        assert!(
            conf.plugins[0].raw.contains_key("capabilities"),
            "the parsed config is untouched"
        );
    }

    #[test]
    fn a_plugins_own_numbers_reach_it_unchanged_to_the_last_digit() {
        // Found by the property tests: without serde_json's float_roundtrip, a float in a
        // plugin's config came out one unit in the last place off in the delegate's request.
        let text = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a","x-a":{"name":[-5.898438707525076e+71]},"rate":-1.7434014415216318e-214}]}"#;
        let config = NetworkConfig::parse(text.as_bytes()).unwrap();
        let request = config.plugin_request(0, "n", CniVersion::V1_0_0, &Map::new(), None, None);
        assert!(
            request.to_string().contains("-5.898438707525076e+71"),
            "{request}"
        );
        assert!(
            request.to_string().contains("-1.7434014415216318e-214"),
            "{request}"
        );
    }

    #[test]
    fn declares_looks_across_the_whole_chain() {
        let conf = chain();
        assert!(conf.declares("ips"));
        assert!(conf.declares("mac"));
        assert!(conf.declares("portMappings"));
        assert!(!conf.declares("bandwidth"));
        assert!(!conf.declares("infinibandGUID"));
        assert!(conf.plugins[2].declares("portMappings"));
        assert!(!conf.plugins[1].declares("portMappings"));
    }

    #[test]
    fn args_cni_is_merged_with_the_selection_winning() {
        let conf = parse(&json!({
            "name": "n", "type": "macvlan",
            "args": {"cni": {"labels": [{"key": "a", "value": "config"}], "keep": true}, "vendor": {"x": 1}},
        }))
        .unwrap();
        let selection =
            obj(json!({"labels": [{"key": "a", "value": "selection"}], "ips": ["10.1.0.5/16"]}));
        let req = conf.plugin_request(
            0,
            "n",
            CniVersion::V1_0_0,
            &Map::new(),
            None,
            Some(&selection),
        );
        assert_eq!(
            req["args"],
            json!({
                "cni": {"labels": [{"key": "a", "value": "selection"}], "keep": true, "ips": ["10.1.0.5/16"]},
                "vendor": {"x": 1},
            })
        );
    }

    #[test]
    fn args_cni_is_created_when_the_config_has_no_args() {
        let selection = obj(json!({"ips": ["10.1.0.5/16"]}));
        let cases = [
            json!({"name": "n", "type": "macvlan"}),
            json!({"name": "n", "type": "macvlan", "args": "junk"}),
            json!({"name": "n", "type": "macvlan", "args": {"cni": 3}}),
        ];
        for input in cases {
            let conf = parse(&input).unwrap();
            let req = conf.plugin_request(
                0,
                "n",
                CniVersion::V1_0_0,
                &Map::new(),
                None,
                Some(&selection),
            );
            assert_eq!(
                req["args"]["cni"],
                json!({"ips": ["10.1.0.5/16"]}),
                "{input}"
            );
        }
        let conf = parse(&json!({"name": "n", "type": "macvlan"})).unwrap();
        let untouched = conf.plugin_request(
            0,
            "n",
            CniVersion::V1_0_0,
            &Map::new(),
            None,
            Some(&Map::new()),
        );
        assert!(
            untouched.get("args").is_none(),
            "an empty args_cni adds nothing"
        );
    }

    #[test]
    fn prev_result_is_present_only_when_given() {
        let conf =
            parse(&json!({"name": "n", "type": "tuning", "prevResult": {"stale": true}})).unwrap();
        let first = request(&conf, 0, &json!({}));
        assert!(first.get("prevResult").is_none(), "{first}");
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/16"}]});
        let chained =
            conf.plugin_request(0, "n", CniVersion::V1_0_0, &Map::new(), Some(&prev), None);
        assert_eq!(chained["prevResult"], prev);
    }
}
