//! Server-side apply of a ResourceClaim's status, as the API server does it for the fields DRA
//! drivers and network plugins write (KEP-4817): `status.devices` is a map-list keyed by
//! driver, pool, device (and shareID); inside an entry `conditions` is a map-list keyed by
//! type, every other field is atomic. Each field has an owner: applying a value that differs
//! from one another manager owns (or that was written without apply) is a conflict unless
//! forced; a field the manager applied before and leaves out now is removed, and an entry
//! nobody owns a field of any more goes. Ownership is shown in `metadata.managedFields`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::state::ApiError;

/// Who owns which field: path -> manager. Paths are `<entry key>.<field>` and
/// `<entry key>.conditions[<type>]`.
pub(crate) type Owners = BTreeMap<String, String>;

const KEYS: [&str; 4] = ["driver", "pool", "device", "shareID"];

fn entry_key(entry: &Value) -> String {
    let parts: Vec<String> = KEYS
        .iter()
        .filter_map(|k| entry[*k].as_str().map(|v| format!("{k}={v}")))
        .collect();
    format!("devices[{}]", parts.join(","))
}

/// The fields one applied entry sets: (path, field, condition type, value).
fn applied_fields(entry: &Value) -> Vec<(String, String, Option<String>, Value)> {
    let key = entry_key(entry);
    let mut fields = Vec::new();
    for (field, value) in entry.as_object().into_iter().flatten() {
        if KEYS.contains(&field.as_str()) {
            continue;
        }
        if field == "conditions" {
            for condition in value.as_array().into_iter().flatten() {
                let kind = condition["type"].as_str().unwrap_or_default().to_owned();
                fields.push((
                    format!("{key}.conditions[{kind}]"),
                    field.clone(),
                    Some(kind),
                    condition.clone(),
                ));
            }
        } else {
            fields.push((format!("{key}.{field}"), field.clone(), None, value.clone()));
        }
    }
    fields
}

fn entry_mut<'a>(devices: &'a mut [Value], key: &str) -> Option<&'a mut Value> {
    devices.iter_mut().find(|e| entry_key(e) == key)
}

fn current(entry: &Value, field: &str, kind: Option<&str>) -> Option<Value> {
    match kind {
        Some(kind) => entry[field]
            .as_array()?
            .iter()
            .find(|c| c["type"] == kind)
            .cloned(),
        None => entry.get(field).cloned(),
    }
}

fn set(entry: &mut Value, field: &str, kind: Option<&str>, value: Value) {
    let Some(object) = entry.as_object_mut() else {
        return;
    };
    match kind {
        Some(kind) => {
            let list = object
                .entry(field)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(list) = list.as_array_mut() {
                list.retain(|c| c["type"] != kind);
                list.push(value);
            }
        }
        None => {
            object.insert(field.to_owned(), value);
        }
    }
}

fn unset(entry: &mut Value, path: &str) {
    let Some(object) = entry.as_object_mut() else {
        return;
    };
    let field = path.rsplit_once("].").map_or(path, |(_, f)| f);
    match field
        .strip_prefix("conditions[")
        .and_then(|f| f.strip_suffix(']'))
    {
        Some(kind) => {
            if let Some(list) = object.get_mut("conditions").and_then(Value::as_array_mut) {
                list.retain(|c| c["type"] != kind);
                if list.is_empty() {
                    object.remove("conditions");
                }
            }
        }
        None => {
            object.remove(field);
        }
    }
}

/// Applies `applied` (a ResourceClaim with a status) to `object`'s status as `manager`.
pub(crate) fn apply_claim_status(
    object: &mut Value,
    applied: &Value,
    manager: &str,
    force: bool,
    owners: &mut Owners,
) -> Result<(), ApiError> {
    if let Some(uid) = applied["metadata"]["uid"].as_str()
        && object["metadata"]["uid"].as_str() != Some(uid)
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                object["metadata"]["uid"].as_str().unwrap_or_default()
            ),
        ));
    }
    let mut devices: Vec<Value> = object["status"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Ownership changes only when the whole apply succeeds.
    let mut next = owners.clone();
    let mut written = BTreeSet::new();
    let mut conflicts = Vec::new();
    for entry in applied["status"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = entry_key(entry);
        if entry_mut(&mut devices, &key).is_none() {
            let identity: Map<String, Value> = KEYS
                .iter()
                .filter_map(|k| entry.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect();
            devices.push(Value::Object(identity));
        }
        let Some(target) = entry_mut(&mut devices, &key) else {
            continue;
        };
        for (path, field, kind, value) in applied_fields(entry) {
            let existing = current(target, &field, kind.as_deref());
            let owner = next.get(&path).map(String::as_str);
            let foreign = owner != Some(manager);
            if foreign && existing.as_ref().is_some_and(|v| *v != value) && !force {
                conflicts.push(format!(
                    "conflict with {:?}: .status.{path}",
                    owner.unwrap_or("before-first-apply")
                ));
                continue;
            }
            set(target, &field, kind.as_deref(), value);
            next.insert(path.clone(), manager.to_owned());
            written.insert(path);
        }
    }
    if !conflicts.is_empty() {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict(s): {}",
                conflicts.len(),
                conflicts.join("; ")
            ),
        ));
    }
    let released: Vec<String> = next
        .iter()
        .filter(|(path, owner)| owner.as_str() == manager && !written.contains(*path))
        .map(|(path, _)| path.clone())
        .collect();
    for path in released {
        next.remove(&path);
        let key = path.split_once("].").map_or("", |(k, _)| k).to_owned() + "]";
        if let Some(target) = entry_mut(&mut devices, &key) {
            unset(target, &path);
        }
    }
    // An entry without fields of its own that nobody owns anything of is gone.
    devices.retain(|e| {
        let key = entry_key(e);
        let has_fields = e
            .as_object()
            .is_some_and(|o| o.keys().any(|k| !KEYS.contains(&k.as_str())));
        has_fields || next.keys().any(|p| p.starts_with(&key))
    });
    object["status"]["devices"] = Value::Array(devices);
    object["metadata"]["managedFields"] = managed_fields(&next);
    *owners = next;
    Ok(())
}

