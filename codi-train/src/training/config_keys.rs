//! Config files are checked key by key: serde (through Burn's `Config`) skips a key the struct does not have,
//! so a misspelled `learning_rat` would silently train with the default. Every key of the file must be a key
//! of the config as it serialises back; the first that is not is named, with the closest known key.

use serde_json::Value;

/// Keys of `file` (a config as written by a user) that `known` (the same config loaded and serialised back,
/// every field present) does not have, as dotted paths, each with the closest known key at that level.
pub fn unknown_keys(file: &Value, known: &Value) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    walk(file, known, "", &mut out);
    out
}

fn walk(file: &Value, known: &Value, path: &str, out: &mut Vec<(String, Option<String>)>) {
    match (file, known) {
        (Value::Object(f), Value::Object(k)) => {
            for (key, value) in f {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => walk(value, kv, &here, out),
                    None => out.push((here, closest(key, k.keys()))),
                }
            }
        }
        (Value::Array(f), Value::Array(k)) => {
            for (i, (fv, kv)) in f.iter().zip(k).enumerate() {
                walk(fv, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The candidate within edit distance 3 of `key` (and under half its length), closest first.
fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a String>) -> Option<String> {
    candidates
        .map(|c| (edit_distance(key, c), c))
        .filter(|(d, _)| *d <= 3 && *d * 2 < key.len().max(2))
        .min()
        .map(|(_, c)| c.clone())
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The field a serde "missing field `x`" message names.
pub fn missing_field(message: &str) -> Option<&str> {
    let rest = message.split("missing field `").nth(1)?;
    rest.split('`').next()
}

/// The dotted path of a key anywhere in `file` within a small edit distance of `field` (but not equal).
pub fn near_key(file: &Value, field: &str) -> Option<String> {
    fn search(v: &Value, field: &str, path: &str) -> Option<String> {
        match v {
            Value::Object(m) => m.iter().find_map(|(k, child)| {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let near = k != field && closest(field, std::iter::once(k)).is_some();
                if near {
                    Some(here)
                } else {
                    search(child, field, &here)
                }
            }),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, x)| search(x, field, &format!("{path}[{i}]"))),
            _ => None,
        }
    }
    search(file, field, "")
}

/// The error text for the unknown keys found, or `None` when there are none.
pub fn describe(unknown: &[(String, Option<String>)]) -> Option<String> {
    let parts: Vec<String> = unknown
        .iter()
        .map(|(path, near)| match near {
            Some(n) => format!("unknown key `{path}` (did you mean `{n}`?)"),
            None => format!("unknown key `{path}`"),
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_misspelled_and_extra_keys_at_any_depth_and_suggests_the_near_one() {
        let known = json!({"train": {"learning_rate": 1e-3, "batch_size": 32}, "mode": "codi",
                           "levels": [{"channels": 8}]});
        let file = json!({"train": {"learning_rat": 1e-3}, "mode": "codi", "colour": 1,
                          "levels": [{"chanels": 8}]});
        let found = unknown_keys(&file, &known);
        assert_eq!(
            found,
            vec![
                ("colour".to_string(), None),
                (
                    "levels[0].chanels".to_string(),
                    Some("channels".to_string())
                ),
                (
                    "train.learning_rat".to_string(),
                    Some("learning_rate".to_string())
                ),
            ]
        );
        let text = describe(&found).unwrap();
        assert!(text.contains("did you mean `learning_rate`"), "{text}");
        assert!(unknown_keys(&known, &known).is_empty());
        assert_eq!(describe(&[]), None);
    }

    #[test]
    fn a_missing_field_is_traced_to_its_misspelling() {
        let msg = "Invalid format: missing field `learning_rate` at line 14 column 3";
        assert_eq!(missing_field(msg), Some("learning_rate"));
        let file = json!({"train": {"learning_rat": 1e-3, "seed": 0}});
        assert_eq!(
            near_key(&file, "learning_rate").as_deref(),
            Some("train.learning_rat")
        );
        assert_eq!(near_key(&file, "weight_decay"), None);
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
