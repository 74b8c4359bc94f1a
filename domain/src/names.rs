//! Instance names are unique within a project. Uniqueness spans aggregates, so the aggregate cannot
//! check it from its own events: it asks a registry whose reservation is atomic on the server.

use uuid::Uuid;

/// Why a name could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameReservationError {
    /// another live instance of the project holds the name
    #[error("name is already used by instance {holder}")]
    Taken {
        /// the instance holding the name
        holder: Uuid,
    },
    /// the registry could not be reached; retryable
    #[error("name registry unavailable: {0}")]
    Unavailable(String),
}

/// Reserves instance names per project. Implementations must make `reserve` atomic: of two concurrent
/// reservations of one name for different instances, exactly one succeeds.
#[async_trait::async_trait]
pub trait NameRegistry: Send + Sync {
    /// Reserves `name` in `project` for `instance`. Reserving again for the same instance succeeds.
    async fn reserve(&self, project: &str, name: &str, instance: Uuid) -> Result<(), NameReservationError>;
}

/// A registry for tests and single-process tools: a map behind a mutex.
#[derive(Debug, Default)]
pub struct InMemoryNameRegistry {
    names: std::sync::Mutex<std::collections::HashMap<(String, String), Uuid>>,
}

#[async_trait::async_trait]
impl NameRegistry for InMemoryNameRegistry {
    async fn reserve(&self, project: &str, name: &str, instance: Uuid) -> Result<(), NameReservationError> {
        let mut names = self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let holder = *names.entry((project.to_owned(), name.to_owned())).or_insert(instance);
        if holder == instance { Ok(()) } else { Err(NameReservationError::Taken { holder }) }
    }
}