/// `metadata.managedFields` for the status owners (FieldsV1 in spirit, not byte for byte).
fn managed_fields(owners: &Owners) -> Value {
    let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (path, manager) in owners {
        by_manager.entry(manager).or_default().push(path);
    }
    Value::Array(
        by_manager
            .into_iter()
            .map(|(manager, paths)| {
                let fields: Map<String, Value> = paths
                    .iter()
                    .map(|p| (format!("f:status.{p}"), json!({})))
                    .collect();
                json!({
                    "manager": manager,
                    "operation": "Apply",
                    "apiVersion": "resource.k8s.io/v1",
                    "subresource": "status",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Value {
        json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "status": {"devices": [
                {"driver": "d", "pool": "p", "device": "vf-0", "data": {"driver": "own"}}
            ]},
        })
    }

    fn applied(entries: Value) -> Value {
        json!({"metadata": {"name": "c", "namespace": "ns"}, "status": {"devices": entries}})
    }

    #[test]
    fn applied_fields_join_the_drivers_and_leaving_them_out_releases_only_those() {
        let mut object = claim();
        let mut owners = Owners::new();
        let entry = json!({"driver": "d", "pool": "p", "device": "vf-0",
            "networkData": {"interfaceName": "net1"},
            "conditions": [{"type": "Ready", "status": "True"}]});
        apply_claim_status(
            &mut object,
            &applied(json!([entry])),
            "plexus",
            false,
            &mut owners,
        )
        .unwrap();
        let device = &object["status"]["devices"][0];
        assert_eq!(device["data"], json!({"driver": "own"}));
        assert_eq!(device["networkData"]["interfaceName"], "net1");
        assert_eq!(device["conditions"][0]["type"], "Ready");
        assert_eq!(object["metadata"]["managedFields"][0]["manager"], "plexus");

        // A new entry of a device nobody wrote yet, then everything released.
        let other = json!({"driver": "d", "pool": "p", "device": "vf-1", "networkData": {"interfaceName": "net2"}});
        apply_claim_status(
            &mut object,
            &applied(json!([other])),
            "plexus",
            false,
            &mut owners,
        )
        .unwrap();
        let devices = object["status"]["devices"].as_array().unwrap().clone();
        assert_eq!(devices.len(), 2);
        assert!(devices[0].get("networkData").is_none(), "{devices:?}");
        assert_eq!(devices[0]["data"], json!({"driver": "own"}));
        apply_claim_status(
            &mut object,
            &json!({"status": {}}),
            "plexus",
            false,
            &mut owners,
        )
        .unwrap();
        assert_eq!(
            object["status"]["devices"],
            json!([{"driver": "d", "pool": "p", "device": "vf-0", "data": {"driver": "own"}}])
        );
        assert!(owners.is_empty());
    }

    #[test]
    fn a_different_value_someone_else_wrote_is_a_conflict_and_a_stale_uid_too() {
        let mut object = claim();
        let mut owners = Owners::new();
        let entry = json!({"driver": "d", "pool": "p", "device": "vf-0", "data": {"plexus": 1}});
        let error = apply_claim_status(
            &mut object,
            &applied(json!([entry])),
            "plexus",
            false,
            &mut owners,
        )
        .unwrap_err();
        assert_eq!(error.code, 409);
        assert_eq!(object, claim(), "a conflict changes nothing");
        apply_claim_status(
            &mut object,
            &applied(json!([entry])),
            "plexus",
            true,
            &mut owners,
        )
        .unwrap();
        let mut stale = applied(json!([]));
        stale["metadata"]["uid"] = "u0".into();
        let error =
            apply_claim_status(&mut object, &stale, "plexus", false, &mut owners).unwrap_err();
        assert_eq!(error.code, 409);
    }
}
