//! cosign-compatible signatures with ECDSA P-256 keys.
//!
//! This module owns the key files, the signature format and the storage convention cosign uses,
//! so images signed here verify with `cosign verify --key` and the other way round:
//!
//! * keys: PEM `PRIVATE KEY` (PKCS#8, as `openssl genpkey -algorithm EC -pkeyopt
//!   ec_paramgen_curve:P-256` writes), `EC PRIVATE KEY` (SEC1), and cosign's password-encrypted
//!   `ENCRYPTED SIGSTORE PRIVATE KEY` / `ENCRYPTED COSIGN PRIVATE KEY` (JSON: scrypt KDF +
//!   nacl/secretbox over the PKCS#8 key); public keys as PEM `PUBLIC KEY` (SPKI);
//! * the signed payload: the simple-signing JSON naming the repository and the manifest digest;
//! * storage: an OCI manifest at tag `sha256-<hex>.sig` in the image's repository, one layer per
//!   signature (media type `application/vnd.dev.cosign.simplesigning.v1+json`, the payload as the
//!   blob) with the base64 DER signature in the annotation `dev.cosignproject.cosign/signature`.
//!
//! Verification needs no network beyond fetching that manifest and its payloads from the
//! image's own registry: there is no transparency log or certificate authority involved.

use crate::cache::{Cache, StoredSignature};
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::manifest::{
    sha256_digest, AnyManifest, Descriptor, ImageManifest, COSIGN_SIMPLESIGNING, OCI_CONFIG,
    OCI_MANIFEST,
};
use crate::reference::ImageRef;
use crate::registry::RegistryClient;
use base64ct::{Base64, Encoding};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey as EcSigningKey, VerifyingKey as EcVerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The annotation holding a layer's base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a cosign image signature payload.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
/// The environment variable cosign reads a key's password from.
pub const PASSWORD_ENV: &str = "COSIGN_PASSWORD";

const SIGSTORE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
const COSIGN_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
const MAX_PAYLOAD: u64 = 1 << 20;

