//! Codec tests against the embedded registry.

use crate::samples::{every_event, without_optionals};
use crate::{
    split_header, topics, CodecError, EmbeddedSchemaRegistry, EventCodec, SchemaRegistry,
    SCHEMA_FILES,
};
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use proptest::prelude::*;
use std::sync::Arc;
use ticketing_domain::account::Role;
use ticketing_domain::events::Event;

async fn codec() -> (EventCodec, Arc<EmbeddedSchemaRegistry>) {
    let registry = Arc::new(EmbeddedSchemaRegistry::in_memory());
    let codec = EventCodec::start(registry.clone()).await.unwrap();
    (codec, registry)
}

fn subject_of(event: &str) -> String {
    let file = SCHEMA_FILES.iter().find(|f| f.event == event).unwrap();
    let schema = Schema::parse_str(file.avsc).unwrap();
    let Schema::Record(r) = schema else {
        panic!("{event} is not a record")
    };
    topics::subject(
        topics::topic_for_event_name(event).unwrap(),
        &r.name.fullname(None),
    )
}

/// A wire-format record written with an arbitrary writer schema.
fn wire(id: u32, schema: &Schema, value: &Value) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    GenericDatumWriter::builder(schema)
        .build()
        .unwrap()
        .write_value_ref(&mut out, value)
        .unwrap();
    out
}

#[test]
fn codec_is_clone_send_sync_debug() {
    fn check<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    check::<EventCodec>();
    fn object_safe(_: Arc<dyn SchemaRegistry>) {}
    object_safe(Arc::new(EmbeddedSchemaRegistry::in_memory()));
}

#[tokio::test]
async fn every_event_round_trips_with_and_without_optional_fields() {
    let (codec, _) = codec().await;
    for event in every_event().into_iter().chain(without_optionals()) {
        let bytes = codec.encode(&event).await.unwrap();
        assert_eq!(codec.decode(&bytes).await.unwrap(), event, "{event:?}");
    }
    for role in [Role::User, Role::Seller, Role::Manager] {
        let mut event = every_event().remove(0);
        if let Event::UserRegistered(e) = &mut event {
            e.role = role;
        }
        let bytes = codec.encode_now(&event).unwrap();
        assert_eq!(codec.decode(&bytes).await.unwrap(), event);
    }
}

#[tokio::test]
async fn records_carry_the_confluent_header_and_the_registered_id() {
    let (codec, registry) = codec().await;
    let mut ids = Vec::new();
    for event in every_event() {
        let bytes = codec.encode(&event).await.unwrap();
        let id = codec.schema_id(&event).unwrap();
        assert_eq!(bytes[0], 0, "magic byte");
        assert_eq!(&bytes[1..5], &id.to_be_bytes(), "big-endian id");
        assert_eq!(split_header(&bytes).unwrap(), (id, &bytes[5..]));
        assert_eq!(codec.subject(&event).unwrap(), subject_of(event.name()));
        let registered = registry.schema_by_id(id).await.unwrap();
        let file = SCHEMA_FILES
            .iter()
            .find(|f| f.event == event.name())
            .unwrap();
        assert_eq!(registered, file.compact().unwrap());
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), SCHEMA_FILES.len(), "one id per event type");
}

#[tokio::test]
async fn start_is_idempotent_and_ids_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schemas.json");
    let first = EventCodec::start(Arc::new(EmbeddedSchemaRegistry::open(&path).unwrap()))
        .await
        .unwrap();
    let written: Vec<Vec<u8>> = every_event()
        .iter()
        .map(|e| first.encode_now(e).unwrap())
        .collect();
    drop(first);
    let again = EventCodec::start(Arc::new(EmbeddedSchemaRegistry::open(&path).unwrap()))
        .await
        .unwrap();
    for (event, bytes) in every_event().iter().zip(&written) {
        assert_eq!(&again.encode_now(event).unwrap(), bytes);
        assert_eq!(&again.decode(bytes).await.unwrap(), event);
    }
}

