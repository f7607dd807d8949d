//! The `plexusd inspect` command: one GET of `/v1/inspect` on plexusd's socket, printed.

use std::path::PathBuf;
use std::time::Duration;

use super::render::{self, Detail};
use super::{Filter, Report};
use crate::clock::Timestamp;
use crate::probe::{self, ProbeError};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(
        "plexusd inspect needs root: plexusd's socket is root-only (mode 0600); run it with sudo, or in the plexus pod (kubectl -n kube-system exec ds/plexus -- plexusd inspect)"
    )]
    NotRoot,
    #[error(transparent)]
    Socket(#[from] ProbeError),
    #[error("plexusd's inspect report is unreadable: {0}")]
    Report(#[from] serde_json::Error),
}

/// How the report is printed: `-o json|wide`, text without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Json,
    Wide,
}

pub struct Inspect {
    pub socket: PathBuf,
    pub filter: Filter,
    pub output: Option<Output>,
}

impl Inspect {
    /// What to print, or why there is nothing.
    pub fn run(&self) -> Result<String, InspectError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(InspectError::NotRoot);
        }
        let query = self.filter.to_query();
        let path = if query.is_empty() {
            "/v1/inspect".to_owned()
        } else {
            format!("/v1/inspect?{query}")
        };
        let body = probe::probe(&self.socket, &path, Duration::from_secs(10))?;
        let report: Report = serde_json::from_str(&body)?;
        Ok(match self.output {
            Some(Output::Json) => serde_json::to_string_pretty(&report)?,
            Some(Output::Wide) => render::text(&report, Detail::Wide, Timestamp::now()),
            None => render::text(&report, Detail::Normal, Timestamp::now()),
        })
    }
}
