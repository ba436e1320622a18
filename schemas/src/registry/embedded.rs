use super::{SchemaRegistry, LEVELS};
use crate::CodecError;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;
use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Confluent's default when a subject has no level of its own.
const DEFAULT_LEVEL: &str = "BACKWARD";

/// An in-process registry with the semantics of the Confluent one (global ids,
/// an identical schema keeps its id, compatibility levels enforced), so that
/// `ticketing dev` exercises the same codec path and refuses the same schema
/// changes as the real stack.
///
/// With a file, ids survive restarts: records already in the embedded log
/// carry them. The file belongs to one process at a time.
pub struct EmbeddedSchemaRegistry {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

/// The file's form. `versions` lists every (subject, id) registration in
/// order, which is also each subject's version order; an id appears once per
/// subject it is registered under.
#[derive(Default, Serialize, Deserialize)]
struct Stored {
    versions: Vec<StoredVersion>,
    #[serde(default)]
    compatibility: BTreeMap<String, String>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredVersion {
    id: u32,
    subject: String,
    schema: String,
}

struct Version {
    stored: StoredVersion,
    // Identity is decided on the parsed JSON so that formatting and key order
    // do not mint new ids.
    json: serde_json::Value,
    parsed: Schema,
}

#[derive(Default)]
struct State {
    versions: Vec<Version>,
    compatibility: BTreeMap<String, String>,
}

impl State {
    fn from_stored(stored: Stored) -> Result<Self, CodecError> {
        let mut versions = Vec::with_capacity(stored.versions.len());
        for v in stored.versions {
            let (json, parsed) = parse(&v.schema)?;
            versions.push(Version {
                stored: v,
                json,
                parsed,
            });
        }
        Ok(Self {
            versions,
            compatibility: stored.compatibility,
        })
    }

    fn to_stored(&self) -> Stored {
        Stored {
            versions: self.versions.iter().map(|v| v.stored.clone()).collect(),
            compatibility: self.compatibility.clone(),
        }
    }
}

fn parse(schema: &str) -> Result<(serde_json::Value, Schema), CodecError> {
    let json = serde_json::from_str(schema)
        .map_err(|e| CodecError::InvalidSchema(format!("not JSON: {e}")))?;
    let parsed = Schema::parse_str(schema).map_err(|e| CodecError::InvalidSchema(e.to_string()))?;
    Ok((json, parsed))
}

/// Whether data written with `writer` can always be read with `reader`.
/// Partial compatibility (an enum or union that only partly overlaps) is
/// refused: some records would fail to decode.
fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err("only partially compatible".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// `history` is the subject's versions, oldest first.
fn check(level: &str, history: &[&Schema], new: &Schema) -> Result<(), String> {
    let (latest_only, backward, forward) = match level {
        "NONE" => return Ok(()),
        "BACKWARD" => (true, true, false),
        "BACKWARD_TRANSITIVE" => (false, true, false),
        "FORWARD" => (true, false, true),
        "FORWARD_TRANSITIVE" => (false, false, true),
        "FULL" => (true, true, true),
        "FULL_TRANSITIVE" => (false, true, true),
        other => return Err(format!("unknown compatibility level {other}")),
    };
    let against = if latest_only {
        &history[history.len().saturating_sub(1)..]
    } else {
        history
    };
    for old in against {
        if backward {
            can_read(old, new)
                .map_err(|e| format!("{level}: new schema cannot read old data: {e}"))?;
        }
        if forward {
            can_read(new, old)
                .map_err(|e| format!("{level}: old schema cannot read new data: {e}"))?;
        }
    }
    Ok(())
}

impl EmbeddedSchemaRegistry {
    /// Ids live as long as the value; for tests and throw-away runs.
    pub fn in_memory() -> Self {
        Self {
            path: None,
            state: Mutex::new(State::default()),
        }
    }

    /// Loads the registry kept in `path` (a small JSON file), or starts an empty
    /// one there if the file does not exist yet.
    pub fn open(path: &Path) -> Result<Self, CodecError> {
        let io = |what: &str, e: std::io::Error| {
            CodecError::Registry(format!("{what} {}: {e}", path.display()))
        };
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| {
                    CodecError::Registry(format!("corrupt registry file {}: {e}", path.display()))
                })?;
                State::from_stored(stored)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
                }
                State::default()
            }
            Err(e) => return Err(io("reading", e)),
        };
        Ok(Self {
            path: Some(path.to_path_buf()),
            state: Mutex::new(state),
        })
    }

    /// Writes the whole file to a sibling and renames it over the old one, so a
    /// crash leaves either the old or the new registry, never half of one.
    /// Runs under the state lock; writes happen only when a schema or level
    /// changes, i.e. at start-up, and the file is a few kilobytes.
    fn persist(&self, state: &State) -> Result<(), CodecError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io =
            |e: std::io::Error| CodecError::Registry(format!("writing {}: {e}", path.display()));
        let bytes = serde_json::to_vec_pretty(&state.to_stored())
            .map_err(|e| CodecError::Registry(e.to_string()))?;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }
}

