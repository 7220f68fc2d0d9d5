//! The AWS CLI's shorthand syntax for structure parameters (`Key=Value,Key={K=V}`), and JSON,
//! so runbooks written for `aws ec2 ...` carry over.

use serde_json::{Map, Value};

/// Parses one parameter value: JSON if it starts with `{` or `[`, else shorthand.
///
/// # Errors
/// A message saying where the text stops making sense.
pub fn parse(s: &str) -> Result<Value, String> {
    let t = s.trim();
    if t.starts_with('{') || t.starts_with('[') {
        return serde_json::from_str(t).map_err(|e| format!("invalid JSON `{s}`: {e}"));
    }
    let mut p = Parser {
        s: t.as_bytes(),
        i: 0,
    };
    let v = p.map(false)?;
    if p.i != p.s.len() {
        return Err(format!(
            "unexpected `{}` at position {} in `{s}`",
            char::from(p.s[p.i]),
            p.i + 1
        ));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn map(&mut self, nested: bool) -> Result<Value, String> {
        let mut m = Map::new();
        loop {
            let key = self.until(b"=")?;
            if self.s.get(self.i) != Some(&b'=') {
                return Err(format!("expected `=` after `{key}`"));
            }
            self.i += 1;
            let value = if self.s.get(self.i) == Some(&b'{') {
                self.i += 1;
                let v = self.map(true)?;
                if self.s.get(self.i) != Some(&b'}') {
                    return Err(format!("missing `}}` after `{key}={{...`"));
                }
                self.i += 1;
                v
            } else {
                Value::String(self.until(b",}")?)
            };
            m.insert(key, value);
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') if nested => return Ok(Value::Object(m)),
                None => return Ok(Value::Object(m)),
                Some(c) => return Err(format!("unexpected `{}`", char::from(*c))),
            }
        }
    }

    fn until(&mut self, stops: &[u8]) -> Result<String, String> {
        let start = self.i;
        while self.i < self.s.len()
            && !stops.contains(&self.s[self.i])
            && !b"={},".contains(&self.s[self.i])
        {
            self.i += 1;
        }
        String::from_utf8(self.s[start..self.i].to_vec())
            .map(|v| v.trim().to_owned())
            .map_err(|_| "not UTF-8".to_owned())
    }
}

/// The string at `key` of an object value, if any.
pub fn field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A boolean given as `true`/`false` (shorthand gives strings, JSON gives booleans).
pub fn flag(v: &Value, key: &str) -> Option<bool> {
    match v.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_and_json() {
        let v = parse("Type=certificate-authentication,MutualAuthentication={ClientRootCertificateChainArn=ca.crt}").unwrap();
        assert_eq!(field(&v, "Type"), Some("certificate-authentication"));
        assert_eq!(
            field(&v["MutualAuthentication"], "ClientRootCertificateChainArn"),
            Some("ca.crt")
        );
        let j = parse(r#"{"Enabled": true, "LogPath": "/x"}"#).unwrap();
        assert_eq!(flag(&j, "Enabled"), Some(true));
        assert_eq!(
            flag(&parse("Enabled=false").unwrap(), "Enabled"),
            Some(false)
        );
        assert!(parse("Type").is_err());
        assert!(parse("A={B=c").is_err());
        assert!(parse("A=b}").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,64}") {
            let _ = parse(&s);
        }
    }
}
