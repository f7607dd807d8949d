//! What the admission webhook and `plexusd validate` check in a NAD, a pod or a workload's pod
//! template. Both use the parsers plexusd's ADD uses, so a NAD that passes is one a node can
//! run, and a problem reads here as it would in the CNI error of a pod stuck in
//! ContainerCreating.

mod nad;
mod pod;
mod subject;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use plexus_crds::NetworkAttachmentDefinition;

use crate::names::{Namespace, ObjectName};

pub use nad::{RESOURCE_NAME_ANNOTATION, check_conf_file, check_nad, config_changed};
pub use pod::{PodRules, check_pod};
pub use subject::{NadSubject, PodSubject, Subject, SubjectError};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something is wrong: a NAD is refused, a pod's ADD would fail.
    Invalid,
    /// Nothing is wrong, but the author should know what a node will do with it.
    Advice,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Invalid => "error",
            Self::Advice => "warning",
        })
    }
}

/// A line and column (1-based) inside a field's own text, for fields that hold JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPosition {
    pub line: u64,
    pub column: u64,
}

/// One problem or remark about an object, and where in the object it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The field it is about, as map keys from the object's root (`spec`, `config`).
    pub field: Vec<&'static str>,
    /// Where inside the field's text, when the field holds JSON and the JSON is at fault.
    pub position: Option<TextPosition>,
    pub message: String,
}

impl Finding {
    fn invalid(field: Vec<&'static str>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Invalid,
            field,
            position: None,
            message: message.into(),
        }
    }

    fn advice(field: Vec<&'static str>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Advice,
            ..Self::invalid(field, message)
        }
    }

    fn at(mut self, position: Option<TextPosition>) -> Self {
        self.position = position;
        self
    }

    /// An object whose checked fields are not even of the right type.
    pub fn unreadable(error: &SubjectError) -> Self {
        Self::invalid(Vec::new(), error.to_string())
    }

    pub fn is_invalid(&self) -> bool {
        self.severity == Severity::Invalid
    }
}

/// Where a JSON text stops parsing, as serde_json reports it; `None` when it parses.
fn json_error_position(text: &str) -> Option<TextPosition> {
    let error = serde_json::from_str::<serde::de::IgnoredAny>(text).err()?;
    Some(TextPosition {
        line: error.line() as u64,
        column: error.column() as u64,
    })
}

/// What looking a NAD up found.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<NetworkAttachmentDefinition>),
    /// The API server says there is no such NAD.
    Missing,
    /// Not known: `Some(why)` when asking failed, `None` when there is nobody to ask (a
    /// manifest checked offline may name a NAD that lives only in the cluster).
    Unknown(Option<String>),
}

/// Where the pod rules look NADs up: the API server (webhook) or the files being checked.
pub trait NadLookup: Send + Sync {
    fn nad<'a>(&'a self, namespace: &'a Namespace, name: &'a ObjectName) -> BoxFuture<'a, Lookup>;
}