#[tokio::test]
async fn unknown_schema_id_is_an_error() {
    let (codec, _) = codec().await;
    let mut bytes = codec.encode_now(&every_event()[0]).unwrap();
    bytes[1..5].copy_from_slice(&4242u32.to_be_bytes());
    assert_eq!(
        codec.decode(&bytes).await,
        Err(CodecError::UnknownSchemaId(4242))
    );
}

#[tokio::test]
async fn malformed_payloads_are_errors() {
    let (codec, _) = codec().await;
    let good = codec.encode_now(&every_event()[2]).unwrap();
    let mut wrong_magic = good.clone();
    wrong_magic[0] = 1;
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("magic only", vec![0]),
        ("short header", good[..4].to_vec()),
        ("wrong magic", wrong_magic),
        ("no body", good[..5].to_vec()),
        ("truncated body", good[..good.len() - 3].to_vec()),
        ("trailing bytes", trailing),
        // A length prefix of 2^31 - 1 for the first string: refused before
        // anything is allocated for it.
        (
            "huge length",
            [&good[..5], &[0xfe, 0xff, 0xff, 0xff, 0x0f][..]].concat(),
        ),
    ];
    for (why, bytes) in cases {
        let result = codec.decode(&bytes).await;
        assert!(
            matches!(result, Err(CodecError::Malformed(_))),
            "{why}: {result:?}"
        );
    }
}

#[tokio::test]
async fn out_of_range_values_are_malformed_not_truncated() {
    let (codec, registry) = codec().await;
    let event = &every_event()[1];
    let id = codec.schema_id(event).unwrap();
    let schema = Schema::parse_str(&registry.schema_by_id(id).await.unwrap()).unwrap();
    let Value::Record(mut fields) = crate::mapping::to_value(event).unwrap() else {
        unreachable!()
    };
    for (name, value) in &mut fields {
        if name == "rows" {
            *value = Value::Int(70_000);
        }
    }
    let bytes = wire(id, &schema, &Value::Record(fields));
    assert!(matches!(
        codec.decode(&bytes).await,
        Err(CodecError::Malformed(why)) if why.contains("rows")
    ));
}

/// A record of a type this build has no event for, registered by someone else.
#[tokio::test]
async fn unknown_record_types_are_reported_by_name() {
    let (codec, registry) = codec().await;
    let other = r#"{"type":"record","name":"SeatHeld","namespace":"io.ticketing.events","fields":[{"name":"n","type":"int"}]}"#;
    let id = registry
        .register("ticketing.schedules.v1-io.ticketing.events.SeatHeld", other)
        .await
        .unwrap();
    let bytes = wire(
        id,
        &Schema::parse_str(other).unwrap(),
        &Value::Record(vec![("n".into(), Value::Int(1))]),
    );
    assert_eq!(
        codec.decode(&bytes).await,
        Err(CodecError::UnknownRecord(
            "io.ticketing.events.SeatHeld".into()
        ))
    );
}

