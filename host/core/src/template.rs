//! Content templates: the subset of Python's `str.format` that zc.lockfile's
//! `content_template` uses in practice: `{name}` fields, and `{{` and `}}` for
//! literal braces. Format specs and conversions (`{pid:>5}`, `{pid!r}`) and
//! positional fields (`{}`, `{0}`) are rejected rather than half-supported.
//!
//! Templates come from plugins, so both the template and what it renders to
//! are bounded by [`MAX_RECORD`]: a record is one short line that every reader
//! reads whole with one read of that size.

/// The most bytes a holder record may take, with its leading space and its
/// newline: readers (`read_content`, `inspect`, a `Locked` error) read exactly
/// this much. Templates are held to the same size.
pub const MAX_RECORD: usize = 1024;

/// How much of a refused template an error quotes: enough to recognise it,
/// never the whole of a hostile one.
const QUOTED: usize = 64;

/// Why a content template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template names a field that is not known.
    #[error(
        "unknown field {} in content template {} (known: {known})",
        Field(field),
        Quoted(template)
    )]
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
        "single '{brace}' at byte {offset} of content template {} (write '{brace}{brace}' for a literal brace)",
        Quoted(template)
    )]
    UnmatchedBrace {
        /// The whole template.
        template: String,
        /// The brace that stands alone.
        brace: char,
        /// Its byte offset in the template.
        offset: usize,
    },
    /// The template, or the record it renders to, is longer than
    /// [`MAX_RECORD`] bytes.
    #[error(
        "content template {} is too long: {len} bytes {what}, the most is {MAX_RECORD} (keep lock records to one short line)",
        Quoted(template)
    )]
    TooLong {
        /// The whole template.
        template: String,
        /// `"as written"` or `"once rendered"`.
        what: &'static str,
        /// Its length, or its record's, in bytes.
        len: usize,
    },
    /// The rendered content has a line break in it: a record is one line,
    /// and readers stop at the first newline.
    #[error(
        "content template {} renders to more than one line (a field value holds a newline); lock records are one line",
        Quoted(template)
    )]
    MultiLine {
        /// The whole template.
        template: String,
    },
}

impl TemplateError {
    /// Refuses a template longer than [`MAX_RECORD`] before rendering it.
    pub(crate) fn check_len(template: &str) -> Result<(), Self> {
        if template.len() > MAX_RECORD {
            return Err(Self::TooLong {
                template: template.to_owned(),
                what: "as written",
                len: template.len(),
            });
        }
        Ok(())
    }

    /// Refuses a rendered record (`" " + content + "\n"`) that is too long or
    /// holds a line break.
    pub(crate) fn check_record(template: &str, record: &str) -> Result<(), Self> {
        Self::check_content(template, &record[1..record.len() - 1])
    }

    /// The record rules, on a holder's content (the record without
    /// zc.lockfile's leading space and newline): one line, and at most
    /// [`MAX_RECORD`] bytes with the space and the newline. `template` names
    /// what it was rendered from in the error. For backends that store the
    /// content elsewhere than in a file, so every backend holds records to
    /// the same rules.
    pub fn check_content(template: &str, content: &str) -> Result<(), Self> {
        let len = content.len() + 2;
        if len > MAX_RECORD {
            return Err(Self::TooLong {
                template: template.to_owned(),
                what: "once rendered",
                len,
            });
        }
        if content.contains(['\n', '\r']) {
            return Err(Self::MultiLine {
                template: template.to_owned(),
            });
        }
        Ok(())
    }
}

/// A template quoted in an error: in full when short, else its start.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match start(self.0) {
            Some(start) => write!(f, "{start:?}... ({} bytes)", self.0.len()),
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// A field name in an error, in braces: in full when short, else its start.
struct Field<'a>(&'a str);

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match start(self.0) {
            Some(start) => write!(f, "{{{start}...}}"),
            None => write!(f, "{{{}}}", self.0),
        }
    }
}

