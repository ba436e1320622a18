use crate::routes::accounts::create_account;
use crate::state::AppState;
use ticketing_domain::account::{Email, Role};

/// Creates the first MANAGER from configuration if that e-mail has no account
/// yet. Public sign-up can never create one, so this is the only way in.
pub async fn ensure_admin(state: &AppState, email: &str, password: &str) -> anyhow::Result<()> {
    let parsed = Email::parse(email).map_err(|e| anyhow::anyhow!("TICKETING_ADMIN_EMAIL: {e}"))?;
    if let Some(existing) = state.accounts.user_by_email(&parsed).await? {
        if existing.role != Role::Manager {
            tracing::warn!(user_id = %existing.user_id, "the configured admin e-mail belongs to a non-manager account");
        }
        return Ok(());
    }
    // The nickname must be unique too; derive it from the e-mail's local part.
    let local: String = parsed
        .as_str()
        .split('@')
        .next()
        .unwrap_or("admin")
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(24)
        .collect();
    let nickname = format!("admin-{local}");
    create_account(
        state,
        email,
        password,
        &nickname,
        "+0000000000",
        Role::Manager,
        None,
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the admin account: {} {}", e.code, e.message))?;
    tracing::info!("bootstrap MANAGER account created");
    Ok(())
}
