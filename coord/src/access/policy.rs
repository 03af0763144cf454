//! The policy: who may do what under which config prefix, and which prefixes require review.
//!
//! A policy names **principals** (etcd users; the console maps its tokens to them), **roles**
//! that grant [`Action`]s on config prefixes, and **review** rules. It is a plain value:
//! [`Policy::check`] decides and explains, [`super::rbac`] turns it into etcd users, roles and
//! permissions, and the config center compares the stored policy's revision in every release
//! transaction, so a release is judged by the policy in force when it commits.
//!
//! # What it promises
//!
//! - **Deny unless granted.** A principal the policy does not name may do nothing; an action
//!   needs a grant of it (or of [`Action::Admin`]) on the prefix or on a prefix above it.
//!   Every grant includes [`Action::Read`] on its prefix.
//! - **Checked before stored.** [`Policy::parse_toml`] (and `parse_json`) refuses a role
//!   that is not defined, a name etcd or the audit keys cannot hold, a prefix that is not a
//!   config prefix.
//! - **Explained.** A [`Decision`] says which role and grant allowed it, or why not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The key the policy in force is stored under (JSON).
pub const POLICY_KEY: &str = "/coord/policy";

/// How long a proposal stays open when its prefix's review rule does not say.
pub const DEFAULT_PROPOSAL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a principal may do on a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read the prefix's values, history, proposals and rollout status.
    Read,
    /// Store a proposal for the prefix (review before release).
    Propose,
    /// Release, roll back, start, promote or abort a gray release directly; propose.
    Release,
    /// Approve or reject another principal's proposal (which commits it as a release);
    /// propose.
    Approve,
    /// Everything above, and publishing the prefix's schema.
    Admin,
}

impl Action {
    /// Every action, weakest first.
    pub const ALL: [Action; 5] = [
        Action::Read,
        Action::Propose,
        Action::Release,
        Action::Approve,
        Action::Admin,
    ];

    /// The action's name as the policy file and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Propose => "propose",
            Action::Release => "release",
            Action::Approve => "approve",
            Action::Admin => "admin",
        }
    }

    /// True if a grant of `self` allows `wanted`: itself, `read` always, `propose` for
    /// whoever may release or approve (on a prefix that requires review they change it by
    /// proposing too), everything for `admin`.
    pub fn allows(self, wanted: Action) -> bool {
        self == wanted
            || self == Action::Admin
            || wanted == Action::Read
            || (wanted == Action::Propose && matches!(self, Action::Release | Action::Approve))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                Error::invalid_argument(
                    "action",
                    format!("`{s}` is not an action (read, propose, release, approve, admin)"),
                )
            })
    }
}

/// One principal: an etcd user, the roles it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Roles (names under `[roles]`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// May act for other principals (the web console, which maps its tokens to principals):
    /// what it does on their behalf is checked against their grants and recorded as theirs,
    /// "via" it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delegate: bool,
}

/// A role: grants of actions on prefixes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// What the role may do, where.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// Actions on a prefix and every prefix under it (`/config` covers `/config/checkout`; `/`
/// covers everything).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The config prefix.
    pub prefix: String,
    /// The actions granted there.
    pub actions: BTreeSet<Action>,
}

/// A prefix whose releases need review: a proposal approved by another principal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// Direct releases are refused; changes go through proposals.
    #[serde(default = "yes")]
    pub required: bool,
    /// How long a proposal stays open (default 7 days).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub expire_after: Option<Duration>,
}

fn yes() -> bool {
    true
}

/// The whole policy, as the file and `/coord/policy` hold it.
///
/// ```
/// use coord::access::{Action, Policy};
///
/// let policy = Policy::parse_toml(r#"
///     [principals.ana]
///     roles = ["checkout-editor"]
///     [principals.bo]
///     roles = ["checkout-owner"]
///
///     [roles.checkout-editor]
///     grants = [{ prefix = "/config/checkout", actions = ["propose"] }]
///     [roles.checkout-owner]
///     grants = [{ prefix = "/config/checkout", actions = ["release", "approve"] }]
///
///     [review."/config/checkout"]
///     expire_after = "3d"
/// "#)?;
/// assert!(policy.check("ana", Action::Propose, "/config/checkout").allowed);
/// assert!(!policy.check("ana", Action::Release, "/config/checkout").allowed);
/// assert!(policy.check("bo", Action::Read, "/config/checkout/db").allowed);
/// assert!(policy.review_for("/config/checkout").is_some());
/// # Ok::<(), coord::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Principals by name.
    #[serde(default)]
    pub principals: BTreeMap<String, Principal>,
    /// Roles by name.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Review rules by prefix.
    #[serde(default)]
    pub review: BTreeMap<String, Review>,
}

