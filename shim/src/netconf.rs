//! The two things the shim needs from the network config on stdin. Everything else in it is
//! the daemon's business: the shim forwards the raw bytes and never validates them.

use alloc::borrow::ToOwned;
use alloc::string::String;

use serde_json::Value;

/// The version the shim speaks when stdin does not name one.
pub const DEFAULT_CNI_VERSION: &str = "1.1.0";

/// Where plexusd listens unless the config says otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/run/plexus/plexus.sock";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct NetConf {
    cni_version: Option<String>,
    socket_path: Option<String>,
}

impl NetConf {
    /// Never fails: a config that is not JSON is still forwarded (the daemon reports it as code
    /// 6), so the shim falls back to its defaults rather than answering itself.
    pub fn parse(stdin: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<Value>(stdin) else {
            return Self::default();
        };
        let non_empty_string = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Self {
            cni_version: non_empty_string("cniVersion"),
            socket_path: non_empty_string("socketPath"),
        }
    }

    /// The version to put in the shim's own replies (VERSION and error objects).
    pub fn cni_version(&self) -> &str {
        self.cni_version.as_deref().unwrap_or(DEFAULT_CNI_VERSION)
    }

    pub fn socket_path(&self) -> &str {
        self.socket_path.as_deref().unwrap_or(DEFAULT_SOCKET_PATH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_and_socket_path() {
        let conf = NetConf::parse(br#"{"cniVersion":"0.4.0","socketPath":"/tmp/p.sock"}"#);
        assert_eq!(conf.cni_version(), "0.4.0");
        assert_eq!(conf.socket_path(), "/tmp/p.sock");
    }

    #[test]
    fn defaults_when_keys_are_absent_empty_or_not_strings() {
        for stdin in [
            &br#"{"name":"n"}"#[..],
            br#"{"cniVersion":"","socketPath":""}"#,
            br#"{"cniVersion":1,"socketPath":["/x"]}"#,
        ] {
            let conf = NetConf::parse(stdin);
            assert_eq!(conf.cni_version(), DEFAULT_CNI_VERSION);
            assert_eq!(conf.socket_path(), DEFAULT_SOCKET_PATH);
        }
    }

    #[test]
    fn defaults_when_stdin_is_not_a_json_object() {
        for stdin in [&b""[..], b"not json", b"[1,2]", b"\xff\xfe"] {
            assert_eq!(NetConf::parse(stdin), NetConf::default());
        }
    }
}
