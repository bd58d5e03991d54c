//! User roles, and who acts on an order: a user in their role, or the system.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a user may do: customers own orders, vendors run the store, admins run everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "user_role", rename_all = "lowercase")]
pub enum Role {
    Customer,
    Vendor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Vendor => "vendor",
            Role::Admin => "admin",
        }
    }

    /// Vendors and admins run the store.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Vendor | Role::Admin)
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "customer" => Ok(Role::Customer),
            "vendor" => Ok(Role::Vendor),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: customer, vendor or admin")),
        }
    }
}

/// Who acts on an order: a user in their role, or the system (a worker deciding on stock
/// and money). On the wire and in the timeline it is the role's name, or `system`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorKind {
    System,
    User(Role),
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::System => "system",
            ActorKind::User(role) => role.as_str(),
        }
    }
}

impl std::str::FromStr for ActorKind {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "system" => Ok(ActorKind::System),
            role => role.parse().map(ActorKind::User),
        }
    }
}

impl Serialize for ActorKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ActorKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_actor_kind_is_its_name_on_the_wire_and_nothing_else_is_one() {
        for kind in [
            ActorKind::System,
            ActorKind::User(Role::Customer),
            ActorKind::User(Role::Vendor),
            ActorKind::User(Role::Admin),
        ] {
            let json = serde_json::to_string(&kind).expect("json");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(
                serde_json::from_str::<ActorKind>(&json).expect("read"),
                kind
            );
        }
        assert!(serde_json::from_str::<ActorKind>("\"root\"").is_err());
    }
}
