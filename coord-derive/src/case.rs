//! `rename_all`: serde's case conventions, applied to a field name to give its key.

use std::fmt::Write as _;

/// A case convention, by serde's name for it. Field names are taken to be snake_case, as Rust
/// writes them, so each rule maps from that.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RenameRule {
    Lower,
    Upper,
    Pascal,
    Camel,
    Snake,
    ScreamingSnake,
    Kebab,
    ScreamingKebab,
}

/// Every rule with the name `rename_all = "..."` knows it by, in the order errors list them.
const RULES: &[(&str, RenameRule)] = &[
    ("lowercase", RenameRule::Lower),
    ("UPPERCASE", RenameRule::Upper),
    ("PascalCase", RenameRule::Pascal),
    ("camelCase", RenameRule::Camel),
    ("snake_case", RenameRule::Snake),
    ("SCREAMING_SNAKE_CASE", RenameRule::ScreamingSnake),
    ("kebab-case", RenameRule::Kebab),
    ("SCREAMING-KEBAB-CASE", RenameRule::ScreamingKebab),
];

impl RenameRule {
    /// The rule serde calls `name`, or `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        RULES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, rule)| *rule)
    }

    /// The valid names, quoted and comma-separated, for an error message.
    pub fn names() -> String {
        let mut out = String::new();
        for (i, (name, _)) in RULES.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(out, "{sep}\"{name}\"");
        }
        out
    }

    /// The key of a field named `field` (snake_case, without `r#`), as serde's
    /// `RenameRule::apply_to_field` gives it, so a struct shared with serde reads the same keys.
    pub fn apply_to_field(self, field: &str) -> String {
        match self {
            RenameRule::Lower | RenameRule::Snake => field.to_owned(),
            RenameRule::Upper | RenameRule::ScreamingSnake => field.to_ascii_uppercase(),
            RenameRule::Pascal => {
                let mut pascal = String::new();
                let mut capitalize = true;
                for ch in field.chars() {
                    if ch == '_' {
                        capitalize = true;
                    } else if capitalize {
                        pascal.push(ch.to_ascii_uppercase());
                        capitalize = false;
                    } else {
                        pascal.push(ch);
                    }
                }
                pascal
            }
            RenameRule::Camel => {
                let pascal = RenameRule::Pascal.apply_to_field(field);
                let mut chars = pascal.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                    None => pascal,
                }
            }
            RenameRule::Kebab => field.replace('_', "-"),
            RenameRule::ScreamingKebab => field.to_ascii_uppercase().replace('_', "-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RenameRule::{self, *};

    #[test]
    fn each_rule_renames_a_field_as_serde_does() {
        // The rows of serde_derive's own `rename_fields` test.
        let cases: &[(&str, [&str; 7])] = &[
            (
                "outcome",
                [
                    "OUTCOME", "Outcome", "outcome", "OUTCOME", "outcome", "OUTCOME", "outcome",
                ],
            ),
            (
                "very_tasty",
                [
                    "VERY_TASTY",
                    "VeryTasty",
                    "veryTasty",
                    "VERY_TASTY",
                    "very-tasty",
                    "VERY-TASTY",
                    "very_tasty",
                ],
            ),
            ("a", ["A", "A", "a", "A", "a", "A", "a"]),
            ("z42", ["Z42", "Z42", "z42", "Z42", "z42", "Z42", "z42"]),
        ];
        for (field, [upper, pascal, camel, screaming, kebab, screaming_kebab, lower]) in cases {
            assert_eq!(Upper.apply_to_field(field), *upper);
            assert_eq!(Pascal.apply_to_field(field), *pascal);
            assert_eq!(Camel.apply_to_field(field), *camel);
            assert_eq!(ScreamingSnake.apply_to_field(field), *screaming);
            assert_eq!(Kebab.apply_to_field(field), *kebab);
            assert_eq!(ScreamingKebab.apply_to_field(field), *screaming_kebab);
            assert_eq!(Lower.apply_to_field(field), *lower);
            assert_eq!(Snake.apply_to_field(field), *field);
        }
    }

    #[test]
    fn every_serde_case_name_is_known_and_others_are_not() {
        for name in [
            "lowercase",
            "UPPERCASE",
            "PascalCase",
            "camelCase",
            "snake_case",
            "SCREAMING_SNAKE_CASE",
            "kebab-case",
            "SCREAMING-KEBAB-CASE",
        ] {
            assert!(RenameRule::from_name(name).is_some(), "{name}");
        }
        assert_eq!(RenameRule::from_name("kebab_case"), None);
        assert_eq!(RenameRule::from_name(""), None);
    }
}
