//! apiary: the manager. It sequences every operation (validate, lock, kernel change, record),
//! rolls the kernel back when a later step fails, and is the one implementation both front
//! doors (the CLI in-process, the gRPC daemon) call.

mod api;
pub mod chain;
mod error;
pub mod images;
mod inspect;
mod lock;
mod manager;
mod mapdump;
pub mod package;
mod pipeline;
mod reconcile;
pub mod run;
mod source;
mod update;
mod views;

pub use api::Api;
pub use error::{Error, ErrorCode, Result, ERROR_CODES};
pub use inspect::{inspect, Inspection};
pub use manager::{Config, LoadSpec, Manager, MapRef, ObjectSource};
pub use reconcile::ReconcileReport;
pub use update::{UpdateReport, UpdateSpec};
pub use views::*;

pub use apiary_core as core;
pub use apiary_kernel as kernel;
pub use apiary_oci as oci;
