//! Element types, named as TVM and numpy name them ("float32", "int64", ...).

use crate::ffi::DLDataType;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    Bool,
    Int(u8),
    UInt(u8),
    Float(u8),
    BFloat16,
}

impl DType {
    /// Bytes per element; `bool` is one byte, as in TVM and numpy.
    pub fn size(self) -> usize {
        match self {
            DType::Bool => 1,
            DType::Int(bits) | DType::UInt(bits) | DType::Float(bits) => bits as usize / 8,
            DType::BFloat16 => 2,
        }
    }

    pub fn to_dl(self) -> DLDataType {
        let (code, bits) = match self {
            DType::Int(bits) => (0, bits),
            DType::UInt(bits) => (1, bits),
            DType::Float(bits) => (2, bits),
            DType::BFloat16 => (4, 16),
            DType::Bool => (6, 8),
        };
        DLDataType { code, bits, lanes: 1 }
    }
}

impl FromStr for DType {
    type Err = String;

    fn from_str(s: &str) -> Result<DType, String> {
        let bits = |prefix: &str, allowed: &[u8]| -> Option<u8> {
            let bits: u8 = s.strip_prefix(prefix)?.parse().ok()?;
            allowed.contains(&bits).then(|| bits)
        };
        if s == "bool" {
            Ok(DType::Bool)
        } else if s == "bfloat16" {
            Ok(DType::BFloat16)
        } else if let Some(b) = bits("uint", &[8, 16, 32, 64]) {
            Ok(DType::UInt(b))
        } else if let Some(b) = bits("int", &[8, 16, 32, 64]) {
            Ok(DType::Int(b))
        } else if let Some(b) = bits("float", &[16, 32, 64]) {
            Ok(DType::Float(b))
        } else {
            Err(format!("unsupported dtype '{}'", s))
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DType::Bool => write!(f, "bool"),
            DType::Int(b) => write!(f, "int{}", b),
            DType::UInt(b) => write!(f, "uint{}", b),
            DType::Float(b) => write!(f, "float{}", b),
            DType::BFloat16 => write!(f, "bfloat16"),
        }
    }
}

impl<'de> Deserialize<'de> for DType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DType, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["bool", "int8", "int64", "uint16", "float16", "float32", "float64", "bfloat16"] {
            assert_eq!(name.parse::<DType>().unwrap().to_string(), name);
        }
    }

    #[test]
    fn rejects_odd_widths() {
        assert!("int12".parse::<DType>().is_err());
        assert!("float8".parse::<DType>().is_err());
    }
}
