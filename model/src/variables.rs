//! References to stage variables, `${stageVariables.NAME}`, in the text of
//! a document's fields: found, checked and filled in. Plain string work,
//! below the documents (`docs` checks fields with it, `stages` fills them).

/// What a reference to a stage variable starts with.
pub const REFERENCE: &str = "${stageVariables.";

/// The names `text` refers to, or the error of a reference left open.
pub fn references(text: &str) -> std::result::Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(REFERENCE) {
        let after = &rest[at + REFERENCE.len()..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{REFERENCE}… is not closed with }}"))?;
        names.push(&after[..end]);
        rest = &after[end + 1..];
    }
    Ok(names)
}

/// `text` with each reference replaced by a plain placeholder, for the
/// checks of a field whose value a stage completes.
pub fn with_placeholders(text: &str) -> std::borrow::Cow<'_, str> {
    if !refers_to_variables(text) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(REFERENCE) {
        out.push_str(&rest[..at]);
        out.push('v');
        let after = &rest[at + REFERENCE.len()..];
        rest = after.find('}').map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    out.into()
}

/// Whether `text` refers to a stage variable.
pub fn refers_to_variables(text: &str) -> bool {
    text.contains(REFERENCE)
}
