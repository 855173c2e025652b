//! The RFC 7386 merge patch of session contexts on arbitrary JSON.
//!
//! Input: the target document, a NUL byte, the patch document (both JSON; inputs that are not
//! are skipped). Checked: no panic; applying the same patch again changes nothing
//! (RFC 7386 patches are idempotent); a patch that is not an object replaces the target; and
//! after an object patch, every key the patch sets to null is gone and every other key holds
//! the patch's value merged in.
#![no_main]

use contextd::domain::patch::apply_merge_patch;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let (Ok(target), Ok(patch)) = (
        serde_json::from_slice::<Value>(&data[..split]),
        serde_json::from_slice::<Value>(&data[split + 1..]),
    ) else {
        return;
    };
    let mut once = target.clone();
    apply_merge_patch(&mut once, &patch);
    let mut twice = once.clone();
    apply_merge_patch(&mut twice, &patch);
    assert_eq!(once, twice, "the patch is not idempotent");
    match &patch {
        Value::Object(members) => {
            let Value::Object(result) = &once else {
                panic!("an object patch gave a non-object: {once}");
            };
            for (key, value) in members {
                if value.is_null() {
                    assert!(
                        !result.contains_key(key),
                        "'{key}' was set to null but stays"
                    );
                } else {
                    let mut expected = target.get(key).cloned().unwrap_or(Value::Null);
                    apply_merge_patch(&mut expected, value);
                    assert_eq!(result.get(key), Some(&expected), "'{key}' merged wrongly");
                }
            }
            if let Value::Object(before) = &target {
                for (key, value) in before {
                    if !members.contains_key(key) {
                        assert_eq!(result.get(key), Some(value), "'{key}' changed unpatched");
                    }
                }
            }
        }
        replacement => assert_eq!(&once, replacement, "a non-object patch must replace"),
    }
});
