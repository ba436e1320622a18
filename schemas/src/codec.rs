use crate::registry::SchemaRegistry;
use crate::{mapping, topics, CodecError, SCHEMA_FILES};
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::sync::Arc;
use ticketing_domain::events::Event;

/// Confluent wire format: magic byte, then the schema id big-endian.
const MAGIC: u8 = 0;
const HEADER_LEN: usize = 5;

/// Avro trusts length prefixes and allocates before reading, so a corrupt
/// record could ask for its default 512 MiB. No event comes near this (Kafka
/// caps a record at a few MiB). The limit is process-wide and set once;
/// nothing else in the platform decodes Avro.
const MAX_AVRO_ALLOCATION: usize = 16 * 1024 * 1024;

/// The compatibility level set on every subject before registering: consumers
/// are upgraded first and must read what older producers wrote.
pub const COMPATIBILITY: &str = "BACKWARD";

/// One event type as this build knows it.
struct Kind {
    /// `Event::name`.
    name: &'static str,
    subject: String,
    /// The reader schema (this build's `.avsc`).
    schema: Schema,
    /// The id this build writes with.
    id: u32,
}

/// A writer schema fetched by id, and what this build can make of it.
struct Writer {
    schema: Schema,
    kind: Result<usize, CodecError>,
}

struct Inner {
    registry: Arc<dyn SchemaRegistry>,
    kinds: Vec<Kind>,
    // Ids are immutable in a registry, so entries never go stale. Failures to
    // fetch are not cached: the registry may be back, or catch up, next time.
    writers: RwLock<HashMap<u32, Arc<Writer>>>,
}

/// Domain events to and from Confluent wire format (magic byte 0, 4-byte
/// big-endian schema id, Avro binary body).
///
/// Cheap to clone; clones share the registry and the schema cache.
#[derive(Clone)]
pub struct EventCodec {
    inner: Arc<Inner>,
}

impl fmt::Debug for EventCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.inner.kinds.iter().map(|k| (&k.subject, k.id)))
            .finish()
    }
}

fn full_name(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(r) => Some(r.name.fullname(None)),
        _ => None,
    }
}

fn avro_error(e: apache_avro::Error) -> CodecError {
    CodecError::Malformed(e.to_string())
}

