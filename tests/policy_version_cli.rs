//! `georelay check` prints the policy version the library computes, and a
//! policy change gives another one while a secret change does not.

use std::path::Path;
use std::process::Command;

use georelay::config::Fleet;

fn printed_version(config: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_georelay"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run georelay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("policy version: "))
        .unwrap_or_else(|| panic!("no policy version in:\n{stdout}"))
        .to_owned()
}

#[test]
fn check_prints_the_policy_version() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("regions.toml");
    let fleet = Fleet::load(&example).unwrap();
    assert_eq!(
        printed_version(&example),
        fleet.policy_version().to_string()
    );

    let text = std::fs::read_to_string(&example).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("regions.toml");
    let secret_changed = text.replacen("secret = \"", "secret = \"other-", 1);
    assert_ne!(secret_changed, text, "the example has an inline secret");
    std::fs::write(&copy, &secret_changed).unwrap();
    assert_eq!(printed_version(&copy), fleet.policy_version().to_string());

    let policy_changed = text.replacen("rtt_ms = ", "rtt_ms = 1", 1);
    std::fs::write(&copy, &policy_changed).unwrap();
    assert_ne!(printed_version(&copy), fleet.policy_version().to_string());
}