/// cosign's signature tag for a manifest digest: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// An ECDSA P-256 private key.
#[derive(Clone)]
pub struct SigningKey(EcSigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SigningKey")
            .field(&self.verifying_key().fingerprint())
            .finish()
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<SigningKey> {
        for _ in 0..8 {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| key_err("random key", e))?;
            // A random 256-bit string is out of range for P-256 with probability ~2^-32.
            if let Ok(k) = EcSigningKey::from_slice(&bytes) {
                return Ok(SigningKey(k));
            }
        }
        Err(key_err("random key", "no valid scalar drawn"))
    }

    /// Reads a key file. An encrypted cosign key needs `password`; without one it is taken
    /// from `COSIGN_PASSWORD`, as cosign does.
    pub fn from_file(path: &Path, password: Option<&[u8]>) -> Result<SigningKey> {
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path.display(), e))?;
        let env = match password {
            Some(_) => None,
            None => std::env::var(PASSWORD_ENV).ok(),
        };
        let password = password.or(env.as_deref().map(str::as_bytes));
        SigningKey::from_pem(&text, password)
            .map_err(|e| rename_key_error(e, &path.display().to_string()))
    }

    /// Parses a PEM key: PKCS#8, SEC1, or cosign's encrypted format (which needs `password`).
    pub fn from_pem(pem: &str, password: Option<&[u8]>) -> Result<SigningKey> {
        let (label, der) = pem_decode(pem).map_err(|e| key_err("key", e))?;
        match label.as_str() {
            "PRIVATE KEY" => EcSigningKey::from_pkcs8_der(&der)
                .map(SigningKey)
                .map_err(|e| key_err("key", format!("not an ECDSA P-256 PKCS#8 key: {e}"))),
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                .map(|s| SigningKey(EcSigningKey::from(s)))
                .map_err(|e| key_err("key", format!("not a P-256 SEC1 key: {e}"))),
            SIGSTORE_KEY_LABEL | COSIGN_KEY_LABEL => {
                let password = password.ok_or_else(|| {
                    key_err("key", format!("the key is encrypted: set {PASSWORD_ENV} to its password"))
                })?;
                let inner = cosign_decrypt(&der, password)?;
                // cosign encrypts PKCS#8; accept SEC1 too, as other writers of the format do.
                EcSigningKey::from_pkcs8_der(&inner)
                    .or_else(|e| p256::SecretKey::from_sec1_der(&inner).map(EcSigningKey::from).map_err(|_| e))
                    .map(SigningKey)
                    .map_err(|e| key_err("key", format!("the decrypted key is not ECDSA P-256: {e}")))
            }
            "ENCRYPTED PRIVATE KEY" => Err(key_err(
                "key",
                "password-encrypted PKCS#8 is not supported: decrypt it with `openssl pkcs8` or use a cosign key",
            )),
            other => Err(key_err("key", format!("unsupported PEM block {other:?}: expected PRIVATE KEY"))),
        }
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        let der = self.0.to_pkcs8_der().map_err(|e| key_err("key", e))?;
        Ok(pem_encode("PRIVATE KEY", der.as_bytes()))
    }

    /// cosign's encrypted key file (`ENCRYPTED SIGSTORE PRIVATE KEY`, scrypt N=32768 r=8 p=1,
    /// nacl/secretbox), as `cosign generate-key-pair` writes it.
    pub fn to_cosign_encrypted_pem(&self, password: &[u8]) -> Result<String> {
        let der = self.0.to_pkcs8_der().map_err(|e| key_err("key", e))?;
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut salt).map_err(|e| key_err("key", e))?;
        getrandom::fill(&mut nonce).map_err(|e| key_err("key", e))?;
        let params = ScryptParams {
            n: 32768,
            r: 8,
            p: 1,
        };
        let box_key = scrypt_key(password, &salt, &params)?;
        let ciphertext = secretbox_seal(&box_key, &nonce, der.as_bytes());
        let doc = EncryptedKey {
            kdf: Kdf {
                name: "scrypt".into(),
                params,
                salt: Base64::encode_string(&salt),
            },
            cipher: Cipher {
                name: "nacl/secretbox".into(),
                nonce: Base64::encode_string(&nonce),
            },
            ciphertext: Base64::encode_string(&ciphertext),
        };
        let json = serde_json::to_vec(&doc).map_err(|e| key_err("key", e))?;
        Ok(pem_encode(SIGSTORE_KEY_LABEL, &json))
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(*self.0.verifying_key())
    }

    /// The base64 ASN.1 DER ECDSA-P256-SHA256 signature of `payload`, as cosign stores it.
    pub fn sign_base64(&self, payload: &[u8]) -> String {
        let sig: Signature = self.0.sign(payload);
        Base64::encode_string(sig.to_der().as_bytes())
    }
}

/// An ECDSA P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey(EcVerifyingKey);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("VerifyingKey")
            .field(&self.fingerprint())
            .finish()
    }
}

impl VerifyingKey {
    pub fn from_file(path: &Path) -> Result<VerifyingKey> {
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path.display(), e))?;
        VerifyingKey::from_pem(&text).map_err(|e| rename_key_error(e, &path.display().to_string()))
    }

    /// Parses a PEM `PUBLIC KEY` (SPKI), as `cosign generate-key-pair` and `openssl pkey
    /// -pubout` write.
    pub fn from_pem(pem: &str) -> Result<VerifyingKey> {
        let (label, der) = pem_decode(pem).map_err(|e| key_err("public key", e))?;
        if label != "PUBLIC KEY" {
            return Err(key_err(
                "public key",
                format!("unsupported PEM block {label:?}: expected PUBLIC KEY"),
            ));
        }
        EcVerifyingKey::from_public_key_der(&der)
            .map(VerifyingKey)
            .map_err(|e| key_err("public key", format!("not an ECDSA P-256 public key: {e}")))
    }

    pub fn to_pem(&self) -> Result<String> {
        let der = self
            .0
            .to_public_key_der()
            .map_err(|e| key_err("public key", e))?;
        Ok(pem_encode("PUBLIC KEY", der.as_bytes()))
    }

    /// `SHA256:<hex>` of the SPKI DER: names a key in messages and verdicts.
    pub fn fingerprint(&self) -> String {
        match self.0.to_public_key_der() {
            Ok(der) => format!(
                "SHA256:{}",
                &sha256_digest(der.as_bytes())["sha256:".len()..]
            ),
            Err(_) => "SHA256:?".into(),
        }
    }

    /// Checks a base64 signature (DER, or raw r‖s) over `payload`.
    pub fn verify_base64(&self, payload: &[u8], signature_b64: &str) -> bool {
        let Ok(raw) = Base64::decode_vec(signature_b64.trim()) else {
            return false;
        };
        let sig = if raw.len() == 64 {
            Signature::from_slice(&raw)
        } else {
            Signature::from_der(&raw)
        };
        sig.is_ok_and(|sig| self.0.verify(payload, &sig).is_ok())
    }
}

