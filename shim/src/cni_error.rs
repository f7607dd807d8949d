//! The CNI error object the shim prints when it has to answer a call itself (SPECS §13).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::json;

/// The CNI error codes the shim itself can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// A required environment variable is missing or unusable; the msg names it.
    InvalidEnv = 4,
    /// Reading stdin failed.
    Io = 5,
    /// The config on stdin cannot be decoded (here: it is not UTF-8, so it cannot be forwarded).
    Decoding = 6,
    /// plexusd is down or gave no usable reply; the runtime retries.
    TryAgainLater = 11,
    /// STATUS only: plexusd is down, so ADD cannot be served (SPECS §7).
    NotAvailable = 50,
    /// A bug in the shim (a panic); skel uses the same code for untyped errors.
    Internal = 999,
}

/// A failure the shim reports without the daemon's help.
#[derive(Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error object as printed on stdout, tagged with the protocol version in use.
    pub fn to_json(&self, cni_version: &str) -> Vec<u8> {
        json!({
            "cniVersion": cni_version,
            "code": self.code as u32,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn renders_every_field() {
        let err = CniError::new(Code::TryAgainLater, "plexusd is not reachable", "socket /x");
        let value: Value = serde_json::from_slice(&err.to_json("0.4.0")).unwrap();
        assert_eq!(
            value,
            json!({
                "cniVersion": "0.4.0",
                "code": 11,
                "msg": "plexusd is not reachable",
                "details": "socket /x",
            })
        );
    }

    #[test]
    fn codes_match_the_spec() {
        let codes = [
            Code::InvalidEnv,
            Code::Io,
            Code::Decoding,
            Code::TryAgainLater,
            Code::NotAvailable,
            Code::Internal,
        ];
        assert_eq!(codes.map(|c| c as u32), [4, 5, 6, 11, 50, 999]);
    }
}
