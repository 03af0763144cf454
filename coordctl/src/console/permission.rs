//! What the write token a read presents may do. The review screen and the plan view offer
//! their buttons only to a principal the access policy lets act on the prefix; the write
//! routes check again all the same (the page is not trusted).

use axum::http::HeaderMap;
use coord::access::Action;

use super::error::ApiError;
use super::Console;

/// The principal of the write token presented, and whether it may act.
pub struct Permission {
    /// The token's principal; `None` without a write token (no token, or a read token).
    pub principal: Option<String>,
    /// True if the access policy lets the principal take the action on the prefix.
    pub allowed: bool,
    /// The policy's reason, or why there is nobody to act as.
    pub reason: String,
}

/// Whether the write token in `headers` belongs to a principal the access policy lets take
/// `action` on `prefix`. Without a write token nobody may: the reason says that `doing` (as
/// "approving") needs one. A token in neither token file is an error (401).
pub async fn presented_permission(
    console: &Console,
    headers: &HeaderMap,
    action: Action,
    prefix: &str,
    doing: &str,
) -> Result<Permission, ApiError> {
    let Some(writer) = console.access.presented_writer(headers)? else {
        return Ok(Permission {
            principal: None,
            allowed: false,
            reason: format!("{doing} needs a write token (enter it at the top of the page)"),
        });
    };
    let decision = console
        .coord
        .access()
        .check(&writer.principal, action, prefix)
        .await?;
    Ok(Permission {
        principal: Some(writer.principal),
        allowed: decision.allowed,
        reason: decision.reason,
    })
}