/// A signature that verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedSignature {
    /// The manifest (or index) digest the payload names.
    pub digest: String,
    /// The payload's `docker-reference`.
    pub docker_reference: String,
    /// Which key verified it ([`VerifyingKey::fingerprint`]).
    pub key: String,
}

/// cosign's simple-signing payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimpleSigning {
    pub critical: Critical,
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: ImageClaim,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageClaim {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The payload cosign signs for `digest` in `image`'s repository.
pub fn payload_for(image: &ImageRef, digest: &str) -> Result<Vec<u8>> {
    let doc = SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: image.repository_name(),
            },
            image: ImageClaim {
                docker_manifest_digest: digest.to_string(),
            },
            kind: SIGNATURE_TYPE.to_string(),
        },
        optional: None,
    };
    serde_json::to_vec(&doc).map_err(|e| Error::json("signature payload", e))
}

/// Signs the manifest `image` names (its digest, or what its tag points at now) and stores the
/// signature at the `sha256-<hex>.sig` tag, beside any signatures already there. Returns the
/// signed digest.
pub fn sign(cfg: &ClientConfig, image: &ImageRef, key: &SigningKey) -> Result<String> {
    let client = RegistryClient::new(cfg)?;
    let digest = match &image.digest {
        Some(d) => d.clone(),
        None => client.get_manifest(image)?.digest,
    };
    let payload = payload_for(image, &digest)?;
    let signature = key.sign_base64(&payload);
    let sig_ref = image.with_tag(&signature_tag(&digest));

    let mut layers: Vec<Descriptor> = match client.get_manifest_opt(&sig_ref)? {
        Some(existing) => {
            match AnyManifest::parse(&existing.bytes, existing.media_type.as_deref())? {
                AnyManifest::Image(m) => m.layers,
                AnyManifest::Index(_) => {
                    return Err(Error::InvalidImage {
                        reference: sig_ref.to_string(),
                        reason: "the signature tag holds an index, not a cosign signature manifest"
                            .into(),
                    })
                }
            }
        }
        None => Vec::new(),
    };
    let payload_digest = client.push_blob(&sig_ref, &payload)?;
    // Signing is deterministic (RFC 6979), so signing again with the same key gives the same
    // layer: keep one.
    let duplicate = layers.iter().any(|l| {
        l.digest == payload_digest
            && l.annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .is_some_and(|s| *s == signature)
    });
    if duplicate {
        return Ok(digest);
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(SIGNATURE_ANNOTATION.to_string(), signature);
    layers.push(Descriptor {
        annotations: Some(annotations),
        ..Descriptor::for_bytes(COSIGN_SIMPLESIGNING, &payload)
    });
    let config = serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).map_err(|e| Error::json("signature config", e))?;
    client.push_blob(&sig_ref, &config)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor::for_bytes(OCI_CONFIG, &config),
        layers,
        annotations: None,
    };
    let manifest =
        serde_json::to_vec(&manifest).map_err(|e| Error::json("signature manifest", e))?;
    client.put_manifest(&sig_ref, sig_ref.reference(), &manifest, OCI_MANIFEST)?;
    Ok(digest)
}

/// Verifies that the manifest `image` names carries a signature from one of `keys`.
pub fn verify(
    cfg: &ClientConfig,
    image: &ImageRef,
    keys: &[VerifyingKey],
) -> Result<VerifiedSignature> {
    if keys.is_empty() {
        return Err(Error::NoVerificationKeys {
            reference: image.to_string(),
        });
    }
    let client = RegistryClient::new(cfg)?;
    let digest = match &image.digest {
        Some(d) => d.clone(),
        None => client.get_manifest(image)?.digest,
    };
    verify_online(&client, None, image, &[digest], keys)
}

