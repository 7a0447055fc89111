//! A tiny protobuf wire-format editor for hand-built test encodings: parse a message into its
//! fields, change them, write them back. Test-only, so it panics on bad input.

/// One field value, by wire type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Varint(u64),
    Fixed64(u64),
    Len(Vec<u8>),
    Fixed32(u32),
}

/// One field occurrence: its number and value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Field {
    pub(crate) number: u32,
    pub(crate) value: Value,
}

impl Field {
    pub(crate) fn new(number: u32, value: Value) -> Field {
        Field { number, value }
    }
}

fn varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
    }
    panic!("varint too long");
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take<const N: usize>(bytes: &[u8], pos: &mut usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[*pos..*pos + N]);
    *pos += N;
    out
}

/// The fields of a message, in wire order.
pub(crate) fn fields(bytes: &[u8]) -> Vec<Field> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let key = varint(bytes, &mut pos);
        let value = match key & 7 {
            0 => Value::Varint(varint(bytes, &mut pos)),
            1 => Value::Fixed64(u64::from_le_bytes(take(bytes, &mut pos))),
            2 => {
                let len = varint(bytes, &mut pos) as usize;
                pos += len;
                Value::Len(bytes[pos - len..pos].to_vec())
            }
            5 => Value::Fixed32(u32::from_le_bytes(take(bytes, &mut pos))),
            other => panic!("wire type {other}"),
        };
        out.push(Field::new((key >> 3) as u32, value));
    }
    out
}

/// The offsets at which a message's top-level fields start, and its length.
pub(crate) fn boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = vec![0];
    for field in fields(bytes) {
        let len = write(&[field]).len();
        offsets.push(offsets[offsets.len() - 1] + len);
    }
    offsets
}

/// Encodes fields in the order given.
pub(crate) fn write(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        let wire_type = match field.value {
            Value::Varint(_) => 0,
            Value::Fixed64(_) => 1,
            Value::Len(_) => 2,
            Value::Fixed32(_) => 5,
        };
        put_varint(&mut out, u64::from(field.number) << 3 | wire_type);
        match &field.value {
            Value::Varint(v) => put_varint(&mut out, *v),
            Value::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Len(bytes) => {
                put_varint(&mut out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
            Value::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
    out
}

/// Applies `change` to the fields of every message at `path` (field numbers of embedded
/// messages from the top; empty for the top level) and re-encodes.
pub(crate) fn edit(bytes: &[u8], path: &[u32], mut change: impl FnMut(&mut Vec<Field>)) -> Vec<u8> {
    edit_with(bytes, path, &mut change)
}

fn edit_with(bytes: &[u8], path: &[u32], change: &mut dyn FnMut(&mut Vec<Field>)) -> Vec<u8> {
    let mut fields = fields(bytes);
    match path.split_first() {
        None => change(&mut fields),
        Some((number, rest)) => {
            for field in fields.iter_mut().filter(|f| f.number == *number) {
                if let Value::Len(inner) = &field.value {
                    field.value = Value::Len(edit_with(inner, rest, change));
                }
            }
        }
    }
    write(&fields)
}
