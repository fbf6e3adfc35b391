//! `apiary image ...` and the registry flags `load image` shares: bytecode images built, pushed,
//! pulled, inspected, signed and verified without Docker (apiary-oci does the work).

use anyhow::{anyhow, Context, Result};
use apiary::images::{parse_mode, ImageSettings};
use apiary::oci::{
    self, Arch, BuiltImage, BuiltManifest, ImageRef, PullPolicy, RegistryAuth, SigningKey,
    VerifyingKey,
};
use base64::Engine;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

// How to reach registries and which signatures to demand; flags override the config file.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// `--tls-verify=false` allows plain HTTP and unverified TLS for this registry (as podman
    /// and skopeo spell it).
    #[arg(long, value_name = "BOOL")]
    pub tls_verify: Option<bool>,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long, env = "APIARY_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A docker/podman auth.json or config.json.
    #[arg(long)]
    pub authfile: Option<PathBuf>,
    /// Extra CA certificate (PEM) for the registry.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Public keys (PEM) that may sign images; with any given, signatures are required unless
    /// --signature-policy says otherwise.
    #[arg(long = "verify-key")]
    pub verify_keys: Vec<PathBuf>,
    /// allow, warn or require.
    #[arg(long)]
    pub signature_policy: Option<String>,
}

impl RegistryArgs {
    pub fn settings(&self, state_dir: &Path, image: Option<&str>) -> Result<ImageSettings> {
        let mut s = ImageSettings::load(apiary::images::config_path().as_deref(), state_dir)?;
        if let Some(v) = self.tls_verify {
            s.client.tls_verify = v;
            if !v {
                if let Some(r) = image.and_then(|i| i.parse::<ImageRef>().ok()) {
                    s.client.insecure_registries.push(r.registry.clone());
                }
            }
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => {
                s.client.credentials = Some(RegistryAuth {
                    username: u.clone(),
                    password: p.clone(),
                })
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(anyhow!("--username and --password go together"))
            }
            (None, None) => {}
        }
        if self.authfile.is_some() {
            s.client.auth_file = self.authfile.clone();
        }
        if self.ca_file.is_some() {
            s.client.ca_file = self.ca_file.clone();
        }
        for k in &self.verify_keys {
            s.keys
                .push(VerifyingKey::from_file(k).map_err(|e| anyhow!("{e}"))?);
        }
        if let Some(p) = &self.signature_policy {
            s.policy = oci::SignaturePolicy::new(parse_mode(p)?);
        } else if !self.verify_keys.is_empty() {
            s.policy = oci::SignaturePolicy::new(oci::SignatureMode::RequireSigned);
        }
        Ok(s)
    }
}