/// Fetches the signatures of each digest in turn (storing them in `cache`) until one verifies.
pub(crate) fn verify_online(
    client: &RegistryClient,
    cache: Option<&Cache>,
    image: &ImageRef,
    digests: &[String],
    keys: &[VerifyingKey],
) -> Result<VerifiedSignature> {
    let mut found_any = false;
    let mut reasons = Vec::new();
    for digest in digests {
        let Some(sigs) = fetch_signatures(client, image, digest)? else {
            continue;
        };
        found_any = true;
        if let Some(cache) = cache {
            cache.put_signatures(digest, &sigs)?;
        }
        match verify_stored(&sigs, digest, keys) {
            Ok(v) => return Ok(v),
            Err(r) => reasons.extend(r),
        }
    }
    let first = digests.first().cloned().unwrap_or_default();
    if !found_any {
        return Err(Error::Unsigned {
            reference: image.to_string(),
            tag: signature_tag(&first),
            digest: first,
        });
    }
    Err(Error::SignatureInvalid {
        reference: image.to_string(),
        digest: first,
        reason: if reasons.is_empty() {
            "the signature manifest has no cosign signature layers".into()
        } else {
            reasons.join("; ")
        },
    })
}

/// The signatures stored at `digest`'s signature tag; `None` if there is no such tag.
pub fn fetch_signatures(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &str,
) -> Result<Option<Vec<StoredSignature>>> {
    let sig_ref = image.with_tag(&signature_tag(digest));
    let Some(fetched) = client.get_manifest_opt(&sig_ref)? else {
        return Ok(None);
    };
    let AnyManifest::Image(manifest) =
        AnyManifest::parse(&fetched.bytes, fetched.media_type.as_deref())?
    else {
        return Err(Error::InvalidImage {
            reference: sig_ref.to_string(),
            reason: "the signature tag holds an index, not a cosign signature manifest".into(),
        });
    };
    let mut out = Vec::new();
    for layer in &manifest.layers {
        if layer.media_type != COSIGN_SIMPLESIGNING {
            continue;
        }
        let Some(signature) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        let payload = client.get_blob(&sig_ref, layer, MAX_PAYLOAD, "signature payload")?;
        out.push(StoredSignature {
            payload: Base64::encode_string(&payload),
            signature: signature.clone(),
        });
    }
    Ok(Some(out))
}

/// The first of `sigs` that one of `keys` verifies and whose payload names `digest`; else the
/// reasons each failed.
pub(crate) fn verify_stored(
    sigs: &[StoredSignature],
    digest: &str,
    keys: &[VerifyingKey],
) -> std::result::Result<VerifiedSignature, Vec<String>> {
    let mut reasons = Vec::new();
    for (i, sig) in sigs.iter().enumerate() {
        let Some(payload) = sig.payload_bytes() else {
            reasons.push(format!("signature {}: payload is not base64", i + 1));
            continue;
        };
        let Some(key) = keys
            .iter()
            .find(|k| k.verify_base64(&payload, &sig.signature))
        else {
            reasons.push(format!(
                "signature {}: made by none of the {} given key(s)",
                i + 1,
                keys.len()
            ));
            continue;
        };
        let doc: SimpleSigning = match serde_json::from_slice(&payload) {
            Ok(d) => d,
            Err(e) => {
                reasons.push(format!(
                    "signature {}: payload is not simple-signing JSON: {e}",
                    i + 1
                ));
                continue;
            }
        };
        if doc.critical.kind != SIGNATURE_TYPE {
            reasons.push(format!(
                "signature {}: payload type is {:?}",
                i + 1,
                doc.critical.kind
            ));
            continue;
        }
        if doc.critical.image.docker_manifest_digest != digest {
            reasons.push(format!(
                "signature {}: payload signs {}, not {digest}",
                i + 1,
                doc.critical.image.docker_manifest_digest
            ));
            continue;
        }
        return Ok(VerifiedSignature {
            digest: digest.to_string(),
            docker_reference: doc.critical.identity.docker_reference,
            key: key.fingerprint(),
        });
    }
    Err(reasons)
}

fn key_err(path: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Key {
        path: path.to_string(),
        reason: e.to_string(),
    }
}

/// Errors from parsing text are reported against "key"; name the file instead.
fn rename_key_error(e: Error, path: &str) -> Error {
    match e {
        Error::Key { reason, .. } => Error::Key {
            path: path.to_string(),
            reason,
        },
        other => other,
    }
}

