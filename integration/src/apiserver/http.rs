//! The REST surface: routing Kubernetes paths to the store.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::apply::apply_claim_status;
use super::patch::{json_patch, merge_patch};
use super::select::Selectors;
use super::state::{ApiError, ResourceInfo, status};
use super::{Shared, watch};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// `/api/v1/[namespaces/NS/]PLURAL[/NAME]` or `/apis/GROUP/VERSION/[namespaces/NS/]PLURAL[/NAME]`.
struct Target {
    group: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    /// `status` in `.../NAME/status`.
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        rest => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, subresource] => (*plural, Some(*name), Some(*subresource)),
        _ => return None,
    };
    Some(Target {
        group: group.to_owned(),
        plural: plural.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

/// `/api/v1` or `/apis/GROUP/VERSION`: (group, version) of a discovery request.
fn discovery_path(path: &str) -> Option<(&str, &str)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", version] => Some(("", version)),
        ["apis", group, version] => Some((group, version)),
        _ => None,
    }
}

/// Query parameters, percent-decoded (`+` is a space).
fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(code: u16, body: &Value) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).expect("JSON serializes"),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

fn authorized(expected: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = expected else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token)
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let query = parse_query(uri.query());
    let param = |name: &str| {
        query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let is_watch = method == Method::GET && matches!(param("watch"), Some("true" | "1"));

    let (target, info, expected_token, failing) = {
        let mut state = shared.lock();
        state.requests.push(format!("{method} {path_and_query}"));
        let target = parse_path(uri.path());
        let info = target
            .as_ref()
            .and_then(|t| state.resource(&t.group, &t.plural));
        if let Some(info) = &info {
            state.count(&info.plural, |c| match method {
                Method::GET if is_watch => c.watches += 1,
                Method::GET => c.reads += 1,
                _ => c.writes += 1,
            });
        }
        (target, info, state.token.clone(), state.failing)
    };
    if failing {
        return json_response(
            500,
            &status(
                500,
                "InternalError",
                "the test API server is failing on purpose",
                None,
            ),
        );
    }

    if !authorized(expected_token.as_deref(), req.headers()) {
        return json_response(401, &status(401, "Unauthorized", "Unauthorized", None));
    }
    if uri.path() == "/version" {
        return json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-plexus-test",
                    "platform": "linux/amd64"}),
        );
    }
    if let Some((group, version)) = discovery_path(uri.path())
        && let Some(list) = shared.lock().discovery(group, version)
    {
        return json_response(200, &list);
    }
    let (Some(target), Some(info)) = (target, info) else {
        return json_response(
            404,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            ),
        );
    };
    if target.namespace.is_some() && !info.namespaced {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }

    if target
        .subresource
        .as_deref()
        .is_some_and(|sub| sub != "status")
    {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let selectors = match Selectors::parse(param("fieldSelector"), param("labelSelector")) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let ns = target.namespace.as_deref();

    if is_watch {
        if target.name.is_some() {
            return error_response(&ApiError::bad_request(
                "watch a single object with fieldSelector=metadata.name=NAME",
            ));
        }
        let since = match param("resourceVersion").unwrap_or_default() {
            "" | "0" => None,
            rv => match rv.parse::<u64>() {
                Ok(rv) => Some(rv),
                Err(_) => {
                    return error_response(&ApiError::bad_request(format!(
                        "invalid resourceVersion {rv:?}"
                    )));
                }
            },
        };
        let spec = watch::WatchSpec {
            info,
            namespace: target.namespace.clone(),
            selectors,
            since,
            send_initial_events: param("sendInitialEvents") == Some("true"),
            bookmarks: param("allowWatchBookmarks") == Some("true"),
            timeout: param("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .map(Duration::from_secs),
        };
        let body = watch::start(shared.clone(), spec);
        return Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-cache, private")
            .body(body)
            .expect("valid response");
    }

    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("reading body: {e}"))),
    };
    let parse_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
    };

    let result = match (&method, target.name.as_deref()) {
        (&Method::GET, None) => Ok((200, shared.lock().list(&info, ns, &selectors))),
        (&Method::GET, Some(name)) => {
            let state = shared.lock();
            let key = info.key(ns.unwrap_or_default(), name);
            state
                .objects
                .get(&key)
                .cloned()
                .map(|o| (200, o))
                .ok_or_else(|| ApiError::not_found(&info, name))
        }
        (&Method::POST, None) => parse_body().and_then(|obj| {
            shared
                .mutate(|s| s.create(&info, ns, obj))
                .map(|o| (201, o))
        }),
        (&Method::PUT, Some(name)) if target.subresource.is_some() => {
            parse_body().and_then(|obj| {
                let key = info.key(ns.unwrap_or_default(), name);
                shared
                    .mutate(|s| {
                        s.patch(&info, &key, |current| {
                            current["status"] = obj["status"].clone();
                            Ok(())
                        })
                    })
                    .map(|o| (200, o))
            })
        }
        (&Method::PUT, Some(name)) => parse_body().and_then(|obj| {
            shared
                .mutate(|s| s.update(&info, ns, name, obj))
                .map(|o| (200, o))
        }),
        (&Method::PATCH, Some(name)) => {
            let how = PatchRequest {
                content_type: &content_type,
                status: target.subresource.is_some(),
                field_manager: param("fieldManager"),
                force: param("force") == Some("true"),
            };
            patch(&shared, &info, ns, name, &how, parse_body)
        }
        (&Method::DELETE, Some(name)) => {
            let key = info.key(ns.unwrap_or_default(), name);
            shared
                .mutate(|s| s.delete(&key))
                .map(|o| (200, o))
                .ok_or_else(|| ApiError::not_found(&info, name))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {}", uri.path()),
        )),
    };
    match result {
        Ok((code, obj)) => json_response(code, &obj),
        Err(e) => error_response(&e),
    }
}

