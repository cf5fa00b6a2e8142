use clap::CommandFactory;
use clap::error::ErrorKind;

use super::*;

/// `inject`'s arguments that do not shape the policy.
const NOT_POLICY: [&str; 7] = [
    "target",
    "file",
    "dry_run",
    "help",
    "kubeconfig",
    "context",
    "namespace",
];

fn inject() -> clap::Command {
    let mut cli = Cli::command();
    cli.build();
    cli.find_subcommand("inject")
        .cloned()
        .expect("an inject subcommand")
}

/// A value clap accepts for `arg` (what the flag means is checked later).
fn value_for(arg: &clap::Arg) -> String {
    arg.get_possible_values()
        .first()
        .map_or_else(|| "1".to_owned(), |v| v.get_name().to_owned())
}

/// Walks every argument clap knows, so a flag added to `FaultFlags` (or
/// next to it) cannot be forgotten: each one that shapes the policy is in
/// the group and is refused next to `-f` with both flags named.
#[test]
fn every_fault_flag_conflicts_with_a_file() {
    let inject = inject();
    let group = inject
        .get_groups()
        .find(|g| g.get_id() == inject_flags::FAULT_FLAGS)
        .expect("the fault flags group");
    let members: Vec<_> = group.get_args().collect();
    let mut checked = 0;
    for arg in inject.get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_POLICY.contains(&id) {
            continue;
        }
        assert!(
            members.contains(&arg.get_id()),
            "{id} shapes the policy but is not in {}",
            inject_flags::FAULT_FLAGS
        );
        let long = format!("--{}", arg.get_long().expect("fault flags are long flags"));
        let mut argv = vec![
            "kubectl fault".to_owned(),
            "inject".into(),
            "deploy/web".into(),
            "-f".into(),
            "policy.yaml".into(),
            long.clone(),
        ];
        if arg.get_action().takes_values() {
            argv.push(value_for(arg));
        }
        let error = Cli::try_parse_from(&argv).expect_err(&long);
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict, "{long}: {error}");
        let message = error.to_string();
        // Both flags named, not the whole group listed.
        let named = format!("'--filename <FILE>' cannot be used with '{long}");
        assert!(message.contains(&named), "{message}");
        checked += 1;
    }
    assert_eq!(checked, members.len());
    assert!(checked > 30, "only {checked} fault flags found");
}

#[test]
fn a_file_alone_or_flags_alone_parse() {
    let file = [
        "kubectl fault",
        "inject",
        "deploy/web",
        "-f",
        "-",
        "--dry-run",
    ];
    assert!(Cli::try_parse_from(file).is_ok());
    let flags = [
        "kubectl fault",
        "inject",
        "deploy/web",
        "--delay",
        "1s",
        "--path",
        "/api/*",
        "--for",
        "60s",
    ];
    assert!(Cli::try_parse_from(flags).is_ok());
}

#[test]
fn the_conflict_message_names_both_flags() {
    let message = |argv: &[&str]| {
        let argv = ["kubectl fault", "inject", "deploy/web"].iter().chain(argv);
        let error = Cli::try_parse_from(argv).expect_err("a conflict");
        assert!(error.use_stderr());
        error.to_string()
    };
    let file_first = message(&["-f", "policy.yaml", "--abort", "503"]);
    assert!(
        file_first
            .contains("the argument '--filename <FILE>' cannot be used with '--abort <STATUS>'"),
        "{file_first}"
    );
    let flag_first = message(&["--abort", "503", "-f", "policy.yaml"]);
    assert!(
        flag_first
            .contains("the argument '--abort <STATUS>' cannot be used with '--filename <FILE>'"),
        "{flag_first}"
    );
}
