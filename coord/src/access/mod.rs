//! Who may change what: principals, a policy of roles on prefixes, its enforcement by etcd's
//! own RBAC, and the audit log.
//!
//! - [`policy`]: the [`Policy`] (principals, roles granting [`Action`]s on prefixes, review
//!   rules), stored at [`POLICY_KEY`], and [`Policy::check`], which decides and explains.
//! - [`rbac`]: the policy as etcd users, roles and key-range permissions, and the diff that
//!   gets etcd there ([`Access::plan`], [`Access::apply`]).
//! - [`audit`]: one record per operation, written in the operation's own transaction.
//!
//! # Principals
//!
//! A connection's principal is its etcd user (`ClientConfig::username`). A connection without
//! etcd auth (the embedded store, a plain etcd) is `anonymous` unless it claims a name with
//! [`ConfigCenter::as_principal`](crate::ConfigCenter::as_principal): a claim, not a proof,
//! which is why the policy is also written into etcd's RBAC, where a claim is worth nothing.
//! A principal the policy marks `delegate` (the web console) may act for others with
//! [`on_behalf_of`](crate::ConfigCenter::on_behalf_of); what it does is checked against their
//! grants and recorded as theirs, via it.
//!
//! # What it promises
//!
//! - **No policy, no checks.** Until a policy is stored, every principal may do everything
//!   (as before coord had policies); the audit log records operations all the same.
//! - **Judged by the policy in force.** Every release, proposal and approval transaction
//!   compares the policy key's revision with the one it was checked against: a policy changed
//!   meanwhile makes it check again, so a removed grant takes effect on the next request.
//! - **Enforced twice, where etcd can.** The library refuses what the policy does not allow,
//!   before writing (and records the refusal); etcd refuses the writes of a principal its
//!   RBAC does not allow, whatever client sends them. etcd tells keys apart, not operations:
//!   `approve` needs the same write permissions as `release` (an approval writes the values),
//!   so what separates them, and what holds a releaser to review, is the library's check; a
//!   releaser's raw writes (etcdctl, `set`) pass etcd and show in the next release as an
//!   unattributed external change. Likewise `read` lets an instance write its own rollout
//!   status, so a principal with `read` can write a status key that a plan's gates read.

pub mod audit;
pub mod policy;
pub mod rbac;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use policy::{Action, Decision, POLICY_KEY, Policy, Review, covers};

use crate::error::{Error, Result};
use crate::store::{Compare, KeyValue, Store, Txn};
use audit::{AuditAction, AuditRecord};

/// The principal of connections that neither authenticate nor claim a name.
pub const ANONYMOUS: &str = "anonymous";

/// Who an operation is done as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The principal the operation is checked and recorded as.
    pub principal: String,
    /// The connection's own principal when it acts for `principal` (a delegate).
    pub via: Option<String>,
    /// True if the connection's principal is an etcd user it logged in as.
    pub authenticated: bool,
}

impl Identity {
    /// The identity of a connection: its etcd user, or anonymous.
    pub(crate) fn of_connection(user: Option<&str>) -> Self {
        Identity {
            principal: user.unwrap_or(ANONYMOUS).to_owned(),
            via: None,
            authenticated: user.is_some(),
        }
    }

    /// The principal whose audit folder this identity writes: the connection's own.
    pub fn writer(&self) -> &str {
        self.via.as_deref().unwrap_or(&self.principal)
    }

    /// This identity claiming to be `name` (only without etcd auth: a logged-in connection
    /// is its etcd user).
    pub(crate) fn claim(&self, name: &str) -> Result<Identity> {
        policy::check_name("principal", name)?;
        if let Some(via) = &self.via {
            return Err(Error::invalid_argument(
                "principal",
                format!(
                    "`{via}` acts for `{}` here: a delegate's center claims no other name",
                    self.principal
                ),
            ));
        }
        if self.authenticated && name != self.principal {
            return Err(Error::invalid_argument(
                "principal",
                format!(
                    "this connection is etcd user `{}`: it cannot claim to be `{name}` (a \
                     delegate acts for others with on_behalf_of)",
                    self.principal
                ),
            ));
        }
        Ok(Identity {
            principal: name.to_owned(),
            via: None,
            authenticated: self.authenticated,
        })
    }

    /// This identity acting for `name`.
    pub(crate) fn acting_for(&self, name: &str) -> Result<Identity> {
        policy::check_name("principal", name)?;
        Ok(Identity {
            principal: name.to_owned(),
            via: Some(self.writer().to_owned()),
            authenticated: self.authenticated,
        })
    }

