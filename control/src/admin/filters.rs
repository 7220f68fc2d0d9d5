//! `--filters` of the describe verbs, as the AWS API has them: a list of filters, each a name
//! and values; an item is listed when, for every filter, one of its values matches the item's
//! field of that name (`*` and `?` as wildcards, as EC2's filters take them).
//!
//! Each filter is written as the AWS CLI writes it: shorthand (`Name=username,Values=alice,bob`)
//! or JSON (`{"Name": "username", "Values": ["alice"]}`, or a list of such objects).

use serde_json::Value;

use super::AdminError;

/// The filters of one request, by name (each with its values).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filters(Vec<(String, Vec<String>)>);

/// Longest value a filter may hold: field values are ids, names, CIDRs and descriptions, and a
/// wildcard match costs up to its length times the field's.
pub const MAX_VALUE: usize = 255;

/// Most values one request's filters may hold together: each is tried against every item
/// listed (up to 127,000 connections), on the control thread.
const MAX_VALUES: usize = 200;

impl Filters {
    /// Reads the `--filters` arguments of a verb whose items have the fields `names`.
    ///
    /// # Errors
    /// `InvalidParameterValue` for a filter that does not parse, has no values, a value longer
    /// than `MAX_VALUE` bytes, or names a field the verb's items do not have (the message lists
    /// those they have); and for more than `MAX_VALUES` values in all.
    pub fn parse(args: &[String], names: &[&str]) -> Result<Self, AdminError> {
        let mut out = Vec::new();
        for arg in args {
            for (name, values) in
                parse_one(arg).map_err(|why| invalid(format!("--filters `{arg}`: {why}")))?
            {
                if !names.contains(&name.as_str()) {
                    return Err(invalid(format!(
                        "--filters: `{name}` is not a filter of this verb; it has {}",
                        names.join(", ")
                    )));
                }
                if values.is_empty() {
                    return Err(invalid(format!("--filters: `{name}` has no Values")));
                }
                if values.iter().any(|v| v.len() > MAX_VALUE) {
                    return Err(invalid(format!(
                        "--filters: a value of `{name}` is longer than {MAX_VALUE} bytes"
                    )));
                }
                out.push((name, values));
            }
        }
        let values: usize = out.iter().map(|(_, v)| v.len()).sum();
        if values > MAX_VALUES {
            return Err(invalid(format!(
                "--filters: {values} values, more than the {MAX_VALUES} one request may hold"
            )));
        }
        Ok(Self(out))
    }

    /// Whether no filter was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an item passes every filter; `field` gives the item's value of a filter name
    /// (`None`: the item has none, and no value matches it).
    pub fn matches(&self, field: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|(name, values)| {
            field(name).is_some_and(|have| values.iter().any(|v| wildcard(v, &have)))
        })
    }
}

fn invalid(message: String) -> AdminError {
    AdminError::request("InvalidParameterValue", message)
}

/// The filters one `--filters` argument holds.
fn parse_one(arg: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let t = arg.trim();
    if t.starts_with('[') || t.starts_with('{') {
        let v: Value = serde_json::from_str(t).map_err(|e| format!("invalid JSON: {e}"))?;
        let objects = match v {
            Value::Array(a) => a,
            o => vec![o],
        };
        return objects.iter().map(from_json).collect();
    }
    // Shorthand: `Name=n,Values=a,b`, in either order; a part without `=` is one more value.
    let (mut name, mut values, mut in_values) = (None, Vec::new(), false);
    for part in t.split(',') {
        match part.split_once('=') {
            Some(("Name", n)) => {
                if name.replace(n.trim().to_owned()).is_some() {
                    return Err("two Names".to_owned());
                }
                in_values = false;
            }
            Some(("Values", v)) => {
                values.push(v.trim().to_owned());
                in_values = true;
            }
            Some((k, _)) => return Err(format!("unknown key `{k}` (Name and Values are)")),
            None if in_values => values.push(part.trim().to_owned()),
            None => {
                return Err(format!(
                    "`{part}` is neither Name=... nor one of the Values"
                ))
            }
        }
    }
    let name = name.ok_or("no Name=")?;
    Ok(vec![(name, values)])
}

