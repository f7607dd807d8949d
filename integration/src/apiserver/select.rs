//! Field and label selectors, as the API server parses them from `fieldSelector` and
//! `labelSelector`.

use serde_json::Value;

use super::state::ApiError;

#[derive(Clone, Debug, Default)]
pub(crate) struct Selectors {
    fields: Vec<FieldTerm>,
    labels: Vec<LabelTerm>,
}

#[derive(Clone, Debug)]
struct FieldTerm {
    path: String,
    equal: bool,
    value: String,
}

#[derive(Clone, Debug)]
enum LabelTerm {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Selectors {
    pub fn parse(
        field_selector: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Self, ApiError> {
        let mut sel = Self::default();
        for term in split_terms(field_selector.unwrap_or_default()) {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: '{term}': no operator"
                )));
            };
            sel.fields.push(FieldTerm {
                path: path.trim().to_owned(),
                equal,
                value: value.trim().to_owned(),
            });
        }
        for term in split_terms(label_selector.unwrap_or_default()) {
            sel.labels.push(parse_label_term(&term)?);
        }
        Ok(sel)
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.fields.iter().all(|t| {
            let actual = field_value(obj, &t.path);
            (actual == t.value) == t.equal
        }) && self.labels.iter().all(|t| {
            let labels = &obj["metadata"]["labels"];
            let get = |k: &str| labels[k].as_str().map(str::to_owned);
            match t {
                LabelTerm::Equals(k, v) => get(k).as_ref() == Some(v),
                LabelTerm::NotEquals(k, v) => get(k).as_ref() != Some(v),
                LabelTerm::In(k, set) => get(k).is_some_and(|v| set.contains(&v)),
                LabelTerm::NotIn(k, set) => get(k).is_none_or(|v| !set.contains(&v)),
                LabelTerm::Exists(k) => get(k).is_some(),
                LabelTerm::NotExists(k) => get(k).is_none(),
            }
        })
    }
}

/// The value at a dotted path as a selector compares it: strings as they are, other scalars
/// in their JSON form, a missing field as "".
fn field_value(obj: &Value, path: &str) -> String {
    let mut v = obj;
    for part in path.split('.') {
        v = &v[part];
    }
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Splits on commas outside parentheses; drops empty terms.
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    terms.push(current);
    terms
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_term(term: &str) -> Result<LabelTerm, ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: '{term}'"));
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelTerm::NotExists(key.trim().to_owned()));
    }
    if term.contains('(') {
        let (key, rest) = term.split_once(char::is_whitespace).ok_or_else(bad)?;
        let rest = rest.trim();
        let (negate, set) = if let Some(set) = rest.strip_prefix("notin") {
            (true, set)
        } else if let Some(set) = rest.strip_prefix("in") {
            (false, set)
        } else {
            return Err(bad());
        };
        let set = set
            .trim()
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(bad)?;
        let values = set
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        let key = key.trim().to_owned();
        return Ok(if negate {
            LabelTerm::NotIn(key, values)
        } else {
            LabelTerm::In(key, values)
        });
    }
    let pair = |(k, v): (&str, &str)| (k.trim().to_owned(), v.trim().to_owned());
    Ok(if let Some((k, v)) = term.split_once("!=").map(pair) {
        LabelTerm::NotEquals(k, v)
    } else if let Some((k, v)) = term.split_once("==").map(pair) {
        LabelTerm::Equals(k, v)
    } else if let Some((k, v)) = term.split_once('=').map(pair) {
        LabelTerm::Equals(k, v)
    } else {
        LabelTerm::Exists(term.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn field_and_label_selectors() {
        let pod = json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "x"}},
                         "spec": {"nodeName": "n1"}});
        let m = |f: Option<&str>, l: Option<&str>| Selectors::parse(f, l).unwrap().matches(&pod);
        assert!(m(None, None));
        assert!(m(Some("spec.nodeName=n1"), None));
        assert!(m(Some("spec.nodeName==n1,metadata.name=a"), None));
        assert!(!m(Some("spec.nodeName=n2"), None));
        assert!(m(Some("spec.nodeName!=n2"), None));
        assert!(!m(Some("metadata.name!=a"), None));
        assert!(m(Some("status.phase="), None));
        assert!(m(None, Some("app=web")));
        assert!(m(None, Some("app==web,tier")));
        assert!(!m(None, Some("app!=web")));
        assert!(m(None, Some("app in (web, db),tier notin (y)")));
        assert!(!m(None, Some("app notin (web)")));
        assert!(m(None, Some("!missing")));
        assert!(!m(None, Some("!app")));
        assert!(Selectors::parse(Some("nonsense"), None).is_err());
    }
}
