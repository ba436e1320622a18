//! Events on the wire. The `.avsc` files next to this crate are the one source
//! of truth; this crate embeds them, registers them in the schema registry with
//! BACKWARD compatibility, and encodes/decodes domain events in the Confluent
//! wire format. `topics` is the one place where topic names, keys and
//! partition counts are written down.