#[derive(Serialize, Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// Decrypts cosign's encrypted key JSON to the PKCS#8 DER it holds.
fn cosign_decrypt(json: &[u8], password: &[u8]) -> Result<Vec<u8>> {
    let bad = |reason: String| key_err("encrypted key", reason);
    let doc: EncryptedKey =
        serde_json::from_slice(json).map_err(|e| bad(format!("not cosign's key JSON: {e}")))?;
    if doc.kdf.name != "scrypt" {
        return Err(bad(format!("unsupported KDF {:?}", doc.kdf.name)));
    }
    if doc.cipher.name != "nacl/secretbox" {
        return Err(bad(format!("unsupported cipher {:?}", doc.cipher.name)));
    }
    let salt = Base64::decode_vec(&doc.kdf.salt).map_err(|e| bad(format!("salt: {e}")))?;
    let nonce: [u8; 24] = Base64::decode_vec(&doc.cipher.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| bad("nonce is not 24 bytes of base64".into()))?;
    let ciphertext =
        Base64::decode_vec(&doc.ciphertext).map_err(|e| bad(format!("ciphertext: {e}")))?;
    let key = scrypt_key(password, &salt, &doc.kdf.params)?;
    secretbox_open(&key, &nonce, &ciphertext).ok_or_else(|| {
        bad(format!(
            "wrong password (or corrupted key): check {PASSWORD_ENV}"
        ))
    })
}

fn scrypt_key(password: &[u8], salt: &[u8], p: &ScryptParams) -> Result<[u8; 32]> {
    let bad = |reason: String| key_err("encrypted key", reason);
    // Bound the work a key file can demand: cosign writes N=32768, r=8, p=1 (32 MiB).
    let memory = 128u64.saturating_mul(p.n).saturating_mul(u64::from(p.r));
    if !p.n.is_power_of_two() || p.n < 2 || memory > (256 << 20) || p.p == 0 || p.p > 16 || p.r == 0
    {
        return Err(bad(format!(
            "unsupported scrypt parameters N={} r={} p={}",
            p.n, p.r, p.p
        )));
    }
    let log_n = p.n.trailing_zeros() as u8;
    let params =
        scrypt::Params::new(log_n, p.r, p.p).map_err(|e| bad(format!("scrypt parameters: {e}")))?;
    let mut out = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut out).map_err(|e| bad(format!("scrypt: {e}")))?;
    Ok(out)
}

/// NaCl `crypto_secretbox` (XSalsa20-Poly1305): `tag ‖ ciphertext`. The first 32 bytes of the
/// XSalsa20 keystream key Poly1305; the message is encrypted with the keystream after them.
fn secretbox_seal(key: &[u8; 32], nonce: &[u8; 24], plaintext: &[u8]) -> Vec<u8> {
    use poly1305::universal_hash::KeyInit;
    use salsa20::cipher::{KeyIvInit, StreamCipher};
    let mut stream = salsa20::XSalsa20::new(&(*key).into(), &(*nonce).into());
    let mut mac_key = [0u8; 32];
    stream.apply_keystream(&mut mac_key);
    let mut ciphertext = plaintext.to_vec();
    stream.apply_keystream(&mut ciphertext);
    let tag = poly1305::Poly1305::new(&mac_key.into()).compute_unpadded(&ciphertext);
    let mut out = Vec::with_capacity(16 + ciphertext.len());
    out.extend_from_slice(&tag);
    out.extend_from_slice(&ciphertext);
    out
}

fn secretbox_open(key: &[u8; 32], nonce: &[u8; 24], boxed: &[u8]) -> Option<Vec<u8>> {
    use poly1305::universal_hash::KeyInit;
    use salsa20::cipher::{KeyIvInit, StreamCipher};
    use subtle::ConstantTimeEq;
    if boxed.len() < 16 {
        return None;
    }
    let (tag, ciphertext) = boxed.split_at(16);
    let mut stream = salsa20::XSalsa20::new(&(*key).into(), &(*nonce).into());
    let mut mac_key = [0u8; 32];
    stream.apply_keystream(&mut mac_key);
    let expected = poly1305::Poly1305::new(&mac_key.into()).compute_unpadded(ciphertext);
    if !bool::from(expected.as_slice().ct_eq(tag)) {
        return None;
    }
    let mut plaintext = ciphertext.to_vec();
    stream.apply_keystream(&mut plaintext);
    Some(plaintext)
}

