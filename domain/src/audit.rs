use crate::ids::UserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who created, changed and (soft-)deleted a row, and when. Every table carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    pub created_at: DateTime<Utc>,
    pub created_by: Option<UserId>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<UserId>,
    pub deletion: Option<Deletion>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    pub deleted_at: DateTime<Utc>,
    pub deleted_by: Option<UserId>,
}

impl Audit {
    /// A fresh row. `by` is `None` only for rows the system creates itself
    /// (self sign-up, the bootstrap manager).
    pub fn created(at: DateTime<Utc>, by: Option<UserId>) -> Self {
        Self {
            created_at: at,
            created_by: by,
            updated_at: at,
            updated_by: by,
            deletion: None,
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deletion.is_some()
    }
}
