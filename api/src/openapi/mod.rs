//! The OpenAPI 3.1 document: every route registered through `OpenApiRouter` adds itself;
//! this module adds the title, tags, the bearer (OAuth2 password) security scheme, and
//! (`contract`) the answers every operation shares.

mod contract;

use utoipa::{
    Modify, OpenApi,
    openapi::security::{Flow, OAuth2, Password, Scopes, SecurityScheme},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orderflow API",
        description = "Order processing backend: customers place orders, vendors fulfil them, \
                       workers apply every status change from a message queue. \
                       Errors are RFC 9457 `application/problem+json` documents.",
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Registration, login and tokens"),
        (name = "users", description = "Profiles and user management"),
        (name = "products", description = "The catalogue"),
        (name = "orders", description = "Orders, status changes, their timeline and live updates"),
        (name = "payments", description = "Money on an order: payments recorded by hand, refunds, the ledger"),
        (name = "notifications", description = "Order updates for the signed-in user"),
        (name = "webhooks", description = "Signed order events for integrators: endpoints, secrets, the delivery log (admins)"),
        (name = "operations", description = "Dead letters: messages the workers could not apply (admins)"),
        (name = "health", description = "Liveness and readiness probes"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` scheme: an OAuth2 password flow against `/api/auth/login`, which
/// gives the docs' Authorize button a username/password form.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::new(
                    "/api/auth/login",
                    Scopes::new(),
                ))],
                "Sign in with username (or email) and password; the access token is sent as \
                 `Authorization: Bearer <token>`.",
            )),
        );
    }
}

/// Adds what every operation shares; call on the document once all routes are merged.
pub fn add_common_responses(openapi: &mut utoipa::openapi::OpenApi) {
    contract::CommonResponses.modify(openapi);
}
