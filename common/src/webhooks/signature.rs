//! Standard Webhooks signing: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` with a
//! `whsec_`-prefixed base64 secret.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// 24 bytes, as the Standard Webhooks libraries generate.
const SECRET_BYTES: usize = 24;

/// A new secret, `whsec_` and 24 random bytes in base64.
pub fn generate_secret() -> String {
    let mut key = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a `whsec_…` secret.
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// `None` for anything that is not `whsec_` followed by base64.
    pub fn parse(secret: &str) -> Option<Self> {
        let encoded = secret.strip_prefix(PREFIX)?;
        STANDARD.decode(encoded).ok().map(Self)
    }
}

/// One `v1,<signature>` entry for the `webhook-signature` header.
pub fn sign(secret: &SigningSecret, id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The example in the Standard Webhooks specification's test vectors.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let (a, b) = (generate_secret(), generate_secret());
        assert!(a.starts_with("whsec_") && a != b);
        assert_eq!(
            SigningSecret::parse(&a).map(|s| s.0.len()),
            Some(SECRET_BYTES)
        );
        assert!(SigningSecret::parse("not-a-secret").is_none());
    }
}
