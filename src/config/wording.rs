//! What the TOML deserializer says, said for people: an unknown key gets the key it
//! was probably meant to be, a wrong type names the kind of value wanted ("a whole
//! number", not `i64`), and a port past 65535 is called that. Pure: text in, text out.

/// A deserializer's `message`, reworded where it has a better way to say it.
pub fn reworded(message: &str) -> String {
    if let Some(m) = unknown_key(message) {
        return m;
    }
    if let Some(m) = wrong_type(message) {
        return m;
    }
    message.to_string()
}

/// `unknown field `conect_timeout`, expected one of `name`, ...` ->
/// "unknown key `conect_timeout`: did you mean `connect_timeout`?".
fn unknown_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let valid: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    match closest(key, &valid) {
        Some(best) => Some(format!("unknown key `{key}`: did you mean `{best}`?")),
        None if valid.is_empty() => Some(format!("unknown key `{key}`: this table takes none")),
        None => Some(format!(
            "unknown key `{key}`; this table takes `{}`",
            valid.join("`, `")
        )),
    }
}

/// The valid key most like `key`, when one is like it at all.
fn closest<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    valid
        .iter()
        .map(|v| (strsim::damerau_levenshtein(&key, v), *v))
        // A typo or two, or the right words in another order or tense.
        .filter(|&(d, v)| d <= 2 + v.len() / 6 || strsim::jaro_winkler(&key, v) >= 0.9)
        .min_by_key(|&(d, _)| d)
        .map(|(_, v)| v)
}

/// `invalid type: string "two", expected i64` -> "expected a whole number, got the
/// string "two"".
fn wrong_type(message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid type: ")?;
    let (got, wanted) = rest.rsplit_once(", expected ")?;
    let wanted = match wanted.trim() {
        "i64" | "u64" | "i32" | "u32" | "u16" | "u8" | "usize" | "isize" => "a whole number",
        "f64" | "f32" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "a list, like [\"a\", \"b\"]",
        other => other,
    };
    let got = match got.split_once(' ') {
        Some((kind, value)) => format!("the {kind} {value}"),
        None => got.to_string(),
    };
    Some(format!("expected {wanted}, got {got}"))
}

/// When `text` is `host:port` with a port past 65535, says so.
pub fn port_out_of_range(text: &str) -> Option<String> {
    let (_, port) = text.rsplit_once(':')?;
    let n: u64 = port.parse().ok()?;
    (n > u64::from(u16::MAX))
        .then(|| format!("{text:?}: port {n} is out of range (ports are 1 to 65535)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_gets_the_one_it_was_meant_to_be() {
        let m = "unknown field `conect_timeout`, expected one of `name`, `connect_timeout`, `idle_timeout`, `retries`";
        assert_eq!(
            reworded(m),
            "unknown key `conect_timeout`: did you mean `connect_timeout`?"
        );
        let m = "unknown field `retrys`, expected one of `name`, `connect_timeout`, `retries`";
        assert_eq!(reworded(m), "unknown key `retrys`: did you mean `retries`?");
        let m = "unknown field `chek`, expected `check` or `interval`";
        assert_eq!(reworded(m), "unknown key `chek`: did you mean `check`?");
        // Nothing like it: the keys there are listed.
        let m = "unknown field `zzzz`, expected one of `name`, `listen`";
        assert_eq!(
            reworded(m),
            "unknown key `zzzz`; this table takes `name`, `listen`"
        );
    }

    #[test]
    fn a_wrong_type_names_the_kind_of_value_wanted() {
        assert_eq!(
            reworded("invalid type: string \"two\", expected i64"),
            "expected a whole number, got the string \"two\""
        );
        assert_eq!(
            reworded("invalid type: integer `1`, expected a boolean"),
            "expected true or false, got the integer `1`"
        );
        assert_eq!(reworded("something else"), "something else");
    }

    #[test]
    fn a_port_past_65535_is_called_that() {
        assert_eq!(
            port_out_of_range("127.0.0.1:80800").unwrap(),
            "\"127.0.0.1:80800\": port 80800 is out of range (ports are 1 to 65535)"
        );
        assert_eq!(port_out_of_range("[::1]:65535"), None);
        assert_eq!(port_out_of_range("host:http"), None);
    }
}