/// The answer of [`Policy::check`], with its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// May the principal do it.
    pub allowed: bool,
    /// The principal asked about.
    pub principal: String,
    /// The action asked about.
    pub action: Action,
    /// The prefix asked about.
    pub prefix: String,
    /// Which role's grant allows it, or why nothing does.
    pub reason: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} may{} {} `{}`: {}",
            if self.allowed { "allowed" } else { "denied" },
            self.principal,
            if self.allowed { "" } else { " not" },
            self.action,
            self.prefix,
            self.reason
        )
    }
}

impl Decision {
    /// `Ok` if allowed, else [`Error::PermissionDenied`] naming the prefix and the reason.
    pub fn into_result(self) -> Result<()> {
        if self.allowed {
            Ok(())
        } else {
            Err(Error::PermissionDenied {
                key: self.prefix.clone(),
                reason: format!("policy: {self}"),
            })
        }
    }
}

impl Policy {
    /// Parses and checks a TOML policy file.
    pub fn parse_toml(text: &str) -> Result<Policy> {
        let policy: Policy =
            toml::from_str(text).map_err(|e| Error::invalid_argument("policy", e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Parses and checks the stored (JSON) form.
    pub fn parse_json(bytes: &[u8]) -> Result<Policy> {
        let policy: Policy = serde_json::from_slice(bytes).map_err(|source| Error::Decode {
            key: POLICY_KEY.into(),
            source,
        })?;
        policy.validate()?;
        Ok(policy)
    }

    /// The stored form.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| Error::invalid_argument(POLICY_KEY, format!("cannot encode: {e}")))
    }

    /// Refuses what cannot be enforced: an undefined role, a name etcd's roles or the audit
    /// keys cannot hold, a prefix that is not a config prefix.
    pub fn validate(&self) -> Result<()> {
        for (name, principal) in &self.principals {
            check_name("principal", name)?;
            for role in &principal.roles {
                if !self.roles.contains_key(role) {
                    return Err(Error::invalid_argument(
                        format!("principals.{name}.roles"),
                        format!("role `{role}` is not defined under [roles]"),
                    ));
                }
            }
        }
        for (name, role) in &self.roles {
            check_name("role", name)?;
            for grant in &role.grants {
                check_prefix(&format!("roles.{name}.grants"), &grant.prefix)?;
                if grant.actions.is_empty() {
                    return Err(Error::invalid_argument(
                        format!("roles.{name}.grants"),
                        format!("the grant on `{}` names no action", grant.prefix),
                    ));
                }
            }
        }
        for prefix in self.review.keys() {
            check_prefix("review", prefix)?;
        }
        Ok(())
    }

    /// May `principal` do `action` on `prefix`, and why.
    pub fn check(&self, principal: &str, action: Action, prefix: &str) -> Decision {
        let decision = |allowed, reason: String| Decision {
            allowed,
            principal: principal.to_owned(),
            action,
            prefix: prefix.to_owned(),
            reason,
        };
        let Some(entry) = self.principals.get(principal) else {
            return decision(false, "the policy names no such principal".into());
        };
        for role in &entry.roles {
            let Some(grants) = self.roles.get(role) else {
                continue;
            };
            for grant in &grants.grants {
                if covers(&grant.prefix, prefix) && grant.actions.iter().any(|a| a.allows(action)) {
                    let granted: Vec<&str> = grant.actions.iter().map(|a| a.as_str()).collect();
                    return decision(
                        true,
                        format!(
                            "role `{role}` grants {} on `{}`",
                            granted.join(", "),
                            grant.prefix
                        ),
                    );
                }
            }
        }
        let roles = if entry.roles.is_empty() {
            "it holds no role".to_owned()
        } else {
            format!(
                "no grant of {action} covers it in role(s) {}",
                entry.roles.join(", ")
            )
        };
        decision(false, roles)
    }

    /// The review rule that applies to `prefix`: the one of the longest prefix covering it.
    pub fn review_for(&self, prefix: &str) -> Option<(&str, &Review)> {
        // The most specific rule decides, so a sub-prefix can opt out of its parent's.
        self.review
            .iter()
            .filter(|(rule, _)| covers(rule, prefix))
            .max_by_key(|(rule, _)| rule.len())
            .filter(|(_, review)| review.required)
            .map(|(rule, review)| (rule.as_str(), review))
    }

    /// May `principal` act for others (see [`Principal::delegate`]).
    pub fn is_delegate(&self, principal: &str) -> bool {
        self.principals.get(principal).is_some_and(|p| p.delegate)
    }
}

/// True if a grant or rule on `grant` covers `prefix`: the same prefix or one under it.
pub fn covers(grant: &str, prefix: &str) -> bool {
    let grant = grant.trim_end_matches('/');
    let prefix = prefix.trim_end_matches('/');
    grant.is_empty()
        || prefix == grant
        || prefix
            .strip_prefix(grant)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Principal and role names end up in etcd role names and audit keys.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            what,
            format!("`{name}` must be 1-64 letters, digits, `-`, `_`, `.` or `@`"),
        ))
    }
}

