//! `georelay certs`: write a CA and one certificate/key pair per node of the
//! config, for fleets whose nodes run as separate processes.
//!
//! This is the only place where private keys reach the disk, because the
//! operator asked: key files are created with mode 0600 in a directory
//! created with mode 0700, and existing files are never overwritten without
//! `--force`.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::{CliError, CliResult, ConfigArg};
use crate::clock::SystemClock;
use crate::config::Fleet;
use crate::tls::{CertValidity, DevCa};

/// Arguments of `georelay certs`.
#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Directory to write `ca.pem`, `ca.key` and `<node>.pem`/`<node>.key` into
    /// (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Overwrite files that already exist.
    #[arg(long)]
    force: bool,
}

/// One file to write.
struct OutFile {
    name: String,
    contents: String,
    /// A private key: mode 0600.
    secret: bool,
}

pub(super) fn run(args: CertsArgs) -> CliResult {
    let config_path = &args.config.config;
    let fleet = Fleet::load(config_path).map_err(|errors| CliError::Invalid(errors.to_string()))?;
    let validity = CertValidity::from_config(&fleet.tls);
    let ca = DevCa::generate_with(std::sync::Arc::new(SystemClock), validity)
        .context("generating the CA")?;
    let mut files = vec![
        OutFile {
            name: "ca.pem".to_owned(),
            contents: ca.ca_pem(),
            secret: false,
        },
        OutFile {
            name: "ca.key".to_owned(),
            contents: ca.key_pem(),
            secret: true,
        },
    ];
    for (id, node) in &fleet.nodes {
        let identity = ca
            .issue_node_with_ip(id, Some(node.listen.ip()))
            .with_context(|| format!("issuing the certificate of node {id}"))?;
        files.push(OutFile {
            name: format!("{id}.pem"),
            contents: identity.cert_chain_pem(),
            secret: false,
        });
        files.push(OutFile {
            name: format!("{id}.key"),
            contents: identity.key_pem(),
            secret: true,
        });
    }

    if !args.force {
        let existing: Vec<String> = files
            .iter()
            .map(|file| args.out.join(&file.name))
            .filter(|path| path.exists())
            .map(|path| path.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(CliError::Invalid(format!(
                "refusing to overwrite existing files (pass --force to replace them): {}",
                existing.join(", ")
            )));
        }
    }

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for file in &files {
        write_file(&args.out.join(&file.name), file, args.force)?;
    }

    println!(
        "wrote {} files to {} (keys with mode 0600)",
        files.len(),
        args.out.display()
    );
    println!("CA fingerprint (SHA-256): {}", ca.fingerprint_sha256());
    println!();
    println!("Add this to {}:", config_path.display());
    println!();
    print!("{}", tls_snippet(fleet.config_dir(), &args.out)?);
    Ok(())
}

fn write_file(path: &Path, file: &OutFile, force: bool) -> anyhow::Result<()> {
    let mode = if file.secret { 0o600 } else { 0o644 };
    let mut options = OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut handle = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // A replaced file keeps its old mode; narrow it before writing a key.
    handle
        .set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    handle
        .write_all(file.contents.as_bytes())
        .and_then(|()| handle.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The `[tls]` table pointing at `out`, with paths relative to the config
/// file's directory when `out` is inside it.
fn tls_snippet(config_dir: &Path, out: &Path) -> anyhow::Result<String> {
    let out_abs = std::path::absolute(out).context("resolving --out")?;
    let config_abs = std::path::absolute(config_dir).context("resolving the config directory")?;
    let dir = match out_abs.strip_prefix(&config_abs) {
        Ok(relative) if relative.as_os_str().is_empty() => PathBuf::from("."),
        Ok(relative) => relative.to_path_buf(),
        Err(_) => out_abs,
    };
    let ca = dir.join("ca.pem");
    Ok(format!(
        "[tls]\nca = {}\ndir = {}\n# ca.key is only needed to issue more certificates: keep it offline.\n",
        toml_string(&ca),
        toml_string(&dir)
    ))
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_paths_are_relative_inside_the_config_dir_and_absolute_outside() {
        let inside = tls_snippet(Path::new("/etc/georelay"), Path::new("/etc/georelay/certs"))
            .expect("absolute paths resolve");
        assert!(inside.contains("ca = \"certs/ca.pem\""), "{inside}");
        assert!(inside.contains("dir = \"certs\""), "{inside}");

        let outside = tls_snippet(Path::new("/etc/georelay"), Path::new("/srv/pki"))
            .expect("absolute paths resolve");
        assert!(outside.contains("ca = \"/srv/pki/ca.pem\""), "{outside}");
        let parsed: toml::Table = toml::from_str(&outside).expect("the snippet is TOML");
        assert_eq!(
            parsed
                .get("tls")
                .and_then(|tls| tls.get("dir"))
                .and_then(|dir| dir.as_str()),
            Some("/srv/pki")
        );
    }
}
