//! The socket protocol's request (DESIGN: the socket protocol), parsed once into typed values.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::cni::{CniError, CniVersion, Command, code};
use crate::names::{ContainerId, IfName, Namespace, ObjectName, PodKey};

/// What the shim sends: the CNI environment and the raw stdin, all as strings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WireRequest {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    pub config: String,
}

/// Plexus's own network config, as the runtime passes it on stdin.
#[derive(Debug, Clone)]
pub struct PlexusConf {
    pub cni_version: CniVersion,
    pub runtime_config: Map<String, Value>,
    pub prev_result: Option<Value>,
    /// GC's `cni.dev/valid-attachments` (or the older `cni.dev/attachments`).
    pub valid_attachments: Option<Vec<(String, String)>>,
}

/// A CNI call, checked against what its command requires (CNI §2 Parameters).
#[derive(Debug, Clone)]
pub struct CniRequest {
    pub command: Command,
    pub container_id: Option<ContainerId>,
    pub netns: String,
    pub ifname: Option<IfName>,
    pub args: CniArgs,
    pub conf: PlexusConf,
}

impl CniRequest {
    /// Parses a wire request. Errors are CNI errors already: this is the edge.
    pub fn parse(wire: &WireRequest) -> Result<Self, CniError> {
        let command = Command::parse(&wire.command).ok_or_else(|| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("invalid CNI_COMMAND {:?}", wire.command),
                "",
            )
        })?;
        let conf = parse_conf(&wire.config, command)?;
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let needs_netns = matches!(command, Command::Add | Command::Check);
        let mut missing = Vec::new();
        if needs_attachment && wire.container_id.is_empty() {
            missing.push("CNI_CONTAINERID");
        }
        if needs_attachment && wire.ifname.is_empty() {
            missing.push("CNI_IFNAME");
        }
        if needs_netns && wire.netns.is_empty() {
            missing.push("CNI_NETNS");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("required {} not set", missing.join(", ")),
                "",
            ));
        }
        let invalid_env = |var: &str, e: crate::names::NameError| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("invalid {var}"),
                e.to_string(),
            )
        };
        let container_id = (!wire.container_id.is_empty())
            .then(|| {
                ContainerId::parse(&wire.container_id)
                    .map_err(|e| invalid_env("CNI_CONTAINERID", e))
            })
            .transpose()?;
        let ifname = (!wire.ifname.is_empty())
            .then(|| IfName::parse(&wire.ifname).map_err(|e| invalid_env("CNI_IFNAME", e)))
            .transpose()?;
        Ok(Self {
            command,
            container_id,
            netns: wire.netns.clone(),
            ifname,
            args: CniArgs::parse(&wire.args),
            conf,
        })
    }
}

/// The `cniVersion` of a raw config, for answering in the runtime's version even when the
/// rest of the request is broken.
pub fn requested_version(raw: &str) -> String {
    serde_json::from_str::<Value>(raw)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|v| CniVersion::parse(v).is_ok())
        .unwrap_or_else(|| CniVersion::LATEST.to_string())
}

fn parse_conf(raw: &str, command: Command) -> Result<PlexusConf, CniError> {
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            "cannot decode the network config on stdin",
            e.to_string(),
        )
    })?;
    let object = value.as_object().ok_or_else(|| {
        CniError::new(
            code::DECODING_FAILURE,
            "the network config on stdin is not a JSON object",
            "",
        )
    })?;
    let version_text = object
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let cni_version = CniVersion::parse(version_text).map_err(|e| {
        CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("unsupported cniVersion {version_text:?}"),
            e.to_string(),
        )
    })?;
    let runtime_config = object
        .get("runtimeConfig")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let prev_result = object.get("prevResult").filter(|p| !p.is_null()).cloned();
    let valid_attachments = match command {
        Command::Gc => Some(valid_attachments(object)?),
        _ => None,
    };
    Ok(PlexusConf {
        cni_version,
        runtime_config,
        prev_result,
        valid_attachments,
    })
}

