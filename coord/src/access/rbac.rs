//! From a [`Policy`] to etcd's users, roles and permissions, and the changes that get there.
//!
//! Every role and user coord manages is named so: a policy role `R` is the etcd role
//! `coord:R`; each principal also gets `coord:principal:{name}` (read the policy, the gray
//! releases and the published schemas every `Live` watches, and write its own audit folder).
//! Roles and users not named so are never touched (`root`, other applications' users).
//!
//! # What it promises
//!
//! - **etcd enforces it.** A grant becomes key-range permissions, so a principal without
//!   `release` cannot write a prefix's values through coord, `coordctl`, or etcd itself.
//! - **A diff, then idempotent.** [`plan`] compares the desired state with etcd's and lists
//!   only the differences, in an order etcd accepts (roles before the users that get them,
//!   revocations last); applying the plan and planning again gives an empty plan.
//!
//! | action    | etcd permissions on grant prefix P                                          |
//! |-----------|-----------------------------------------------------------------------------|
//! | `read`    | read `P/*`, its release records, decisions, plans, gray key and schema; readwrite its status keys |
//! | `propose` | as `read` (proposals go to the proposer's own folder, `/coord/proposals/{name}/`) |
//! | `release` | `read` + readwrite `P/*`, its release records, gray key, plans and plan drivers (on `/`: every key but `/coord/`) |
//! | `approve` | `release`'s + readwrite its decisions (an approval commits a release)      |
//! | `admin`   | all of the above + readwrite its schema; on `/`: readwrite everything      |
//!
//! Every principal also reads the policy, the gray releases, the published schemas and all
//! proposals, and writes its own audit folder and its own proposals folder.

use std::collections::{BTreeMap, BTreeSet};

use super::audit::writer_prefix;
use super::policy::{Action, POLICY_KEY, Policy};
use crate::store::{AuthChange, AuthState, Permission, PermissionKind, prefix_end};

/// Every etcd role coord manages starts with this.
pub const ROLE_PREFIX: &str = "coord:";

/// The etcd role of a policy role.
pub fn etcd_role(role: &str) -> String {
    format!("{ROLE_PREFIX}{role}")
}

/// The etcd role every principal holds for itself.
pub fn principal_role(principal: &str) -> String {
    format!("{ROLE_PREFIX}principal:{principal}")
}

/// The etcd roles and user→role bindings a policy asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Managed roles and their permissions.
    pub roles: BTreeMap<String, BTreeSet<Permission>>,
    /// Principals and the managed roles each must hold.
    pub users: BTreeMap<String, BTreeSet<String>>,
}

/// What the policy asks etcd to hold.
pub fn desired(policy: &Policy) -> Desired {
    let mut out = Desired::default();
    for (name, role) in &policy.roles {
        let mut perms = Vec::new();
        for grant in &role.grants {
            for action in &grant.actions {
                perms.extend(permissions(*action, &grant.prefix));
            }
        }
        out.roles.insert(etcd_role(name), normalize(perms));
    }
    for (name, principal) in &policy.principals {
        let own = principal_role(name);
        out.roles.insert(
            own.clone(),
            normalize(vec![
                Permission::key(PermissionKind::Read, POLICY_KEY),
                Permission::prefix(PermissionKind::Read, "/coord/gray/"),
                Permission::prefix(PermissionKind::Read, "/coord/schemas/"),
                Permission::prefix(PermissionKind::ReadWrite, &writer_prefix(name)),
                // Proposals: everyone's may be read (an approver finds them by prefix across
                // folders); each principal writes only its own folder.
                Permission::prefix(PermissionKind::Read, "/coord/proposals/"),
                Permission::prefix(
                    PermissionKind::ReadWrite,
                    &format!("/coord/proposals/{name}/"),
                ),
            ]),
        );
        let mut roles: BTreeSet<String> = principal.roles.iter().map(|r| etcd_role(r)).collect();
        roles.insert(own);
        out.users.insert(name.clone(), roles);
    }
    out
}