fn from_json(v: &Value) -> Result<(String, Vec<String>), String> {
    let name = v
        .get("Name")
        .and_then(Value::as_str)
        .ok_or("each filter needs a \"Name\" string")?;
    let values = v
        .get("Values")
        .and_then(Value::as_array)
        .ok_or("each filter needs a \"Values\" list")?
        .iter()
        .map(|x| x.as_str().map(str::to_owned).ok_or("Values are strings"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_owned(), values))
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters and `?` for
/// one. Iterative, with one point to go back to: linear in practice, never recursive.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while j < t.len() {
        match p.get(i) {
            Some('*') => {
                back = Some((i, j));
                i += 1;
            }
            Some(&c) if c == '?' || c == t[j] => {
                i += 1;
                j += 1;
            }
            _ => match back {
                Some((bi, bj)) => {
                    back = Some((bi, bj + 1));
                    i = bi + 1;
                    j = bj + 1;
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The value of the field `pointer` names in a JSON item, as text (a string as it is; a
/// number or boolean as JSON writes it).
pub fn json_field(item: &Value, pointer: &str) -> Option<String> {
    match item.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Filters, AdminError> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        Filters::parse(&args, &["username", "connection-id"])
    }

    fn pairs(f: &Filters) -> Vec<(&str, Vec<&str>)> {
        f.0.iter()
            .map(|(n, v)| (n.as_str(), v.iter().map(String::as_str).collect()))
            .collect()
    }

    #[test]
    fn shorthand_and_json_give_the_same_filters() {
        let want = vec![
            ("username", vec!["alice", "bob"]),
            ("connection-id", vec!["c1"]),
        ];
        for args in [
            &[
                "Name=username,Values=alice,bob",
                "Name=connection-id,Values=c1",
            ][..],
            &[
                "Values=alice,bob,Name=username",
                "Name=connection-id,Values=c1",
            ],
            &[
                r#"[{"Name": "username", "Values": ["alice", "bob"]}, {"Name": "connection-id", "Values": ["c1"]}]"#,
            ],
            &[
                r#"{"Name": "username", "Values": ["alice", "bob"]}"#,
                "Name=connection-id,Values=c1",
            ],
        ] {
            assert_eq!(pairs(&parse(args).unwrap()), want, "{args:?}");
        }
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn filters_that_do_not_parse_or_name_no_field_are_refused() {
        for bad in [
            "Name=group,Values=x",
            "Name=username",
            "Values=a",
            "Name=username,Name=connection-id,Values=a",
            "Name=username,Color=red,Values=a",
            "username=alice",
            "alice",
            r#"[{"Name": "username"}]"#,
            r#"[{"Name": "username", "Values": [1]}]"#,
            "[",
        ] {
            let r = parse(&[bad]);
            assert!(
                matches!(
                    r,
                    Err(AdminError::Request {
                        code: "InvalidParameterValue",
                        ..
                    })
                ),
                "{bad}: {r:?}"
            );
        }
        let long = format!("Name=username,Values={}", "a".repeat(MAX_VALUE + 1));
        assert!(parse(&[&long]).is_err());
        let longest = format!("Name=username,Values={}", "a".repeat(MAX_VALUE));
        assert!(parse(&[&longest]).is_ok());
        let many = |n: usize| format!("Name=username,Values={}", vec!["a"; n].join(","));
        assert!(parse(&[&many(MAX_VALUES)]).is_ok());
        assert!(parse(&[&many(MAX_VALUES / 2), &many(MAX_VALUES / 2 + 1)]).is_err());
    }

    #[test]
    fn an_item_passes_when_every_filter_has_a_value_that_matches() {
        let f = parse(&[
            "Name=username,Values=alice,b*",
            "Name=connection-id,Values=cvpn-connection-??",
        ])
        .unwrap();
        let item = |user: Option<&str>, id: &str| {
            let (user, id) = (user.map(str::to_owned), id.to_owned());
            move |name: &str| match name {
                "username" => user.clone(),
                "connection-id" => Some(id.clone()),
                _ => None,
            }
        };
        assert!(f.matches(item(Some("alice"), "cvpn-connection-01")));
        assert!(f.matches(item(Some("bob"), "cvpn-connection-ab")));
        assert!(!f.matches(item(Some("carol"), "cvpn-connection-01")));
        assert!(!f.matches(item(Some("alice"), "cvpn-connection-012")));
        assert!(
            !f.matches(item(None, "cvpn-connection-01")),
            "no user name: no match"
        );
        assert!(Filters::default().matches(item(None, "x")));
    }

    #[test]
    fn wildcards() {
        for (p, t, m) in [
            ("*", "", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("*b*", "abc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("10.0.*", "10.0.0.0/16", true),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("**a", "xa", true),
        ] {
            assert_eq!(wildcard(p, t), m, "{p} ~ {t}");
        }
    }

    proptest::proptest! {
        /// An administrator's text never panics the parser (it comes over the admin socket).
        #[test]
        fn parsing_never_panics(args in proptest::collection::vec(".{0,48}", 0..3)) {
            let _ = Filters::parse(&args, &["username", "connection-id"]);
        }

        /// Against a naive recursive matcher, on short texts over a small alphabet.
        #[test]
        fn wildcard_matches_as_a_naive_matcher(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
            fn naive(p: &[char], t: &[char]) -> bool {
                match (p.first(), t.first()) {
                    (None, _) => t.is_empty(),
                    (Some('*'), _) => naive(&p[1..], t) || (!t.is_empty() && naive(p, &t[1..])),
                    (Some(_), None) => false,
                    (Some(&c), Some(&d)) => (c == '?' || c == d) && naive(&p[1..], &t[1..]),
                }
            }
            let (pc, tc): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
            proptest::prop_assert_eq!(wildcard(&p, &t), naive(&pc, &tc));
        }
    }
}
