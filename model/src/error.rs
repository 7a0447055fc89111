//! Why a record could not be turned into events.

/// A record that could not be decoded into events. Every variant has a stable
/// [`reason`](DecodeError::reason) used as the label of the `bad records` counters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end in the middle of a field (`field` is its number; 0 inside a field's key).
    #[error("truncated {message}: the bytes end inside field {field}")]
    Truncated { message: &'static str, field: u32 },
    /// A varint longer than 10 bytes, a length past the end, a group, or field number 0.
    #[error("malformed {message}: {detail}")]
    Malformed {
        message: &'static str,
        detail: &'static str,
    },
    /// A known field arrived with a wire type its schema does not allow.
    #[error("field {message}.{field} has wire type {wire_type}, expected {expected}")]
    WireType {
        message: &'static str,
        field: &'static str,
        wire_type: u8,
        expected: u8,
    },
    /// A proto2 `required` field is absent.
    #[error("required field {message}.{field} is missing")]
    MissingField {
        message: &'static str,
        field: &'static str,
    },
    /// A string field holds bytes that are not UTF-8.
    #[error("field {message}.{field} is not valid UTF-8")]
    InvalidUtf8 {
        message: &'static str,
        field: &'static str,
    },
    /// An enum field holds a value its schema does not define.
    #[error("field {message}.{field} has unknown enum value {value}")]
    UnknownEnum {
        message: &'static str,
        field: &'static str,
        value: i64,
    },
    /// `Envelope.eventType` names a type whose payload the envelope does not carry.
    #[error("envelope of type {event_type} carries no {event_type} payload")]
    TypeMismatch { event_type: &'static str },
    /// Valid JSON or protobuf that does not form an envelope (v2 JSON, unmappable values).
    #[error("invalid {message}: {detail}")]
    Invalid {
        message: &'static str,
        detail: String,
    },
}

impl DecodeError {
    /// A short stable label for counters: `truncated`, `malformed`, `wire_type`,
    /// `missing_field`, `invalid_utf8`, `unknown_enum`, `type_mismatch`, `invalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::WireType { .. } => "wire_type",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::UnknownEnum { .. } => "unknown_enum",
            DecodeError::TypeMismatch { .. } => "type_mismatch",
            DecodeError::Invalid { .. } => "invalid",
        }
    }
}

/// Unboxes an error: the hot-path decoder carries errors boxed internally so that its results
/// stay small, and unboxes them at its boundary.
impl From<Box<DecodeError>> for DecodeError {
    fn from(error: Box<DecodeError>) -> Self {
        *error
    }
}
