//! Laws of the RFC 7386 merge patch applied to session contexts, checked on generated JSON:
//! it agrees with the RFC's own algorithm, applying a patch twice equals applying it once,
//! `null` deletes, and patches that touch disjoint keys commute.

use contextd::domain::patch::apply_merge_patch;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Few key names, so that targets and patches overlap often.
fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(str::to_string)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(Value::from),
        "[xy]{0,2}".prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object (the shape of a stored context and of most patches).
fn object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), json(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

/// RFC 7386 section 2, written as the RFC gives it.
fn reference(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut target = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            target.remove(name);
        } else {
            let current = target.get(name).cloned().unwrap_or(Value::Null);
            target.insert(name.clone(), reference(&current, value));
        }
    }
    Value::Object(target)
}

fn patched(target: &Value, patch: &Value) -> Value {
    let mut out = target.clone();
    apply_merge_patch(&mut out, patch);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_the_rfc_algorithm(target in json(), patch in json()) {
        prop_assert_eq!(patched(&target, &patch), reference(&target, &patch));
    }

    #[test]
    fn applying_twice_equals_once(target in json(), patch in json()) {
        let once = patched(&target, &patch);
        prop_assert_eq!(patched(&once, &patch), once);
    }

    #[test]
    fn null_deletes_and_other_values_land(target in object(), patch in object()) {
        let out = patched(&target, &patch);
        let (Value::Object(out), Value::Object(patch)) = (&out, &patch) else {
            unreachable!("object patches give objects");
        };
        for (name, value) in patch {
            if value.is_null() {
                prop_assert!(!out.contains_key(name), "{} survived a null", name);
            } else {
                prop_assert!(out.contains_key(name), "{} was not set", name);
            }
        }
    }

    #[test]
    fn untouched_keys_stay(target in object(), patch in object()) {
        let out = patched(&target, &patch);
        let (Value::Object(target), Value::Object(out), Value::Object(patch)) = (&target, &out, &patch) else {
            unreachable!("objects");
        };
        for (name, value) in target {
            if !patch.contains_key(name) {
                prop_assert_eq!(out.get(name), Some(value));
            }
        }
    }

    #[test]
    fn disjoint_patches_commute(target in object(), first in object(), second in object()) {
        let Value::Object(first_keys) = &first else { unreachable!("object") };
        let Value::Object(mut second) = second else { unreachable!("object") };
        second.retain(|name, _| !first_keys.contains_key(name));
        let second = Value::Object(second);
        prop_assert_eq!(
            patched(&patched(&target, &first), &second),
            patched(&patched(&target, &second), &first)
        );
    }
}
