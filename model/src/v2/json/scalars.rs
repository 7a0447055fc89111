//! proto3 JSON's scalar forms: what the gateway may send for an int64, a double, `bytes`
//! and an enum, each accepted in every form the proto3 JSON mapping allows.

use std::fmt;
use std::marker::PhantomData;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use crate::proto::loggregator::v2 as pb;

/// `null` is the default value, as in proto3 JSON.
pub(super) fn nullable<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A 64-bit integer: a JSON number, or a string holding one (the canonical form).
#[derive(Default)]
pub(super) struct Int<T>(pub(super) T);

impl<'de, T> Deserialize<'de> for Int<T>
where
    T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr + Default,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IntVisitor<T>(PhantomData<T>);
        impl<T> IntVisitor<T>
        where
            T: TryFrom<i64> + TryFrom<u64>,
        {
            fn from_i64<E: de::Error>(v: i64) -> Result<Int<T>, E> {
                T::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("integer {v} is out of range")))
            }
        }
        impl<T> Visitor<'_> for IntVisitor<T>
        where
            T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr + Default,
        {
            type Value = Int<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer, as a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int<T>, E> {
                Self::from_i64(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int<T>, E> {
                T::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("integer {v} is out of range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int<T>, E> {
                // `1e3` is a valid proto3 JSON integer; a fraction is not.
                if v.fract() == 0.0 && v.abs() < 9.2e18 {
                    Self::from_i64(v as i64)
                } else {
                    Err(E::custom(format!("{v} is not an integer")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int<T>, E> {
                v.parse::<T>()
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v:?} is not an integer")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Int<T>, E> {
                Ok(Int(T::default()))
            }
        }
        d.deserialize_any(IntVisitor(PhantomData))
    }
}

/// A double: a JSON number, or a string (`"NaN"`, `"Infinity"`, `"-Infinity"`, `"1.5"`).
#[derive(Default)]
pub(super) struct Double(pub(super) f64);

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DoubleVisitor;
        impl Visitor<'_> for DoubleVisitor {
            type Value = Double;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, or a string holding one")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Double, E> {
                Ok(Double(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Double, E> {
                match v {
                    "NaN" => Ok(Double(f64::NAN)),
                    "Infinity" => Ok(Double(f64::INFINITY)),
                    "-Infinity" => Ok(Double(f64::NEG_INFINITY)),
                    text => text
                        .parse()
                        .map(Double)
                        .map_err(|_| E::custom(format!("{v:?} is not a number"))),
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Double, E> {
                Ok(Double(0.0))
            }
        }
        d.deserialize_any(DoubleVisitor)
    }
}

/// `bytes`: base64, standard or URL-safe, padded or not.
#[derive(Default)]
pub(super) struct Base64(pub(super) Bytes);

const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Base64Visitor;
        impl Visitor<'_> for Base64Visitor {
            type Value = Base64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Base64, E> {
                let engine = if v.contains(['-', '_']) {
                    &URL_SAFE
                } else {
                    &STANDARD
                };
                engine
                    .decode(v.as_bytes())
                    .map(|bytes| Base64(Bytes::from(bytes)))
                    .map_err(|e| E::custom(format!("payload is not base64: {e}")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Base64, E> {
                Ok(Base64::default())
            }
        }
        d.deserialize_any(Base64Visitor)
    }
}

/// `Log.type`: `"OUT"`/`"ERR"` or its number.
#[derive(Default)]
pub(super) struct LogType(pub(super) i32);

impl<'de> Deserialize<'de> for LogType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TypeVisitor;
        impl Visitor<'_> for TypeVisitor {
            type Value = LogType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("OUT, ERR, or an enum number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LogType, E> {
                pb::log::Type::from_str_name(v)
                    .map(|t| LogType(t as i32))
                    .ok_or_else(|| E::custom(format!("unknown log type {v:?}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LogType, E> {
                i32::try_from(v)
                    .map(LogType)
                    .map_err(|_| E::custom(format!("log type {v} is out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LogType, E> {
                i32::try_from(v)
                    .map(LogType)
                    .map_err(|_| E::custom(format!("log type {v} is out of range")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<LogType, E> {
                Ok(LogType(0))
            }
        }
        d.deserialize_any(TypeVisitor)
    }
}
