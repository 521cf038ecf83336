//! Store errors: what failed, with the underlying database error in the message.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported backend.
    #[error(
        "unsupported database url {0:?}: use postgres://..., sqlite:<path>, sqlite::memory: or a file path"
    )]
    UnsupportedUrl(String),
    /// The database could not be reached or opened.
    #[error("cannot open {backend} database: {error}")]
    Connect {
        /// "sqlite" or "postgres".
        backend: &'static str,
        /// The driver's error.
        error: sqlx::Error,
    },
    /// Pending migrations could not be applied.
    #[error("cannot migrate {backend} database: {error}")]
    Migrate {
        /// "sqlite" or "postgres".
        backend: &'static str,
        /// The migrator's error.
        error: sqlx::migrate::MigrateError,
    },
    /// A query failed; `context` says which operation ran it.
    #[error("{context}: {error}")]
    Database {
        /// The operation, e.g. "apply world: insert pop".
        context: &'static str,
        /// The driver's error.
        error: sqlx::Error,
    },
    /// The world given to `apply_world` breaks a config rule.
    #[error("invalid world: {0}")]
    InvalidWorld(String),
    /// A value does not fit the column type (e.g. a version above `i64::MAX`).
    #[error("{field} out of range: {value}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value, as text.
        value: String,
    },
    /// A stored row cannot be read back (edited by hand, or a bug).
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Attaches the operation name to driver errors.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|error| StoreError::Database { context, error })
    }
}