    /// An audit record of `action` on `target` done as this identity.
    pub fn record(&self, action: AuditAction, target: impl Into<String>) -> AuditRecord {
        AuditRecord::new(&self.principal, action, target).via(self.via.clone())
    }
}

/// The policy as one read found it: the gate every checked write passes and compares.
#[derive(Clone, Debug, Default)]
pub struct Gate {
    /// The policy, if one is stored.
    pub policy: Option<Arc<Policy>>,
    /// The policy key's mod revision (0: none stored).
    pub revision: i64,
}

impl Gate {
    /// The gate of the policy key as read (`None`: absent).
    pub(crate) fn from_kv(kv: Option<&KeyValue>) -> Result<Gate> {
        Ok(match kv {
            None => Gate::default(),
            Some(kv) => Gate {
                policy: Some(Arc::new(Policy::parse_json(&kv.value)?)),
                revision: kv.mod_revision,
            },
        })
    }

    /// Reads the policy in force.
    pub(crate) async fn read(store: &Store) -> Result<Gate> {
        let (kv, _) = store.get(POLICY_KEY).await?;
        Gate::from_kv(kv.as_ref())
    }

    /// The compare that holds while the policy is still the one checked against.
    pub(crate) fn compare(&self) -> Compare {
        match self.revision {
            0 => Compare::create_revision(POLICY_KEY, 0),
            rev => Compare::mod_revision(POLICY_KEY, rev),
        }
    }

    /// What the policy says of `identity` doing `action` on `prefix` (no policy: allowed).
    pub fn decide(&self, identity: &Identity, action: Action, prefix: &str) -> Decision {
        let Some(policy) = &self.policy else {
            return Decision {
                allowed: true,
                principal: identity.principal.clone(),
                action,
                prefix: prefix.to_owned(),
                reason: "no policy is stored: everything is allowed".into(),
            };
        };
        if let Some(via) = &identity.via
            && !policy.is_delegate(via)
        {
            return Decision {
                allowed: false,
                principal: identity.principal.clone(),
                action,
                prefix: prefix.to_owned(),
                reason: format!("`{via}` may not act for others (it is no delegate)"),
            };
        }
        policy.check(&identity.principal, action, prefix)
    }

    /// `Ok` if allowed, else [`Error::PermissionDenied`].
    pub(crate) fn allow(&self, identity: &Identity, action: Action, prefix: &str) -> Result<()> {
        self.decide(identity, action, prefix).into_result()
    }

    /// The review rule covering `prefix`, if any.
    pub fn review(&self, prefix: &str) -> Option<(String, Review)> {
        let policy = self.policy.as_ref()?;
        policy
            .review_for(prefix)
            .map(|(rule, review)| (rule.to_owned(), review.clone()))
    }

    /// Refuses a direct change of new values on a prefix that requires review.
    pub(crate) fn direct_release(&self, prefix: &str) -> Result<()> {
        match self.review(prefix) {
            Some((rule, _)) => Err(Error::ReviewRequired {
                prefix: prefix.to_owned(),
                rule,
            }),
            None => Ok(()),
        }
    }
}

/// Managing the policy: read it, plan and apply it to etcd's RBAC, check a decision. Get it
/// from [`Coord::access`](crate::Coord::access).
#[derive(Clone, Debug)]
pub struct Access {
    store: Store,
    identity: Identity,
}

/// What [`Access::plan`] found: etcd's changes and whether the stored policy changes.
#[derive(Clone, Debug)]
pub struct PolicyPlan {
    /// The policy to apply.
    pub policy: Policy,
    /// The stored policy it replaces (and its revision), if any decodes.
    pub current: Option<(Policy, i64)>,
    /// The policy key's revision when planned (0: none stored), which applying compares.
    pub current_revision: i64,
    /// etcd's users and roles to change (empty on the embedded store, which has none).
    pub rbac: rbac::Plan,
    /// Whether etcd's RBAC was planned (false on the embedded store).
    pub enforced_by_etcd: bool,
}

impl PolicyPlan {
    /// True if applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.rbac.is_empty() && self.current.as_ref().map(|(p, _)| p) == Some(&self.policy)
    }

    /// The diff, one change a line (`+`/`-`), as `coordctl auth apply` shows it.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.rbac.changes.iter().map(ToString::to_string).collect();
        for user in &self.rbac.missing_passwords {
            lines.push(format!("! user {user}: not in etcd and no password given"));
        }
        if self.current.as_ref().map(|(p, _)| p) != Some(&self.policy) {
            lines.push(format!(
                "~ {POLICY_KEY}: {}",
                if self.current_revision > 0 {
                    "replaced"
                } else {
                    "created"
                }
            ));
        }
        lines
    }
}

