#![doc = include_str!("../README.md")]

mod conformance;
mod emitters;
mod fixtures;
mod in_flight;
mod lease_conformance;
mod source;
mod unreachable;

pub use conformance::{EmitterConformance, checkpoint_store_conformance, emitter_conformance};
pub use emitters::{FailingEmitter, RecordedBatch, RecordingEmitter, RejectingEmitter};
pub use fixtures::{TEST_APPLICATION, TEST_STREAM, batch, records, shard_context};
pub use futures::future::BoxFuture;
pub use in_flight::InFlightProbe;
pub use lease_conformance::lease_conformance;
pub use source::{Fault, ScriptedSource};
pub use unreachable::unreachable_sdk_config;