/// What a PATCH asks for.
struct PatchRequest<'a> {
    content_type: &'a str,
    /// On the status subresource: only the status changes.
    status: bool,
    field_manager: Option<&'a str>,
    force: bool,
}

fn patch(
    shared: &Shared,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    how: &PatchRequest<'_>,
    parse_body: impl FnOnce() -> Result<Value, ApiError>,
) -> Result<(u16, Value), ApiError> {
    let kind = match how.content_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => "merge",
        "application/json-patch+json" => "json",
        "application/apply-patch+yaml" | "application/apply-patch+json" => "apply",
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                ),
            ));
        }
    };
    let manager = match (kind, how.field_manager) {
        ("apply", None) => {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests",
            ));
        }
        (_, manager) => manager.unwrap_or_default().to_owned(),
    };
    let patch = parse_body()?;
    let key = info.key(ns.unwrap_or_default(), name);
    let claim_status = how.status && kind == "apply" && info.plural == "resourceclaims";
    shared.mutate(|s| {
        if kind == "apply" && !how.status && !s.objects.contains_key(&key) {
            // Server-side apply creates; here it is a create from the applied object.
            let mut obj = patch.clone();
            obj["metadata"]["name"] = name.into();
            return s.create(info, ns, obj).map(|o| (201, o));
        }
        let mut owners = s.owners.get(&key).cloned().unwrap_or_default();
        let patched = s.patch(info, &key, |obj| {
            if claim_status {
                return apply_claim_status(obj, &patch, &manager, how.force, &mut owners);
            }
            let before = obj.clone();
            if kind == "json" {
                json_patch(obj, &patch).map_err(ApiError::invalid)?;
            } else {
                merge_patch(obj, &patch);
            }
            if how.status {
                // The status subresource changes the status and nothing else.
                let status = obj["status"].clone();
                *obj = before;
                obj["status"] = status;
            }
            Ok(())
        });
        if patched.is_ok() && claim_status {
            s.owners.insert(key.clone(), owners);
        }
        patched.map(|o| (200, o))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_parse() {
        let t = parse_path("/api/v1/namespaces/ns1/pods/p").unwrap();
        assert_eq!((t.group.as_str(), t.plural.as_str()), ("", "pods"));
        assert_eq!(
            (t.namespace.as_deref(), t.name.as_deref()),
            (Some("ns1"), Some("p"))
        );
        let t = parse_path("/apis/k8s.cni.cncf.io/v1/network-attachment-definitions").unwrap();
        assert_eq!(t.group, "k8s.cni.cncf.io");
        assert_eq!((t.namespace, t.name), (None, None));
        let t = parse_path("/api/v1/namespaces/ns1/pods/p/status").unwrap();
        assert_eq!(
            (t.name.as_deref(), t.subresource.as_deref()),
            (Some("p"), Some("status"))
        );
        assert!(parse_path("/api/v1/namespaces/ns1/pods/p/status/x").is_none());
        assert_eq!(
            discovery_path("/apis/resource.k8s.io/v1"),
            Some(("resource.k8s.io", "v1"))
        );
        assert_eq!(discovery_path("/api/v1"), Some(("", "v1")));
        assert_eq!(discovery_path("/api/v1/pods"), None);
        assert!(parse_path("/healthz").is_none());
        assert_eq!(
            parse_query(Some(
                "fieldSelector=spec.nodeName%3Dn1%2Cmetadata.name%21%3Dx&labelSelector=a+in+(b)&watch=true&x=%zz"
            )),
            [
                (
                    "fieldSelector".to_owned(),
                    "spec.nodeName=n1,metadata.name!=x".to_owned()
                ),
                ("labelSelector".to_owned(), "a in (b)".to_owned()),
                ("watch".to_owned(), "true".to_owned()),
                ("x".to_owned(), "%zz".to_owned()),
            ]
        );
    }
}
