//! Property tests: the parsers at plexusd's edges never panic on any input, the forms a user
//! writes round-trip, results keep what every pair of versions can express, and interface
//! names follow Multus's rule. Case counts are bounded so `make test` stays fast; an input
//! a property ever found failing becomes a unit test next to the code it broke.

mod naming;
mod netconf;
mod request;
mod result;
mod selection;

use proptest::prelude::*;
use serde_json::{Map, Value};

/// `default` cases, or `PROPTEST_CASES` when set (a long hunt: `PROPTEST_CASES=100000`).
pub fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// Any JSON value, a few levels deep: what a hostile or broken peer can send.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((interesting_key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Strings that are often meaningful to the parsers, and sometimes anything at all.
pub fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9./@:-]{0,12}",
        Just(String::new()),
        Just("1.0.0".to_owned()),
        Just("0.4.0".to_owned()),
        Just("198.18.0.1/24".to_owned()),
        Just("fd00::1".to_owned()),
        any::<String>(),
    ]
}

/// Keys the parsers look for, and others.
pub fn interesting_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("name".to_owned()),
        Just("type".to_owned()),
        Just("cniVersion".to_owned()),
        Just("plugins".to_owned()),
        Just("ipam".to_owned()),
        Just("capabilities".to_owned()),
        Just("ips".to_owned()),
        Just("interfaces".to_owned()),
        Just("routes".to_owned()),
        Just("dns".to_owned()),
        Just("interface".to_owned()),
        Just("address".to_owned()),
        Just("version".to_owned()),
        "[a-zA-Z-]{1,10}",
    ]
}
