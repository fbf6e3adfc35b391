//! apiary: the manager. It sequences every operation (validate, lock, kernel change, record),
//! rolls the kernel back when a later step fails, and is the one implementation both front
//! doors (the CLI in-process, the gRPC daemon) call.

mod api;
pub mod chain;
mod error;
pub mod images;
mod inspect;
mod update;
mod lock;
mod manager;
mod reconcile;
mod mapdump;
pub mod package;
pub mod run;
mod source;
mod views;

pub use api::Api;
pub use error::{Error, ErrorCode, Result};
pub use manager::{Config, LoadSpec, Manager, MapRef, ObjectSource};
pub use inspect::{inspect, Inspection};
pub use reconcile::ReconcileReport;
pub use update::{UpdateReport, UpdateSpec};
pub use views::*;

pub use apiary_core as core;
pub use apiary_oci as oci;
pub use apiary_kernel as kernel;
