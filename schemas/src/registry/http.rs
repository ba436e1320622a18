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
