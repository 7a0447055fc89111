//! `${VAR}` and `${VAR:-default}` in config values, so secrets stay out of config files.
//!
//! The substitution happens in the parsed document, one string value at a time, never in the
//! TOML text: a variable whose value holds `"`, a newline or `]` stays inside its string
//! (it cannot add a key or a sink), and `${VAR}` in a comment or a key is left alone. Defaults
//! nest (`${A:-${HOME}}`, at most [`MAX_DEPTH`] deep). `$$` is a literal `$`; a `$` not
//! followed by `{` or `$` is kept as it is.

use toml_edit::{DocumentMut, Item, Table, Value};

/// How deeply `${A:-${B:-...}}` may nest.
pub(crate) const MAX_DEPTH: usize = 8;

/// The config text with every string value interpolated from `env`; an unset variable
/// without a default is a problem naming the key and the variable. All problems are returned
/// together. Text that is not TOML is returned unchanged, for the parser to report.
pub fn interpolate(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let Ok(mut document) = text.parse::<DocumentMut>() else {
        return Ok(text.to_owned());
    };
    let mut problems = Vec::new();
    let mut changed = false;
    walk_table(
        document.as_table_mut(),
        "",
        &env,
        &mut problems,
        &mut changed,
    );
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(if changed {
        document.to_string()
    } else {
        text.to_owned()
    })
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn walk_table(
    table: &mut Table,
    prefix: &str,
    env: Env<'_>,
    problems: &mut Vec<String>,
    changed: &mut bool,
) {
    for (key, item) in table.iter_mut() {
        let path = join(prefix, key.get());
        walk_item(item, &path, env, problems, changed);
    }
}

fn walk_item(
    item: &mut Item,
    path: &str,
    env: Env<'_>,
    problems: &mut Vec<String>,
    changed: &mut bool,
) {
    match item {
        Item::Value(value) => walk_value(value, path, env, problems, changed),
        Item::Table(table) => walk_table(table, path, env, problems, changed),
        Item::ArrayOfTables(tables) => {
            for (i, table) in tables.iter_mut().enumerate() {
                walk_table(table, &format!("{path}[{i}]"), env, problems, changed);
            }
        }
        Item::None => {}
    }
}

fn walk_value(
    value: &mut Value,
    path: &str,
    env: Env<'_>,
    problems: &mut Vec<String>,
    changed: &mut bool,
) {
    match value {
        Value::String(text) if text.value().contains('$') => match expand(text.value(), env) {
            Ok(expanded) => {
                if expanded != *text.value() {
                    let decor = text.decor().clone();
                    let mut replaced = toml_edit::Formatted::new(expanded);
                    *replaced.decor_mut() = decor;
                    *text = replaced;
                    *changed = true;
                }
            }
            Err(found) => problems.extend(found.into_iter().map(|p| format!("{path}: {p}"))),
        },
        Value::Array(array) => {
            for (i, value) in array.iter_mut().enumerate() {
                walk_value(value, &format!("{path}[{i}]"), env, problems, changed);
            }
        }
        Value::InlineTable(table) => {
            for (key, value) in table.iter_mut() {
                let path = join(path, key.get());
                walk_value(value, &path, env, problems, changed);
            }
        }
        _ => {}
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// One string with its variables replaced, or every problem in it.
pub(crate) fn expand(text: &str, env: Env<'_>) -> Result<String, Vec<String>> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        text,
        at: 0,
        env,
        problems: Vec::new(),
    };
    let out = parser.text(0, false);
    if parser.problems.is_empty() {
        Ok(out)
    } else {
        Err(parser.problems)
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    env: Env<'a>,
    problems: Vec<String>,
}

impl Parser<'_> {
    /// Text up to the end, or (`in_default`) up to the `}` that closes the default being read
    /// (left unread).
    fn text(&mut self, depth: usize, in_default: bool) -> String {
        let mut out = String::new();
        while self.at < self.bytes.len() {
            let rest = &self.text[self.at..];
            if in_default && rest.starts_with('}') {
                return out;
            }
            if let Some(after) = rest.strip_prefix("$$") {
                out.push('$');
                self.at = self.text.len() - after.len();
            } else if rest.starts_with("${") {
                self.at += 2;
                out.push_str(&self.variable(depth));
            } else {
                let c = rest.chars().next().unwrap_or_default();
                out.push(c);
                self.at += c.len_utf8();
            }
        }
        out
    }

    /// `NAME}` or `NAME:-default}` after a `${`, `depth` levels deep.
    fn variable(&mut self, depth: usize) -> String {
        let start = self.at;
        let name_len = self.bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        let name = &self.text[start..start + name_len];
        self.at = start + name_len;
        let rest = &self.text[self.at..];
        if name.is_empty() || !(rest.is_empty() || rest.starts_with('}') || rest.starts_with(":-"))
        {
            let shown: String = self.text[start..].chars().take(40).collect();
            self.problems.push(format!(
                "`${{{shown}` is not `${{NAME}}` or `${{NAME:-default}}` (NAME: letters, digits, _; write `$$` for a literal `$`)"
            ));
            self.at = self.bytes.len();
            return String::new();
        }
        let value = (self.env)(name).filter(|v| !v.is_empty());
        let default = if rest.starts_with(":-") {
            self.at += 2;
            if depth + 1 >= MAX_DEPTH {
                self.problems.push(format!(
                    "defaults nest more than {MAX_DEPTH} deep at `${{{name}:-`"
                ));
                self.at = self.bytes.len();
                return String::new();
            }
            // Read (and check) the default even when the variable is set.
            let problems_before = self.problems.len();
            let default = self.text(depth + 1, true);
            if value.is_some() {
                self.problems.truncate(problems_before);
            }
            Some(default)
        } else {
            None
        };
        if !self.text[self.at..].starts_with('}') {
            self.problems
                .push(format!("`${{{name}` has no closing `}}`"));
            self.at = self.bytes.len();
            return String::new();
        }
        self.at += 1;
        match value.or(default) {
            Some(value) => value,
            None => {
                self.problems.push(format!(
                    "environment variable `{name}` is not set (write `${{{name}:-default}}` for a default)"
                ));
                String::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr3t".to_owned()),
            "EMPTY" => Some(String::new()),
            "HOME" => Some("/home/sluice".to_owned()),
            "EVIL" => Some("x\"\n[sinks.evil]\ntype = \"stdout\"\n# ".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn replaces_variables_and_defaults_in_string_values() {
        let text = "a = \"${SECRET}\"\nb = \"${MISSING:-fallback}\"\nc = \"${EMPTY:-x}\"\nd = \"$$5 and $x\"\n";
        assert_eq!(
            interpolate(text, env).expect("valid"),
            "a = \"s3cr3t\"\nb = \"fallback\"\nc = \"x\"\nd = \"$5 and $x\"\n"
        );
    }

    #[test]
    fn defaults_nest() {
        let expand = |text| expand(text, &env);
        assert_eq!(
            expand("${A:-${HOME}}/data").expect("valid"),
            "/home/sluice/data"
        );
        assert_eq!(expand("${A:-${B:-deep}}").expect("valid"), "deep");
        assert_eq!(expand("${SECRET:-${UNSET}}").expect("valid"), "s3cr3t");
        assert_eq!(expand("${A:-}").expect("valid"), "");
        let problems = expand("${A:-${B}}").expect_err("B is not set");
        assert!(problems[0].contains("`B` is not set"), "{problems:?}");
        let deep = format!("{}x{}", "${A:-".repeat(20), "}".repeat(20));
        let problems = expand(&deep).expect_err("too deep");
        assert!(problems[0].contains("nest more than"), "{problems:?}");
    }

    #[test]
    fn a_value_cannot_add_toml_and_comments_are_left_alone() {
        let text = "# ${NOT_SET} in a comment\n[sinks.db]\ntype = \"sqlite\" # ${ALSO_NOT}\npath = \"${EVIL}\"\n";
        let out = interpolate(text, env).expect("the comments are not interpolated");
        let parsed: toml::Table = toml::from_str(&out).expect("still TOML");
        let sinks = parsed["sinks"].as_table().expect("sinks");
        assert_eq!(sinks.len(), 1, "{out}");
        assert_eq!(
            sinks["db"]["path"].as_str(),
            Some("x\"\n[sinks.evil]\ntype = \"stdout\"\n# ")
        );
        assert!(out.starts_with("# ${NOT_SET} in a comment\n"), "{out}");
    }

    #[test]
    fn reports_every_unset_variable_with_its_key() {
        let problems = interpolate(
            "a = \"${ONE}\"\n[t]\nb = [\"${TWO}\", \"${bad name}\"]\nc = { d = \"${THREE\" }\n",
            env,
        )
        .expect_err("unset variables");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("a: environment variable `ONE`"));
        assert!(problems[1].starts_with("t.b[0]: environment variable `TWO`"));
        assert!(problems[2].starts_with("t.b[1]: `${bad name}` is not"));
        assert!(problems[3].starts_with("t.c.d: `${THREE` has no closing"));
    }
}
