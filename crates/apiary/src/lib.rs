//! apiary: the manager. It sequences every operation (validate, lock, kernel change, record),
//! rolls the kernel back when a later step fails, and is the one implementation both front
//! doors (the CLI in-process, the gRPC daemon) call.

mod api;
mod attach;
pub mod build;
pub mod chain;
mod error;
pub mod images;
mod inspect;
mod load;
mod lock;
mod manager;
mod mapdump;
pub mod metrics;
pub mod package;
mod pipeline;
mod queries;
mod reconcile;
pub mod run;
mod source;
pub mod timing;
pub mod trace;
pub mod trace_output;
mod update;
mod views;

pub use api::Api;
pub use error::{Error, ErrorCode, Result, ERROR_CODES};
pub use inspect::{inspect, Inspection};
pub use load::{LoadSpec, ObjectSource};
pub use manager::{Config, Manager};
pub use queries::MapRef;
pub use reconcile::ReconcileReport;
pub use update::{UpdateReport, UpdateSpec};
pub use views::*;

pub use apiary_core as core;
pub use apiary_kernel as kernel;
pub use apiary_oci as oci;
