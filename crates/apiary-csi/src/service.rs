//! The gRPC services: Identity (who the plugin is, that it is ready) and Node (publish and
//! unpublish). Requests are checked here; the work runs on a blocking thread, since it is
//! system calls and the manager's synchronous API.

use crate::error::CsiError;
use crate::pb;
use crate::resolve;
use crate::volumes::{Publish, Volumes};
use crate::DRIVER_NAME;
use apiary::Api;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Everything both services share.
pub struct Plugin {
    pub api: Arc<dyn Api>,
    pub volumes: Volumes,
    pub node_id: String,
}

#[derive(Clone)]
pub struct Service(pub Arc<Plugin>);

impl Service {
    /// Run `f` on a blocking thread; a panic in it answers INTERNAL instead of ending the
    /// process.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Plugin) -> Result<T, CsiError> + Send + 'static,
    ) -> Result<T, Status> {
        let plugin = self.0.clone();
        tokio::task::spawn_blocking(move || f(&plugin))
            .await
            .map_err(|e| Status::from(CsiError::Worker(e.to_string())))?
            .map_err(|e| {
                tracing::info!(code = ?e.code(), error = %e, "csi: request refused");
                Status::from(e)
            })
    }
}

#[tonic::async_trait]
impl pb::identity_server::Identity for Service {
    async fn get_plugin_info(
        &self,
        _: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: DRIVER_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        // A node plugin only: no controller service, no topology.
        Ok(Response::new(pb::GetPluginCapabilitiesResponse {
            capabilities: Vec::new(),
        }))
    }

    async fn probe(
        &self,
        _: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        // Ready when the manager answers: publishing needs it.
        let ready = self
            .blocking(|p| Ok(p.api.list_programs(false, &BTreeMap::new()).is_ok()))
            .await?;
        Ok(Response::new(pb::ProbeResponse { ready: Some(ready) }))
    }
}

fn need(value: &str, what: &str) -> Result<(), CsiError> {
    if value.is_empty() {
        return Err(CsiError::InvalidArgument(format!("{what} is required")));
    }
    Ok(())
}

/// The pod's fsGroup, sent as the mount's volume_mount_group (the plugin reports
/// VOLUME_MOUNT_GROUP, so the kubelet leaves the ownership to it).
fn group(cap: &pb::VolumeCapability) -> Result<Option<u32>, CsiError> {
    use pb::volume_capability::AccessType;
    match &cap.access_type {
        Some(AccessType::Mount(m)) => {
            if !m.fs_type.is_empty() && m.fs_type != "bpf" {
                return Err(CsiError::InvalidArgument(format!(
                    "fs type {:?}: this plugin's volumes are bpf filesystems",
                    m.fs_type
                )));
            }
            let g = m.volume_mount_group.trim();
            if g.is_empty() {
                return Ok(None);
            }
            g.parse::<u32>().map(Some).map_err(|_| {
                CsiError::InvalidArgument(format!(
                    "volume_mount_group {g:?} is not a numeric group id"
                ))
            })
        }
        Some(AccessType::Block(_)) => Err(CsiError::InvalidArgument(
            "block volumes are not served: this plugin's volumes are bpf filesystems".into(),
        )),
        None => Err(CsiError::InvalidArgument(
            "volume_capability has no access type (mount)".into(),
        )),
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for Service {
    async fn node_stage_volume(
        &self,
        _: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        Err(CsiError::Unimplemented(
            "NodeStageVolume: the plugin does not report STAGE_UNSTAGE_VOLUME".into(),
        )
        .into())
    }

    async fn node_unstage_volume(
        &self,
        _: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        Err(CsiError::Unimplemented(
            "NodeUnstageVolume: the plugin does not report STAGE_UNSTAGE_VOLUME".into(),
        )
        .into())
    }

    async fn node_publish_volume(
        &self,
        req: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let r = req.into_inner();
        self.blocking(move |plugin| {
            need(&r.volume_id, "volume_id")?;
            need(&r.target_path, "target_path")?;
            let cap = r
                .volume_capability
                .as_ref()
                .ok_or_else(|| CsiError::InvalidArgument("volume_capability is required".into()))?;
            let group = group(cap)?;
            let target = plugin.volumes.check_target(&r.target_path)?;
            let ctx: BTreeMap<String, String> = r.volume_context.into_iter().collect();
            let publish = Publish {
                volume_id: r.volume_id,
                target,
                readonly: r.readonly,
                group,
                request: resolve::request(&ctx)?,
            };
            plugin
                .volumes
                .publish(&publish, |req| resolve::resolve(plugin.api.as_ref(), req))
        })
        .await?;
        Ok(Response::new(pb::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        self.blocking(move |plugin| {
            need(&r.volume_id, "volume_id")?;
            need(&r.target_path, "target_path")?;
            let target = plugin.volumes.check_target(&r.target_path)?;
            plugin.volumes.unpublish(&r.volume_id, &target)
        })
        .await?;
        Ok(Response::new(pb::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        use pb::node_service_capability::{rpc, Rpc, Type};
        Ok(Response::new(pb::NodeGetCapabilitiesResponse {
            capabilities: vec![pb::NodeServiceCapability {
                r#type: Some(Type::Rpc(Rpc {
                    r#type: rpc::Type::VolumeMountGroup as i32,
                })),
            }],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: self.0.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}