/// The etcd permissions one action on `prefix` needs.
pub fn permissions(action: Action, prefix: &str) -> Vec<Permission> {
    use PermissionKind::{Read, ReadWrite};
    let p = prefix.trim_end_matches('/');
    let values = format!("{p}/");
    let records = format!("/coord/releases{p}/");
    let decisions = format!("/coord/decisions{p}/");
    let status = format!("/coord/status{p}/");
    let gray = format!("/coord/gray{p}");
    let schema = format!("/coord/schemas{p}");
    let gray_key = |kind| {
        [
            Permission::key(kind, &gray),
            Permission::prefix(kind, &format!("{gray}/")),
        ]
    };
    let schema_key = |kind| {
        [
            Permission::key(kind, &schema),
            Permission::prefix(kind, &format!("{schema}/")),
        ]
    };
    let mut out = vec![
        Permission::prefix(Read, &values),
        Permission::prefix(Read, &records),
        Permission::prefix(Read, &decisions),
        Permission::prefix(ReadWrite, &status),
    ];
    out.extend(gray_key(Read));
    out.extend(schema_key(Read));
    let plans = format!("/coord/plans{p}");
    let drivers = format!("/coord/plan-drivers{p}");
    out.push(Permission::key(Read, &plans));
    out.push(Permission::prefix(Read, &format!("{plans}/")));
    let release = |out: &mut Vec<Permission>| {
        if p.is_empty() {
            // Every config key, not coord's own: `/` up to `/coord/`, and after `/coord/`.
            out.push(Permission {
                key: "/".into(),
                range_end: "/coord/".into(),
                kind: ReadWrite,
            });
            out.push(Permission {
                key: "/coord0".into(),
                range_end: prefix_end("/"),
                kind: ReadWrite,
            });
        } else {
            out.push(Permission::prefix(ReadWrite, &values));
        }
        out.push(Permission::prefix(ReadWrite, &records));
        out.extend(gray_key(ReadWrite));
        // Rollout plans of the prefix, and the election of their drivers.
        out.push(Permission::key(ReadWrite, &plans));
        out.push(Permission::prefix(ReadWrite, &format!("{plans}/")));
        out.push(Permission::prefix(ReadWrite, &format!("{drivers}/")));
    };
    match action {
        // Proposals are written in the proposer's own folder (its principal role).
        Action::Read | Action::Propose => {}
        Action::Release => release(&mut out),
        Action::Approve => {
            release(&mut out);
            out.push(Permission::prefix(ReadWrite, &decisions));
        }
        Action::Admin if p.is_empty() => out.push(Permission::prefix(ReadWrite, "/")),
        Action::Admin => {
            release(&mut out);
            out.push(Permission::prefix(ReadWrite, &decisions));
            out.extend(schema_key(ReadWrite));
        }
    }
    out
}

/// One permission per range, the widest kind asked for it.
fn normalize(perms: Vec<Permission>) -> BTreeSet<Permission> {
    let mut by_range: BTreeMap<(String, String), PermissionKind> = BTreeMap::new();
    for perm in perms {
        by_range
            .entry((perm.key, perm.range_end))
            .and_modify(|kind| {
                if *kind != perm.kind {
                    *kind = PermissionKind::ReadWrite;
                }
            })
            .or_insert(perm.kind);
    }
    by_range
        .into_iter()
        .map(|((key, range_end), kind)| Permission {
            key,
            range_end,
            kind,
        })
        .collect()
}

