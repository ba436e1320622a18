//! Against a running Confluent-compatible registry:
//! `deploy/local/stack.sh up registry`, then
//! `cargo test -p ticketing-schemas --features real-stack --test registry`.
//! The URL comes from `TICKETING_SCHEMA_REGISTRY_URL` (default
//! `http://127.0.0.1:8081`).
#![cfg(feature = "real-stack")]

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use chrono::{NaiveDate, NaiveTime, Utc};
use std::sync::Arc;
use ticketing_domain::events::{Event, EventMeta, ScheduleCreated, StageCreated};
use ticketing_schemas::{
    topics, CodecError, EventCodec, HttpSchemaRegistry, SchemaRegistry, COMPATIBILITY, SCHEMA_FILES,
};
use uuid::Uuid;

fn url() -> String {
    std::env::var("TICKETING_SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081".to_string())
}

fn registry() -> Arc<HttpSchemaRegistry> {
    Arc::new(HttpSchemaRegistry::new(&url()))
}

fn meta() -> EventMeta {
    EventMeta {
        event_id: Uuid::new_v4().into(),
        occurred_at: chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
            .unwrap(),
        actor: Some(Uuid::new_v4().into()),
    }
}

fn stage() -> StageCreated {
    StageCreated {
        meta: meta(),
        stage_id: Uuid::new_v4().into(),
        seller_id: Uuid::new_v4().into(),
        name: "Hall".into(),
        location: "Busan".into(),
        rows: 20,
        cols: 30,
    }
}

fn avsc(event: &str) -> serde_json::Value {
    let file = SCHEMA_FILES.iter().find(|f| f.event == event).unwrap();
    serde_json::from_str(file.avsc).unwrap()
}

fn subject(event: &str) -> String {
    topics::subject(
        topics::topic_for_event_name(event).unwrap(),
        &format!("io.ticketing.events.{event}"),
    )
}

#[tokio::test]
async fn registers_sets_backward_and_round_trips_through_a_cold_codec() {
    let codec = EventCodec::start(registry()).await.expect("codec starts");
    let http = reqwest::Client::new();
    for file in SCHEMA_FILES {
        let config: serde_json::Value = http
            .get(format!("{}/config/{}", url(), subject(file.event)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let level = config
            .get("compatibilityLevel")
            .or_else(|| config.get("compatibility"))
            .and_then(|l| l.as_str());
        assert_eq!(level, Some(COMPATIBILITY), "{}: {config}", file.event);
    }

    let events = [
        Event::StageCreated(stage()),
        Event::ScheduleCreated(ScheduleCreated {
            meta: meta(),
            schedule_id: Uuid::new_v4().into(),
            concert_id: Uuid::new_v4().into(),
            seller_id: Uuid::new_v4().into(),
            stage_id: Uuid::new_v4().into(),
            rows: 10,
            cols: 10,
            price: 55_000,
            concert_date: NaiveDate::from_ymd_opt(2026, 12, 24).unwrap(),
            concert_time: NaiveTime::from_hms_opt(19, 30, 0).unwrap(),
            sale_opens_at: None,
        }),
    ];
    // A second codec shares nothing with the first but the registry; starting
    // again must find the same ids.
    let cold = EventCodec::start(registry()).await.unwrap();
    for event in &events {
        let bytes = codec.encode(event).await.unwrap();
        assert_eq!(bytes[0], 0);
        assert_eq!(
            u32::from_be_bytes(bytes[1..5].try_into().unwrap()),
            cold.schema_id(event).unwrap()
        );
        assert_eq!(&cold.decode(&bytes).await.unwrap(), event);
    }
}

/// A writer schema this codec did not register is fetched by id from the
/// registry and resolved to the reader schema.
#[tokio::test]
async fn a_newer_writer_schema_is_fetched_by_id_and_resolved() {
    let registry = registry();
    let codec = EventCodec::start(registry.clone()).await.unwrap();
    let mut v2 = avsc("StageCreated");
    v2["fields"].as_array_mut().unwrap().push(serde_json::json!(
        {"name": "note", "type": ["null", "string"], "default": null, "doc": "test only"}
    ));
    // A throwaway subject: the record name, not the subject, decides the event.
    let throwaway = format!("it-{}-io.ticketing.events.StageCreated", Uuid::new_v4());
    let id = registry
        .register(&throwaway, &v2.to_string())
        .await
        .unwrap();
    let fetched = registry.schema_by_id(id).await.unwrap();
    let writer = Schema::parse_str(&v2.to_string()).unwrap();
    assert_eq!(Schema::parse_str(&fetched).unwrap(), writer);

    let event = stage();
    let bytes = codec
        .encode_now(&Event::StageCreated(event.clone()))
        .unwrap();
    // Re-write the same event with the newer schema: read it back as a
    // generic record and add the new field.
    let current = codec
        .schema_id(&Event::StageCreated(event.clone()))
        .unwrap();
    let current = Schema::parse_str(&registry.schema_by_id(current).await.unwrap()).unwrap();
    let generic = GenericDatumReader::builder(&current)
        .build()
        .unwrap()
        .read_value(&mut &bytes[5..])
        .unwrap();
    let Value::Record(mut fields) = generic else {
        panic!("not a record: {generic:?}")
    };
    fields.push((
        "note".into(),
        Value::Union(1, Box::new(Value::String("hi".into()))),
    ));
    let mut newer = vec![0];
    newer.extend_from_slice(&id.to_be_bytes());
    GenericDatumWriter::builder(&writer)
        .build()
        .unwrap()
        .write_value_ref(&mut newer, &Value::Record(fields))
        .unwrap();
    assert_eq!(
        codec.decode(&newer).await.unwrap(),
        Event::StageCreated(event)
    );
}

#[tokio::test]
async fn unknown_ids_are_reported_as_such() {
    let registry = registry();
    assert_eq!(
        registry.schema_by_id(2_000_000_000).await,
        Err(CodecError::UnknownSchemaId(2_000_000_000))
    );
    let codec = EventCodec::start(registry).await.unwrap();
    let mut bytes = vec![0];
    bytes.extend_from_slice(&2_000_000_000u32.to_be_bytes());
    bytes.push(0);
    assert_eq!(
        codec.decode(&bytes).await,
        Err(CodecError::UnknownSchemaId(2_000_000_000))
    );
}

/// A new required field without a default breaks BACKWARD: the registry says
/// so on the compatibility endpoint and refuses to register it (409).
#[tokio::test]
async fn an_incompatible_change_is_rejected() {
    let registry = registry();
    EventCodec::start(registry.clone()).await.unwrap();
    let subject = subject("StageCreated");
    let mut bad = avsc("StageCreated");
    bad["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"name": "capacity", "type": "int", "doc": "no default: old records lack it"}
        ));
    let bad = bad.to_string();

    let check: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/compatibility/subjects/{subject}/versions/latest",
            url()
        ))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({ "schema": bad }).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check["is_compatible"], false, "{check}");

    match registry.register(&subject, &bad).await {
        Err(CodecError::Incompatible { subject: s, .. }) => assert_eq!(s, subject),
        other => panic!("expected Incompatible, got {other:?}"),
    }
}
