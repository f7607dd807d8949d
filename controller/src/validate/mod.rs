//! `plexusd validate FILE...`: the admission webhook's checks, offline, on the manifests a user
//! is about to apply or commit (YAML or JSON, several documents per file, `List` objects,
//! directories, `-` for stdin), reported as `file:line: error: ...` with a non-zero exit status
//! when anything is invalid. Plain CNI conf files (`.conf`, `.conflist`) get the NAD config
//! rules.

mod located;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use serde_json::Value;

use crate::checks::{
    self, Finding, Lookup, NadLookup, NadSubject, PodRules, Severity, Subject, check_nad, check_pod,
};
use crate::names::{Namespace, ObjectName};
use located::Located;

/// The namespace of a manifest that names none, as for `kubectl apply`.
const DEFAULT_NAMESPACE: &str = "default";

/// `plexusd validate`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    /// Manifests (YAML or JSON; several documents per file), CNI conf files, directories
    /// (their *.yaml, *.yml, *.json, *.conf and *.conflist files), or `-` for stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
}

/// What a run found: the lines to print, and the counts for the summary and the exit status.
#[derive(Debug, Default)]
pub struct Report {
    /// `file:line: error: message`, in file order.
    pub lines: Vec<String>,
    pub files: usize,
    pub objects: usize,
    pub errors: usize,
    pub warnings: usize,
    strict: bool,
}

impl Report {
    /// Whether the check failed: an error, or with `--strict` a warning.
    pub fn failed(&self) -> bool {
        self.errors > 0 || (self.strict && self.warnings > 0)
    }

    /// One line for stderr.
    pub fn summary(&self) -> String {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        format!(
            "{} checked in {}: {}, {}",
            plural(self.objects, "object"),
            plural(self.files, "file"),
            plural(self.errors, "error"),
            plural(self.warnings, "warning"),
        )
    }

    fn add(&mut self, file: &str, line: Option<u64>, severity: Severity, message: &str) {
        match severity {
            Severity::Invalid => self.errors += 1,
            Severity::Advice => self.warnings += 1,
        }
        let mut text = file.to_owned();
        if let Some(line) = line {
            let _ = write!(text, ":{line}");
        }
        let _ = write!(text, ": {severity}: {message}");
        self.lines.push(text);
    }
}

/// One input: its name in messages and its text.
struct Input {
    name: String,
    text: String,
}

/// One object of an input, with the node it was read from.
struct Object<'a> {
    input: &'a Input,
    node: &'a Located,
    value: Value,
}

/// Checks every input. `stdin` is read for `-`; `config` is plexusd's (namespace isolation and
/// the rest apply as on the nodes).
pub async fn validate(args: &ValidateArgs, rules: &PodRules, stdin: impl Read) -> Report {
    let mut report = Report {
        strict: args.strict,
        ..Report::default()
    };
    let inputs = read_inputs(&args.files, stdin, &mut report);
    report.files = inputs.len();
    let mut documents = Vec::new();
    for input in &inputs {
        match Located::documents(&input.text) {
            Ok(docs) => documents.push((input, docs)),
            Err(error) => {
                let line = error.location().map(|l| l.line());
                let message = format!("not valid YAML: {}", error.without_snippet());
                report.add(&input.name, line, Severity::Invalid, &message);
            }
        }
    }
    let objects: Vec<Object<'_>> = documents
        .iter()
        .flat_map(|(input, docs)| docs.iter().flat_map(|doc| objects_of(input, doc)))
        .collect();
    let mut subjects = Vec::new();
    for object in &objects {
        match Subject::from_object(&object.value, DEFAULT_NAMESPACE) {
            Ok(Some(subject)) => subjects.push((object, subject)),
            Ok(None) if is_network_config(&object.value) => {
                report.objects += 1;
                let label = object.input.name.clone();
                let findings = checks::check_conf_file(&label, &object.value.to_string());
                // The findings' positions are in the re-serialized text; the file's own lines
                // are what the user needs, and a conf file has one object: point at it.
                for finding in findings {
                    report.add(
                        &object.input.name,
                        Some(object.node.line),
                        finding.severity,
                        &finding.message,
                    );
                }
            }
            Ok(None) => {}
            Err(error) => {
                report.objects += 1;
                let path: Vec<&str> = error.path.iter().map(String::as_str).collect();
                let line = object.node.deepest(&path).line;
                report.add(
                    &object.input.name,
                    Some(line),
                    Severity::Invalid,
                    &error.to_string(),
                );
            }
        }
    }
    let lookup = FilesLookup::new(subjects.iter().map(|(_, s)| s));
    for (object, subject) in &subjects {
        report.objects += 1;
        let findings = match subject {
            Subject::Nad(nad) => check_nad(nad),
            Subject::Pod(pod) => check_pod(pod, rules, &lookup).await,
        };
        for finding in findings {
            let line = line_of(object, &finding);
            report.add(
                &object.input.name,
                Some(line),
                finding.severity,
                &finding.message,
            );
        }
    }
    report
}

