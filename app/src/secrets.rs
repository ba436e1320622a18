//! `ticketing dev` must start with no configuration, yet keep tokens and phone
//! numbers readable across restarts: it generates its secrets once and keeps
//! them in the data directory (mode 0600). The real stack takes them from its
//! environment instead.

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::Path;
use ticketing_ingress::security::card::CardCipher;
use ticketing_ingress::security::phone::PhoneCipher;

#[derive(Serialize, Deserialize)]
pub struct DevSecrets {
    pub token_secret: String,
    pub phone_keys: String,
    /// Absent in data directories made before payments: generated then.
    #[serde(default)]
    pub card_keys: Option<String>,
}

pub fn load_or_create(dir: &Path) -> anyhow::Result<DevSecrets> {
    let path = dir.join("secrets.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut secrets: DevSecrets =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if secrets.card_keys.is_none() {
            secrets.card_keys = Some(CardCipher::generate_spec("dev1"));
            save(dir, &secrets)?;
        }
        return Ok(secrets);
    }
    let mut raw = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let secrets = DevSecrets {
        token_secret: B64.encode(raw),
        phone_keys: PhoneCipher::generate_spec("dev1"),
        card_keys: Some(CardCipher::generate_spec("dev1")),
    };
    save(dir, &secrets)?;
    Ok(secrets)
}

fn save(dir: &Path, secrets: &DevSecrets) -> anyhow::Result<()> {
    let path = dir.join("secrets.json");
    let tmp = dir.join("secrets.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(secrets)?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(())
}
