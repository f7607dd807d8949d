//! The fixture's object store: one global resourceVersion counter, the objects, and the change
//! history that watches replay from.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use super::Counters;
use super::select::Selectors;

/// A resource the fixture serves (one per group + plural; the version is not part of the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
}

impl ResourceInfo {
    fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            kind: kind.to_owned(),
            namespaced,
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key of object `name` in `namespace` (ignored for cluster-scoped resources).
    pub fn key(&self, namespace: &str, name: &str) -> ObjKey {
        ObjKey {
            group: self.group.clone(),
            plural: self.plural.clone(),
            namespace: if self.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjKey {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One entry of the history: `new` is the object after the change (for a deletion: the last
/// state, carrying the deletion's resourceVersion); `old` the state before a modification.
pub(crate) struct Change {
    pub rv: u64,
    pub ty: ChangeType,
    pub key: ObjKey,
    pub old: Option<Value>,
    pub new: Value,
}

/// An API error, rendered as a `Status` object.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "group": info.group, "kind": info.plural})),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", qualified(info)),
            )
        }
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "group": info.group, "kind": info.plural})),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualified(info)),
            )
        }
    }

    pub fn conflict(info: &ResourceInfo, name: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "group": info.group, "kind": info.plural})),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    qualified(info)
                ),
            )
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub fn status(&self) -> Value {
        status(self.code, self.reason, &self.message, self.details.clone())
    }
}

/// A `Status` object with `status: Failure`.
pub(crate) fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        s["details"] = details;
    }
    s
}

