//! etcd's users and roles: read whole, changed one request at a time (etcd's auth API has no
//! transactions). The connection must authenticate as a user holding the `root` role.

use etcd_client::{Permission as EtcdPermission, PermissionType, RoleRevokePermissionOptions};

use super::EtcdStore;
use super::errors::Request;
use crate::error::Result;
use crate::store::{AuthChange, AuthState, Permission, PermissionKind};

impl EtcdStore {
    pub(crate) async fn auth_state(&self) -> Result<AuthState> {
        let mut state = AuthState::default();
        let roles = self
            .call(Request::new("role list", ""), || {
                let mut auth = self.client.auth_client();
                async move { auth.role_list().await }
            })
            .await?;
        for role in roles.roles() {
            let got = self
                .call(Request::new("role get", role), || {
                    let mut auth = self.client.auth_client();
                    let role = role.clone();
                    async move { auth.role_get(role).await }
                })
                .await?;
            let permissions = got.permissions().iter().map(from_etcd).collect();
            state.roles.insert(role.clone(), permissions);
        }
        let users = self
            .call(Request::new("user list", ""), || {
                let mut auth = self.client.auth_client();
                async move { auth.user_list().await }
            })
            .await?;
        for user in users.users() {
            let got = self
                .call(Request::new("user get", user), || {
                    let mut auth = self.client.auth_client();
                    let user = user.clone();
                    async move { auth.user_get(user).await }
                })
                .await?;
            state
                .users
                .insert(user.clone(), got.roles().iter().cloned().collect());
        }
        Ok(state)
    }

    pub(crate) async fn auth_change(&self, change: &AuthChange) -> Result<()> {
        let auth = || self.client.auth_client();
        match change {
            AuthChange::AddRole(role) => {
                self.call(Request::new("role add", role).write(), || {
                    let mut auth = auth();
                    async move { auth.role_add(role.as_str()).await }
                })
                .await?;
            }
            AuthChange::DeleteRole(role) => {
                self.call(Request::new("role delete", role).write(), || {
                    let mut auth = auth();
                    async move { auth.role_delete(role.as_str()).await }
                })
                .await?;
            }
            AuthChange::Grant { role, permission } => {
                self.call(Request::new("role grant-permission", role).write(), || {
                    let mut auth = auth();
                    let perm = to_etcd(permission);
                    async move { auth.role_grant_permission(role.as_str(), perm).await }
                })
                .await?;
            }
            AuthChange::Revoke { role, permission } => {
                self.call(Request::new("role revoke-permission", role).write(), || {
                    let mut auth = auth();
                    let options = (!permission.range_end.is_empty()).then(|| {
                        RoleRevokePermissionOptions::new()
                            .with_range_end(permission.range_end.as_bytes().to_vec())
                    });
                    let key = permission.key.clone();
                    async move {
                        auth.role_revoke_permission(role.as_str(), key, options)
                            .await
                    }
                })
                .await?;
            }
            AuthChange::AddUser { name, password } => {
                self.call(Request::new("user add", name).write(), || {
                    let mut auth = auth();
                    async move { auth.user_add(name.as_str(), password.as_str(), None).await }
                })
                .await?;
            }
            AuthChange::GrantRole { user, role } => {
                self.call(Request::new("user grant-role", user).write(), || {
                    let mut auth = auth();
                    async move { auth.user_grant_role(user.as_str(), role.as_str()).await }
                })
                .await?;
            }
            AuthChange::RevokeRole { user, role } => {
                self.call(Request::new("user revoke-role", user).write(), || {
                    let mut auth = auth();
                    async move { auth.user_revoke_role(user.as_str(), role.as_str()).await }
                })
                .await?;
            }
        }
        Ok(())
    }
}

fn to_etcd(permission: &Permission) -> EtcdPermission {
    let kind = match permission.kind {
        PermissionKind::Read => PermissionType::Read,
        PermissionKind::Write => PermissionType::Write,
        PermissionKind::ReadWrite => PermissionType::Readwrite,
    };
    let perm = EtcdPermission::new(kind, permission.key.as_bytes().to_vec());
    if permission.range_end.is_empty() {
        perm
    } else {
        perm.with_range_end(permission.range_end.as_bytes().to_vec())
    }
}

fn from_etcd(permission: &EtcdPermission) -> Permission {
    let kind = match permission.get_type() {
        0 => PermissionKind::Read,
        1 => PermissionKind::Write,
        _ => PermissionKind::ReadWrite,
    };
    Permission {
        key: String::from_utf8_lossy(permission.key()).into_owned(),
        range_end: String::from_utf8_lossy(permission.range_end()).into_owned(),
        kind,
    }
}
