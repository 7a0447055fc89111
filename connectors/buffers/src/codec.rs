//! [`Records`] to and from the payload of a disk buffer frame.
//!
//! postcard (1.x) rather than bincode: its wire format is documented and stable since 1.0,
//! it is compact (varints, no field names) and actively maintained, while bincode's
//! development has stopped. The frame around a payload carries its length and checksum, so
//! the codec needs no framing of its own.

use sluice_model::records::Records;

use crate::BufferError;

/// The layout of the records in a disk buffer, written to its `format` file. postcard has no
/// field names, so any change to a row type changes the layout: bump this with it.
/// (2: rollup rows carry their window width; 3: logs and app rollup rows carry their app's
/// names, SPEC §11.)
pub const FORMAT: &str = "sluice-records 3";

/// Appends the encoding of `records` to `out`.
pub fn encode(records: &Records, out: &mut Vec<u8>) -> Result<(), BufferError> {
    let taken = std::mem::take(out);
    *out = postcard::to_extend(records, taken).map_err(BufferError::Encode)?;
    Ok(())
}

/// Decodes one payload written by [`encode`].
pub fn decode(payload: &[u8]) -> Result<Records, postcard::Error> {
    postcard::from_bytes(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_model::event::{Header, LogMessage, MessageType, Tags};
    use sluice_model::{Event, Payload, Str};

    #[test]
    fn a_log_with_invalid_utf8_survives_a_round_trip() {
        let records = Records::Logs(vec![Event {
            timestamp: 7,
            header: Header {
                origin: Str::from("rep"),
                tags: Tags::from_pairs(vec![(Str::from("k"), Str::from("v"))]),
                ..Header::default()
            },
            payload: Payload::Log(LogMessage {
                names: None,
                message: Bytes::from_static(b"boom \xff done"),
                message_type: MessageType::Err,
                timestamp: 8,
                app_id: Str::from("app"),
                source_type: Str::from("APP/PROC/WEB"),
                source_instance: Str::from("0"),
            }),
        }]);
        let mut bytes = vec![0xAA];
        encode(&records, &mut bytes).expect("encodes");
        assert_eq!(bytes[0], 0xAA, "encode appends");
        assert_eq!(decode(&bytes[1..]).expect("decodes"), records);
        assert!(decode(&bytes[1..bytes.len() - 1]).is_err());
    }
}
