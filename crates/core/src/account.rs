//! Who may do what: the [`Role`] of an account or an API token (issue 12's four
//! roles). The rules of who may call which route live in `leakwatch-api`; this is the
//! vocabulary the store and the API share.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// What a person or an integration may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Role {
    /// Manages accounts, meters and crews; may do everything.
    Admin,
    /// Reviews alerts: acknowledge, dismiss, escalate, notes.
    Engineer,
    /// Assigns, reassigns, cancels and plans work orders.
    Dispatcher,
    /// A member of one crew: sees and acts on that crew's jobs only.
    Crew,
}

impl Role {
    pub const ALL: &'static [Role] = <Role as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether an account or token of this role must name a crew (and only then may).
    pub fn needs_crew(self) -> bool {
        self == Role::Crew
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::names::parse("role", s)
    }
}

/// An account or token name: 1..64 characters of `[A-Za-z0-9._@-]` (it is written
/// into every audit record as the actor).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("name {name:?} must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err(format!(
            "name {name:?} may only hold letters, digits and . _ @ -"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_back_and_refuse_unknown_words() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), *r);
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!("root".parse::<Role>().unwrap_err().contains("admin"));
        assert!(Role::Crew.needs_crew() && !Role::Admin.needs_crew());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("anna.rossi@example.it").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }
}
