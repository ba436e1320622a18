use super::SchemaRegistry;
use crate::CodecError;
use async_trait::async_trait;
use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_id, post_schema, SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{RawError, SchemaType, SuppliedSchema};
use std::time::Duration;

/// Bounded so that a hung registry turns into a retryable error rather than a
/// stuck consumer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A Confluent-compatible registry over HTTP (Confluent, AxonOps, Karapace,
/// Apicurio's ccompat API given its base URL).
#[derive(Clone, Debug)]
pub struct HttpSchemaRegistry {
    base_url: String,
    settings: SrSettings,
    // schema_registry_converter has no call for the config endpoint.
    http: reqwest::Client,
}

impl HttpSchemaRegistry {
    /// `url` is the registry's base URL, e.g. `http://127.0.0.1:8081`. Nothing
    /// is contacted until the first call.
    pub fn new(url: &str) -> Self {
        let base_url = url.trim_end_matches('/').to_string();
        // Building a client fails only if the TLS backend cannot initialise;
        // the fallbacks then fail the same way, inside reqwest.
        let settings = SrSettings::new_builder(base_url.clone())
            .set_timeout(TIMEOUT)
            .build()
            .unwrap_or_else(|_| SrSettings::new(base_url.clone()));
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            base_url,
            settings,
            http,
        }
    }

    pub fn url(&self) -> &str {
        &self.base_url
    }
}

/// The registry's own error code, when the failure was an error response.
fn registry_code(e: &SRCError) -> Option<u32> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<RawError>())
        .map(|raw| raw.error_code)
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

#[async_trait]
impl SchemaRegistry for HttpSchemaRegistry {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, CodecError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
        match post_schema(&self.settings, subject.to_string(), supplied).await {
            Ok(registered) => Ok(registered.id),
            Err(e) => Err(match registry_code(&e) {
                // 409: incompatible with the subject's history.
                Some(409) => CodecError::Incompatible {
                    subject: subject.to_string(),
                    reason: describe(&e),
                },
                // 42201: not a valid schema.
                Some(42201) => CodecError::InvalidSchema(describe(&e)),
                _ => CodecError::Registry(format!("registering {subject}: {}", describe(&e))),
            }),
        }
    }

    async fn schema_by_id(&self, id: u32) -> Result<String, CodecError> {
        match get_schema_by_id(id, &self.settings).await {
            Ok(registered) => Ok(registered.schema),
            // 40403 is "schema not found"; a bare 404 code comes from
            // registries that do not refine it.
            Err(e) if matches!(registry_code(&e), Some(40403 | 404)) => {
                Err(CodecError::UnknownSchemaId(id))
            }
            Err(e) => Err(CodecError::Registry(format!(
                "fetching schema {id}: {}",
                describe(&e)
            ))),
        }
    }

    async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), CodecError> {
        let url = format!("{}/config/{}", self.base_url, subject.replace('/', "%2F"));
        let body = serde_json::json!({ "compatibility": level }).to_string();
        let response = self
            .http
            .put(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .header("Accept", "application/vnd.schemaregistry.v1+json")
            .body(body)
            .send()
            .await
            .map_err(|e| CodecError::Registry(format!("PUT {url}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(CodecError::Registry(format!(
            "PUT {url} ({level}): {status}: {text}"
        )))
    }
}

