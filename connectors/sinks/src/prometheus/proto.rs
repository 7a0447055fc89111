//! The remote-write 1.0 messages, written by hand from `prometheus/prompb`: only what this
//! sink sends. Field numbers as in `remote.proto` (`WriteRequest`: 1 `timeseries`; 2 is
//! reserved, 3 `metadata` is not sent) and `types.proto` (`TimeSeries`: 1 `labels`,
//! 2 `samples`; `Label`: 1 `name`, 2 `value`; `Sample`: 1 `value` double, 2 `timestamp`
//! int64 ms). A body is the encoded `WriteRequest` compressed as one Snappy block.

use bytes::Bytes;
use prost::Message;

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, `__name__` among them; samples in time
/// order.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl TimeSeries {
    /// The value of label `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }
}

/// A request body: `request` encoded and compressed as one Snappy block.
pub fn encode(request: &WriteRequest, snappy: &mut snap::raw::Encoder) -> Bytes {
    let encoded = request.encode_to_vec();
    // Compressing fails only past 4 GiB of input, which batch sizes keep far away; the
    // uncompressed message would still be a valid (if refused) body.
    snappy
        .compress_vec(&encoded)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from(encoded))
}

/// A body back into its request (the dead-letter file, tests, receivers).
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("not a Snappy block: {e}"))?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| format!("not a WriteRequest: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_bytes_follow_the_prompb_field_numbers() {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "up")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1000,
                }],
            }],
        };
        let bytes = request.encode_to_vec();
        // WriteRequest.1 (len) { TimeSeries.1 (len) { Label.1 "__name__", Label.2 "up" },
        // TimeSeries.2 (len) { Sample.1 double 1.0, Sample.2 varint 1000 } }
        let mut expected = vec![0x0a, 30, 0x0a, 14, 0x0a, 8];
        expected.extend_from_slice(b"__name__");
        expected.extend_from_slice(&[0x12, 2]);
        expected.extend_from_slice(b"up");
        expected.extend_from_slice(&[0x12, 12, 0x09]);
        expected.extend_from_slice(&1.0f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 0xe8, 0x07]);
        assert_eq!(bytes, expected);

        let body = encode(&request, &mut snap::raw::Encoder::new());
        assert_eq!(decode(&body), Ok(request));
        assert!(decode(b"\xff\xff").is_err());
    }
}
