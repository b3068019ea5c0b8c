//! Content templates: the subset of Python's `str.format` that zc.lockfile's
//! `content_template` uses in practice.

use std::fmt::Write as _;

/// A parsed content template such as `{pid};{hostname}`.
///
/// Fields are `{name}`; `{{` and `}}` stand for literal braces. Format specs and
/// conversions (`{pid:>5}`, `{pid!r}`) and positional fields (`{}`, `{0}`) are
/// rejected rather than half-supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

/// Why a content template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template names a field that is not known.
    #[error("unknown field {{{field}}} in content template {template:?} (known: {known})")]
    UnknownField {
        /// The whole template.
        template: String,
        /// The text between the braces.
        field: String,
        /// The known fields, comma separated, each in braces.
        known: String,
    },
    /// A `{` without its `}`, or a `}` that closes nothing.
    #[error(
        "single '{brace}' at byte {offset} of content template {template:?} (write '{brace}{brace}' for a literal brace)"
    )]
    UnmatchedBrace {
        /// The whole template.
        template: String,
        /// The brace that stands alone.
        brace: char,
        /// Its byte offset in the template.
        offset: usize,
    },
}

impl ContentTemplate {
    /// Parses `template`, accepting only the fields named in `known`.
    pub fn parse(template: &str, known: &[&str]) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = template.char_indices().peekable();
        while let Some((offset, c)) = chars.next() {
            match c {
                '{' if chars.next_if(|&(_, c)| c == '{').is_some() => text.push('{'),
                '}' if chars.next_if(|&(_, c)| c == '}').is_some() => text.push('}'),
                '{' => {
                    let start = offset + 1;
                    let Some(end) = template[start..].find(['}', '{']).map(|i| start + i) else {
                        return Err(unmatched(template, '{', offset));
                    };
                    if template.as_bytes()[end] == b'{' {
                        return Err(unmatched(template, '{', offset));
                    }
                    let field = &template[start..end];
                    if !known.contains(&field) {
                        return Err(TemplateError::UnknownField {
                            template: template.to_owned(),
                            field: field.to_owned(),
                            known: known
                                .iter()
                                .map(|k| format!("{{{k}}}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(field.to_owned()));
                    while chars.next_if(|&(i, _)| i <= end).is_some() {}
                }
                '}' => return Err(unmatched(template, '}', offset)),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts })
    }

    /// Whether the template uses the field `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Field(f) if f == name))
    }

    /// Renders the template, asking `value` for each field it uses.
    pub fn render(&self, mut value: impl FnMut(&str, &mut String)) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(name) => value(name, &mut out),
            }
        }
        out
    }
}

fn unmatched(template: &str, brace: char, offset: usize) -> TemplateError {
    TemplateError::UnmatchedBrace {
        template: template.to_owned(),
        brace,
        offset,
    }
}

/// Writes a number without going through a temporary string.
pub(crate) fn push_display(out: &mut String, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["pid", "hostname"];

    fn render(template: &str) -> Result<String, TemplateError> {
        let parsed = ContentTemplate::parse(template, KNOWN)?;
        Ok(parsed
            .render(|name, out| out.push_str(if name == "pid" { "123" } else { "myhostname" })))
    }

    #[test]
    fn renders_like_str_format() {
        assert_eq!(render("{pid}").unwrap(), "123");
        assert_eq!(render("{pid}/{hostname}").unwrap(), "123/myhostname");
        assert_eq!(render("{pid};{hostname}").unwrap(), "123;myhostname");
        assert_eq!(render("").unwrap(), "");
        assert_eq!(render("plain").unwrap(), "plain");
        assert_eq!(render("{{pid}} {pid}}}").unwrap(), "{pid} 123}");
        assert_eq!(render("é{pid}ü").unwrap(), "é123ü");
    }

    #[test]
    fn rejects_unknown_fields_and_specs() {
        for bad in ["{foo}", "{}", "{0}", "{pid:>5}", "{pid!r}", "{ pid}"] {
            assert!(
                matches!(render(bad), Err(TemplateError::UnknownField { .. })),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn rejects_single_braces() {
        for (bad, brace, offset) in [
            ("{pid", '{', 0),
            ("a}", '}', 1),
            ("{{{", '{', 2),
            ("{a{pid}}", '{', 0),
        ] {
            assert_eq!(
                render(bad),
                Err(TemplateError::UnmatchedBrace {
                    template: bad.into(),
                    brace,
                    offset
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_names_the_template_and_the_field() {
        let message = render("{pid}-{foo}").unwrap_err().to_string();
        assert!(
            message.contains("{foo}") && message.contains("\"{pid}-{foo}\""),
            "{message}"
        );
    }

    #[test]
    fn knows_which_fields_it_uses() {
        let t = ContentTemplate::parse("{pid}", KNOWN).unwrap();
        assert!(t.uses("pid") && !t.uses("hostname"));
    }
}
