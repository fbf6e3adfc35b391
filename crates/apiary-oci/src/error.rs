//! The one error type of apiary-oci.
//!
//! Every variant carries the fields a caller needs to act on it (registry, reference, digest, path,
//! limit). As in the rest of apiary, a variant's message includes the underlying cause as text, so
//! no variant also exposes it as a `source` (the CLI prints chains with `{:#}` and would print it
//! twice).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("cannot reach registry {registry}: {reason}")]
    Transport { registry: String, reason: String },

    /// The registry (or its token service) wants credentials and none were given.
    #[error("registry {registry} requires authentication to access {repository}: pass a username and password or an auth file with an entry for {registry}")]
    AuthRequired {
        registry: String,
        repository: String,
    },

    /// Credentials were sent and refused, or they do not grant the access needed.
    #[error("registry {registry} refused the credentials for {repository} ({action}): {reason}")]
    AuthRejected {
        registry: String,
        repository: String,
        action: String,
        reason: String,
    },

    #[error("{what} not found in {registry}/{repository}")]
    NotFound {
        registry: String,
        repository: String,
        what: String,
    },

    #[error("registry {registry} answered HTTP {status} to {method} {path}: {message}")]
    Registry {
        registry: String,
        method: String,
        path: String,
        status: u16,
        message: String,
    },

    /// Plain HTTP or an unverified certificate would be needed and the registry is not marked
    /// insecure, or a token realm asks for credentials over plain HTTP.
    #[error("refusing insecure connection to {registry}: {reason}")]
    Insecure { registry: String, reason: String },

    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("{what} is larger than the limit ({limit} bytes)")]
    TooLarge { what: String, limit: u64 },

    #[error("layer entry {path} escapes the image")]
    PathEscape { path: String },

    #[error("layer entry {path} is a {kind}; a bytecode layer may only hold regular files and directories")]
    ForbiddenEntry { path: String, kind: String },

    #[error("the image's object is not a BPF ELF file: {reason}")]
    NotBpf { reason: String },

    #[error("the image's object is {object}-endian but linux/{arch} is {host}-endian")]
    WrongEndianness {
        object: String,
        host: String,
        arch: String,
    },

    #[error("{reference} is not a bytecode image: {reason}")]
    InvalidImage { reference: String, reason: String },

    #[error("{reference} has no image for linux/{arch}; it has {available}")]
    NoMatchingPlatform {
        reference: String,
        arch: String,
        available: String,
    },

    #[error("{reference} is not in the image cache and the pull policy is Never")]
    NotCached { reference: String },

    #[error("image cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },

    #[error("cannot build the image: {reason}")]
    Build { reason: String },

    #[error("{path}: {reason}")]
    Key { path: String, reason: String },

    #[error("auth file {path}: {reason}")]
    AuthFile { path: PathBuf, reason: String },

    #[error("{reference} ({digest}) is not signed: no {tag} in its repository")]
    Unsigned {
        reference: String,
        digest: String,
        tag: String,
    },

    #[error("no signature of {reference} ({digest}) verifies with the given key(s): {reason}")]
    SignatureInvalid {
        reference: String,
        digest: String,
        reason: String,
    },

    #[error(
        "signature policy requires a signature for {reference} but no public key is configured"
    )]
    NoVerificationKeys { reference: String },

    #[error("unsupported {what}: {value}")]
    Unsupported { what: String, value: String },

    #[error("{what}: invalid JSON: {reason}")]
    Json { what: String, reason: String },
}

impl Error {
    pub(crate) fn json(what: impl Into<String>, e: impl std::fmt::Display) -> Error {
        Error::Json {
            what: what.into(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn cache(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Error {
        Error::Cache {
            path: path.into(),
            reason: e.to_string(),
        }
    }

    /// Whether this error says something about the image's signatures (as opposed to the
    /// registry being unreachable or the image being malformed). `Warn` policies downgrade these
    /// to warnings.
    pub fn is_signature_error(&self) -> bool {
        matches!(
            self,
            Error::Unsigned { .. }
                | Error::SignatureInvalid { .. }
                | Error::NoVerificationKeys { .. }
        )
    }
}