/// The first PEM block: its label and decoded body. Lenient about line length and headers, as
/// Go's and OpenSSL's readers are.
fn pem_decode(text: &str) -> std::result::Result<(String, Vec<u8>), String> {
    let start = text
        .find("-----BEGIN ")
        .ok_or("no PEM block (-----BEGIN ...-----)")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----").ok_or("malformed PEM header")?;
    let label = rest[..label_end].to_string();
    let body_start = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body_start
        .find(&end_marker)
        .ok_or_else(|| format!("no {end_marker} line"))?;
    let b64: String = body_start[..body_end]
        .lines()
        .filter(|l| !l.contains(':'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    let der =
        Base64::decode_vec(&b64).map_err(|e| format!("PEM {label} body is not base64: {e}"))?;
    Ok((label, der))
}

fn pem_encode(label: &str, bytes: &[u8]) -> String {
    let b64 = Base64::encode_string(bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Produced with PyNaCl 1.6 (libsodium): `nacl.secret.SecretBox(bytes(range(32))).encrypt(
    /// b"apiary secretbox test vector", bytes(range(100, 124)))`.
    #[test]
    fn secretbox_matches_libsodium() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let nonce: [u8; 24] = core::array::from_fn(|i| (100 + i) as u8);
        let boxed = secretbox_seal(&key, &nonce, b"apiary secretbox test vector");
        assert_eq!(hex::encode(&boxed), LIBSODIUM_BOX);
        assert_eq!(
            secretbox_open(&key, &nonce, &boxed).unwrap(),
            b"apiary secretbox test vector"
        );
        let mut tampered = boxed.clone();
        tampered[20] ^= 1;
        assert!(secretbox_open(&key, &nonce, &tampered).is_none());
    }

    const LIBSODIUM_BOX: &str =
        "0b5d7b49718dfda3891446a0d55ef19663c9f0a848cfee9ad59e51f143e6cc601ede5dd490863d7ec5782de6";

    #[test]
    fn keys_round_trip() {
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pem(&pem, None).unwrap();
        assert_eq!(again.verifying_key(), key.verifying_key());
        let public = key.verifying_key().to_pem().unwrap();
        assert_eq!(
            VerifyingKey::from_pem(&public).unwrap(),
            key.verifying_key()
        );

        let sig = key.sign_base64(b"payload");
        assert!(key.verifying_key().verify_base64(b"payload", &sig));
        assert!(!key.verifying_key().verify_base64(b"payloaD", &sig));
        let other = SigningKey::generate().unwrap();
        assert!(!other.verifying_key().verify_base64(b"payload", &sig));
    }

    #[test]
    fn encrypted_cosign_key_round_trip() {
        let key = SigningKey::generate().unwrap();
        let pem = key.to_cosign_encrypted_pem(b"hunter2").unwrap();
        assert!(
            pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"),
            "{pem}"
        );
        let back = SigningKey::from_pem(&pem, Some(b"hunter2")).unwrap();
        assert_eq!(back.verifying_key(), key.verifying_key());
        let e = SigningKey::from_pem(&pem, Some(b"wrong")).unwrap_err();
        assert!(e.to_string().contains("wrong password"), "{e}");
        let e = SigningKey::from_pem(&pem, None).unwrap_err();
        assert!(e.to_string().contains("COSIGN_PASSWORD"), "{e}");
    }

    #[test]
    fn payload_shape() {
        let image: ImageRef = "localhost:5000/team/prog:v1".parse().unwrap();
        let d = format!("sha256:{}", "a".repeat(64));
        let p = String::from_utf8(payload_for(&image, &d).unwrap()).unwrap();
        assert_eq!(
            p,
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"localhost:5000/team/prog"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", "a".repeat(64)));
    }

    #[test]
    fn stored_signature_checks_claims() {
        let key = SigningKey::generate().unwrap();
        let image: ImageRef = "localhost:5000/p:v1".parse().unwrap();
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let payload = payload_for(&image, &d1).unwrap();
        let sig = StoredSignature {
            payload: Base64::encode_string(&payload),
            signature: key.sign_base64(&payload),
        };
        let ok = verify_stored(std::slice::from_ref(&sig), &d1, &[key.verifying_key()]).unwrap();
        assert_eq!(ok.docker_reference, "localhost:5000/p");
        // A valid signature over another digest's payload does not verify this digest.
        let e = verify_stored(&[sig], &d2, &[key.verifying_key()]).unwrap_err();
        assert!(e[0].contains("not sha256:2222"), "{e:?}");
    }

    #[test]
    fn pem_errors() {
        assert!(SigningKey::from_pem("nothing here", None).is_err());
        let e = VerifyingKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected PUBLIC KEY"), "{e}");
    }
}
