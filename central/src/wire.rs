//! Wire encodings shared by every endpoint: exact decimals as JSON numbers, RFC 3339 times,
//! case-insensitive enums emitted in their canonical casing, and optional fields that are left
//! out when absent (Metronome's document declares most optional response fields non-nullable, so
//! an absent value is never sent as `null` unless the document says `nullable`).

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use tally_core::time::{format_rfc3339_ms, parse_rfc3339_ms};

/// An exact decimal that travels as a JSON number (or, on input, a numeric string).
///
/// serde_json's `arbitrary_precision` hands us the number's literal text, so `0.1` stays `0.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dec(pub Decimal);

impl Serialize for Dec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0.normalize().to_string();
        let number = serde_json::Number::from_str(&text).map_err(serde::ser::Error::custom)?;
        number.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => parse_dec(&n.to_string()),
            serde_json::Value::String(s) => parse_dec(&s),
            other => Err(de::Error::custom(format!(
                "expected a number, found {other}"
            ))),
        }
    }
}

fn parse_dec<E: de::Error>(text: &str) -> Result<Dec, E> {
    tally_core::decimal::parse_decimal(text)
        .map(Dec)
        .ok_or_else(|| E::custom(format!("{text:?} is not an exact decimal number")))
}

/// A UTC instant: RFC 3339 on the wire, epoch milliseconds inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub i64);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339_ms(self.0))
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Time;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Time, E> {
                parse_rfc3339_ms(v)
                    .map(Time)
                    .map_err(|e| E::custom(format!("{v:?} {e}")))
            }
        }
        d.deserialize_str(V)
    }
}

/// Sets `key` on the JSON object `obj` when `value` is `Some`, and removes it when `None`.
///
/// For response fields the document declares optional but not `nullable`: the SDKs read a missing
/// field as `None` either way, but a literal `null` breaks the document's contract.
pub fn set_opt<T: Serialize>(obj: &mut serde_json::Value, key: &str, value: Option<T>) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    match value {
        Some(v) => {
            map.insert(key.to_string(), serde_json::json!(v));
        }
        None => {
            map.remove(key);
        }
    }
}

/// Declares an enum that parses its variants case-insensitively and emits the canonical spelling.
/// A variant may list input-only aliases after its spelling (`V => "CANONICAL" | "ALIAS"`): they
/// parse to the variant, which is always emitted as its canonical spelling.
#[macro_export]
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident {
        $($variant:ident => $text:literal $(| $alias:literal)*),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every spelling accepted on input: canonical ones first, then aliases.
            const SPELLINGS: &'static [(&'static str, $name)] =
                &[$(($text, $name::$variant)),+ $($(, ($alias, $name::$variant))*)+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(s: &str) -> Option<$name> {
                Self::SPELLINGS
                    .iter()
                    .find(|(text, _)| text.eq_ignore_ascii_case(s))
                    .map(|(_, v)| *v)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    let all: Vec<&str> = Self::SPELLINGS.iter().map(|(text, _)| *text).collect();
                    serde::de::Error::custom(format!("{s:?} is not one of {}", all.join(", ")))
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_exactly() {
        let d: Dec = serde_json::from_str("1234567890.123456789012345678").unwrap();
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            "1234567890.123456789012345678"
        );
        let d: Dec = serde_json::from_str("\"94500.00\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "94500");
        assert!(serde_json::from_str::<Dec>("true").is_err());
        assert!(serde_json::from_str::<Dec>("\"abc\"").is_err());
    }

    wire_enum!(Color { Red => "RED", DarkBlue => "DARK_BLUE" });

    #[test]
    fn enums_are_case_insensitive_and_canonical_out() {
        let c: Color = serde_json::from_str("\"dark_blue\"").unwrap();
        assert_eq!(c, Color::DarkBlue);
        assert_eq!(serde_json::to_string(&Color::Red).unwrap(), "\"RED\"");
        assert!(serde_json::from_str::<Color>("\"green\"").is_err());
    }
}