/// The changes that take etcd from `current` to `desired`, in an order etcd accepts. Users
/// the policy names that etcd lacks are created with the password `password_of` gives (none:
/// the user is listed in [`Plan::missing_passwords`] and not created). Managed roles of users
/// the policy no longer names are revoked; managed roles it no longer names are deleted.
pub fn plan(
    desired: &Desired,
    current: &AuthState,
    password_of: impl Fn(&str) -> Option<String>,
) -> Plan {
    let mut plan = Plan::default();
    for (role, perms) in &desired.roles {
        let have = current.roles.get(role);
        if have.is_none() {
            plan.changes.push(AuthChange::AddRole(role.clone()));
        }
        let have = have.cloned().unwrap_or_default();
        for perm in perms.difference(&have) {
            plan.changes.push(AuthChange::Grant {
                role: role.clone(),
                permission: perm.clone(),
            });
        }
        for perm in &have {
            // A range asked for with another kind is changed by the grant above.
            if !perms
                .iter()
                .any(|p| p.key == perm.key && p.range_end == perm.range_end)
            {
                plan.changes.push(AuthChange::Revoke {
                    role: role.clone(),
                    permission: perm.clone(),
                });
            }
        }
    }
    for (user, roles) in &desired.users {
        let have = match current.users.get(user) {
            Some(have) => have.clone(),
            None => match password_of(user) {
                Some(password) => {
                    plan.changes.push(AuthChange::AddUser {
                        name: user.clone(),
                        password,
                    });
                    BTreeSet::new()
                }
                None => {
                    plan.missing_passwords.push(user.clone());
                    continue;
                }
            },
        };
        for role in roles.difference(&have) {
            plan.changes.push(AuthChange::GrantRole {
                user: user.clone(),
                role: role.clone(),
            });
        }
        for role in have.iter().filter(|r| is_managed(r) && !roles.contains(*r)) {
            plan.changes.push(AuthChange::RevokeRole {
                user: user.clone(),
                role: role.clone(),
            });
        }
    }
    for (user, have) in &current.users {
        if desired.users.contains_key(user) {
            continue;
        }
        for role in have.iter().filter(|r| is_managed(r)) {
            plan.changes.push(AuthChange::RevokeRole {
                user: user.clone(),
                role: role.clone(),
            });
        }
    }
    for role in current.roles.keys() {
        if is_managed(role) && !desired.roles.contains_key(role) {
            plan.changes.push(AuthChange::DeleteRole(role.clone()));
        }
    }
    plan
}

fn is_managed(role: &str) -> bool {
    role.starts_with(ROLE_PREFIX)
}

/// What [`plan`] found to change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The changes, in the order to apply them.
    pub changes: Vec<AuthChange>,
    /// Principals etcd has no user for and no password was given for.
    pub missing_passwords: Vec<String>,
}