fn valid_attachments(object: &Map<String, Value>) -> Result<Vec<(String, String)>, CniError> {
    #[derive(Deserialize)]
    struct Pair {
        #[serde(rename = "containerID")]
        container_id: String,
        ifname: String,
    }
    let list = object
        .get("cni.dev/valid-attachments")
        .or_else(|| object.get("cni.dev/attachments"))
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let pairs: Vec<Pair> = serde_json::from_value(list).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            "cannot decode cni.dev/valid-attachments",
            e.to_string(),
        )
    })?;
    Ok(pairs
        .into_iter()
        .map(|p| (p.container_id, p.ifname))
        .collect())
}

/// `CNI_ARGS`: `K=V` pairs joined by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub raw: String,
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Keeps every well-formed pair; what is not a pair is ignored here, as delegates get the
    /// raw string and judge it themselves.
    pub fn parse(raw: &str) -> Self {
        let pairs = raw
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Self {
            raw: raw.to_owned(),
            pairs,
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The pod the runtime says this is (K8S_POD_NAMESPACE, K8S_POD_NAME), when it says so.
    pub fn pod(&self) -> Result<Option<PodKey>, CniError> {
        let (Some(namespace), Some(name)) =
            (self.get("K8S_POD_NAMESPACE"), self.get("K8S_POD_NAME"))
        else {
            return Ok(None);
        };
        let bad = |e: crate::names::NameError| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                "invalid pod in CNI_ARGS",
                e.to_string(),
            )
        };
        Ok(Some(PodKey {
            namespace: Namespace::parse(namespace).map_err(bad)?,
            name: ObjectName::parse(name).map_err(bad)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(command: &str, config: &str) -> WireRequest {
        WireRequest {
            command: command.into(),
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web".into(),
            path: "/opt/cni/bin".into(),
            config: config.into(),
        }
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"plexus","type":"plexus","runtimeConfig":{"portMappings":[]}}"#;

    #[test]
    fn an_add_is_parsed_into_typed_values() {
        let request = CniRequest::parse(&wire("ADD", CONF)).unwrap();
        assert_eq!(request.command, Command::Add);
        assert_eq!(request.conf.cni_version, CniVersion::V1_0_0);
        assert_eq!(request.args.pod().unwrap().unwrap().to_string(), "ns/web");
        assert!(request.conf.runtime_config.contains_key("portMappings"));
    }

    #[test]
    fn missing_variables_are_named_with_code_4() {
        let mut w = wire("ADD", CONF);
        w.ifname.clear();
        w.netns.clear();
        let err = CniRequest::parse(&w).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(
            err.msg.contains("CNI_IFNAME") && err.msg.contains("CNI_NETNS"),
            "{}",
            err.msg
        );
        // DEL may come without a netns (CNI §2 DEL).
        let mut del = wire("DEL", CONF);
        del.netns.clear();
        assert!(CniRequest::parse(&del).is_ok());
    }

    #[test]
    fn bad_stdin_is_a_decoding_error_and_a_bad_version_is_code_1() {
        assert_eq!(
            CniRequest::parse(&wire("ADD", "{nope")).unwrap_err().code,
            6
        );
        assert_eq!(
            CniRequest::parse(&wire("ADD", r#"{"cniVersion":"9.9.9"}"#))
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(CniRequest::parse(&wire("FROB", CONF)).unwrap_err().code, 4);
        assert_eq!(requested_version("{nope"), "1.1.0");
        assert_eq!(requested_version(CONF), "1.0.0");
    }

    #[test]
    fn gc_accepts_both_spellings_of_the_valid_list() {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let conf = format!(
                r#"{{"cniVersion":"1.1.0","name":"p","{key}":[{{"containerID":"a","ifname":"eth0"}}]}}"#
            );
            let request = CniRequest::parse(&wire("GC", &conf)).unwrap();
            assert_eq!(
                request.conf.valid_attachments.unwrap(),
                vec![("a".to_owned(), "eth0".to_owned())]
            );
        }
    }
}
