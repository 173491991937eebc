//! Domain enums as the words the API, the database and the configuration use.
//!
//! `strum` derives each enum's word (`as_str`, `Display`) and its list of variants;
//! [`parse`] reads a word back with an error that lists the known ones. A test
//! checks that serde's words and strum's agree for every enum.

use strum::VariantArray;

/// The variant of `T` whose word is `s`, or an error naming `what` and the words
/// known.
pub fn parse<T>(what: &str, s: &str) -> Result<T, String>
where
    T: VariantArray + Copy + Into<&'static str>,
{
    let word = |v: &T| -> &'static str { (*v).into() };
    T::VARIANTS
        .iter()
        .find(|v| word(v) == s)
        .copied()
        .ok_or_else(|| {
            let known: Vec<&str> = T::VARIANTS.iter().map(word).collect();
            format!(
                "unknown {what} {s:?}; expected one of: {}",
                known.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceKind;
    use crate::{
        AlertKind, AlertOutcome, AlertStatus, MeterKind, MeterStatus, Priority, Severity,
        WorkOrderKind, WorkOrderStatus,
    };
    use serde::Serialize;
    use std::fmt::Display;
    use std::str::FromStr;

    /// serde's word, strum's word and `Display` agree, and every word parses back.
    fn agree<T>()
    where
        T: VariantArray + Copy + Into<&'static str> + Serialize + Display + FromStr + PartialEq,
        T: std::fmt::Debug,
        <T as FromStr>::Err: std::fmt::Debug,
    {
        for v in T::VARIANTS {
            let word: &'static str = (*v).into();
            assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(word));
            assert_eq!(v.to_string(), word);
            assert_eq!(word.parse::<T>().unwrap(), *v);
        }
    }

    #[test]
    fn serde_and_strum_words_agree() {
        agree::<AlertKind>();
        agree::<Severity>();
        agree::<AlertStatus>();
        agree::<AlertOutcome>();
        agree::<WorkOrderStatus>();
        agree::<WorkOrderKind>();
        agree::<Priority>();
        agree::<MeterKind>();
        agree::<MeterStatus>();
        assert_eq!(DeviceKind::parse("headend"), Some(DeviceKind::Headend));
        for v in DeviceKind::VARIANTS {
            assert_eq!(
                serde_json::to_value(v).unwrap(),
                serde_json::json!(v.as_str())
            );
        }
    }

    #[test]
    fn an_unknown_word_lists_the_known_ones() {
        let e = "sever".parse::<Severity>().unwrap_err();
        assert_eq!(
            e,
            "unknown severity \"sever\"; expected one of: info, warning, critical"
        );
    }
}
