//! RSA-2048 keys generated at runtime, in the PEM forms Google uses.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

/// An RSA-2048 key pair. Every instance is freshly generated, so two fakes never share
/// a signing key (a token from one must not verify against the other).
pub struct RsaKey {
    private_pem: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl RsaKey {
    pub fn generate() -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .expect("RSA key generation (rcgen with aws-lc-rs)");
        // rcgen serializes the aws-lc-rs key as PKCS#8, which is what Google key files hold.
        let private_pem = kp.serialize_pem();
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("encoding key");
        let decoding =
            DecodingKey::from_rsa_pem(kp.public_key_pem().as_bytes()).expect("decoding key");
        RsaKey {
            private_pem,
            encoding,
            decoding,
        }
    }

    /// PKCS#8 PEM ("BEGIN PRIVATE KEY"), as in a service-account key file.
    pub fn private_pem(&self) -> &str {
        &self.private_pem
    }

    pub fn decoding_key(&self) -> DecodingKey {
        self.decoding.clone()
    }

    /// Signs `claims` as an RS256 JWT with header `kid` (when given) and `typ: JWT`.
    pub fn sign<T: Serialize>(&self, kid: Option<&str>, claims: &T) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign JWT")
    }
}
