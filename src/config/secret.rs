//! App secrets: where an app's token key comes from ([`SecretSource`]) and the
//! resolved key itself ([`Secret`]), which never prints its bytes.
//!
//! Resolution happens at `serve` time, not at `check` time: a `secret_env`
//! naming an unset variable is a runtime error, not a config error.

use std::fmt;
use std::path::PathBuf;

use crate::ids::AppId;

/// Where an app's token key comes from: exactly one of `secret_env`,
/// `secret` (inline, for development) or `secret_file`.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `secret_env = "VAR"`: the key is the value of an environment variable.
    Env(String),
    /// `secret = "..."`: the key is written in the config (development only).
    Inline(String),
    /// `secret_file = "path"`: the key is the content of a file, resolved
    /// relative to the config file; one trailing newline is ignored.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the key. Fails when the variable is unset or empty, or the file
    /// is unreadable or empty.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let bytes = match self {
            SecretSource::Env(var) => match std::env::var_os(var) {
                None => return Err(SecretError::EnvUnset { var: var.clone() }),
                Some(value) => value.into_encoded_bytes(),
            },
            SecretSource::Inline(value) => value.as_bytes().to_vec(),
            SecretSource::File(path) => {
                let mut bytes =
                    std::fs::read(path).map_err(|source| SecretError::FileUnreadable {
                        path: path.clone(),
                        source,
                    })?;
                if bytes.ends_with(b"\r\n") {
                    bytes.truncate(bytes.len() - 2);
                } else if bytes.ends_with(b"\n") {
                    bytes.truncate(bytes.len() - 1);
                }
                bytes
            }
        };
        if bytes.is_empty() {
            return Err(SecretError::Empty {
                source_field: self.field_name(),
                origin: self.origin(),
            });
        }
        Ok(Secret(bytes))
    }

    /// The config key this source came from: `secret_env`, `secret` or
    /// `secret_file`.
    pub fn field_name(&self) -> &'static str {
        match self {
            SecretSource::Env(_) => "secret_env",
            SecretSource::Inline(_) => "secret",
            SecretSource::File(_) => "secret_file",
        }
    }

    /// A printable description of where the key comes from (never the key).
    fn origin(&self) -> String {
        match self {
            SecretSource::Env(var) => format!("environment variable {var}"),
            SecretSource::Inline(_) => "inline value".to_owned(),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(var) => f.debug_tuple("Env").field(var).finish(),
            SecretSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Why a secret could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `secret_env` names a variable that is not set: export it before `serve`.
    #[error("secret_env: environment variable {var} is not set")]
    EnvUnset {
        /// The variable's name.
        var: String,
    },
    /// `secret_file` could not be read.
    #[error("secret_file: cannot read {}: {source}", path.display())]
    FileUnreadable {
        /// The resolved path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key resolved to zero bytes.
    #[error("{source_field}: the {origin} is empty")]
    Empty {
        /// `secret_env`, `secret` or `secret_file`.
        source_field: &'static str,
        /// Where the key was read from.
        origin: String,
    },
}

/// [`SecretError`] with the app it belongs to, as returned by
/// [`super::App::resolve_secret`].
#[derive(Debug, thiserror::Error)]
#[error("apps.{app}.{source}")]
pub struct AppSecretError {
    /// The app whose secret failed.
    pub app: AppId,
    /// What went wrong.
    pub source: SecretError,
}

/// A resolved token key. `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw key bytes (tests and tools; config resolution uses
    /// [`SecretSource::resolve`]).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The key bytes, for HMAC.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_bytes() {
        let secret = Secret::from_bytes("hunter2");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let source = SecretSource::Inline("hunter2".into());
        assert!(!format!("{source:?}").contains("hunter2"));
    }

    #[test]
    fn inline_and_file_secrets_resolve() {
        let inline = SecretSource::Inline("dev-key".into()).resolve();
        assert_eq!(
            inline.map(|s| s.as_bytes().to_vec()).ok(),
            Some(b"dev-key".to_vec())
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "file-key\n").expect("write key");
        let from_file = SecretSource::File(path).resolve();
        assert_eq!(
            from_file.map(|s| s.as_bytes().to_vec()).ok(),
            Some(b"file-key".to_vec())
        );
    }

    #[test]
    fn missing_sources_name_the_field_and_variable() {
        let unset = SecretSource::Env("GEORELAY_TEST_SURELY_UNSET_VAR".into()).resolve();
        let message = unset.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            message,
            "secret_env: environment variable GEORELAY_TEST_SURELY_UNSET_VAR is not set"
        );

        let missing = SecretSource::File(PathBuf::from("/nonexistent/georelay/key")).resolve();
        let message = missing.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.starts_with("secret_file: cannot read /nonexistent/georelay/key"),
            "{message}"
        );

        let empty = SecretSource::Inline(String::new()).resolve();
        assert!(matches!(
            empty,
            Err(SecretError::Empty {
                source_field: "secret",
                ..
            })
        ));
    }
}
