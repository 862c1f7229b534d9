//! Topic rules.
//!
//! A topic is 1–255 bytes of UTF-8 made of non-empty tokens separated by `.`.
//! No character with the Unicode `White_Space` property and no control
//! character may appear. `*` (one token) and `>` (the rest, last token only)
//! are wildcard tokens and may only stand as whole tokens; version 1 brokers
//! refuse them in `PUB` and do not support them in `SUB` yet. A topic whose
//! first character is `$` is reserved for the server.
//!
//! A queue group name is a single literal token: 1–255 bytes, no `.`, no `*`
//! or `>`, and no white-space or control character.

/// Longest topic, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// Longest queue group name, in bytes (its length travels in one byte).
pub const MAX_QUEUE_GROUP_LEN: usize = 255;

/// What a syntactically valid topic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Names exactly one topic; may be published to.
    Literal,
    /// Contains a `*` or `>` token; only meaningful in a subscription.
    Wildcard,
}

/// How a topic breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic is empty.
    #[error("topic is empty")]
    Empty,
    /// The topic is longer than 255 bytes.
    #[error("topic is {0} bytes, more than 255")]
    TooLong(usize),
    /// Two dots in a row, or a dot at either end.
    #[error("topic has an empty token")]
    EmptyToken,
    /// A white-space or control character.
    #[error("topic contains the forbidden character {0:?}")]
    ForbiddenChar(char),
    /// `*` or `>` inside a longer token, such as `a*b`.
    #[error("wildcards must stand as whole tokens")]
    PartialWildcard,
    /// `>` followed by more tokens.
    #[error("'>' may only be the last token")]
    TailNotLast,
}

/// How a queue group name breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueGroupError {
    /// The name is empty.
    #[error("queue group is empty")]
    Empty,
    /// The name is longer than 255 bytes.
    #[error("queue group is {0} bytes, more than 255")]
    TooLong(usize),
    /// A `.`, `*`, `>`, white-space or control character: the name must be
    /// one literal token.
    #[error("queue group contains the forbidden character {0:?}")]
    ForbiddenChar(char),
}

/// Checks `topic` against the rules and says whether it is a wildcard.
pub fn validate(topic: &str) -> Result<TopicKind, TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(topic.len()));
    }
    if let Some(c) = forbidden_char(topic) {
        return Err(TopicError::ForbiddenChar(c));
    }
    let mut kind = TopicKind::Literal;
    let mut tokens = topic.split('.').peekable();
    while let Some(token) = tokens.next() {
        match token {
            "" => return Err(TopicError::EmptyToken),
            "*" => kind = TopicKind::Wildcard,
            ">" if tokens.peek().is_some() => return Err(TopicError::TailNotLast),
            ">" => kind = TopicKind::Wildcard,
            t if t.contains(['*', '>']) => return Err(TopicError::PartialWildcard),
            _ => {}
        }
    }
    Ok(kind)
}

/// Whether the topic belongs to the server's reserved `$` namespace.
pub fn is_reserved(topic: &str) -> bool {
    topic.starts_with('$')
}

/// Checks a queue group name: one literal token of 1–255 bytes.
pub fn validate_queue_group(name: &str) -> Result<(), QueueGroupError> {
    if name.is_empty() {
        return Err(QueueGroupError::Empty);
    }
    if name.len() > MAX_QUEUE_GROUP_LEN {
        return Err(QueueGroupError::TooLong(name.len()));
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '.' | '*' | '>')) {
        return Err(QueueGroupError::ForbiddenChar(c));
    }
    match forbidden_char(name) {
        Some(c) => Err(QueueGroupError::ForbiddenChar(c)),
        None => Ok(()),
    }
}

/// The first white-space or control character in `s`, if any.
fn forbidden_char(s: &str) -> Option<char> {
    if s.is_ascii() {
        // ASCII white space and control characters are exactly these bytes.
        return s.bytes().find(|&b| b <= b' ' || b == 0x7f).map(char::from);
    }
    s.chars().find(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_pass() {
        for t in ["a", "a.b.c", "orders.eu-west.42", "é.ü", "_INBOX.x1", "$SYS.x"] {
            assert_eq!(validate(t), Ok(TopicKind::Literal), "{t}");
        }
    }

    #[test]
    fn wildcards_are_recognised() {
        for t in ["*", "a.*", "a.*.c", ">", "a.>", "*.>"] {
            assert_eq!(validate(t), Ok(TopicKind::Wildcard), "{t}");
        }
    }

    #[test]
    fn bad_topics_fail() {
        let long = "a".repeat(256);
        let cases = [
            ("", TopicError::Empty),
            (long.as_str(), TopicError::TooLong(256)),
            (".a", TopicError::EmptyToken),
            ("a.", TopicError::EmptyToken),
            ("a..b", TopicError::EmptyToken),
            ("a b", TopicError::ForbiddenChar(' ')),
            ("a\tb", TopicError::ForbiddenChar('\t')),
            ("a\u{7f}", TopicError::ForbiddenChar('\u{7f}')),
            ("é\u{a0}x", TopicError::ForbiddenChar('\u{a0}')),
            ("é\u{2003}x", TopicError::ForbiddenChar('\u{2003}')),
            ("é\u{85}x", TopicError::ForbiddenChar('\u{85}')),
            ("a*b", TopicError::PartialWildcard),
            ("a.b>", TopicError::PartialWildcard),
            ("a.>.b", TopicError::TailNotLast),
        ];
        for (topic, want) in cases {
            assert_eq!(validate(topic), Err(want), "{topic:?}");
        }
    }

    #[test]
    fn exactly_255_bytes_pass() {
        assert_eq!(validate(&"a".repeat(255)), Ok(TopicKind::Literal));
    }

    #[test]
    fn queue_groups_are_one_literal_token() {
        for name in ["workers", "q", "eu-west_1", "é", "$SYS", &"a".repeat(255)] {
            assert_eq!(validate_queue_group(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_queue_groups_fail() {
        let long = "a".repeat(256);
        let cases = [
            ("", QueueGroupError::Empty),
            (long.as_str(), QueueGroupError::TooLong(256)),
            ("a.b", QueueGroupError::ForbiddenChar('.')),
            ("*", QueueGroupError::ForbiddenChar('*')),
            (">", QueueGroupError::ForbiddenChar('>')),
            ("w*", QueueGroupError::ForbiddenChar('*')),
            ("a b", QueueGroupError::ForbiddenChar(' ')),
            ("a\0", QueueGroupError::ForbiddenChar('\0')),
            ("é\u{2003}", QueueGroupError::ForbiddenChar('\u{2003}')),
        ];
        for (name, want) in cases {
            assert_eq!(validate_queue_group(name), Err(want), "{name:?}");
        }
    }
}