fn check_prefix(field: &str, prefix: &str) -> Result<()> {
    let ok = prefix.starts_with('/')
        && (prefix == "/" || !prefix.ends_with('/'))
        && !prefix.contains("//")
        && !(prefix == "/coord" || prefix.starts_with("/coord/"));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            field,
            format!(
                "`{prefix}` is not a config prefix (it starts with `/`, has no empty segment, \
                 does not end with `/` unless it is `/`, and is not under `/coord`)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Policy {
        Policy::parse_toml(
            r#"
            [principals.ana]
            roles = ["editor"]
            [principals.bo]
            roles = ["owner"]
            [principals.ops]
            roles = ["admin"]
            [principals.console]
            roles = ["admin"]
            delegate = true
            [principals.nobody]

            [roles.editor]
            grants = [{ prefix = "/config/checkout", actions = ["propose"] }]
            [roles.owner]
            grants = [{ prefix = "/config/checkout", actions = ["release", "approve"] }]
            [roles.admin]
            grants = [{ prefix = "/", actions = ["admin"] }]

            [review."/config/checkout"]
            [review."/config/checkout/experimental"]
            required = false
            "#,
        )
        .unwrap()
    }

    #[test]
    fn a_grant_covers_its_prefix_and_those_under_it_only() {
        let policy = sample();
        assert!(
            policy
                .check("ana", Action::Propose, "/config/checkout")
                .allowed
        );
        assert!(
            policy
                .check("ana", Action::Propose, "/config/checkout/db")
                .allowed
        );
        assert!(
            !policy
                .check("ana", Action::Propose, "/config/checkouts")
                .allowed
        );
        assert!(!policy.check("ana", Action::Propose, "/config").allowed);
        assert!(
            policy
                .check("ops", Action::Release, "/anything/at/all")
                .allowed
        );
    }

    #[test]
    fn every_grant_reads_and_admin_does_everything() {
        let policy = sample();
        assert!(
            policy
                .check("ana", Action::Read, "/config/checkout")
                .allowed
        );
        assert!(
            !policy
                .check("ana", Action::Release, "/config/checkout")
                .allowed
        );
        assert!(
            !policy
                .check("ana", Action::Approve, "/config/checkout")
                .allowed
        );
        assert!(
            !policy
                .check("bo", Action::Admin, "/config/checkout")
                .allowed
        );
        for action in Action::ALL {
            assert!(policy.check("ops", action, "/config/checkout").allowed);
        }
    }

    #[test]
    fn unknown_principals_and_principals_without_roles_are_denied_with_a_reason() {
        let policy = sample();
        let unknown = policy.check("eve", Action::Read, "/config/checkout");
        assert!(!unknown.allowed);
        assert!(unknown.reason.contains("no such principal"), "{unknown}");
        let bare = policy.check("nobody", Action::Read, "/config/checkout");
        assert!(!bare.allowed);
        assert!(bare.reason.contains("no role"), "{bare}");
        let err = policy
            .check("ana", Action::Release, "/config/checkout")
            .into_result()
            .unwrap_err();
        assert!(
            matches!(err, Error::PermissionDenied { ref key, .. } if key == "/config/checkout")
        );
        assert!(err.to_string().contains("editor"), "{err}");
    }

    #[test]
    fn the_longest_review_rule_wins() {
        let policy = sample();
        assert_eq!(
            policy.review_for("/config/checkout/db").map(|(p, _)| p),
            Some("/config/checkout")
        );
        assert!(policy.review_for("/config/checkout/experimental").is_none());
        assert!(policy.review_for("/config/search").is_none());
    }

    #[test]
    fn parse_refuses_what_cannot_be_enforced() {
        for (text, says) in [
            ("[principals.a]\nroles = [\"ghost\"]", "ghost"),
            ("[principals.\"a b\"]", "a b"),
            (
                "[roles.r]\ngrants = [{ prefix = \"/coord/x\", actions = [\"read\"] }]",
                "/coord/x",
            ),
            (
                "[roles.r]\ngrants = [{ prefix = \"config\", actions = [\"read\"] }]",
                "config",
            ),
            (
                "[roles.r]\ngrants = [{ prefix = \"/config\", actions = [] }]",
                "no action",
            ),
            (
                "[roles.r]\ngrants = [{ prefix = \"/config\", actions = [\"write\"] }]",
                "write",
            ),
            ("[review.\"/config/\"]", "/config/"),
            ("[extra]", "extra"),
        ] {
            let err = Policy::parse_toml(text).unwrap_err();
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn the_stored_form_round_trips() {
        let policy = sample();
        let back = Policy::parse_json(&policy.to_json().unwrap()).unwrap();
        assert_eq!(back, policy);
        assert!(back.is_delegate("console"));
        assert!(!back.is_delegate("ops"));
    }
}
