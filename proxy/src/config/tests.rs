use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn defaults_are_sidecar_mode_on_the_documented_ports() {
    let config = Config::from_env(env(&[])).unwrap();
    assert_eq!(
        config.mode,
        Mode::Sidecar {
            inbound: "0.0.0.0:15406".parse().unwrap(),
            outbound: "0.0.0.0:15401".parse().unwrap(),
        }
    );
    assert_eq!(config.admin_addr, "0.0.0.0:15400".parse().unwrap());
    assert_eq!(config.log_format, LogFormat::Plain);
    assert_eq!(config.drain, Duration::from_secs(DEFAULT_DRAIN_SECONDS));
    assert!(config.controller.is_none());
}

#[test]
fn standalone_mode_from_env_resolves_names() {
    let config = Config::from_env(env(&[
        (env::LISTEN, "127.0.0.1:0"),
        (env::UPSTREAM, "localhost:8080"),
        (env::FAULTS_FILE, "/tmp/f.yaml"),
    ]))
    .unwrap();
    let Mode::Standalone { upstream, .. } = config.mode else {
        panic!("expected standalone mode, got {:?}", config.mode)
    };
    assert_eq!(upstream.port(), 8080);
    assert!(upstream.ip().is_loopback());
    assert_eq!(config.faults_file, Some(PathBuf::from("/tmp/f.yaml")));
}

#[test]
fn flags_win_over_env() {
    let args = RunArgs {
        admin_addr: Some("127.0.0.1:9".into()),
        ..RunArgs::default()
    };
    let config = Config::from_sources(&args, env(&[(env::ADMIN_ADDR, "127.0.0.1:8")])).unwrap();
    assert_eq!(config.admin_addr, "127.0.0.1:9".parse().unwrap());
}

#[test]
fn listen_without_upstream_is_refused() {
    let err = Config::from_env(env(&[(env::LISTEN, "127.0.0.1:0")])).unwrap_err();
    assert!(err.to_string().contains("--upstream"), "{err}");
}

#[test]
fn bad_values_name_the_flag_and_variable() {
    for (key, value, needle) in [
        (
            env::ADMIN_ADDR,
            "nope",
            "--admin-addr / FAULTLINE_ADMIN_ADDR",
        ),
        (env::LOG_FORMAT, "xml", "--log-format"),
        (env::DRAIN_SECONDS, "-1", "--drain-seconds"),
        (env::MAX_CONNECTIONS, "0", "--max-connections"),
        (env::CONTROLLER_URL, "http://plain", "--controller-url"),
        (env::LOG, "[[[", "--log"),
    ] {
        let err = Config::from_env(env(&[(key, value)])).unwrap_err();
        assert!(err.to_string().contains(needle), "{key}={value}: {err}");
    }
}

#[test]
fn faults_file_and_controller_are_exclusive() {
    let err = Config::from_env(env(&[
        (env::FAULTS_FILE, "/tmp/x"),
        (
            env::CONTROLLER_URL,
            "https://faultline-webhook.faultline-system.svc:443",
        ),
    ]))
    .unwrap_err();
    assert!(matches!(err, ConfigError::Conflict(_)), "{err}");
}

#[test]
fn controller_settings_are_collected() {
    let config = Config::from_env(env(&[
        (
            env::CONTROLLER_URL,
            "https://faultline-webhook.faultline-system.svc:443",
        ),
        (env::POD_NAME, "checkout-1"),
        (env::POD_NAMESPACE, "shop"),
        (env::CA_FILE, "/etc/ca.pem"),
    ]))
    .unwrap();
    let controller = config.controller.unwrap();
    assert_eq!(controller.pod_name.as_deref(), Some("checkout-1"));
    assert_eq!(controller.ca, CaSource::File("/etc/ca.pem".into()));
    assert_eq!(
        controller.token_file,
        PathBuf::from(faultline_policy::contract::TOKEN_FILE)
    );
}

#[test]
fn empty_values_count_as_unset() {
    let config =
        Config::from_env(env(&[(env::LOG_FORMAT, ""), (env::CONTROLLER_URL, " ")])).unwrap();
    assert_eq!(config.log_format, LogFormat::Plain);
    assert!(config.controller.is_none());
}

#[test]
fn probe_ports_are_a_list_of_ports_and_default_to_none() {
    assert!(Config::from_env(env(&[])).unwrap().probe_ports.is_empty());
    let config = Config::from_env(env(&[(env::PROBE_PORTS, "8080, 9090")])).unwrap();
    assert_eq!(config.probe_ports, [8080, 9090]);
    for bad in ["0", "http", "8080,,9090", "70000"] {
        let err = Config::from_env(env(&[(env::PROBE_PORTS, bad)])).unwrap_err();
        assert!(
            err.to_string().contains("FAULTLINE_PROBE_PORTS"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn control_is_for_a_standalone_proxy_on_loopback_or_behind_a_token() {
    let standalone = [
        (env::LISTEN, "127.0.0.1:0"),
        (env::UPSTREAM, "127.0.0.1:8080"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut all: Vec<(&str, &str)> = standalone.to_vec();
        all.extend_from_slice(extra);
        Config::from_env(env(&all))
    };
    // Off-cluster the admin server defaults to loopback.
    let config = with(&[(env::CONTROL, "true")]).unwrap();
    assert_eq!(config.admin_addr, "127.0.0.1:15400".parse().unwrap());
    assert_eq!(config.control, Some(None));
    assert_eq!(with(&[]).unwrap().control, None);
    let open = with(&[(env::CONTROL, "true"), (env::ADMIN_ADDR, "0.0.0.0:15400")]).unwrap_err();
    assert!(open.to_string().contains("--control-token"), "{open}");
    let guarded = with(&[
        (env::CONTROL, "true"),
        (env::ADMIN_ADDR, "0.0.0.0:15400"),
        (env::CONTROL_TOKEN, "t"),
    ])
    .unwrap();
    assert_eq!(guarded.control, Some(Some("t".into())));
    let file = with(&[(env::CONTROL, "true"), (env::FAULTS_FILE, "/tmp/f.yaml")]).unwrap_err();
    assert!(file.to_string().contains("one source"), "{file}");
    let pod = Config::from_env(env(&[
        (env::CONTROL, "true"),
        (env::CONTROLLER_URL, "https://controller:443"),
    ]))
    .unwrap_err();
    assert!(pod.to_string().contains("source of truth"), "{pod}");
    assert!(with(&[(env::CONTROL, "maybe")]).is_err());
}