/// The first [`QUOTED`] bytes of `text` (at a character boundary), or `None`
/// when it is no longer than that.
fn start(text: &str) -> Option<&str> {
    if text.len() <= QUOTED {
        return None;
    }
    let end = (0..=QUOTED).rev().find(|&i| text.is_char_boundary(i));
    Some(&text[..end.unwrap_or(0)])
}

/// Renders `template` onto `out` in one pass, asking `value` to append each
/// field. `known` lists the fields allowed; on any error `out` must be thrown
/// away. Lock paths render a template on every try, so this allocates nothing
/// but what it appends.
pub(crate) fn render<E>(
    template: &str,
    known: &[&str],
    out: &mut String,
    mut value: impl FnMut(&str, &mut String) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<TemplateError>,
{
    let mut rest = template;
    while let Some(brace) = rest.find(['{', '}']) {
        out.push_str(&rest[..brace]);
        let offset = template.len() - rest.len() + brace;
        let after = &rest[brace + 1..];
        if rest.as_bytes()[brace] == b'}' {
            match after.strip_prefix('}') {
                Some(next) => (out.push('}'), rest = next),
                None => return Err(unmatched(template, '}', offset).into()),
            };
            continue;
        }
        if let Some(next) = after.strip_prefix('{') {
            out.push('{');
            rest = next;
            continue;
        }
        let Some(end) = after
            .find(['}', '{'])
            .filter(|&end| after.as_bytes()[end] == b'}')
        else {
            return Err(unmatched(template, '{', offset).into());
        };
        let field = &after[..end];
        if !known.contains(&field) {
            return Err(TemplateError::UnknownField {
                template: template.to_owned(),
                field: field.to_owned(),
                known: known
                    .iter()
                    .map(|k| format!("{{{k}}}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .into());
        }
        value(field, out)?;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

fn unmatched(template: &str, brace: char, offset: usize) -> TemplateError {
    TemplateError::UnmatchedBrace {
        template: template.to_owned(),
        brace,
        offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["pid", "hostname"];

    fn render_test(template: &str) -> Result<String, TemplateError> {
        let mut out = String::new();
        render(template, KNOWN, &mut out, |name, out| {
            out.push_str(if name == "pid" { "123" } else { "myhostname" });
            Ok::<_, TemplateError>(())
        })?;
        Ok(out)
    }

    #[test]
    fn renders_like_str_format() {
        assert_eq!(render_test("{pid}").unwrap(), "123");
        assert_eq!(render_test("{pid}/{hostname}").unwrap(), "123/myhostname");
        assert_eq!(render_test("{pid};{hostname}").unwrap(), "123;myhostname");
        assert_eq!(render_test("").unwrap(), "");
        assert_eq!(render_test("plain").unwrap(), "plain");
        assert_eq!(render_test("{{pid}} {pid}}}").unwrap(), "{pid} 123}");
        assert_eq!(render_test("é{pid}ü").unwrap(), "é123ü");
    }

    #[test]
    fn rejects_unknown_fields_and_specs() {
        for bad in ["{foo}", "{}", "{0}", "{pid:>5}", "{pid!r}", "{ pid}"] {
            assert!(
                matches!(render_test(bad), Err(TemplateError::UnknownField { .. })),
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
                render_test(bad),
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
        let message = render_test("{pid}-{foo}").unwrap_err().to_string();
        assert!(
            message.contains("{foo}") && message.contains("\"{pid}-{foo}\""),
            "{message}"
        );
    }

    #[test]
    fn asks_only_for_the_fields_it_uses() {
        let mut asked = Vec::new();
        let mut out = String::new();
        render("{pid}", KNOWN, &mut out, |name, _| {
            asked.push(name.to_owned());
            Ok::<_, TemplateError>(())
        })
        .unwrap();
        assert_eq!(asked, ["pid"]);
    }
}
