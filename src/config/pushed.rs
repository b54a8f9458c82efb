//! A configuration pushed over the admin API (`POST /reload` with a body):
//! validated like a file, then written atomically over the node's config
//! file.
//!
//! [`apply_pushed_config`] parses the body exactly as `georelay check`
//! would parse the file (relative paths resolve against the config file's
//! directory, so the GeoIP database and certificates are the node's own),
//! but names the body `<request body>` in every diagnostic. Only a valid
//! body is written: to a temporary file in the same directory (same
//! permissions as the file it replaces), synced, renamed over the config
//! file, and the directory synced, so the file on disk is always either the
//! old or the new complete config, even across a crash. The caller then
//! applies the returned [`Fleet`] (the node's reload path).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{ConfigErrors, Diagnostic, Fleet};

/// How `<request body>` diagnostics name the pushed text.
pub const REQUEST_BODY_NAME: &str = "<request body>";
/// The largest config body a node accepts.
pub const MAX_PUSHED_CONFIG_BYTES: usize = 1 << 20;

/// Why a pushed config was not applied.
#[derive(Debug, thiserror::Error)]
pub enum PushedConfigError {
    /// The body is not a valid config; every problem, at
    /// `<request body>:line:column`.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The body was valid but could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// Validates `body` as the config of the node whose config file is
/// `config_path` and, when valid, replaces that file atomically. Returns
/// the validated fleet (its `path` is `config_path`).
pub fn apply_pushed_config(config_path: &Path, body: &str) -> Result<Fleet, PushedConfigError> {
    if body.len() > MAX_PUSHED_CONFIG_BYTES {
        return Err(PushedConfigError::Invalid(ConfigErrors(vec![Diagnostic {
            file: PathBuf::from(REQUEST_BODY_NAME),
            line: 1,
            column: 1,
            toml_path: String::new(),
            message: format!(
                "a pushed config is at most {MAX_PUSHED_CONFIG_BYTES} bytes, found {}",
                body.len()
            ),
        }])));
    }
    let fleet = Fleet::parse(body, config_path).map_err(|mut errors| {
        for diagnostic in &mut errors.0 {
            diagnostic.file = PathBuf::from(REQUEST_BODY_NAME);
        }
        PushedConfigError::Invalid(errors)
    })?;
    write_atomically(config_path, body.as_bytes())
        .map_err(|(path, source)| PushedConfigError::Write { path, source })?;
    Ok(fleet)
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`, syncing the file and the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map_or_else(
        || "config".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let temp = dir.join(format!(".{name}.pushed-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        if let Ok(metadata) = fs::metadata(path) {
            file.set_permissions(metadata.permissions())?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        fs::File::open(&dir)?.sync_all()
    })();
    result.map_err(|source| {
        // The temporary file must not linger; it may already be gone.
        let _ = fs::remove_file(&temp);
        (path.to_path_buf(), source)
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const VALID: &str = r#"
[regions.eu]
countries = ["DE"]
[nodes.eu-fra-1]
region = "eu"
listen = "127.10.0.1:4433"
admin = "127.10.0.1:9090"
[apps.acme]
secret = "dev"
allow_regions = ["eu"]
"#;

    #[test]
    fn a_valid_body_replaces_the_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regions.toml");
        fs::write(&path, "# old config\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let fleet = apply_pushed_config(&path, VALID).unwrap();
        assert_eq!(fleet.path, path);
        assert_eq!(fleet.metadata.dir, dir.path().join("data").join("metadata"));
        assert_eq!(fs::read_to_string(&path).unwrap(), VALID);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["regions.toml"], "no temporary file is left");
        assert_eq!(
            Fleet::load(&path).unwrap().policy_version(),
            fleet.policy_version()
        );
    }

    #[test]
    fn an_invalid_body_is_reported_at_request_body_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regions.toml");
        fs::write(&path, VALID).unwrap();
        let broken = VALID.replace(r#"allow_regions = ["eu"]"#, r#"allow_regions = ["mars"]"#);
        let Err(PushedConfigError::Invalid(errors)) = apply_pushed_config(&path, &broken) else {
            panic!("an unknown region must be refused");
        };
        let text = errors.to_string();
        assert!(
            text.starts_with(
                "<request body>:10:18: apps.acme.allow_regions[0]: unknown region \"mars\""
            ),
            "{text}"
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            VALID,
            "the file is unchanged"
        );

        let Err(PushedConfigError::Invalid(errors)) = apply_pushed_config(&path, "[regions") else {
            panic!("a syntax error must be refused");
        };
        assert!(
            errors.to_string().starts_with("<request body>:1:"),
            "{errors}"
        );
        let huge = "#".repeat(MAX_PUSHED_CONFIG_BYTES + 1);
        assert!(matches!(
            apply_pushed_config(&path, &huge),
            Err(PushedConfigError::Invalid(_))
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), VALID);
    }

    #[test]
    fn a_write_failure_is_reported_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("regions.toml");
        let Err(PushedConfigError::Write { path: failed, .. }) = apply_pushed_config(&path, VALID)
        else {
            panic!("writing into a missing directory must fail");
        };
        assert_eq!(failed, path);
        assert!(!dir.path().join("missing-dir").exists());
    }
}