/// The adapter against a small stand-in speaking the Confluent API, so its
/// request shapes and error mapping are checked without a real registry
/// (that is `tests/registry.rs`, behind `real-stack`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventCodec;
    use apache_avro::Schema;
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::{get, post, put};
    use axum::{Json, Router};
    use parking_lot::Mutex;
    use serde_json::{json, Value};
    use std::sync::Arc;

    #[derive(Default)]
    struct Fake {
        schemas: Vec<String>,
        config: Vec<(String, String)>,
    }
    type Shared = Arc<Mutex<Fake>>;

    fn error(status: StatusCode, code: u32) -> (StatusCode, Json<Value>) {
        (status, Json(json!({"error_code": code, "message": "fake"})))
    }

    async fn register(
        State(fake): State<Shared>,
        Path(_subject): Path<String>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        assert_eq!(body["schemaType"], "AVRO");
        let schema = body["schema"].as_str().unwrap().to_string();
        if schema.contains("\"incompatible\"") {
            return error(StatusCode::CONFLICT, 409);
        }
        if Schema::parse_str(&schema).is_err() {
            return error(StatusCode::UNPROCESSABLE_ENTITY, 42201);
        }
        let mut fake = fake.lock();
        let id = match fake.schemas.iter().position(|s| *s == schema) {
            Some(i) => i,
            None => {
                fake.schemas.push(schema);
                fake.schemas.len() - 1
            }
        };
        (StatusCode::OK, Json(json!({"id": id + 1})))
    }

    async fn by_id(State(fake): State<Shared>, Path(id): Path<usize>) -> (StatusCode, Json<Value>) {
        match fake.lock().schemas.get(id.wrapping_sub(1)) {
            Some(s) => (StatusCode::OK, Json(json!({"schema": s}))),
            None => error(StatusCode::NOT_FOUND, 40403),
        }
    }

    async fn config(
        State(fake): State<Shared>,
        Path(subject): Path<String>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let level = body["compatibility"].as_str().unwrap().to_string();
        if level == "SOMETIMES" {
            return error(StatusCode::UNPROCESSABLE_ENTITY, 42203);
        }
        fake.lock().config.push((subject, level.clone()));
        (StatusCode::OK, Json(json!({"compatibility": level})))
    }

    async fn serve() -> (String, Shared) {
        let fake = Shared::default();
        let app = Router::new()
            .route("/subjects/{subject}/versions", post(register))
            .route("/schemas/ids/{id}", get(by_id))
            .route("/config/{subject}", put(config))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, fake)
    }

    #[tokio::test]
    async fn speaks_the_confluent_api_and_maps_its_errors() {
        let (url, fake) = serve().await;
        // The trailing slash is tolerated.
        let registry = HttpSchemaRegistry::new(&url);
        let schema = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"}]}"#;
        let id = registry.register("s", schema).await.unwrap();
        assert_eq!(registry.register("s", schema).await.unwrap(), id);
        assert_eq!(registry.schema_by_id(id).await.unwrap(), schema);
        assert_eq!(
            registry.schema_by_id(99).await,
            Err(CodecError::UnknownSchemaId(99))
        );
        let bad =
            r#"{"type":"record","name":"T","fields":[{"name":"incompatible","type":"long"}]}"#;
        assert!(matches!(
            registry.register("s", bad).await,
            Err(CodecError::Incompatible { subject, .. }) if subject == "s"
        ));
        assert!(matches!(
            registry.register("s", r#"{"type":"nope"}"#).await,
            Err(CodecError::InvalidSchema(_))
        ));
        registry.set_compatibility("s", "BACKWARD").await.unwrap();
        assert!(matches!(
            registry.set_compatibility("s", "SOMETIMES").await,
            Err(CodecError::Registry(_))
        ));
        assert_eq!(
            fake.lock().config,
            vec![("s".to_string(), "BACKWARD".to_string())]
        );
    }

    #[tokio::test]
    async fn the_codec_runs_over_http() {
        let (url, fake) = serve().await;
        let codec = EventCodec::start(Arc::new(HttpSchemaRegistry::new(&url)))
            .await
            .unwrap();
        let subjects: Vec<String> = fake.lock().config.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(subjects.len(), crate::SCHEMA_FILES.len());
        assert!(subjects
            .contains(&"ticketing.schedules.v1-io.ticketing.events.ScheduleCreated".to_string()));
        let cold = EventCodec::start(Arc::new(HttpSchemaRegistry::new(&url)))
            .await
            .unwrap();
        for event in crate::samples::every_event() {
            let bytes = codec.encode(&event).await.unwrap();
            assert_eq!(cold.decode(&bytes).await.unwrap(), event);
        }
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_a_retryable_registry_error() {
        // Bind then drop, so nothing listens on the port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let registry = HttpSchemaRegistry::new(&format!("http://127.0.0.1:{port}"));
        assert!(matches!(
            registry.schema_by_id(1).await,
            Err(CodecError::Registry(_))
        ));
        assert!(matches!(
            registry.set_compatibility("s", "BACKWARD").await,
            Err(CodecError::Registry(_))
        ));
    }
}