/// The point of BACKWARD: records written with an older schema (here, a
/// ConcertCreated from before `concert_image` existed) still decode, the
/// missing field taking its default; and the registry accepts the current
/// schema on top of the old one.
#[tokio::test]
async fn records_written_with_an_older_schema_still_decode() {
    let registry = Arc::new(EmbeddedSchemaRegistry::in_memory());
    let subject = subject_of("ConcertCreated");
    let file = SCHEMA_FILES
        .iter()
        .find(|f| f.event == "ConcertCreated")
        .unwrap();
    let mut v0: serde_json::Value = serde_json::from_str(file.avsc).unwrap();
    v0["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "concert_image");
    let v0 = v0.to_string();
    registry
        .set_compatibility(&subject, "BACKWARD")
        .await
        .unwrap();
    let old_id = registry.register(&subject, &v0).await.unwrap();

    let codec = EventCodec::start(registry.clone()).await.unwrap();
    let event = every_event().remove(2);
    assert_ne!(codec.schema_id(&event).unwrap(), old_id);
    let Value::Record(mut fields) = crate::mapping::to_value(&event).unwrap() else {
        unreachable!()
    };
    fields.retain(|(n, _)| n != "concert_image");
    let old_bytes = wire(
        old_id,
        &Schema::parse_str(&v0).unwrap(),
        &Value::Record(fields),
    );

    let Event::ConcertCreated(mut expected) = event else {
        unreachable!()
    };
    expected.concert_image = None;
    // A fresh codec: the old writer schema comes from the registry.
    let cold = EventCodec::start(registry).await.unwrap();
    assert_eq!(
        cold.decode(&old_bytes).await.unwrap(),
        Event::ConcertCreated(expected)
    );
}

/// A newer producer may add fields (with defaults); this build ignores them.
#[tokio::test]
async fn records_written_with_a_newer_schema_decode_too() {
    let (codec, registry) = codec().await;
    let subject = subject_of("StageCreated");
    let file = SCHEMA_FILES
        .iter()
        .find(|f| f.event == "StageCreated")
        .unwrap();
    let mut v2: serde_json::Value = serde_json::from_str(file.avsc).unwrap();
    v2["fields"].as_array_mut().unwrap().push(serde_json::json!(
        {"name": "capacity_note", "type": ["null", "string"], "default": null}
    ));
    let v2 = v2.to_string();
    let new_id = registry.register(&subject, &v2).await.unwrap();
    let event = every_event().remove(1);
    let Value::Record(mut fields) = crate::mapping::to_value(&event).unwrap() else {
        unreachable!()
    };
    fields.push((
        "capacity_note".into(),
        Value::Union(1, Box::new(Value::String("standing".into()))),
    ));
    let bytes = wire(
        new_id,
        &Schema::parse_str(&v2).unwrap(),
        &Value::Record(fields),
    );
    assert_eq!(codec.decode(&bytes).await.unwrap(), event);
}

/// A schema change that breaks BACKWARD (a new field without a default) is
/// refused at start-up, not discovered by a consumer later.
#[tokio::test]
async fn an_incompatible_schema_stops_start_up() {
    let registry = Arc::new(EmbeddedSchemaRegistry::in_memory());
    let subject = subject_of("StageCreated");
    let file = SCHEMA_FILES
        .iter()
        .find(|f| f.event == "StageCreated")
        .unwrap();
    // The history holds a version without `location`, which the current
    // schema requires and has no default for.
    let mut v0: serde_json::Value = serde_json::from_str(file.avsc).unwrap();
    v0["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "location");
    registry.register(&subject, &v0.to_string()).await.unwrap();
    match EventCodec::start(registry).await {
        Err(CodecError::Incompatible { subject: s, .. }) => assert_eq!(s, subject),
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

// ---- the schema files themselves --------------------------------------

fn field_json(file: &crate::SchemaFile) -> Vec<serde_json::Value> {
    let json: serde_json::Value = serde_json::from_str(file.avsc).unwrap();
    json["fields"].as_array().unwrap().clone()
}

#[test]
fn there_is_one_schema_file_per_event_and_each_parses() {
    let mut names: Vec<&str> = every_event().iter().map(Event::name).collect();
    let mut files: Vec<&str> = SCHEMA_FILES.iter().map(|f| f.event).collect();
    names.sort_unstable();
    // The samples hold several events of one type (one per command, fact...).
    names.dedup();
    files.sort_unstable();
    assert_eq!(names, files);
    for file in SCHEMA_FILES {
        let schema = Schema::parse_str(file.avsc).unwrap_or_else(|e| panic!("{}: {e}", file.event));
        let Schema::Record(r) = schema else {
            panic!("{} is not a record", file.event)
        };
        assert_eq!(r.name.name(), file.event);
        assert_eq!(r.name.namespace(), Some("io.ticketing.events"));
        assert!(r.doc.is_some(), "{} needs a doc", file.event);
        // The compact form registered must be the same schema.
        assert_eq!(
            Schema::parse_str(&file.compact().unwrap()).unwrap(),
            Schema::parse_str(file.avsc).unwrap()
        );
    }
}

#[test]
fn every_schema_starts_with_the_common_fields() {
    let uuid = serde_json::json!({"type": "string", "logicalType": "uuid"});
    for file in SCHEMA_FILES {
        let fields = field_json(file);
        assert_eq!(fields[0]["name"], "event_id", "{}", file.event);
        assert_eq!(fields[0]["type"], uuid);
        assert_eq!(fields[1]["name"], "occurred_at");
        assert_eq!(
            fields[1]["type"],
            serde_json::json!({"type": "long", "logicalType": "timestamp-millis"})
        );
        assert_eq!(fields[2]["name"], "actor");
        assert_eq!(fields[2]["type"], serde_json::json!(["null", uuid]));
        assert_eq!(fields[2]["default"], serde_json::Value::Null);
    }
}

/// Unions are null-first with a null default (the mapping and BACKWARD
/// evolution both rely on it), every field is documented, and nothing that
/// looks like a secret is ever on a topic other teams read.
#[test]
fn fields_are_documented_optional_by_null_union_and_free_of_secrets() {
    const FORBIDDEN: &[&str] = &["password", "phone", "card", "secret", "token", "cvc", "pan"];
    for file in SCHEMA_FILES {
        for field in field_json(file) {
            let name = field["name"].as_str().unwrap();
            assert!(
                field["doc"].is_string(),
                "{}.{name} needs a doc",
                file.event
            );
            for bad in FORBIDDEN {
                assert!(
                    !name.split('_').any(|part| part == *bad) && !name.contains("password"),
                    "{}.{name} looks like a secret",
                    file.event
                );
            }
            // Unions of records (commands, facts, replies) are not optional
            // values; every union that admits null is.
            if let Some(branches) = field["type"]
                .as_array()
                .filter(|b| b.contains(&serde_json::json!("null")))
            {
                assert_eq!(branches[0], "null", "{}.{name}: null first", file.event);
                assert!(
                    field.get("default") == Some(&serde_json::Value::Null),
                    "{}.{name}: optional fields default to null",
                    file.event
                );
            }
        }
    }
}

/// Each schema must accept itself as a next version under BACKWARD (what the
/// registry checks on every deploy) and stay compatible with a copy that
/// gains an optional field, i.e. it leaves room to evolve.
#[tokio::test]
async fn every_schema_is_backward_compatible_with_an_evolved_copy() {
    let registry = EmbeddedSchemaRegistry::in_memory();
    for file in SCHEMA_FILES {
        let subject = subject_of(file.event);
        registry
            .set_compatibility(&subject, "BACKWARD_TRANSITIVE")
            .await
            .unwrap();
        let id = registry
            .register(&subject, &file.compact().unwrap())
            .await
            .unwrap();
        assert_eq!(registry.register(&subject, file.avsc).await.unwrap(), id);
        let mut next: serde_json::Value = serde_json::from_str(file.avsc).unwrap();
        next["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(
                {"name": "added_later", "type": ["null", "long"], "default": null, "doc": "x"}
            ));
        registry
            .register(&subject, &next.to_string())
            .await
            .unwrap();
    }
}

// ---- never panic on arbitrary bytes -----------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes, and random bodies behind every valid header.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        raw in proptest::collection::vec(any::<u8>(), 0..64),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        which in 0usize..4,
    ) {
        let rt = runtime();
        let (codec, _) = rt.block_on(codec());
        let _ = rt.block_on(codec.decode(&raw));
        let id = codec.schema_id(&every_event()[which]).unwrap();
        let mut bytes = vec![0];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(&body);
        let _ = rt.block_on(codec.decode(&bytes));
    }

    /// Valid records with one byte changed or cut short: the likeliest
    /// corruption, and the deepest path into the decoder.
    #[test]
    fn decoding_corrupted_records_never_panics(
        which in 0usize..8,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let rt = runtime();
        let (codec, _) = rt.block_on(codec());
        let events: Vec<Event> = every_event().into_iter().chain(without_optionals()).collect();
        let good = codec.encode_now(&events[which]).unwrap();
        let mut flipped = good.clone();
        let i = 5 + at.index(good.len() - 5);
        flipped[i] = byte;
        if let Ok(decoded) = rt.block_on(codec.decode(&flipped)) {
            // Whatever decodes must encode again: no half-valid events.
            codec.encode_now(&decoded).unwrap();
        }
        // Cut anywhere, a record must fail rather than lose its tail.
        let cut = &good[..cut.index(good.len())];
        prop_assert!(rt.block_on(codec.decode(cut)).is_err(), "{} of {} bytes decoded", cut.len(), good.len());
    }
}
