#![doc = include_str!("../README.md")]

pub mod checkpoint_store_conformance;
mod conformance;
pub mod emitter_conformance;
mod emitters;
mod fixtures;
mod hooked_source;
mod in_flight;
pub mod lease_conformance;
mod lease_faults;
mod source;
mod unreachable;

pub use checkpoint_store_conformance::CheckpointStoreCapabilities;
pub use conformance::{ConformanceReport, RuleFailure, RuleResult, SkippedRule};
pub use emitter_conformance::{EmitterCapabilities, EmitterConformance};
pub use emitters::{FailingEmitter, RecordedBatch, RecordingEmitter, RejectingEmitter};
pub use fixtures::{TEST_APPLICATION, TEST_STREAM, batch, records, shard_context};
pub use futures::future::BoxFuture;
pub use hooked_source::{HookedSource, SourceHooks};
pub use in_flight::InFlightProbe;
pub use lease_conformance::LeaseCapabilities;
pub use lease_faults::{
    HookedStore, LostRenewalReply, Outage, OutageStore, RenewalAppliedButFailed, StoreCall,
    StoreHooks,
};
pub use source::{Fault, PUSH_WAIT, ScriptedSource};
pub use unreachable::unreachable_sdk_config;
