//! The AWS CLI's shorthand syntax for structure parameters (`Key=Value,Key={K=V}`), and JSON,
//! so runbooks written for `aws ec2 ...` carry over.

use serde_json::{Map, Value};

/// The deepest nesting of `{...}` shorthand takes: AWS's structures nest two or three deep, and
/// every level is a call, so nesting as deep as a command line or request allows would
/// overflow the stack and abort the process (serde_json stops JSON at 128 for the same reason).
pub const MAX_DEPTH: usize = 32;

/// Parses one parameter value: JSON if it starts with `{` or `[`, else shorthand.
///
/// # Errors
/// A message saying where the text stops making sense, or that it nests deeper than
/// `MAX_DEPTH`.
pub fn parse(s: &str) -> Result<Value, String> {
    let t = s.trim();
    if t.starts_with('{') || t.starts_with('[') {
        return serde_json::from_str(t).map_err(|e| format!("invalid JSON `{s}`: {e}"));
    }
    let mut p = Parser {
        s: t.as_bytes(),
        i: 0,
    };
    let v = p.map(0)?;
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
    /// The map at nesting `depth` (0 for the top level).
    fn map(&mut self, depth: usize) -> Result<Value, String> {
        let nested = depth > 0;
        let mut m = Map::new();
        loop {
            let key = self.until(b"=")?;
            if self.s.get(self.i) != Some(&b'=') {
                return Err(format!("expected `=` after `{key}`"));
            }
            self.i += 1;
            let value = if self.s.get(self.i) == Some(&b'{') {
                if depth + 1 > MAX_DEPTH {
                    return Err(format!(
                        "`{key}={{...` nests deeper than {MAX_DEPTH} levels of `{{...}}`"
                    ));
                }
                self.i += 1;
                let v = self.map(depth + 1)?;
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

        /// Nested structures, as deep as the limit, parse; deeper ones are refused.
        #[test]
        fn nesting_parses_to_the_limit_and_is_refused_past_it(depth in 1usize..=MAX_DEPTH + 8) {
            let s = format!("{}A=b{}", "K={".repeat(depth), "}".repeat(depth));
            let r = parse(&s);
            proptest::prop_assert_eq!(r.is_ok(), depth <= MAX_DEPTH, "{:?}", r);
        }
    }

    /// The case found by reading the parser, which recursed once per `{`: `A={A={...` as long
    /// as a command-line argument allows (128 KiB) overflowed an 8 MiB stack, and one as long
    /// as an admin-socket request allows (64 KiB) came within a few KiB of it; a stack overflow
    /// aborts the process (the daemon, for a request on its socket). Here a request's worth on
    /// a 256 KiB stack, where it overflowed at once: refused, saying why.
    #[test]
    fn nesting_as_deep_as_a_request_is_refused_not_a_stack_overflow() {
        let deep = "A={".repeat(crate::runtime::admin_socket::MAX_REQUEST / 3);
        let r = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || parse(&deep))
            .expect("thread")
            .join()
            .expect("no panic");
        let e = r.expect_err("refused");
        assert!(e.contains("nests deeper than 32 levels"), "{e}");
    }
}
