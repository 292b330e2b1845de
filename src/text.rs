//! Text that crosses a trust boundary: provider answers copied into conditions, Events and
//! mail are cut to a bound and scrubbed of the secrets they may echo.

use crate::providers::Token;

/// Longest provider text kept in a condition message, in characters.
pub const MAX_PROVIDER_TEXT: usize = 300;
/// Longest condition message or Event note, in bytes (the API server accepts 32 KiB for a
/// condition message; a status stays small and writable whatever a provider answers).
pub const MAX_MESSAGE: usize = 1024;

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Provider text made safe to show: every secret in `secrets` replaced by `[redacted]`, then
/// cut to [`MAX_PROVIDER_TEXT`] characters.
pub fn scrub(text: &str, secrets: &[&Token]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if !s.expose().is_empty() && out.contains(s.expose()) {
            out = out.replace(s.expose(), "[redacted]");
        }
    }
    if out.chars().count() > MAX_PROVIDER_TEXT {
        out = out.chars().take(MAX_PROVIDER_TEXT).collect::<String>() + "…";
    }
    out
}

/// `s` escaped for HTML element content and quoted attributes.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An error and its causes, outermost first, joined by `: ` (what reqwest and hyper errors hide
/// behind "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_redacts_then_cuts() {
        let t = Token::new("EAAsecret");
        assert_eq!(
            scrub("Malformed access token EAAsecret", &[&t]),
            "Malformed access token [redacted]"
        );
        let huge = format!("{}EAAsecret", "x".repeat(400_000));
        let out = scrub(&huge, &[&t]);
        assert_eq!(out.chars().count(), MAX_PROVIDER_TEXT + 1);
        assert!(!out.contains("EAAsecret"));
    }

    #[test]
    fn escape_html_covers_content_and_attributes() {
        assert_eq!(
            escape_html(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