/// The file line a finding points at: inside a JSON field where the field's YAML allows it.
fn line_of(object: &Object<'_>, finding: &Finding) -> u64 {
    let node = object.node.deepest(&finding.field);
    match finding.position {
        Some(position) => node.line_within(&object.input.text, position.line),
        None => node.line,
    }
}

/// A document's objects: itself, or the items of a `List` (`kubectl get -o yaml`).
fn objects_of<'a>(input: &'a Input, doc: &'a Located) -> Vec<Object<'a>> {
    let value = doc.to_value();
    let is_list =
        value["kind"].as_str().is_some_and(|k| k.ends_with("List")) && value["items"].is_array();
    if is_list {
        doc.deepest(&["items"])
            .items()
            .iter()
            .map(|item| Object {
                input,
                node: item,
                value: item.to_value(),
            })
            .collect()
    } else {
        vec![Object {
            input,
            node: doc,
            value,
        }]
    }
}

/// A CNI conf file rather than a manifest: no kind, and what a network config has.
fn is_network_config(value: &Value) -> bool {
    value.get("kind").is_none()
        && value.get("apiVersion").is_none()
        && (value.get("plugins").is_some() || value.get("type").is_some())
}

fn read_inputs(paths: &[PathBuf], mut stdin: impl Read, report: &mut Report) -> Vec<Input> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match stdin.read_to_string(&mut text) {
                Ok(_) => inputs.push(Input {
                    name: "<stdin>".into(),
                    text,
                }),
                Err(e) => report.add(
                    "<stdin>",
                    None,
                    Severity::Invalid,
                    &format!("cannot read: {e}"),
                ),
            }
            continue;
        }
        let files = if path.is_dir() {
            manifests_in(path).unwrap_or_else(|e| {
                report.add(
                    &path.display().to_string(),
                    None,
                    Severity::Invalid,
                    &format!("cannot read: {e}"),
                );
                Vec::new()
            })
        } else {
            vec![path.clone()]
        };
        for file in files {
            let name = file.display().to_string();
            match std::fs::read_to_string(&file) {
                Ok(text) => inputs.push(Input { name, text }),
                Err(e) => report.add(&name, None, Severity::Invalid, &format!("cannot read: {e}")),
            }
        }
    }
    inputs
}

/// A directory's manifests and CNI conf files, by name; as `kubectl apply -f DIR`, not
/// recursive.
fn manifests_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let manifest = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json" | "conf" | "conflist")
        );
        if manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The NADs of the files being checked. A NAD not among them may well exist in the cluster,
/// so it is not known rather than missing.
struct FilesLookup {
    nads: HashMap<(String, String), Arc<NetworkAttachmentDefinition>>,
}

impl FilesLookup {
    fn new<'a>(subjects: impl Iterator<Item = &'a Subject>) -> Self {
        let nads = subjects
            .filter_map(|subject| match subject {
                Subject::Nad(nad) => Some(nad),
                Subject::Pod(_) => None,
            })
            .map(|nad: &NadSubject| {
                let mut object = NetworkAttachmentDefinition::new(
                    &nad.name,
                    NetworkAttachmentDefinitionSpec {
                        config: nad.config.clone(),
                    },
                );
                object.metadata.namespace = Some(nad.namespace.clone());
                ((nad.namespace.clone(), nad.name.clone()), Arc::new(object))
            })
            .collect();
        Self { nads }
    }
}

impl NadLookup for FilesLookup {
    fn nad<'a>(&'a self, namespace: &'a Namespace, name: &'a ObjectName) -> BoxFuture<'a, Lookup> {
        let key = (namespace.to_string(), name.to_string());
        let found = self.nads.get(&key).cloned();
        Box::pin(async move { found.map_or(Lookup::Unknown(None), Lookup::Found) })
    }
}

#[cfg(test)]
mod tests;