impl Plan {
    /// True if etcd already holds what the policy asks.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.missing_passwords.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::parse_toml(
            r#"
            [principals.ana]
            roles = ["editor"]
            [principals.bo]
            roles = ["owner"]
            [roles.editor]
            grants = [{ prefix = "/config/checkout", actions = ["propose"] }]
            [roles.owner]
            grants = [{ prefix = "/config/checkout", actions = ["release", "approve"] }]
            "#,
        )
        .unwrap()
    }

    /// What etcd holds after applying `plan` to `state` (the semantics of etcd's auth API).
    fn apply(state: &mut AuthState, plan: &Plan) {
        for change in &plan.changes {
            match change {
                AuthChange::AddRole(r) => {
                    state.roles.insert(r.clone(), BTreeSet::new());
                }
                AuthChange::DeleteRole(r) => {
                    state.roles.remove(r);
                    for roles in state.users.values_mut() {
                        roles.remove(r);
                    }
                }
                AuthChange::Grant { role, permission } => {
                    let perms = state.roles.get_mut(role).unwrap();
                    perms.retain(|p| {
                        !(p.key == permission.key && p.range_end == permission.range_end)
                    });
                    perms.insert(permission.clone());
                }
                AuthChange::Revoke { role, permission } => {
                    state.roles.get_mut(role).unwrap().retain(|p| {
                        !(p.key == permission.key && p.range_end == permission.range_end)
                    });
                }
                AuthChange::AddUser { name, .. } => {
                    state.users.insert(name.clone(), BTreeSet::new());
                }
                AuthChange::GrantRole { user, role } => {
                    assert!(state.roles.contains_key(role), "role {role} exists first");
                    state.users.get_mut(user).unwrap().insert(role.clone());
                }
                AuthChange::RevokeRole { user, role } => {
                    state.users.get_mut(user).unwrap().remove(role);
                }
            }
        }
    }

    fn root_state() -> AuthState {
        let mut state = AuthState::default();
        state.roles.insert("root".into(), BTreeSet::new());
        state
            .users
            .insert("root".into(), BTreeSet::from(["root".into()]));
        state
    }

    #[test]
    fn applying_the_plan_reaches_the_policy_and_a_second_plan_is_empty() {
        let mut state = root_state();
        let want = desired(&policy());
        let first = plan(&want, &state, |_| Some("pw".into()));
        assert!(!first.is_empty());
        apply(&mut state, &first);
        assert!(plan(&want, &state, |_| None).is_empty());
        assert_eq!(state.users["root"], BTreeSet::from(["root".to_owned()]));
    }

    #[test]
    fn a_removed_grant_is_revoked_and_a_removed_principal_loses_its_roles() {
        let mut state = root_state();
        let first = plan(&desired(&policy()), &state, |_| Some("pw".into()));
        apply(&mut state, &first);
        let mut smaller = policy();
        smaller.roles.get_mut("owner").unwrap().grants[0].actions = BTreeSet::from([Action::Read]);
        smaller.principals.remove("ana");
        let second = plan(&desired(&smaller), &state, |_| None);
        let text: Vec<String> = second.changes.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"- role coord:owner: readwrite /config/checkout/*".to_owned())
                || text.contains(&"+ role coord:owner: read /config/checkout/*".to_owned()),
            "{text:#?}"
        );
        assert!(
            text.contains(&"- user ana: role coord:editor".to_owned()),
            "{text:#?}"
        );
        assert!(
            text.contains(&"- role coord:principal:ana".to_owned()),
            "{text:#?}"
        );
        apply(&mut state, &second);
        assert!(plan(&desired(&smaller), &state, |_| None).is_empty());
        let owner = &state.roles["coord:owner"];
        assert!(
            owner
                .iter()
                .all(|p| p.kind == PermissionKind::Read || p.key.starts_with("/coord/status")),
            "{owner:#?}"
        );
    }

    #[test]
    fn propose_cannot_write_values_and_release_can() {
        let propose = normalize(permissions(Action::Propose, "/config/checkout"));
        assert!(propose.contains(&Permission::prefix(
            PermissionKind::Read,
            "/config/checkout/"
        )));
        assert!(
            propose
                .iter()
                .all(|p| p.kind == PermissionKind::Read || p.key.starts_with("/coord/status/")),
            "{propose:#?}"
        );
        // The proposer writes proposals in its own folder only, and no one's decisions.
        let own = &desired(&policy()).roles["coord:principal:ana"];
        assert!(own.contains(&Permission::prefix(
            PermissionKind::ReadWrite,
            "/coord/proposals/ana/"
        )));
        assert!(!own.iter().any(|p| p.key.starts_with("/coord/decisions")));
        let approve = normalize(permissions(Action::Approve, "/config/checkout"));
        assert!(approve.contains(&Permission::prefix(
            PermissionKind::ReadWrite,
            "/coord/decisions/config/checkout/"
        )));
        let release = normalize(permissions(Action::Release, "/config/checkout"));
        assert!(release.contains(&Permission::prefix(
            PermissionKind::ReadWrite,
            "/config/checkout/"
        )));
        assert!(release.contains(&Permission::key(
            PermissionKind::ReadWrite,
            "/coord/gray/config/checkout"
        )));
    }

    #[test]
    fn a_release_grant_on_the_root_writes_every_config_key_but_none_of_coords() {
        let root = normalize(permissions(Action::Release, "/"));
        let writes = |key: &str| {
            root.iter().any(|p| {
                p.kind == PermissionKind::ReadWrite
                    && p.key.as_str() <= key
                    && (p.range_end.is_empty() && p.key == key || key < p.range_end.as_str())
            })
        };
        assert!(writes("/config/checkout/limit"));
        assert!(writes("/app"));
        assert!(writes("/zzz"));
        assert!(!writes("/coord/policy"));
        assert!(!writes("/coord/audit/bo/1"));
        assert!(!writes("/coord/decisions/config//x"));
        assert!(writes("/coord/plans"), "the root's plans key itself");
        assert!(
            normalize(permissions(Action::Admin, "/"))
                .contains(&Permission::prefix(PermissionKind::ReadWrite, "/"))
        );
    }

    #[test]
    fn a_user_without_a_password_is_reported_not_created() {
        let state = root_state();
        let plan = plan(&desired(&policy()), &state, |user| {
            (user == "bo").then(|| "pw".into())
        });
        assert_eq!(plan.missing_passwords, vec!["ana".to_owned()]);
        assert!(
            plan.changes
                .iter()
                .all(|c| !matches!(c, AuthChange::GrantRole { user, .. } if user == "ana"))
        );
    }
}