impl EventCodec {
    /// Sets `BACKWARD` on every event subject and registers this build's
    /// schemas, so that a schema change the registry refuses stops the
    /// service at start-up rather than at its first event.
    pub async fn start(registry: Arc<dyn SchemaRegistry>) -> Result<Self, CodecError> {
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
        let mut kinds = Vec::with_capacity(SCHEMA_FILES.len());
        for file in SCHEMA_FILES {
            let schema = Schema::parse_str(file.avsc)
                .map_err(|e| CodecError::InvalidSchema(format!("{}: {e}", file.event)))?;
            let name = full_name(&schema).ok_or_else(|| {
                CodecError::InvalidSchema(format!("{} is not a record", file.event))
            })?;
            let topic = topics::topic_for_event_name(file.event)
                .ok_or_else(|| CodecError::InvalidSchema(format!("{} has no topic", file.event)))?;
            let subject = topics::subject(topic, &name);
            registry.set_compatibility(&subject, COMPATIBILITY).await?;
            let id = registry.register(&subject, &file.compact()?).await?;
            tracing::debug!(subject, id, "schema registered");
            kinds.push(Kind {
                name: file.event,
                subject,
                schema,
                id,
            });
        }
        // Our own records never need a registry round trip to decode.
        let writers = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let writer = Writer {
                    schema: k.schema.clone(),
                    kind: Ok(i),
                };
                (k.id, Arc::new(writer))
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                registry,
                kinds,
                writers: RwLock::new(writers),
            }),
        })
    }

    fn kind_of(&self, event: &Event) -> Result<&Kind, CodecError> {
        self.inner
            .kinds
            .iter()
            .find(|k| k.name == event.name())
            .ok_or_else(|| CodecError::Encode(format!("no schema for {}", event.name())))
    }

    /// The schema id this build writes `event` with.
    pub fn schema_id(&self, event: &Event) -> Result<u32, CodecError> {
        self.kind_of(event).map(|k| k.id)
    }

    /// The registry subject of `event`'s schema.
    pub fn subject(&self, event: &Event) -> Result<&str, CodecError> {
        self.kind_of(event).map(|k| k.subject.as_str())
    }

    /// Encodes `event` in the wire format. Async for the sake of callers that
    /// may one day need a registry call; today every id is known from start-up
    /// and this never awaits (see [`EventCodec::encode_now`]).
    pub async fn encode(&self, event: &Event) -> Result<Vec<u8>, CodecError> {
        self.encode_now(event)
    }

    /// [`EventCodec::encode`] for synchronous contexts.
    pub fn encode_now(&self, event: &Event) -> Result<Vec<u8>, CodecError> {
        let kind = self.kind_of(event)?;
        let value = mapping::to_value(event)?;
        let mut out = Vec::with_capacity(128);
        out.push(MAGIC);
        out.extend_from_slice(&kind.id.to_be_bytes());
        GenericDatumWriter::builder(&kind.schema)
            .build()
            .and_then(|w| w.write_value_ref(&mut out, &value))
            .map_err(|e| CodecError::Encode(format!("{}: {e}", event.name())))?;
        Ok(out)
    }

    /// Decodes a record written by any producer whose schema is in the
    /// registry, resolving its writer schema to this build's reader schema, so
    /// records written before a (compatible) schema change still decode.
    /// Never panics, whatever the bytes.
    pub async fn decode(&self, bytes: &[u8]) -> Result<Event, CodecError> {
        let (id, body) = split_header(bytes)?;
        let writer = self.writer(id).await?;
        let index = writer.kind.clone()?;
        let kind = &self.inner.kinds[index];
        // Same schema on both sides: skip resolution.
        let reader_schema = (id != kind.id).then_some(&kind.schema);
        let mut input = Strict {
            rest: body,
            ran_out: false,
        };
        let value = GenericDatumReader::builder(&writer.schema)
            .maybe_reader_schema(reader_schema)
            .build()
            .and_then(|r| r.read_value(&mut input))
            .map_err(avro_error)?;
        if input.ran_out {
            return Err(CodecError::Malformed("the record is cut short".to_string()));
        }
        if !input.rest.is_empty() {
            return Err(CodecError::Malformed(format!(
                "{} bytes after the record",
                input.rest.len()
            )));
        }
        mapping::from_value(kind.name, value)
    }

    async fn writer(&self, id: u32) -> Result<Arc<Writer>, CodecError> {
        if let Some(w) = self.inner.writers.read().get(&id) {
            return Ok(w.clone());
        }
        let text = self.inner.registry.schema_by_id(id).await?;
        let schema = Schema::parse_str(&text)
            .map_err(|e| CodecError::InvalidSchema(format!("schema {id}: {e}")))?;
        let kind = self.classify(&schema);
        let writer = Arc::new(Writer { schema, kind });
        self.inner.writers.write().insert(id, writer.clone());
        Ok(writer)
    }

    /// Which event a writer schema carries, decided by its record's full name,
    /// and whether this build's schema for it can read it.
    fn classify(&self, writer: &Schema) -> Result<usize, CodecError> {
        let name = full_name(writer).ok_or_else(|| {
            CodecError::UnknownRecord("a schema that is not a record".to_string())
        })?;
        let index = self
            .inner
            .kinds
            .iter()
            .position(|k| full_name(&k.schema).as_deref() == Some(name.as_str()))
            .ok_or_else(|| CodecError::UnknownRecord(name.clone()))?;
        match SchemaCompatibility::can_read(writer, &self.inner.kinds[index].schema) {
            // Partial: e.g. an enum symbol this build lacks. Records that do
            // not use it still decode; the others fail one by one.
            Ok(Compatibility::Full | Compatibility::Partial) => Ok(index),
            Err(e) => Err(CodecError::InvalidSchema(format!(
                "{name}: writer schema cannot be read: {e}"
            ))),
        }
    }
}

/// The Avro body as a reader that remembers running out. apache-avro reads a
/// string, boolean or union index cut short by the end of input as null
/// rather than failing, which would turn a truncated record into a valid
/// event with an optional field missing; a well-formed record is never read
/// past its end, so running out at all means the record is corrupt.
struct Strict<'a> {
    rest: &'a [u8],
    ran_out: bool,
}

impl Read for Strict<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.len() > self.rest.len() {
            self.ran_out = true;
        }
        let n = buf.len().min(self.rest.len());
        let (head, tail) = self.rest.split_at(n);
        buf[..n].copy_from_slice(head);
        self.rest = tail;
        Ok(n)
    }
}

/// The schema id and the Avro body of a wire-format record.
pub fn split_header(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    match bytes {
        [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [MAGIC, ..] => Err(CodecError::Malformed(format!(
            "{} bytes is shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ))),
        [other, ..] => Err(CodecError::Malformed(format!(
            "magic byte is {other}, not {MAGIC}"
        ))),
        [] => Err(CodecError::Malformed("empty payload".to_string())),
    }
}
