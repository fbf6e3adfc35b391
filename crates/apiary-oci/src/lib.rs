//! apiary-oci: OCI bytecode images — pull, cache, build, push, sign and verify — without a
//! container engine.
//!
//! The image format is bpfman's bytecode image (one gzip'd tar layer holding a BPF object; the
//! config labels `io.ebpf.programs` and `io.ebpf.maps`; multi-arch indexes by Go architecture),
//! so images built by bpfman's tooling load here and images built here load in bpfman.
//! Signatures are cosign's key-based ones, verified offline with a public key.
//!
//! Modules, each owning one concern:
//! * [`reference`](mod@reference): image reference grammar.
//! * [`config`]: registry access settings and credentials (auth files).
//! * [`registry`]: the distribution API over HTTPS, authentication, digest checks.
//! * [`manifest`]: manifest/index/config JSON, media types, architectures.
//! * [`layer`]: safe layer extraction and reproducible layer writing; the BPF ELF check.
//! * [`image`]: building images and reading their labels.
//! * [`cache`]: the local, content-addressed image cache.
//! * [`pull`](mod@pull): pull, inspect and push.
//! * [`sign`](mod@sign): cosign keys, signing and verification.
//! * [`policy`]: which images must be signed.
//!
//! All operations are blocking; each takes the [`ClientConfig`] describing how to reach
//! registries.

pub mod cache;
pub mod config;
pub mod error;
pub mod image;
pub mod layer;
pub mod manifest;
pub mod policy;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod sign;

pub use cache::{Cache, CachedImage, CachedPlatform};
pub use config::{ClientConfig, Limits, RegistryAuth};
pub use error::{Error, Result};
pub use image::{build, BuiltImage, BuiltManifest, Labels};
pub use manifest::Arch;
pub use policy::{enforce, SignatureMode, SignaturePolicy, Verdict};
pub use pull::{inspect, pull, pull_verified, push, ImageInfo, PullPolicy, PulledImage};
pub use reference::ImageRef;
pub use registry::RegistryClient;
pub use sign::{sign, verify, SigningKey, VerifiedSignature, VerifyingKey};
