//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

/// Applies a JSON merge patch to `target`.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!()
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Applies a JSON patch (add, remove, replace, move, copy, test) to `doc`; on error `doc` is
/// left unchanged.
pub(crate) fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    let mut work = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        apply_op(&mut work, op).map_err(|e| format!("operation {i} ({op}): {e}"))?;
    }
    *doc = work;
    Ok(())
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let name = op["op"].as_str().ok_or("missing \"op\"")?;
    let path = pointer(op["path"].as_str().ok_or("missing \"path\"")?)?;
    let value = || op.get("value").cloned().ok_or("missing \"value\"");
    let from = || -> Result<Vec<String>, String> {
        pointer(op["from"].as_str().ok_or("missing \"from\"")?)
    };
    match name {
        "add" => add(doc, &path, value()?),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            let target = get_mut(doc, &path).ok_or("path does not exist")?;
            *target = value()?;
            Ok(())
        }
        "move" => {
            let from = from()?;
            if path.len() > from.len() && path[..from.len()] == from[..] {
                return Err("cannot move a value into one of its children".into());
            }
            let moved = remove(doc, &from)?;
            add(doc, &path, moved)
        }
        "copy" => {
            let copied = get_mut(doc, &from()?)
                .ok_or("\"from\" does not exist")?
                .clone();
            add(doc, &path, copied)
        }
        "test" => {
            let expected = value()?;
            match get_mut(doc, &path) {
                Some(actual) if *actual == expected => Ok(()),
                Some(actual) => Err(format!("test failed: the value is {actual}")),
                None => Err("test failed: path does not exist".into()),
            }
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

/// Parses a JSON pointer into unescaped tokens (`~1` is `/`, `~0` is `~`).
fn pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {p:?}"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if token == "-" && allow_end {
        return Ok(len);
    }
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
        return Err(format!("invalid array index {token:?}"));
    }
    let i: usize = token
        .parse()
        .map_err(|_| format!("invalid array index {token:?}"))?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if i > max || (!allow_end && len == 0) {
        return Err(format!("array index {i} out of bounds"));
    }
    Ok(i)
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut v = doc;
    for token in path {
        v = match v {
            Value::Object(m) => m.get_mut(token)?,
            Value::Array(a) => {
                let i = index(token, a.len(), false).ok()?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(v)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent).ok_or("parent path does not exist")? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = index(last, a.len(), true)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err("parent is neither an object nor an array".into()),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let (last, parent) = path
        .split_last()
        .ok_or("cannot remove the whole document")?;
    match get_mut(doc, parent).ok_or("path does not exist")? {
        Value::Object(m) => m.remove(last).ok_or_else(|| "path does not exist".into()),
        Value::Array(a) => {
            let i = index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err("path does not exist".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1]});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null, "h": 1}, "l": [2, 3]}),
        );
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e", "h": 1}, "l": [2, 3]}));
        merge_patch(&mut doc, &json!({"a": {"x": null, "y": 1}}));
        assert_eq!(doc["a"], json!({"y": 1}));
    }

    #[test]
    fn json_patch_follows_rfc_6902() {
        let mut doc = json!({"metadata": {"annotations": {"a/b": "1", "t~n": "2"}}, "l": [1, 2]});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/metadata/annotations/a~1b", "value": "1"},
                {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "x"},
                {"op": "remove", "path": "/metadata/annotations/t~0n"},
                {"op": "add", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1network-status", "value": "[]"},
                {"op": "add", "path": "/l/-", "value": 3},
                {"op": "add", "path": "/l/0", "value": 0},
                {"op": "remove", "path": "/l/1"},
                {"op": "copy", "from": "/l", "path": "/m"},
                {"op": "move", "from": "/m", "path": "/n"},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"annotations": {"a/b": "x", "k8s.v1.cni.cncf.io/network-status": "[]"}},
                   "l": [0, 2, 3], "n": [0, 2, 3]})
        );
        let before = doc.clone();
        let err = json_patch(
            &mut doc,
            &json!([
                {"op": "replace", "path": "/l/0", "value": 9},
                {"op": "test", "path": "/l/0", "value": 1},
            ]),
        );
        assert!(err.is_err());
        assert_eq!(doc, before, "a failed patch changes nothing");
        assert!(
            json_patch(
                &mut doc,
                &json!([{"op": "replace", "path": "/nope", "value": 1}])
            )
            .is_err()
        );
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/l/5"}])).is_err());
    }
}
