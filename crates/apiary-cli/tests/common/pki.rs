//! Throwaway certificates for the TLS tests: a CA, a server certificate and client certificates.

use std::path::PathBuf;

pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A CA with a server certificate (127.0.0.1, localhost) and a client certificate, plus a
/// client certificate from another CA.
pub fn make_pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    let new_ca = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(p, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>, sans: &[&str], eku: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(
            DnType::CommonName,
            sans.first().copied().unwrap_or("client"),
        );
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (ca_pem, ca) = new_ca("apiary test CA");
    let (other_pem, other) = new_ca("some other CA");
    let (srv, srv_key) = leaf(
        &ca,
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cli, cli_key) = leaf(&ca, &["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let (bad, bad_key) = leaf(&other, &["intruder"], ExtendedKeyUsagePurpose::ClientAuth);
    write("ca.pem", ca_pem);
    write("other-ca.pem", other_pem);
    write("server.pem", srv);
    write("server.key", srv_key);
    write("client.pem", cli);
    write("client.key", cli_key);
    write("intruder.pem", bad);
    write("intruder.key", bad_key);
    Pki { dir }
}
