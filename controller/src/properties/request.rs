//! The socket's request decoder: any body decodes or fails with a CNI error, and a valid call
//! keeps its command, identity, CNI_ARGS and config values.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{any_json, interesting_string};
use crate::cni::{CniVersion, Command};
use crate::request::{CniArgs, CniRequest, WireRequest, requested_version};

fn wire_request() -> impl Strategy<Value = WireRequest> {
    let command = prop_oneof![
        prop::sample::select(vec!["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"])
            .prop_map(str::to_owned),
        interesting_string(),
    ];
    let config = prop_oneof![any_json().prop_map(|v| v.to_string()), any::<String>()];
    (
        command,
        interesting_string(),
        interesting_string(),
        interesting_string(),
        interesting_string(),
        config,
    )
        .prop_map(
            |(command, container_id, netns, ifname, args, config)| WireRequest {
                command,
                container_id,
                netns,
                ifname,
                args,
                path: "/opt/cni/bin".into(),
                config,
            },
        )
}

/// A call as a runtime makes it, with a valid environment and config.
#[derive(Debug, Clone)]
struct ValidCall {
    command: Command,
    container_id: String,
    ifname: String,
    args: Vec<(String, String)>,
    version: CniVersion,
    runtime_config: Map<String, Value>,
    valid: Vec<(String, String)>,
}

impl ValidCall {
    fn wire(&self) -> WireRequest {
        let mut config = json!({
            "cniVersion": self.version.as_str(),
            "name": "plexus",
            "type": "plexus",
        });
        if !self.runtime_config.is_empty() {
            config["runtimeConfig"] = Value::Object(self.runtime_config.clone());
        }
        if self.command == Command::Gc {
            config["cni.dev/valid-attachments"] = self
                .valid
                .iter()
                .map(|(c, i)| json!({"containerID": c, "ifname": i}))
                .collect();
        }
        WireRequest {
            command: self.command.as_str().into(),
            container_id: self.container_id.clone(),
            netns: "/run/netns/pod".into(),
            ifname: self.ifname.clone(),
            args: self
                .args
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";"),
            path: "/opt/cni/bin".into(),
            config: config.to_string(),
        }
    }
}

fn valid_call() -> impl Strategy<Value = ValidCall> {
    (
        prop::sample::select(vec![
            Command::Add,
            Command::Del,
            Command::Check,
            Command::Gc,
        ]),
        "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}",
        "[a-z][a-z0-9]{0,14}",
        prop::collection::btree_map("[A-Z_]{1,10}", "[a-zA-Z0-9/_.-]{1,12}", 0..5),
        prop::sample::select(CniVersion::ALL.to_vec()),
        prop::collection::btree_map("[a-zA-Z]{1,8}", any_json(), 0..3),
        prop::collection::vec(("[a-z0-9]{1,8}", "[a-z0-9]{1,8}"), 0..4),
    )
        .prop_map(
            |(command, container_id, ifname, args, version, runtime_config, valid)| ValidCall {
                command,
                container_id,
                ifname,
                args: args.into_iter().collect(),
                version,
                runtime_config: runtime_config.into_iter().collect(),
                valid,
            },
        )
}

proptest! {
    #![proptest_config(super::cases(512))]

    #[test]
    fn any_body_decodes_or_fails_without_panicking(
        bytes in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        if let Ok(wire) = serde_json::from_slice::<WireRequest>(&bytes) {
            let _ = CniRequest::parse(&wire);
        }
    }

    #[test]
    fn any_wire_request_parses_or_fails_with_a_cni_error(wire in wire_request()) {
        match CniRequest::parse(&wire) {
            Ok(request) => prop_assert_eq!(request.command.as_str(), wire.command.as_str()),
            Err(error) => prop_assert!(error.code != 0 && !error.msg.is_empty()),
        }
        // The version an error answer is written in is always one Plexus speaks.
        prop_assert!(CniVersion::parse(&requested_version(&wire.config)).is_ok());
    }

    #[test]
    fn any_cni_args_string_parses_without_panicking(raw in any::<String>()) {
        let args = CniArgs::parse(&raw);
        prop_assert_eq!(&args.raw, &raw);
        let _ = args.pod();
    }
}

proptest! {
    #![proptest_config(super::cases(256))]

    #[test]
    fn a_valid_call_keeps_its_command_identity_args_and_config(call in valid_call()) {
        let wire = call.wire();
        let request = CniRequest::parse(&wire)
            .map_err(|e| TestCaseError::fail(format!("{wire:?}: {e}")))?;
        prop_assert_eq!(request.command, call.command);
        prop_assert_eq!(
            request.container_id.as_ref().map(|c| c.as_str()),
            Some(call.container_id.as_str())
        );
        prop_assert_eq!(request.ifname.as_ref().map(|i| i.as_str()), Some(call.ifname.as_str()));
        prop_assert_eq!(request.conf.cni_version, call.version);
        prop_assert_eq!(&request.conf.runtime_config, &call.runtime_config);
        for (key, value) in &call.args {
            prop_assert_eq!(request.args.get(key), Some(value.as_str()));
        }
        let valid = request.conf.valid_attachments.clone().unwrap_or_default();
        if call.command == Command::Gc {
            prop_assert_eq!(valid, call.valid.clone());
        }
        prop_assert_eq!(requested_version(&wire.config), call.version.as_str());
    }
}
