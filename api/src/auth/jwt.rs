//! Access tokens: HS256 JWTs whose `exp`, `iat`, `iss`, `aud` and `sub` are all required.

use std::time::Duration;

use common::{config::AuthSettings, domain::Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an access token says about its bearer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub jti: Uuid,
    /// The user's token version when issued; a bump revokes every older token.
    pub ver: i32,
}

/// Who a token is for.
pub struct Subject {
    pub id: Uuid,
    pub role: Role,
    pub token_version: i32,
}

/// Signs and checks access tokens; built once from the settings.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.secret_key.expose().as_bytes();
        // Only HS256 is accepted: a token announcing `none` or another algorithm fails.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl: settings.access_token_ttl,
        }
    }

    /// Lifetime of an access token, as told to clients in `expires_in`.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed token for `user` issued at `issued_at` with id `jti`. The same inputs give
    /// the same token, which lets a refresh within the grace window answer identically.
    pub fn issue(
        &self,
        user: &Subject,
        issued_at: chrono::DateTime<chrono::Utc>,
        jti: Uuid,
    ) -> anyhow::Result<String> {
        let iat = issued_at.timestamp();
        let claims = Claims {
            sub: user.id,
            role: user.role,
            iat,
            exp: iat + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti,
            ver: user.token_version,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| anyhow::anyhow!("signing access token failed: {e}"))
    }

    /// The claims of a valid token, or `None` for anything tampered, expired or foreign.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .ok()
    }
}
