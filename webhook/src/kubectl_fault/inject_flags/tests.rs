use super::*;
use faultline_policy as policy;

fn flags() -> FaultFlags {
    FaultFlags {
        name: "kubectl-fault".into(),
        ..FaultFlags::default()
    }
}

#[test]
fn targets() {
    assert_eq!(
        parse_target("deploy/checkout").unwrap(),
        (Kind::Deployment, "checkout".into())
    );
    assert_eq!(
        parse_target("StatefulSet/db").unwrap(),
        (Kind::StatefulSet, "db".into())
    );
    assert_eq!(
        parse_target("job.batch/j").unwrap(),
        (Kind::Job, "j".into())
    );
    for bad in ["checkout", "svc/x", "deploy/", "deploy/a/b"] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_documented_delay_example_builds_a_valid_policy() {
    let f = FaultFlags {
        delay: Some("200ms".into()),
        percent: Some(20.0),
        path: Some("/api/*".into()),
        for_: Some("60s".into()),
        ..flags()
    };
    let text = policy_from_flags(&f).unwrap();
    let p = policy::parse(&text).unwrap();
    assert_eq!(p.duration(), Some(std::time::Duration::from_secs(60)));
    let v: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(v["rules"][0]["delay"]["fixed"], "200ms");
    assert_eq!(v["rules"][0]["match"]["direction"], "inbound");
    assert_eq!(v["rules"][0]["match"]["path"], "/api/*");
    assert_eq!(v["rules"][0]["percent"], 20.0);
}

#[test]
fn abort_grpc_and_partition_build_valid_policies() {
    for f in [
        FaultFlags {
            abort: Some(503),
            ..flags()
        },
        FaultFlags {
            grpc: Some("unavailable".into()),
            direction: Some("outbound".into()),
            port: Some(9090),
            ..flags()
        },
        FaultFlags {
            partition_to: Some("app=nats".into()),
            ..flags()
        },
    ] {
        let text = policy_from_flags(&f).unwrap();
        policy::parse(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
    }
    let text = policy_from_flags(&FaultFlags {
        partition_to: Some("app=nats".into()),
        ..flags()
    })
    .unwrap();
    let p = policy::parse(&text).unwrap();
    assert_eq!(
        p.selectors().iter().map(|s| s.key()).collect::<Vec<_>>(),
        vec!["app=nats"]
    );
}

#[test]
fn bad_flag_combinations_are_refused_with_a_reason() {
    assert!(matches!(
        policy_from_flags(&flags()),
        Err(CliError::NoFault)
    ));
    let two = FaultFlags {
        abort: Some(503),
        delay: Some("1s".into()),
        ..flags()
    };
    assert!(matches!(policy_from_flags(&two), Err(CliError::ManyFaults)));
    let labels = FaultFlags {
        partition_to: Some("nats".into()),
        ..flags()
    };
    assert!(matches!(
        policy_from_flags(&labels),
        Err(CliError::Labels(_))
    ));
    // Out-of-range values build, and validation names the field.
    let text = policy_from_flags(&FaultFlags {
        abort: Some(700),
        ..flags()
    })
    .unwrap();
    let error = policy::parse(&text).unwrap_err().to_string();
    assert!(
        error.contains("kubectl-fault") && error.contains("status"),
        "{error}"
    );
}

#[test]
fn delay_distribution_flags_build_valid_policies() {
    let cases = [
        (
            FaultFlags {
                delay_uniform: Some("100ms,300ms".into()),
                ..flags()
            },
            json!({"uniform": {"min": "100ms", "max": "300ms"}}),
        ),
        (
            FaultFlags {
                delay_lognormal: Some("80ms, 1.2s".into()),
                ..flags()
            },
            json!({"lognormal": {"median": "80ms", "p99": "1.2s"}}),
        ),
        (
            FaultFlags {
                delay_lognormal: Some("80ms,1.2s,5s".into()),
                ..flags()
            },
            json!({"lognormal": {"median": "80ms", "p99": "1.2s", "max": "5s"}}),
        ),
        (
            FaultFlags {
                delay_pareto: Some("20ms,1.16,5s".into()),
                ..flags()
            },
            json!({"pareto": {"scale": "20ms", "shape": 1.16, "max": "5s"}}),
        ),
    ];
    for (f, delay) in cases {
        let text = policy_from_flags(&f).unwrap();
        policy::parse(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
        let v: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["rules"][0]["delay"], delay, "{text}");
    }
}

#[test]
fn delay_distribution_flags_with_wrong_values_are_refused() {
    let short = FaultFlags {
        delay_pareto: Some("20ms,1.5".into()),
        ..flags()
    };
    assert_eq!(
        policy_from_flags(&short).unwrap_err().to_string(),
        r#"--delay-pareto wants scale,shape,max, got "20ms,1.5""#
    );
    let bad_shape = FaultFlags {
        delay_pareto: Some("20ms,heavy,5s".into()),
        ..flags()
    };
    let text = policy_from_flags(&bad_shape).unwrap();
    let error = policy::parse(&text).unwrap_err().to_string();
    assert!(error.contains("delay.pareto.shape"), "{error}");
    let two = FaultFlags {
        delay_uniform: Some("1ms,2ms".into()),
        abort: Some(503),
        ..flags()
    };
    assert!(matches!(policy_from_flags(&two), Err(CliError::ManyFaults)));
}

#[test]
fn byte_stream_flags_build_valid_policies_with_their_side() {
    let built = |f: FaultFlags| {
        let text = policy_from_flags(&f).unwrap();
        policy::parse(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
        let v: Value = serde_yaml::from_str(&text).unwrap();
        v["rules"][0].clone()
    };
    let rule = built(FaultFlags {
        bandwidth: Some("64KiB/s".into()),
        ..flags()
    });
    assert_eq!(rule["bandwidth"], json!({"rate": "64KiB/s"}));
    let rule = built(FaultFlags {
        bandwidth: Some("10KB/s".into()),
        side: Some("request".into()),
        ..flags()
    });
    assert_eq!(rule["bandwidth"], json!({"request": "10KB/s"}));
    let rule = built(FaultFlags {
        slicer: Some(64),
        slice_delay: Some("2ms".into()),
        side: Some("both".into()),
        port: Some(5432),
        ..flags()
    });
    assert_eq!(
        rule["slicer"],
        json!({"averageSize": 64, "delay": "2ms", "side": "both"})
    );
    let rule = built(FaultFlags {
        limit_data: Some(4096),
        path: Some("/files/*".into()),
        ..flags()
    });
    assert_eq!(rule["limitData"], json!({"bytes": 4096}));
    let rule = built(FaultFlags {
        slow_close: Some("2s".into()),
        side: Some("request".into()),
        ..flags()
    });
    assert_eq!(rule["slowClose"], json!({"delay": "2s", "side": "request"}));
    let rule = built(FaultFlags {
        delay: Some("1s".into()),
        side: Some("response".into()),
        ..flags()
    });
    assert_eq!(rule["delay"], json!({"fixed": "1s", "side": "response"}));
}

#[test]
fn side_needs_a_fault_that_has_sides() {
    let abort = FaultFlags {
        abort: Some(503),
        side: Some("request".into()),
        ..flags()
    };
    assert!(matches!(policy_from_flags(&abort), Err(CliError::Side)));
    // The parser names the field when the side does not fit the fault.
    let text = policy_from_flags(&FaultFlags {
        limit_data: Some(10),
        side: Some("both".into()),
        ..flags()
    })
    .unwrap();
    let error = policy::parse(&text).unwrap_err().to_string();
    assert!(error.contains("limitData.side"), "{error}");
    let two = FaultFlags {
        slicer: Some(8),
        slow_close: Some("1s".into()),
        ..flags()
    };
    assert!(matches!(policy_from_flags(&two), Err(CliError::ManyFaults)));
}

#[test]
fn sni_builds_an_outbound_tls_rule() {
    let f = FaultFlags {
        delay: Some("2s".into()),
        sni: Some("*.stripe.com".into()),
        port: Some(443),
        ..flags()
    };
    let text = policy_from_flags(&f).unwrap();
    let p = policy::parse(&text).unwrap();
    let m = &p.rules[0].r#match;
    assert_eq!(m.sni.as_deref(), Some("*.stripe.com"));
    assert_eq!(m.direction, Some(policy::Direction::Outbound));
    // HTTP answers cannot be sent on TLS: refused before any policy is
    // built, naming the flag and what works instead.
    let f = FaultFlags {
        abort: Some(503),
        sni: Some("api.stripe.com".into()),
        ..flags()
    };
    let error = policy_from_flags(&f).unwrap_err();
    assert!(matches!(error, CliError::HttpOnTls("--abort")), "{error:?}");
    assert_eq!(error.exit_code(), 64);
    assert_eq!(
        error.to_string(),
        "--abort needs HTTP, but --sni matches TLS connections, which the proxy forwards without \
         decrypting: on TLS use --abort-reset, --delay, --bandwidth, --partition-to, --slicer, \
         --limit-data or --slow-close, or match HTTP requests to that host with --host"
    );
}

#[test]
fn abort_reset_builds_a_connection_reset_for_http_tcp_and_tls() {
    for f in [
        FaultFlags {
            abort_reset: true,
            path: Some("/api/*".into()),
            ..flags()
        },
        FaultFlags {
            abort_reset: true,
            host: Some("payments.shop.svc.cluster.local".into()),
            ..flags()
        },
        FaultFlags {
            abort_reset: true,
            sni: Some("*.stripe.com".into()),
            port: Some(443),
            ..flags()
        },
    ] {
        let text = policy_from_flags(&f).unwrap();
        let p = policy::parse(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
        let v: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["rules"][0]["abort"], json!({"reset": true}), "{text}");
        assert_eq!(p.rules.len(), 1);
    }
    let two = FaultFlags {
        abort_reset: true,
        abort: Some(503),
        ..flags()
    };
    assert!(matches!(policy_from_flags(&two), Err(CliError::ManyFaults)));
}

/// A value clap and the policy accept for a flag, by its value name.
fn sample_value(arg: &clap::Arg) -> String {
    if let Some(value) = arg.get_possible_values().first() {
        return value.get_name().to_owned();
    }
    let name = arg
        .get_value_names()
        .and_then(|n| n.first())
        .map_or(String::new(), ToString::to_string);
    match name.as_str() {
        "STATUS" | "STATUS[,STATUS]" => "503",
        "CODE" | "CODE[,CODE]" => "UNAVAILABLE",
        "DURATION" => "1s",
        "MIN,MAX" | "MEDIAN,P99[,MAX]" => "1ms,2ms",
        "SCALE,SHAPE,MAX" => "1ms,1.5,1s",
        "NAME=VALUE" => "x-a=b",
        "PATH" => "/api",
        "METHOD" => "GET",
        "RATE" => "1KiB/s",
        "LABELS" => "app=x",
        "RCODE" => "NXDOMAIN",
        "PATTERN" | "HOST" => "api.example.com",
        "TYPE" => "A",
        "TIME" => "2030-01-01T00:00:00Z",
        "NAME" => "r",
        _ => "16",
    }
    .to_owned()
}

/// Walks every flag clap knows: none of them next to `--sni` may build a
/// policy the parser then refuses for wanting HTTP; those flags are
/// refused by the tool itself, naming the flag.
#[test]
fn no_flag_with_sni_builds_a_policy_refused_for_needing_http() {
    use clap::{CommandFactory, Parser};
    let mut cli = crate::kubectl_fault::Cli::command();
    cli.build();
    let inject = cli.find_subcommand("inject").unwrap().clone();
    let group = inject
        .get_groups()
        .find(|g| g.get_id() == FAULT_FLAGS)
        .unwrap();
    let mut refused = Vec::new();
    for id in group.get_args() {
        let arg = inject.get_arguments().find(|a| a.get_id() == id).unwrap();
        let long = format!("--{}", arg.get_long().unwrap());
        if long == "--sni" {
            continue;
        }
        let mut given = vec![long.clone()];
        if arg.get_action().takes_values() {
            given.push(sample_value(arg));
        }
        // The flag alone, or as a matcher or setting of a delay or slicer.
        let built = [vec![], vec!["--delay", "1s"], vec!["--slicer", "16"]]
            .into_iter()
            .find_map(|fault| {
                let argv = [
                    "kubectl fault",
                    "inject",
                    "pod/p",
                    "--sni",
                    "api.example.com",
                ]
                .into_iter()
                .chain(given.iter().map(String::as_str))
                .chain(fault);
                let cli = crate::kubectl_fault::Cli::try_parse_from(argv).ok()?;
                let crate::kubectl_fault::Command::Inject { flags, .. } = cli.command else {
                    return None;
                };
                match policy_from_flags(&flags) {
                    Err(CliError::NoFault | CliError::ManyFaults) => None,
                    other => Some(other),
                }
            })
            .unwrap_or_else(|| panic!("{long} did not build with --sni"));
        match built {
            Err(CliError::HttpOnTls(flag)) => {
                assert_eq!(flag, long);
                refused.push(flag);
            }
            Err(other) => panic!("{long}: {other}"),
            Ok(text) => {
                if let Err(e) = policy::parse(&text) {
                    let e = e.to_string();
                    assert!(
                        !e.contains("HTTP") && !e.contains("decrypt"),
                        "{long} with --sni builds a policy refused for needing HTTP: {e}"
                    );
                }
            }
        }
    }
    assert_eq!(refused.len(), 12, "{refused:?}");
}

#[test]
fn dns_flags_build_a_valid_dns_rule() {
    let f = FaultFlags {
        dns_rcode: Some("nxdomain".into()),
        dns_name: Some("*.nats.svc.cluster.local".into()),
        dns_types: vec!["A".into(), "AAAA".into()],
        for_: Some("5m".into()),
        ..flags()
    };
    let text = policy_from_flags(&f).unwrap();
    let p = policy::parse(&text).unwrap();
    let rule = &p.rules[0];
    assert_eq!(
        rule.dns.as_ref().map(|d| d.rcode),
        Some(policy::DnsRcode::NxDomain)
    );
    assert_eq!(rule.r#match.protocol, Some(policy::Protocol::Dns));
    assert_eq!(rule.r#match.direction, None);
    let m = rule.r#match.dns.as_ref().unwrap();
    assert_eq!(m.name.as_deref(), Some("*.nats.svc.cluster.local"));
    assert_eq!(
        m.types,
        vec![policy::RecordType::A, policy::RecordType::AAAA]
    );

    // Drop and delay on DNS; a DNS fault with an HTTP matcher is the
    // policy's own error.
    let drop = policy_from_flags(&FaultFlags {
        dns_drop: true,
        ..flags()
    })
    .unwrap();
    assert!(policy::parse(&drop).unwrap().rules[0].hang.is_some());
    let slow = policy_from_flags(&FaultFlags {
        delay: Some("2s".into()),
        dns_name: Some("api.example.com".into()),
        ..flags()
    })
    .unwrap();
    assert!(policy::parse(&slow).unwrap().rules[0].r#match.is_dns());
    let bad = policy_from_flags(&FaultFlags {
        dns_rcode: Some("SERVFAIL".into()),
        path: Some("/x".into()),
        ..flags()
    })
    .unwrap();
    assert_eq!(
        policy::parse(&bad).unwrap_err().to_string(),
        r#"rules[0] "kubectl-fault": match.path: is an HTTP matcher; a DNS rule selects queries with match.dns (name, types)"#
    );
    assert!(matches!(
        policy_from_flags(&FaultFlags {
            dns_rcode: Some("NXDOMAIN".into()),
            dns_drop: true,
            ..flags()
        }),
        Err(CliError::ManyFaults)
    ));
}

#[test]
fn header_flags_build_one_from_headers_rule() {
    let f = FaultFlags {
        header_max_delay: Some("5s".into()),
        header_abort: vec![503, 429],
        header_abort_grpc: vec!["unavailable".into()],
        port: Some(8080),
        for_: Some("30m".into()),
        ..flags()
    };
    let text = policy_from_flags(&f).unwrap();
    policy::parse(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
    let v: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        v["rules"][0]["fromHeaders"],
        json!({"maxDelay": "5s", "abortStatuses": [503, 429], "abortGrpc": ["UNAVAILABLE"]})
    );
    let only_delays = FaultFlags {
        header_max_delay: Some("250ms".into()),
        ..flags()
    };
    let text = policy_from_flags(&only_delays).unwrap();
    let p = policy::parse(&text).unwrap();
    assert!(p.rules[0].from_headers.is_some());
    let with_abort = FaultFlags {
        header_abort: vec![503],
        abort: Some(503),
        ..flags()
    };
    assert!(matches!(
        policy_from_flags(&with_abort),
        Err(CliError::ManyFaults)
    ));
    let bad = FaultFlags {
        header_abort: vec![700],
        ..flags()
    };
    let error = policy::parse(&policy_from_flags(&bad).unwrap())
        .unwrap_err()
        .to_string();
    assert!(error.contains("fromHeaders.abortStatuses[0]"), "{error}");
}

#[test]
fn response_flags_build_valid_policies() {
    let f = FaultFlags {
        delay: Some("1s".into()),
        response_statuses: vec!["5xx".into(), "429".into()],
        ..flags()
    };
    let text = policy_from_flags(&f).unwrap();
    policy::parse(&text).unwrap();
    let v: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(v["rules"][0]["delay"]["side"], "response");
    assert_eq!(
        v["rules"][0]["match"]["response"]["status"],
        json!(["5xx", 429])
    );

    let f = FaultFlags {
        replace_status: Some(503),
        replace_body: Some("down".into()),
        response_statuses: vec!["500-504".into()],
        ..flags()
    };
    let v: Value = serde_yaml::from_str(&policy_from_flags(&f).unwrap()).unwrap();
    assert_eq!(
        v["rules"][0]["replace"],
        json!({"status": 503, "body": "down"})
    );

    let f = FaultFlags {
        set_headers: vec!["retry-after=5".into()],
        remove_headers: vec!["etag".into()],
        ..flags()
    };
    let text = policy_from_flags(&f).unwrap();
    policy::parse(&text).unwrap();
    let v: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        v["rules"][0]["patch"],
        json!({"headers": {"set": {"retry-after": "5"}, "remove": ["etag"]}})
    );

    let f = FaultFlags {
        set_headers: vec!["no-equals".into()],
        ..flags()
    };
    assert!(matches!(
        policy_from_flags(&f),
        Err(CliError::HeaderFlag(_))
    ));
    // A request-side delay cannot wait for a response's status.
    let f = FaultFlags {
        delay: Some("1s".into()),
        side: Some("request".into()),
        response_statuses: vec!["5xx".into()],
        ..flags()
    };
    let e = policy::parse(&policy_from_flags(&f).unwrap()).unwrap_err();
    assert!(e.to_string().contains("match.response"), "{e}");
    // Distributions wait on the response too.
    let f = FaultFlags {
        delay_uniform: Some("1ms,2ms".into()),
        response_statuses: vec!["503".into()],
        ..flags()
    };
    let v: Value = serde_yaml::from_str(&policy_from_flags(&f).unwrap()).unwrap();
    assert_eq!(v["rules"][0]["delay"]["side"], "response");
}