fn qualified(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.plural.clone()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

pub(crate) struct State {
    /// The last resourceVersion handed out.
    pub rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub compacted: u64,
    /// Bumped by every compaction; open watches started in an older epoch end with 410.
    pub epoch: u64,
    pub resources: Vec<ResourceInfo>,
    pub objects: BTreeMap<ObjKey, Value>,
    /// Changes with rv > `compacted`, in rv order.
    pub history: VecDeque<Change>,
    pub token: Option<String>,
    /// Every request is answered 500 while set (`ApiServer::fail_requests`).
    pub failing: bool,
    pub counters: BTreeMap<String, Counters>,
    pub requests: Vec<String>,
    /// Server-side apply's field owners of status subresources, per object.
    pub owners: BTreeMap<ObjKey, super::apply::Owners>,
    next_uid: u64,
}

impl State {
    pub fn new() -> Self {
        Self {
            rv: 1,
            compacted: 0,
            epoch: 0,
            resources: vec![
                ResourceInfo::new("", "v1", "pods", "Pod", true),
                ResourceInfo::new(
                    "k8s.cni.cncf.io",
                    "v1",
                    "network-attachment-definitions",
                    "NetworkAttachmentDefinition",
                    true,
                ),
                // The events.k8s.io Event comes first: `kind "Event"` means this one.
                ResourceInfo::new("events.k8s.io", "v1", "events", "Event", true),
                ResourceInfo::new("", "v1", "events", "Event", true),
                ResourceInfo::new("", "v1", "namespaces", "Namespace", false),
                ResourceInfo::new("", "v1", "nodes", "Node", false),
                ResourceInfo::new(
                    "resource.k8s.io",
                    "v1",
                    "resourceclaims",
                    "ResourceClaim",
                    true,
                ),
                ResourceInfo::new(
                    "resource.k8s.io",
                    "v1",
                    "resourceslices",
                    "ResourceSlice",
                    false,
                ),
            ],
            failing: false,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            token: None,
            counters: BTreeMap::new(),
            requests: Vec::new(),
            owners: BTreeMap::new(),
            next_uid: 0,
        }
    }

    /// The resource served at `group`/`plural`.
    pub fn resource(&self, group: &str, plural: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
    }

    /// A resource by kind (`Pod`), plural (`pods`) or `plural.group`, case-insensitively.
    pub fn resource_by_kind(&self, kind: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| {
                r.kind.eq_ignore_ascii_case(kind)
                    || r.plural.eq_ignore_ascii_case(kind)
                    || format!("{}.{}", r.plural, r.group).eq_ignore_ascii_case(kind)
            })
            .cloned()
    }

    /// The resource of an object by its apiVersion and kind; an unknown one is added (plural:
    /// lowercase kind + "s"; namespaced when the object has a namespace).
    pub fn resource_for_object(&mut self, obj: &Value) -> Result<ResourceInfo, ApiError> {
        let api_version = obj["apiVersion"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("object has no apiVersion"))?;
        let kind = obj["kind"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("object has no kind"))?;
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        if let Some(info) = self
            .resources
            .iter()
            .find(|r| r.group == group && r.kind == kind)
        {
            return Ok(info.clone());
        }
        let info = ResourceInfo::new(
            group,
            version,
            &format!("{}s", kind.to_ascii_lowercase()),
            kind,
            obj["metadata"]["namespace"].is_string(),
        );
        self.resources.push(info.clone());
        Ok(info)
    }

    pub fn count(&mut self, plural: &str, f: impl Fn(&mut Counters)) {
        f(self.counters.entry(plural.to_owned()).or_default());
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, rv: u64, ty: ChangeType, key: ObjKey, old: Option<Value>, new: Value) {
        self.history.push_back(Change {
            rv,
            ty,
            key,
            old,
            new,
        });
    }

    /// Makes every resourceVersion handed out so far too old for a watch.
    pub fn compact(&mut self) {
        let rv = self.next_rv();
        self.compacted = rv;
        self.epoch += 1;
        self.history.clear();
    }

    /// Fills in apiVersion, kind, namespace; checks the name. Returns the key.
    fn normalize(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        obj: &mut Value,
    ) -> Result<ObjKey, ApiError> {
        let Some(map) = obj.as_object_mut() else {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        };
        map.insert("apiVersion".into(), info.api_version().into());
        map.insert("kind".into(), info.kind.clone().into());
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            return Err(ApiError::bad_request("metadata is not an object"));
        }
        if info.namespaced {
            let ns = match (namespace, meta["namespace"].as_str()) {
                (Some(path), Some(body)) if path != body => {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the provided object ({body}) does not match the namespace sent on the request ({path})"
                    )));
                }
                (Some(ns), _) | (None, Some(ns)) => ns.to_owned(),
                (None, None) => "default".to_owned(),
            };
            meta["namespace"] = ns.into();
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        if meta["name"].as_str().is_none_or(str::is_empty)
            && let Some(prefix) = meta["generateName"].as_str()
        {
            let name = format!("{prefix}{:05x}", self.next_uid + 1);
            meta["name"] = name.into();
        }
        let name = meta["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::invalid("metadata.name: Required value: name is required"))?
            .to_owned();
        let ns = meta["namespace"].as_str().unwrap_or_default().to_owned();
        Ok(info.key(&ns, &name))
    }

    /// Creates a new object (POST); 409 AlreadyExists when it is there.
    pub fn create(
        &mut self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let key = self.normalize(info, namespace, &mut obj)?;
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(info, &key.name));
        }
        Ok(self.insert_new(key, obj))
    }

    fn insert_new(&mut self, key: ObjKey, mut obj: Value) -> Value {
        self.next_uid += 1;
        let rv = self.next_rv();
        let meta = &mut obj["metadata"];
        // In-process objects may bring their uid, as the pods of a test do: the test plays
        // kubelet too, and K8S_POD_UID must match what the API server holds.
        if !meta["uid"].is_string() {
            meta["uid"] = format!("00000000-0000-4000-8000-{:012x}", self.next_uid).into();
        }
        meta["resourceVersion"] = rv.to_string().into();
        meta["creationTimestamp"] = now().into();
        if let Some(m) = meta.as_object_mut() {
            m.remove("deletionTimestamp");
        }
        self.objects.insert(key.clone(), obj.clone());
        self.record(rv, ChangeType::Added, key, None, obj.clone());
        obj
    }

    /// Stores `obj` over the existing object at `key`: identity fields are kept, the
    /// resourceVersion bumped, watchers get MODIFIED.
    fn replace_existing(&mut self, key: &ObjKey, mut obj: Value) -> Value {
        let old = self.objects.get(key).cloned().unwrap_or(Value::Null);
        let rv = self.next_rv();
        let meta = &mut obj["metadata"];
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        meta["name"] = key.name.clone().into();
        if key.namespace.is_empty() {
            if let Some(m) = meta.as_object_mut() {
                m.remove("namespace");
            }
        } else {
            meta["namespace"] = key.namespace.clone().into();
        }
        for field in ["uid", "creationTimestamp"] {
            meta[field] = old["metadata"][field].clone();
        }
        meta["resourceVersion"] = rv.to_string().into();
        self.objects.insert(key.clone(), obj.clone());
        self.record(
            rv,
            ChangeType::Modified,
            key.clone(),
            Some(old),
            obj.clone(),
        );
        obj
    }

    /// Create or replace, as `kubectl apply` would (in-process).
    pub fn apply(&mut self, mut obj: Value) -> Result<Value, ApiError> {
        let info = self.resource_for_object(&obj)?;
        let key = self.normalize(&info, None, &mut obj)?;
        if self.objects.contains_key(&key) {
            Ok(self.replace_existing(&key, obj))
        } else {
            Ok(self.insert_new(key, obj))
        }
    }

    /// PUT: replaces an existing object; a resourceVersion in the body must be the current one.
    pub fn update(
        &mut self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let key = self.normalize(info, namespace, &mut obj)?;
        if key.name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                key.name
            )));
        }
        let Some(current) = self.objects.get(&key) else {
            return Err(ApiError::not_found(info, name));
        };
        check_precondition(info, current, &obj)?;
        Ok(self.replace_existing(&key, obj))
    }

    /// PATCH: `apply` turns the stored object into the patched one.
    pub fn patch(
        &mut self,
        info: &ResourceInfo,
        key: &ObjKey,
        apply: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        let Some(current) = self.objects.get(key) else {
            return Err(ApiError::not_found(info, &key.name));
        };
        let mut patched = current.clone();
        apply(&mut patched)?;
        if !patched.is_object() {
            return Err(ApiError::invalid("the patched object is not a JSON object"));
        }
        check_precondition(info, current, &patched)?;
        patched["apiVersion"] = current["apiVersion"].clone();
        patched["kind"] = current["kind"].clone();
        Ok(self.replace_existing(key, patched))
    }

    /// The resources of one API group version, as discovery lists them (`/apis/G/V`).
    pub fn discovery(&self, group: &str, version: &str) -> Option<Value> {
        let resources: Vec<Value> = self
            .resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .flat_map(|r| {
                let verbs = json!(["create", "delete", "get", "list", "patch", "update", "watch"]);
                [
                    json!({"name": r.plural, "singularName": r.kind.to_ascii_lowercase(), "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs}),
                    json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
                ]
            })
            .collect();
        (!resources.is_empty()).then(|| {
            json!({
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
                "resources": resources,
            })
        })
    }

    /// Deletes; watchers get DELETED with the last state at the deletion's resourceVersion.
    pub fn delete(&mut self, key: &ObjKey) -> Option<Value> {
        self.owners.remove(key);
        let mut obj = self.objects.remove(key)?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        self.record(rv, ChangeType::Deleted, key.clone(), None, obj.clone());
        Some(obj)
    }

    /// The objects of a resource (in a namespace, or all), filtered, as a `<Kind>List`.
    pub fn list(&self, info: &ResourceInfo, namespace: Option<&str>, sel: &Selectors) -> Value {
        let items: Vec<Value> = self
            .objects_of(info, namespace)
            .filter(|o| sel.matches(o))
            .cloned()
            .collect();
        json!({
            "apiVersion": info.api_version(),
            "kind": format!("{}List", info.kind),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        })
    }

    pub fn objects_of<'a>(
        &'a self,
        info: &'a ResourceInfo,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |(k, _)| {
                k.group == info.group
                    && k.plural == info.plural
                    && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v)
    }
}

/// A resourceVersion in the new body is a precondition: it must be the current one.
fn check_precondition(info: &ResourceInfo, current: &Value, new: &Value) -> Result<(), ApiError> {
    match new["metadata"]["resourceVersion"].as_str() {
        Some(rv)
            if !rv.is_empty() && Some(rv) != current["metadata"]["resourceVersion"].as_str() =>
        {
            Err(ApiError::conflict(
                info,
                current["metadata"]["name"].as_str().unwrap_or_default(),
            ))
        }
        _ => Ok(()),
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