#[async_trait]
impl SchemaRegistry for EmbeddedSchemaRegistry {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, CodecError> {
        let (json, parsed) = parse(schema)?;
        let mut state = self.state.lock();
        let history: Vec<&Version> = state
            .versions
            .iter()
            .filter(|v| v.stored.subject == subject)
            .collect();
        if let Some(v) = history.iter().find(|v| v.json == json) {
            return Ok(v.stored.id);
        }
        let level = state
            .compatibility
            .get(subject)
            .map_or(DEFAULT_LEVEL, String::as_str);
        let old: Vec<&Schema> = history.iter().map(|v| &v.parsed).collect();
        check(level, &old, &parsed).map_err(|reason| CodecError::Incompatible {
            subject: subject.to_string(),
            reason,
        })?;
        // Like Confluent, the same schema under another subject keeps its id.
        let id = match state.versions.iter().find(|v| v.json == json) {
            Some(v) => v.stored.id,
            None => {
                state
                    .versions
                    .iter()
                    .map(|v| v.stored.id)
                    .max()
                    .unwrap_or(0)
                    + 1
            }
        };
        state.versions.push(Version {
            stored: StoredVersion {
                id,
                subject: subject.to_string(),
                schema: schema.to_string(),
            },
            json,
            parsed,
        });
        if let Err(e) = self.persist(&state) {
            // An id that is not on disk must not be handed out: it could be
            // given to another schema after a restart.
            state.versions.pop();
            return Err(e);
        }
        Ok(id)
    }

    async fn schema_by_id(&self, id: u32) -> Result<String, CodecError> {
        self.state
            .lock()
            .versions
            .iter()
            .find(|v| v.stored.id == id)
            .map(|v| v.stored.schema.clone())
            .ok_or(CodecError::UnknownSchemaId(id))
    }

    async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), CodecError> {
        if !LEVELS.contains(&level) {
            return Err(CodecError::Registry(format!(
                "unknown compatibility level {level}"
            )));
        }
        let mut state = self.state.lock();
        let previous = state
            .compatibility
            .insert(subject.to_string(), level.to_string());
        if previous.as_deref() == Some(level) {
            return Ok(());
        }
        if let Err(e) = self.persist(&state) {
            match previous {
                Some(p) => state.compatibility.insert(subject.to_string(), p),
                None => state.compatibility.remove(subject),
            };
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str =
        r#"{"type":"record","name":"T","namespace":"x","fields":[{"name":"a","type":"long"}]}"#;
    // V1 with a new field that has a default: BACKWARD compatible.
    const V2: &str = r#"{"type":"record","name":"T","namespace":"x","fields":[{"name":"a","type":"long"},{"name":"b","type":["null","string"],"default":null}]}"#;
    // A new field without a default: old data lacks it, so BACKWARD refuses.
    const BAD: &str = r#"{"type":"record","name":"T","namespace":"x","fields":[{"name":"a","type":"long"},{"name":"c","type":"string"}]}"#;

    #[tokio::test]
    async fn same_schema_same_id_and_formatting_does_not_matter() {
        let r = EmbeddedSchemaRegistry::in_memory();
        let a = r.register("s", V1).await.unwrap();
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(V1).unwrap())
                .unwrap();
        assert_eq!(r.register("s", &pretty).await.unwrap(), a);
        // Another subject reuses the global id.
        assert_eq!(r.register("other", V1).await.unwrap(), a);
        let b = r.register("s", V2).await.unwrap();
        assert_ne!(a, b);
        assert_eq!(r.schema_by_id(b).await.unwrap(), V2);
        assert_eq!(
            r.schema_by_id(999).await,
            Err(CodecError::UnknownSchemaId(999))
        );
    }

    #[tokio::test]
    async fn compatibility_levels_are_enforced() {
        let r = EmbeddedSchemaRegistry::in_memory();
        r.set_compatibility("s", "BACKWARD").await.unwrap();
        r.register("s", V1).await.unwrap();
        assert!(matches!(
            r.register("s", BAD).await,
            Err(CodecError::Incompatible { .. })
        ));
        r.register("s", V2).await.unwrap();
        r.set_compatibility("s", "NONE").await.unwrap();
        r.register("s", BAD).await.unwrap();
        assert!(r.set_compatibility("s", "SOMETIMES").await.is_err());
        assert!(matches!(
            r.register("s", "{not json").await,
            Err(CodecError::InvalidSchema(_))
        ));
    }

    #[tokio::test]
    async fn ids_and_levels_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("schemas.json");
        let (a, b) = {
            let r = EmbeddedSchemaRegistry::open(&path).unwrap();
            r.set_compatibility("s", "BACKWARD").await.unwrap();
            (
                r.register("s", V1).await.unwrap(),
                r.register("t", V2).await.unwrap(),
            )
        };
        let r = EmbeddedSchemaRegistry::open(&path).unwrap();
        assert_eq!(r.register("s", V1).await.unwrap(), a);
        assert_eq!(r.schema_by_id(b).await.unwrap(), V2);
        assert!(matches!(
            r.register("s", BAD).await,
            Err(CodecError::Incompatible { .. })
        ));
        // A new schema after the restart gets a fresh id, not a reused one.
        let c = r.register("u", BAD).await.unwrap();
        assert!(c > a && c > b);
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schemas.json");
        std::fs::write(&path, b"{oops").unwrap();
        assert!(matches!(
            EmbeddedSchemaRegistry::open(&path),
            Err(CodecError::Registry(_))
        ));
    }
}
