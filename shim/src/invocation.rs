//! Turns the CNI environment and stdin into the JSON body of the `POST /v1/cni` request
//! (DESIGN.md, "The socket protocol").

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::cni_error::{CniError, Code};

/// Looks up one environment variable. Injected so tests need not touch the process environment.
/// The process environment: a variable's value as the runtime set it, bytes and all.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<Vec<u8>>;

/// The environment variables forwarded to plexusd, with their key in the request body.
/// CNI_COMMAND is not listed: it is read first, to answer VERSION locally.
const FORWARDED_VARS: [(&str, &str); 5] = [
    ("containerId", "CNI_CONTAINERID"),
    ("netns", "CNI_NETNS"),
    ("ifname", "CNI_IFNAME"),
    ("args", "CNI_ARGS"),
    ("path", "CNI_PATH"),
];

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Answered by the shim itself, so it works while plexusd is down.
    Version,
    /// Anything else goes to plexusd as-is, unknown commands included: the daemon owns the
    /// list of supported commands and rejects the rest with a proper error.
    Forward(String),
}

impl Command {
    pub fn from_env(env: Env) -> Result<Self, CniError> {
        let command = env_string(env, "CNI_COMMAND")?;
        match command.as_str() {
            "" => Err(CniError::new(
                Code::InvalidEnv,
                "CNI_COMMAND is not set",
                "the container runtime must set CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION)",
            )),
            "VERSION" => Ok(Self::Version),
            _ => Ok(Self::Forward(command)),
        }
    }
}

/// The request body: every CNI variable as a string (empty when unset, since which ones are
/// required depends on the command and that is the daemon's call) plus the raw config.
pub fn request_body(command: &str, env: Env, config: &str) -> Result<String, CniError> {
    let mut body = Map::new();
    body.insert("command".into(), command.into());
    for (key, var) in FORWARDED_VARS {
        body.insert(key.into(), env_string(env, var)?.into());
    }
    body.insert("config".into(), config.into());
    Ok(Value::Object(body).to_string())
}

/// One environment variable as a string; unset is empty. JSON strings cannot carry arbitrary
/// bytes, so a value that is not UTF-8 is refused here rather than altered on the way.
fn env_string(env: Env, name: &str) -> Result<String, CniError> {
    String::from_utf8(env(name).unwrap_or_default()).map_err(|err| {
        CniError::new(
            Code::InvalidEnv,
            format!("{name} is not valid UTF-8"),
            format!("{name}={}", String::from_utf8_lossy(err.as_bytes())),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<Vec<u8>> {
        let vars: HashMap<String, Vec<u8>> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn version_is_answered_locally_and_the_rest_forwarded() {
        let command = |value| Command::from_env(&env_of(&[("CNI_COMMAND", value)]));
        assert_eq!(command("VERSION"), Ok(Command::Version));
        for value in ["ADD", "DEL", "CHECK", "STATUS", "GC", "FROB", "version"] {
            assert_eq!(command(value), Ok(Command::Forward(value.into())));
        }
    }

    #[test]
    fn missing_or_empty_command_is_code_4_naming_the_variable() {
        for env in [env_of(&[]), env_of(&[("CNI_COMMAND", "")])] {
            let err = Command::from_env(&env).unwrap_err();
            assert_eq!(err.code, Code::InvalidEnv);
            assert!(err.msg.contains("CNI_COMMAND"), "{}", err.msg);
        }
    }

    #[test]
    fn body_carries_every_variable_and_the_raw_config() {
        let env = env_of(&[
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/p"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME=a;IgnoreUnknown=1"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]);
        let config = "{ \"name\": \"n\",\n \"x\": \"\\u00e9\" }";
        let body = request_body("ADD", &env, config).unwrap();
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            value,
            json!({
                "command": "ADD",
                "containerId": "c1",
                "netns": "/var/run/netns/p",
                "ifname": "eth0",
                "args": "K8S_POD_NAME=a;IgnoreUnknown=1",
                "path": "/opt/cni/bin",
                "config": config,
            })
        );
    }

    #[test]
    fn unset_variables_are_empty_strings() {
        let body = request_body("GC", &env_of(&[("CNI_PATH", "/bin")]), "").unwrap();
        let value: Value = serde_json::from_str(&body).unwrap();
        for key in ["containerId", "netns", "ifname", "args", "config"] {
            assert_eq!(value[key], "", "{key}");
        }
        assert_eq!(value["path"], "/bin");
    }

    #[test]
    fn non_utf8_variable_is_code_4_naming_it() {
        let env = |name: &str| (name == "CNI_NETNS").then(|| vec![b'/', 0xff]);
        let err = request_body("ADD", &env, "{}").unwrap_err();
        assert_eq!(err.code, Code::InvalidEnv);
        assert!(err.msg.contains("CNI_NETNS"), "{}", err.msg);
    }
}