impl Access {
    pub(crate) fn new(store: Store, identity: Identity) -> Self {
        Access { store, identity }
    }

    /// The stored policy and its revision, if any.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn policy(&self) -> Result<Option<(Policy, i64)>> {
        let gate = Gate::read(&self.store).await?;
        Ok(gate.policy.map(|policy| ((*policy).clone(), gate.revision)))
    }

    /// May `principal` do `action` on `prefix` under the stored policy, and why.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn check(&self, principal: &str, action: Action, prefix: &str) -> Result<Decision> {
        let gate = Gate::read(&self.store).await?;
        Ok(gate.decide(&Identity::of_connection(Some(principal)), action, prefix))
    }

    /// What applying `policy` would change: etcd's users, roles and permissions (read whole;
    /// the connection must hold etcd's `root` role), and the stored policy. Users etcd lacks
    /// are created with the password `passwords` gives them.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn plan(
        &self,
        policy: &Policy,
        passwords: &BTreeMap<String, String>,
    ) -> Result<PolicyPlan> {
        policy.validate()?;
        // A stored policy that does not decode (a newer coord's, a damaged one) is replaced,
        // not obeyed: the plan compares its revision.
        let (current, current_revision) = match self.policy().await {
            Ok(current) => {
                let revision = current.as_ref().map_or(0, |(_, rev)| *rev);
                (current, revision)
            }
            Err(Error::Decode { .. }) => {
                let (kv, _) = self.store.get(POLICY_KEY).await?;
                (None, kv.map_or(0, |kv| kv.mod_revision))
            }
            Err(e) => return Err(e),
        };
        let enforced_by_etcd = !self.store.is_memory();
        let rbac = if enforced_by_etcd {
            let state = self.store.auth_state().await?;
            rbac::plan(&rbac::desired(policy), &state, |user| {
                passwords.get(user).cloned()
            })
        } else {
            rbac::Plan::default()
        };
        Ok(PolicyPlan {
            policy: policy.clone(),
            current,
            current_revision,
            rbac,
            enforced_by_etcd,
        })
    }

    /// Applies a plan: etcd's changes one by one, then the policy in one transaction with its
    /// audit record, if the stored policy is still the one planned against. Returns the
    /// policy's revision.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if a principal has no etcd user and no password was given;
    /// [`Error::Conflict`] on [`POLICY_KEY`] if the policy changed since the plan (etcd's
    /// changes made so far stay: plan again); etcd's errors for its auth API.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped midway, some of etcd's changes are made and the policy is not
    /// stored. Planning again shows what is left.
    pub async fn apply(&self, plan: &PolicyPlan) -> Result<i64> {
        if let Some(user) = plan.rbac.missing_passwords.first() {
            return Err(Error::invalid_argument(
                "passwords",
                format!("principal `{user}` has no etcd user and no password was given"),
            ));
        }
        for change in &plan.rbac.changes {
            self.store.auth_change(change).await?;
        }
        let writer = self.identity.writer();
        if plan.current.as_ref().map(|(p, _)| p) == Some(&plan.policy) {
            if !plan.rbac.changes.is_empty() {
                // etcd's roles were repaired to the stored policy: recorded too.
                let record = self
                    .identity
                    .record(AuditAction::PolicyChange, POLICY_KEY)
                    .reason(Some(format!(
                        "etcd RBAC brought back to the stored policy: {} change(s)",
                        plan.rbac.changes.len()
                    )));
                audit::append(&self.store, writer, &record).await;
            }
            return Ok(plan.current_revision);
        }
        let gate = Gate {
            policy: None,
            revision: plan.current_revision,
        };
        let record = self
            .identity
            .record(AuditAction::PolicyChange, POLICY_KEY)
            .reason(Some(format!(
                "{} principals, {} roles, {} review rules; {} etcd RBAC change(s)",
                plan.policy.principals.len(),
                plan.policy.roles.len(),
                plan.policy.review.len(),
                plan.rbac.changes.len()
            )));
        let txn = Txn::new().when([gate.compare()]).and_then([
            crate::store::TxnOp::put(POLICY_KEY, plan.policy.to_json()?),
            record.op(writer)?,
        ]);
        let response = audit::send(&self.store, writer, &record, txn).await?;
        if response.succeeded {
            return Ok(response.revision);
        }
        let (now, _) = self.store.get(POLICY_KEY).await?;
        Err(Error::Conflict {
            key: POLICY_KEY.into(),
            expected: plan.current_revision,
            current: now.map_or(0, |kv| kv.mod_revision),
        })
    }
}
