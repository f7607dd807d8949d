//! YAML documents that remember where each value was written, so `plexusd validate` can point
//! at `file:line` instead of "somewhere in document 3".

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// One YAML node: where it starts, and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// 1-based line of the node in the file.
    pub line: u64,
    /// Byte offset of the node in the file, where the parser knows it.
    offset: Option<u64>,
    node: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Map(Vec<(String, Located)>),
    Seq(Vec<Located>),
    Scalar(Value),
}

impl Located {
    /// Every document of a YAML (or JSON) text; empty documents are left out.
    pub fn documents(text: &str) -> Result<Vec<Located>, serde_saphyr::Error> {
        serde_saphyr::from_multiple(text)
    }

    /// The plain JSON value, which is what the checks read.
    pub fn to_value(&self) -> Value {
        match &self.node {
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(key, value)| (key.clone(), value.to_value()))
                    .collect::<Map<String, Value>>(),
            ),
            Node::Seq(items) => Value::Array(items.iter().map(Located::to_value).collect()),
            Node::Scalar(value) => value.clone(),
        }
    }

    /// The node at `path` (map keys from here), or the deepest one on the way to it when the
    /// path leads somewhere that is not written.
    pub fn deepest(&self, path: &[&str]) -> &Located {
        let mut node = self;
        for key in path {
            let Node::Map(entries) = &node.node else {
                break;
            };
            match entries.iter().find(|(k, _)| k == key) {
                Some((_, child)) => node = child,
                None => break,
            }
        }
        node
    }

    /// The items of a sequence node (a `List`'s `items`), if this is one.
    pub fn items(&self) -> &[Located] {
        match &self.node {
            Node::Seq(items) => items,
            _ => &[],
        }
    }

    /// The file line of line `inner_line` (1-based) of this node's text. Exact for a literal
    /// block (`|`), which keeps its lines as written; any other scalar is reported at its own
    /// line, since folding and quoting move its lines about.
    pub fn line_within(&self, source: &str, inner_line: u64) -> u64 {
        let Node::Scalar(Value::String(text)) = &self.node else {
            return self.line;
        };
        if !self.is_literal_block(source) {
            return self.line;
        }
        // The parser places a block at its first line with text; blank lines before it are
        // part of the value.
        let leading_blank = text.chars().take_while(|c| *c == '\n').count() as u64;
        (self.line + inner_line).saturating_sub(leading_blank + 1)
    }

    /// Whether the text before this node ends with a literal block indicator (`|`, `|-`, `|2`).
    fn is_literal_block(&self, source: &str) -> bool {
        let Some(before) = self
            .offset
            .and_then(|offset| source.get(..usize::try_from(offset).ok()?))
        else {
            return false;
        };
        let header = before.trim_end().rsplit('\n').next().unwrap_or_default();
        let header = header.split(" #").next().unwrap_or_default();
        header.split_whitespace().last().is_some_and(|token| {
            token.starts_with('|')
                && token[1..]
                    .chars()
                    .all(|c| matches!(c, '-' | '+' | '0'..='9'))
        })
    }
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Node>::deserialize(deserializer)?;
        Ok(Self {
            line: spanned.referenced.line(),
            offset: spanned.referenced.span().byte_offset(),
            node: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Located>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            entries.push((key.0, map.next_value::<Located>()?));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text: YAML allows `1:` or `true:` as keys; JSON and Kubernetes see strings.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".to_owned()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TWO_DOCUMENTS: &str = "\
# a comment
apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    k8s.v1.cni.cncf.io/networks: |
      [
        {\"name\": \"a\"}
      ]
---
---
kind: X
spec:
  config: '{\"a\": 1}'
  list: [1, 2.5, true, null]
";

    #[test]
    fn documents_keep_their_values_and_lines() {
        let docs = Located::documents(TWO_DOCUMENTS).unwrap();
        assert_eq!(docs.len(), 2, "the empty document is left out");
        assert_eq!(docs[0].to_value()["metadata"]["name"], "web");
        assert_eq!(
            docs[1].to_value()["spec"],
            json!({"config": "{\"a\": 1}", "list": [1, 2.5, true, null]})
        );
        assert_eq!(docs[0].deepest(&["metadata", "name"]).line, 5);
        assert_eq!(docs[1].deepest(&["spec", "config"]).line, 15);
        // A path that goes further than the document: the deepest node that exists.
        assert_eq!(docs[0].deepest(&["metadata", "labels", "x"]).line, 5);
    }

    #[test]
    fn a_line_inside_a_literal_block_maps_to_its_file_line() {
        let docs = Located::documents(TWO_DOCUMENTS).unwrap();
        let networks = docs[0].deepest(&["metadata", "annotations", "k8s.v1.cni.cncf.io/networks"]);
        assert_eq!(networks.line_within(TWO_DOCUMENTS, 1), 8);
        assert_eq!(networks.line_within(TWO_DOCUMENTS, 2), 9);
        let config = docs[1].deepest(&["spec", "config"]);
        assert_eq!(config.line_within(TWO_DOCUMENTS, 1), 15);
    }

    #[test]
    fn blank_lines_and_chomping_do_not_shift_a_literal_block() {
        let text = "a:\n  b: |-  # note\n\n    x\n    y\n  c: >\n    folded\n    text\n";
        let doc = &Located::documents(text).unwrap()[0];
        assert_eq!(doc.deepest(&["a", "b"]).line_within(text, 3), 5);
        assert_eq!(doc.deepest(&["a", "c"]).line_within(text, 2), 7);
    }

    #[test]
    fn json_is_read_too() {
        let docs =
            Located::documents("{\"kind\": \"Pod\",\n \"metadata\": {\"name\": \"x\"}}").unwrap();
        assert_eq!(
            docs[0].to_value(),
            json!({"kind": "Pod", "metadata": {"name": "x"}})
        );
        assert_eq!(docs[0].deepest(&["metadata", "name"]).line, 2);
    }
}
