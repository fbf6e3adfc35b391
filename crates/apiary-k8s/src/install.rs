//! `apiary k8s install`: apply the CRDs to a cluster (server-side apply, so re-running it
//! updates them in place) and wait until the apiserver serves them.

use crate::error::KubeError;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use std::time::{Duration, Instant};

/// The field manager apiary's writes are recorded under.
pub const FIELD_MANAGER: &str = "apiary";

/// Apply every CRD and wait (up to `timeout`) until each is Established. Returns their names.
pub async fn install(client: &Client, timeout: Duration) -> Result<Vec<String>, KubeError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for crd in crate::crd::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| KubeError::Request {
                what: format!("applying CRD {name}"),
                source,
            })?;
        names.push(name);
    }
    let end = Instant::now() + timeout;
    for name in &names {
        loop {
            let crd = api.get(name).await.map_err(|source| KubeError::Request {
                what: format!("reading CRD {name}"),
                source,
            })?;
            let conditions = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .cloned()
                .unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                break;
            }
            if Instant::now() > end {
                // The apiserver's own words (e.g. NamesAccepted=False) say what is wrong.
                let why: Vec<String> = conditions
                    .iter()
                    .filter(|c| c.status != "True")
                    .map(|c| format!("{}: {}", c.type_, c.message.as_deref().unwrap_or("")))
                    .collect();
                return Err(KubeError::NotEstablished {
                    crd: name.clone(),
                    why: why.join("; "),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(names)
}

/// A client from a kubeconfig file, or else the in-cluster configuration (the service
/// account of the pod), or else the usual kubeconfig lookup (KUBECONFIG, ~/.kube/config).
/// Read `path` as a kubeconfig, so a command can refuse a wrong one before it starts anything.
pub fn check_kubeconfig(path: &std::path::Path) -> Result<(), KubeError> {
    kube::config::Kubeconfig::read_from(path)
        .map(|_| ())
        .map_err(|e| KubeError::Config {
            what: format!("{}: {e}", path.display()),
        })
}

pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let file =
                kube::config::Kubeconfig::read_from(path).map_err(|e| KubeError::Config {
                    what: format!("{}: {e}", path.display()),
                })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Config {
                    what: format!("{}: {e}", path.display()),
                })?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(_) => kube::Config::infer().await.map_err(|e| KubeError::Config {
                what: format!("no --kubeconfig, not in a pod, and no kubeconfig found: {e}"),
            })?,
        },
    };
    Client::try_from(config).map_err(|source| KubeError::Request {
        what: "making the client".into(),
        source,
    })
}

/// A runtime for a program without an async runtime of its own (the CLI).
pub fn runtime() -> Result<tokio::runtime::Runtime, KubeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KubeError::Start {
            what: format!("async runtime: {e}"),
        })
}

/// Run `f` with a client, for a program without an async runtime of its own.
pub fn blocking<T, F, Fut>(kubeconfig: Option<&std::path::Path>, f: F) -> Result<T, KubeError>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, KubeError>>,
{
    runtime()?.block_on(async {
        let c = client(kubeconfig).await?;
        f(c).await
    })
}

/// `install` for a program without an async runtime of its own (the CLI).
pub fn install_blocking(
    kubeconfig: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<Vec<String>, KubeError> {
    blocking(kubeconfig, |c| async move { install(&c, timeout).await })
}
