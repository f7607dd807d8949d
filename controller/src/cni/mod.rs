//! The CNI layer: spec types for every supported version, and the one place that runs plugins.

pub mod error;
pub mod exec;
pub mod gate;
pub mod lookahead;
pub mod netconf;
pub mod orphans;
pub mod result;
pub mod version;

pub use error::{CniError, code};
pub use exec::{DelegateCall, ExecError, Executor, Outcome, Pending, PluginExecutor};
pub use netconf::{NetconfError, NetworkConfig};
pub use result::CniResult;
pub use version::CniVersion;

use std::fmt;

/// `CNI_COMMAND` (CNI §2 Parameters, plus STATUS which has its own section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
