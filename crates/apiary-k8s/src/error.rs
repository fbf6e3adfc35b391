//! The errors of reading and applying applications.

/// A document that is not a valid application object.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("{origin}: not valid YAML: {error}")]
    Yaml { origin: String, error: String },
    #[error("{origin}: {what}")]
    Object { origin: String, what: String },
    #[error("{origin}: {name}: {}", problems.join("; "))]
    Invalid {
        origin: String,
        name: String,
        problems: Vec<String>,
    },
    #[error("{first} and {second} both declare {key}")]
    Duplicate {
        key: String,
        first: String,
        second: String,
    },
}

/// A failure of the manager while converging an application, for the application as a whole
/// (per-program and per-link failures are reported in the status instead).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{application}: {step}: {error}")]
    Manager {
        application: String,
        step: &'static str,
        #[source]
        error: apiary::Error,
    },
}

/// A failure talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig: {what}")]
    Config { what: String },
    #[error("{what}: {source}")]
    Request {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("CRD {crd} is not established: {why}")]
    NotEstablished { crd: String, why: String },
    #[error("{what}")]
    Apply { what: String },
    #[error("cannot start the agent: {what}")]
    Start { what: String },
}

/// Map a failed API request to `KubeError::Request`, saying what was being done.
pub(crate) fn request(what: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeError {
    let what = what.into();
    move |source| KubeError::Request { what, source }
}
