//! One AdmissionReview in, one out: the object read as the rules see it, checked, and the
//! answer built as the API server expects it (the request's uid; a denial with its reasons;
//! warnings, which kubectl prints).

use std::sync::Arc;

use kube::core::DynamicObject;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use kube::core::response::StatusSummary;
use serde_json::Value;

use super::PodPolicy;
use crate::checks::{
    Finding, NadLookup, PodRules, PodSubject, Subject, SubjectError, check_nad, check_pod,
    config_changed,
};
use crate::selection::NETWORKS_ANNOTATION;
use crate::service::DEFAULT_NETWORK_ANNOTATION;

/// A body that is not a review the webhook can answer; the reply is HTTP 400 (and with
/// failurePolicy Ignore, the API server lets the request through).
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    #[error("not an AdmissionReview: {0}")]
    Decode(String),
    #[error("the review is {0}; this webhook answers admission.k8s.io/v1 AdmissionReview")]
    Version(String),
    #[error("the AdmissionReview carries no request")]
    NoRequest,
    #[error("the {0:?} request carries no object")]
    NoObject(Operation),
}

/// How a review ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// Allowed, with warnings.
    Warned,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Warned => "warned",
            Self::Denied => "denied",
        }
    }
}

/// The answer, and what it was about.
pub struct Answer {
    pub review: AdmissionReview<DynamicObject>,
    pub outcome: Outcome,
    pub kind: String,
    pub operation: &'static str,
    pub object: String,
    /// Every finding's message, denials first.
    pub messages: Vec<String>,
}

pub struct Reviewer {
    rules: PodRules,
    lookup: Arc<dyn NadLookup>,
    pod_policy: PodPolicy,
}

/// What the rules found, and whether an invalid finding refuses the object.
struct Verdict {
    findings: Vec<Finding>,
    refuses: bool,
}

impl Verdict {
    fn nothing() -> Self {
        Self {
            findings: Vec::new(),
            refuses: false,
        }
    }
}

impl Reviewer {
    pub fn new(rules: PodRules, lookup: Arc<dyn NadLookup>, pod_policy: PodPolicy) -> Self {
        Self {
            rules,
            lookup,
            pod_policy,
        }
    }

    pub async fn review(&self, body: &[u8]) -> Result<Answer, BadReview> {
        let request = parse(body)?;
        let verdict = self.verdict(&request).await?;
        Ok(answer(&request, verdict))
    }

    async fn verdict(
        &self,
        request: &AdmissionRequest<DynamicObject>,
    ) -> Result<Verdict, BadReview> {
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return Ok(Verdict::nothing());
        }
        let object = request
            .object
            .as_ref()
            .ok_or_else(|| BadReview::NoObject(request.operation.clone()))?;
        let new = match subject(request, object) {
            Ok(Some(subject)) => subject,
            Ok(None) => return Ok(Verdict::nothing()),
            // A NAD or pod the rules cannot even read: refuse it, whatever the kind.
            Err(error) => {
                return Ok(Verdict {
                    findings: vec![Finding::unreadable(&error)],
                    refuses: true,
                });
            }
        };
        let old = request
            .old_object
            .as_ref()
            .and_then(|old| subject(request, old).ok().flatten());
        Ok(match new {
            Subject::Nad(nad) => {
                let mut findings = check_nad(&nad);
                if let Some(Subject::Nad(old)) = &old {
                    findings.extend(config_changed(old, &nad));
                }
                Verdict {
                    findings,
                    refuses: true,
                }
            }
            Subject::Pod(pod) => {
                let findings = if needs_pod_check(request, &pod, old.as_ref()) {
                    check_pod(&pod, &self.rules, self.lookup.as_ref()).await
                } else {
                    Vec::new()
                };
                Verdict {
                    findings,
                    // A workload's template is only warned about: its pods are reviewed
                    // (and refused, under `deny`) when its controller creates them.
                    refuses: self.pod_policy == PodPolicy::Deny && !pod.is_template,
                }
            }
        })
    }
}

/// A pod is checked when it is created: updates come from controllers (plexusd's own
/// network-status write among them) and must never be refused for an annotation they did not
/// touch. A workload's template is checked when created, and when its network annotations
/// change.
fn needs_pod_check(
    request: &AdmissionRequest<DynamicObject>,
    pod: &PodSubject,
    old: Option<&Subject>,
) -> bool {
    match (&request.operation, old) {
        (Operation::Create, _) => true,
        (Operation::Update, Some(Subject::Pod(old))) if pod.is_template => {
            [NETWORKS_ANNOTATION, DEFAULT_NETWORK_ANNOTATION]
                .iter()
                .any(|key| old.annotations.get(*key) != pod.annotations.get(*key))
        }
        (Operation::Update, None) => pod.is_template,
        _ => false,
    }
}

fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, BadReview> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| BadReview::Decode(e.to_string()))?;
    if review.types.api_version != META_API_VERSION_V1 || review.types.kind != META_KIND {
        return Err(BadReview::Version(format!(
            "{} {}",
            review.types.api_version, review.types.kind
        )));
    }
    review.try_into().map_err(|_| BadReview::NoRequest)
}

/// The object as the rules see it, typed by the request's kind rather than by what the
/// object says about itself.
fn subject(
    request: &AdmissionRequest<DynamicObject>,
    object: &DynamicObject,
) -> Result<Option<Subject>, SubjectError> {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    let kind = &request.kind;
    let api_version = if kind.group.is_empty() {
        kind.version.clone()
    } else {
        format!("{}/{}", kind.group, kind.version)
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(api_version));
        map.insert("kind".into(), Value::String(kind.kind.clone()));
    }
    Subject::from_object(&value, request.namespace.as_deref().unwrap_or("default"))
}

fn answer(request: &AdmissionRequest<DynamicObject>, verdict: Verdict) -> Answer {
    let (refusals, notes): (Vec<Finding>, Vec<Finding>) = verdict
        .findings
        .into_iter()
        .partition(|f| verdict.refuses && f.is_invalid());
    let mut response = AdmissionResponse::from(request);
    let outcome = if !refusals.is_empty() {
        let reasons: Vec<&str> = refusals.iter().map(|f| f.message.as_str()).collect();
        response = response.deny(reasons.join("; "));
        // kubectl prints "Error from server (BadRequest): ..."; a 422 "Invalid" would make it
        // print "The request is invalid" and hide the reason.
        response.result.code = 400;
        response.result.reason = "BadRequest".into();
        response.result.status = Some(StatusSummary::Failure);
        Outcome::Denied
    } else if notes.is_empty() {
        Outcome::Allowed
    } else {
        Outcome::Warned
    };
    if !notes.is_empty() {
        response.warnings = Some(notes.iter().map(|f| f.message.clone()).collect());
    }
    let operation = match request.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    };
    Answer {
        review: response.into_review(),
        outcome,
        kind: request.kind.kind.clone(),
        operation,
        object: match &request.namespace {
            Some(namespace) => format!("{namespace}/{}", request.name),
            None => request.name.clone(),
        },
        messages: refusals
            .into_iter()
            .chain(notes)
            .map(|f| f.message)
            .collect(),
    }
}