pub fn parse_pull_policy(s: &str) -> Result<PullPolicy, String> {
    s.parse::<PullPolicy>().map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum ImageCmd {
    /// Pull an image into the cache (checking the signature policy).
    Pull {
        image: String,
        #[arg(long, default_value = "Always", value_parser = parse_pull_policy)]
        pull_policy: PullPolicy,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Build a bytecode image from objects (bpfman's format), without Docker.
    Build {
        /// The object for the host's architecture (bpfel on x86_64).
        #[arg(long)]
        bytecode: Option<PathBuf>,
        #[arg(long)]
        bytecode_amd64: Option<PathBuf>,
        #[arg(long)]
        bytecode_arm64: Option<PathBuf>,
        #[arg(long)]
        bytecode_s390x: Option<PathBuf>,
        #[arg(long)]
        bytecode_ppc64le: Option<PathBuf>,
        /// REGISTRY/REPO:TAG
        #[arg(short = 't', long = "tag")]
        tag: String,
        /// Push right away (else it is kept for `apiary image push`).
        #[arg(long)]
        push: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push an image built with `apiary image build`.
    Push {
        image: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Programs, maps, platforms and digests of an image (from the cache or the registry).
    Inspect {
        image: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Images in the cache.
    List,
    /// Remove an image (by reference or digest) from the cache.
    Rm { image: String },
    /// Sign an image digest with a cosign-compatible signature (key: PEM PKCS#8 or a cosign key
    /// file; the password comes from COSIGN_PASSWORD).
    Sign {
        #[arg(long)]
        key: PathBuf,
        /// REGISTRY/REPO@DIGEST (a tag is resolved to its digest first).
        image: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Verify an image's signature with a public key, offline apart from the registry itself.
    Verify {
        #[arg(long)]
        key: Vec<PathBuf>,
        image: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// A built image kept between `image build` and `image push`.
#[derive(Serialize, Deserialize)]
struct SavedBuild {
    manifests: Vec<SavedManifest>,
    index: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SavedManifest {
    arch: String,
    manifest: String,
    manifest_digest: String,
    config: String,
    layer: String,
    programs: oci::Labels,
    maps: oci::Labels,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .context("corrupt saved build")
}

fn build_path(state_dir: &Path, image: &str) -> PathBuf {
    let name: String = image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join("builds").join(format!("{name}.json"))
}

fn save_build(path: &Path, b: &BuiltImage) -> Result<()> {
    let saved = SavedBuild {
        manifests: b
            .manifests
            .iter()
            .map(|m| SavedManifest {
                arch: m.arch.name().to_string(),
                manifest: b64(&m.manifest),
                manifest_digest: m.manifest_digest.clone(),
                config: b64(&m.config),
                layer: b64(&m.layer),
                programs: m.programs.clone(),
                maps: m.maps.clone(),
            })
            .collect(),
        index: b.index.as_deref().map(b64),
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, serde_json::to_vec(&saved)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn load_build(path: &Path, image: &str) -> Result<BuiltImage> {
    let text = std::fs::read(path).map_err(|_| {
        anyhow!("no image {image} was built here; run `apiary image build -t {image} ...` first")
    })?;
    let s: SavedBuild = serde_json::from_slice(&text).context("corrupt saved build")?;
    let mut manifests = Vec::new();
    for m in s.manifests {
        manifests.push(BuiltManifest {
            arch: m.arch.parse::<Arch>().map_err(|e| anyhow!("{e}"))?,
            manifest: unb64(&m.manifest)?,
            manifest_digest: m.manifest_digest,
            config: unb64(&m.config)?,
            layer: unb64(&m.layer)?,
            programs: m.programs,
            maps: m.maps,
        });
    }
    Ok(BuiltImage {
        manifests,
        index: s.index.as_deref().map(unb64).transpose()?,
    })
}

fn parse_ref(s: &str) -> Result<ImageRef> {
    s.parse::<ImageRef>().map_err(|e| anyhow!("{e}"))
}

pub fn run(cmd: ImageCmd, state_dir: &Path, json: bool) -> Result<()> {
    let print = |v: serde_json::Value, text: String| {
        if json {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            println!("{text}");
        }
    };
    match cmd {
        ImageCmd::Pull {
            image,
            pull_policy,
            registry,
        } => {
            let s = registry.settings(state_dir, Some(&image))?;
            let (img, verdict) = s.pull(&image, pull_policy)?;
            let sig = match verdict {
                oci::Verdict::NotChecked => "signature not checked".to_string(),
                oci::Verdict::Verified(v) => format!("signature verified (key {})", v.key),
                oci::Verdict::Warning(w) => format!("WARNING: {w}"),
            };
            print(
                serde_json::json!({"reference": image, "digest": img.digest, "arch": img.arch.name(), "programs": img.programs, "maps": img.maps, "from_cache": img.from_cache}),
                format!(
                    "{image}: {} ({}){}; {sig}",
                    img.digest,
                    img.arch,
                    if img.from_cache {
                        ", from the cache"
                    } else {
                        ""
                    }
                ),
            );
        }
        ImageCmd::Build {
            bytecode,
            bytecode_amd64,
            bytecode_arm64,
            bytecode_s390x,
            bytecode_ppc64le,
            tag,
            push,
            registry,
        } => {
            let mut objects = Vec::new();
            let host = Arch::host()
                .ok_or_else(|| anyhow!("unknown host architecture: use --bytecode-ARCH"))?;
            for (arch, path) in [
                (Some(host), bytecode),
                (Some(Arch::Amd64), bytecode_amd64),
                (Some(Arch::Arm64), bytecode_arm64),
                (Some(Arch::S390x), bytecode_s390x),
                (Some(Arch::Ppc64le), bytecode_ppc64le),
            ] {
                if let (Some(a), Some(p)) = (arch, path) {
                    let bytes = std::fs::read(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    objects.push((a, bytes));
                }
            }
            if objects.is_empty() {
                return Err(anyhow!(
                    "give at least one object: --bytecode FILE (or --bytecode-ARCH FILE)"
                ));
            }
            let built = oci::build(&objects).map_err(|e| anyhow!("{e}"))?;
            let digest = built.digest();
            let target = parse_ref(&tag)?;
            if push {
                let s = registry.settings(state_dir, Some(&tag))?;
                let pushed = oci::push(&s.client, &built, &target).map_err(|e| anyhow!("{e}"))?;
                print(
                    serde_json::json!({"reference": tag, "digest": pushed, "pushed": true}),
                    format!("pushed {tag} ({pushed})"),
                );
            } else {
                save_build(&build_path(state_dir, &tag), &built)?;
                print(
                    serde_json::json!({"reference": tag, "digest": digest, "pushed": false}),
                    format!("built {tag} ({digest}); push it with `apiary image push {tag}`"),
                );
            }
        }
        ImageCmd::Push { image, registry } => {
            let built = load_build(&build_path(state_dir, &image), &image)?;
            let s = registry.settings(state_dir, Some(&image))?;
            let pushed =
                oci::push(&s.client, &built, &parse_ref(&image)?).map_err(|e| anyhow!("{e}"))?;
            print(
                serde_json::json!({"reference": image, "digest": pushed}),
                format!("pushed {image} ({pushed})"),
            );
        }
        ImageCmd::Inspect { image, registry } => {
            let s = registry.settings(state_dir, Some(&image))?;
            let info = oci::inspect(&s.client, Some(&s.cache()), &parse_ref(&image)?)
                .map_err(|e| anyhow!("{e}"))?;
            let v = serde_json::to_value(&info)?;
            let mut t = format!(
                "{}\ndigest   {}\nmanifest {} ({})\n",
                info.reference, info.digest, info.manifest_digest, info.arch
            );
            for p in &info.platforms {
                t.push_str(&format!(
                    "platform {}\n",
                    serde_json::to_string(p).unwrap_or_default()
                ));
            }
            t.push_str("PROGRAMS\n");
            for (n, ty) in &info.programs {
                t.push_str(&format!("  {n}: {ty}\n"));
            }
            t.push_str("MAPS\n");
            for (n, ty) in &info.maps {
                t.push_str(&format!("  {n}: {ty}\n"));
            }
            print(v, t.trim_end().to_string());
        }
        ImageCmd::List => {
            let s = ImageSettings::load(None, state_dir)?;
            let list = s.cache().list().map_err(|e| anyhow!("{e}"))?;
            let text = if list.is_empty() {
                "the image cache is empty".to_string()
            } else {
                list.iter()
                    .map(|c| format!("{}  {}  {} bytes", c.reference, c.digest, c.size))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print(serde_json::to_value(&list)?, text);
        }
        ImageCmd::Rm { image } => {
            let s = ImageSettings::load(None, state_dir)?;
            let n = match s.cache().remove(&image) {
                Ok(n) => n,
                Err(oci::Error::NotCached { .. }) => 0,
                Err(e) => return Err(anyhow!("{e}")),
            };
            if n == 0 {
                return Err(anyhow!(
                    "{image} is not in the image cache (see `apiary image list`)"
                ));
            }
            print(
                serde_json::json!({"removed": image}),
                format!("removed {image} from the cache"),
            );
        }
        ImageCmd::Sign {
            key,
            image,
            registry,
        } => {
            let s = registry.settings(state_dir, Some(&image))?;
            let k = SigningKey::from_file(&key, None).map_err(|e| anyhow!("{e}"))?;
            let digest =
                oci::sign(&s.client, &parse_ref(&image)?, &k).map_err(|e| anyhow!("{e}"))?;
            print(
                serde_json::json!({"signed": digest}),
                format!("signed {image} ({digest})"),
            );
        }
        ImageCmd::Verify {
            key,
            image,
            registry,
        } => {
            let s = registry.settings(state_dir, Some(&image))?;
            let mut keys = s.keys.clone();
            for k in &key {
                keys.push(VerifyingKey::from_file(k).map_err(|e| anyhow!("{e}"))?);
            }
            let v =
                oci::verify(&s.client, &parse_ref(&image)?, &keys).map_err(|e| anyhow!("{e}"))?;
            print(
                serde_json::json!({"digest": v.digest, "docker_reference": v.docker_reference, "key": v.key}),
                format!("{image}: signature verified ({}, key {})", v.digest, v.key),
            );
        }
    }
    Ok(())
}
