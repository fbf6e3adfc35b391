//! The daemon's listeners: the unix socket (mode 0660, an optional group, its directory made,
//! a stale socket replaced, removed again at exit) and the mutual-TLS settings of the TCP one.

use super::ServerError;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;

/// Owner and group may connect, nobody else: the socket is the security boundary that lets
/// unprivileged applications ask for eBPF without CAP_BPF.
const SOCKET_MODE: u32 = 0o660;

/// The socket's file: removed on drop if it is still the one bound here.
pub struct SocketFile {
    path: PathBuf,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Another daemon may have replaced the file since; leave its socket alone.
        if std::fs::symlink_metadata(&self.path)
            .map(|m| m.ino() == self.ino)
            .unwrap_or(false)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn group_id(name: &str) -> Result<nix::unistd::Gid, ServerError> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(ServerError::UnknownGroup {
            group: name.to_string(),
        }),
        Err(e) => Err(ServerError::Socket {
            path: PathBuf::new(),
            reason: format!("cannot look up group {name:?}: {e}"),
        }),
    }
}

/// Bind the socket at `path`. It is created under a temporary name, given its mode and group,
/// and only then renamed into place, so no client ever sees it with looser permissions, and a
/// stale socket is replaced in one step. A live socket (another daemon answers on it) is not.
pub fn bind_unix(
    path: &Path,
    group: Option<&str>,
) -> Result<(UnixListener, SocketFile), ServerError> {
    let err = |reason: String| ServerError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    let gid = group.map(group_id).transpose()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(|e| err(format!("cannot create {}: {e}", parent.display())))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(
                    "another daemon is serving on it; stop it first or choose another --socket"
                        .into(),
                ));
            }
            // Nobody answers: a daemon that died without cleaning up. The rename replaces it.
        }
        Ok(_) => {
            return Err(err(
                "exists and is not a socket; remove it or choose another --socket".into(),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("apiary.sock");
    let tmp = parent.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| err(format!("cannot bind: {e}")))?;
    let placed = (|| -> Result<u64, String> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(|e| format!("chmod: {e}"))?;
        if let Some(gid) = gid {
            nix::unistd::chown(&tmp, None, Some(gid))
                .map_err(|e| format!("chown to group {}: {e}", group.unwrap_or("")))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot move into place: {e}"))?;
        std::fs::symlink_metadata(path)
            .map(|m| m.ino())
            .map_err(|e| e.to_string())
    })();
    match placed {
        Ok(ino) => Ok((
            listener,
            SocketFile {
                path: path.to_path_buf(),
                ino,
            },
        )),
        Err(reason) => {
            let _ = std::fs::remove_file(&tmp);
            Err(err(reason))
        }
    }
}

/// The TCP listener's TLS: the daemon's certificate and key, and the CA whose client
/// certificates it accepts. A client without such a certificate fails the handshake.
pub fn mtls_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| ServerError::ReadFile {
            path: p.to_path_buf(),
            error: e,
        })
    };
    let (cert_pem, key_pem, ca_pem) = (read(cert)?, read(key)?, read(client_ca)?);
    for (path, pem, what) in [
        (cert, &cert_pem, "CERTIFICATE"),
        (key, &key_pem, "PRIVATE KEY"),
        (client_ca, &ca_pem, "CERTIFICATE"),
    ] {
        // rustls' own error for a wrong file is terse; say which file is not what it should be.
        if !String::from_utf8_lossy(pem).contains(&format!("{what}-----")) {
            return Err(ServerError::Tls {
                reason: format!("{} has no PEM {what}", path.display()),
            });
        }
    }
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca_pem)))
}
