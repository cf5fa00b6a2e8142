//! `faultline-proxy init` as a command in a real network namespace:
//! `--dry-run` output, and the exit codes and messages for bad flags, a
//! missing iptables binary and missing capabilities (nothing is written).
mod capture;

use capture::setup;

#[test]
fn dry_run_prints_the_rules_and_changes_nothing() {
    let Some(pair) = setup("dry", false) else {
        return;
    };
    let before = pair.nat_rules("iptables-nft-save");
    let out = pair.init(&["--dry-run", "--exclude-outbound-ports", "5432"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("# faultline capture rules (IPv4)"),
        "{text}"
    );
    assert!(text.contains(
        "--dport 5432 -m comment --comment \"faultline: excluded outbound port\" -j RETURN"
    ));
    assert_eq!(pair.nat_rules("iptables-nft-save"), before);
    let out = pair.init(&["--dry-run", "--clean"]);
    // --clean looks at IPv6 too (leftovers may exist even when the address is gone).
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "# nothing of faultline's to clean (IPv4)\n# nothing of faultline's to clean (IPv6)\n"
    );
}

#[test]
fn errors_name_the_bad_flag_missing_binary_and_missing_capability() {
    let Some(pair) = setup("err", false) else {
        return;
    };
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let out = pair.init(&["--exclude-inbound-ports", "80,9000-8000"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains(
        "failed to parse --exclude-inbound-ports: range \"9000-8000\" ends before it starts"
    ));

    let out = pair.exec(
        &pair.pod,
        "env",
        &["PATH=/nonexistent", capture::BIN, "init"],
    );
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed to run iptables-nft-save: not found in PATH"),
        "{}",
        stderr(&out)
    );

    let out = pair.exec(
        &pair.pod,
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            capture::BIN,
            "init",
        ],
    );
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lacks capability NET_ADMIN"),
        "{}",
        stderr(&out)
    );
    let out = pair.exec(
        &pair.pod,
        "setpriv",
        &[
            "--inh-caps=-all",
            "--bounding-set=-net_raw",
            capture::BIN,
            "init",
            "--backend",
            "legacy",
        ],
    );
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lacks capability NET_RAW"),
        "{}",
        stderr(&out)
    );
    assert!(
        !pair.nat_rules("iptables-nft-save").contains("FAULTLINE"),
        "nothing was written"
    );
}
