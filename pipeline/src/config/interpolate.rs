//! `${VAR}` and `${VAR:-default}` in config text, replaced before parsing (as Vector does), so
//! secrets stay out of config files. `$$` is a literal `$`.

/// Replaces every `${VAR}` / `${VAR:-default}` with `env(VAR)`; an unset variable without a
/// default is a problem naming the variable and its line. All problems are returned together.
pub fn interpolate(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    problems.push(format!("line {}: `${{` without a closing `}}`", number + 1));
                    out.push_str(&rest[at..]);
                    rest = "";
                    continue;
                };
                let expression = &body[..end];
                let (name, default) = match expression.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (expression, None),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    problems.push(format!(
                        "line {}: `${{{expression}}}` is not a variable name",
                        number + 1
                    ));
                } else {
                    match env(name).filter(|v| !v.is_empty()).or(default.map(str::to_owned)) {
                        Some(value) => out.push_str(&value),
                        None => problems.push(format!(
                            "line {}: environment variable `{name}` is not set (write `${{{name}:-default}}` for a default)",
                            number + 1
                        )),
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr3t".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_variables_and_defaults() {
        let text = "a = \"${SECRET}\"\nb = \"${MISSING:-fallback}\"\nc = \"${EMPTY:-x}\"\nd = \"$$5 and $x\"\n";
        assert_eq!(
            interpolate(text, env).expect("valid"),
            "a = \"s3cr3t\"\nb = \"fallback\"\nc = \"x\"\nd = \"$5 and $x\"\n"
        );
    }

    #[test]
    fn reports_every_unset_variable_with_its_line() {
        let problems = interpolate("a = \"${ONE}\"\n\nb = \"${TWO}\" ${bad name}\n", env)
            .expect_err("unset variables");
        assert_eq!(problems.len(), 3);
        assert!(problems[0].starts_with("line 1: environment variable `ONE`"));
        assert!(problems[1].starts_with("line 3: environment variable `TWO`"));
        assert!(problems[2].contains("`${bad name}` is not a variable name"));
    }
}
