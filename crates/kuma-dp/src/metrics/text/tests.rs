use super::*;

fn round_trip(body: &str) -> String {
    let mut out = String::new();
    for family in parse(body).unwrap() {
        write(&mut out, &family);
    }
    out
}

/// What Envoy's `/stats?format=prometheus` looks like: `# TYPE` lines only, counters, gauges
/// and histograms with an explicit `+Inf` bucket.
const ENVOY: &str = "\
# TYPE envoy_cluster_upstream_cx_total counter
envoy_cluster_upstream_cx_total{envoy_cluster_name=\"ads_cluster\"} 1
envoy_cluster_upstream_cx_total{envoy_cluster_name=\"web\"} 1234567

# TYPE envoy_server_live gauge
envoy_server_live{} 1

# TYPE envoy_cluster_upstream_cx_connect_ms histogram
envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"web\",le=\"0.5\"} 3
envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"web\",le=\"1\"} 4
envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"web\",le=\"+Inf\"} 5
envoy_cluster_upstream_cx_connect_ms_sum{envoy_cluster_name=\"web\"} 12.5
envoy_cluster_upstream_cx_connect_ms_count{envoy_cluster_name=\"web\"} 5
";

#[test]
fn parses_envoy_stats() {
    let families = parse(ENVOY).unwrap();
    let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy_cluster_upstream_cx_total",
            "envoy_server_live",
            "envoy_cluster_upstream_cx_connect_ms"
        ]
    );
    assert_eq!(families[0].kind, Kind::Counter);
    assert_eq!(families[0].metrics.len(), 2);
    assert_eq!(
        families[0].metrics[1].label("envoy_cluster_name"),
        Some("web")
    );
    assert_eq!(families[0].metrics[1].value, Value::Single(1234567.0));
    assert_eq!(families[1].metrics[0].labels, vec![]);
    assert_eq!(
        families[2].metrics,
        vec![Metric {
            labels: vec![("envoy_cluster_name".into(), "web".into())],
            value: Value::Histogram {
                buckets: vec![(0.5, 3), (1.0, 4), (f64::INFINITY, 5)],
                sum: 12.5,
                count: 5
            },
            timestamp_ms: None,
        }]
    );
}

#[test]
fn writes_as_prometheus_go_library_does() {
    assert_eq!(
        round_trip(ENVOY),
        "\
# TYPE envoy_cluster_upstream_cx_total counter
envoy_cluster_upstream_cx_total{envoy_cluster_name=\"ads_cluster\"} 1
envoy_cluster_upstream_cx_total{envoy_cluster_name=\"web\"} 1.234567e+06
# TYPE envoy_server_live gauge
envoy_server_live 1
# TYPE envoy_cluster_upstream_cx_connect_ms histogram
envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"web\",le=\"0.5\"} 3
envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"web\",le=\"1\"} 4
envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"web\",le=\"+Inf\"} 5
envoy_cluster_upstream_cx_connect_ms_sum{envoy_cluster_name=\"web\"} 12.5
envoy_cluster_upstream_cx_connect_ms_count{envoy_cluster_name=\"web\"} 5
"
    );
}

#[test]
fn help_untyped_timestamps_and_escapes() {
    let body = "\
# A comment that is neither HELP nor TYPE
# HELP app_requests Requests \\\\ served.\\nSecond line.
app_requests{path=\"/a \\\"b\\\"\",code=\"200\"} 7 1700000000000
plain 0.00001
";
    let families = parse(body).unwrap();
    assert_eq!(families[0].kind, Kind::Untyped);
    assert_eq!(
        families[0].help.as_deref(),
        Some("Requests \\ served.\nSecond line.")
    );
    assert_eq!(families[0].metrics[0].label("path"), Some("/a \"b\""));
    assert_eq!(families[0].metrics[0].timestamp_ms, Some(1_700_000_000_000));
    assert_eq!(
        round_trip(body),
        "\
# HELP app_requests Requests \\\\ served.\\nSecond line.
# TYPE app_requests untyped
app_requests{path=\"/a \\\"b\\\"\",code=\"200\"} 7 1700000000000
# TYPE plain untyped
plain 1e-05
"
    );
}

#[test]
fn summaries_and_histograms_gather_their_lines() {
    let body = "\
# TYPE rpc summary
rpc{svc=\"a\",quantile=\"0.5\"} 1.5
rpc_sum{svc=\"a\"} 30
rpc{svc=\"a\",quantile=\"0.99\"} 4
rpc_count{svc=\"a\"} 20
rpc{svc=\"b\",quantile=\"0.5\"} 2
# TYPE lat histogram
lat_bucket{le=\"1\"} 1
lat_sum 2
lat_count 3
";
    assert_eq!(
        round_trip(body),
        "\
# TYPE rpc summary
rpc{svc=\"a\",quantile=\"0.5\"} 1.5
rpc{svc=\"a\",quantile=\"0.99\"} 4
rpc_sum{svc=\"a\"} 30
rpc_count{svc=\"a\"} 20
rpc{svc=\"b\",quantile=\"0.5\"} 2
rpc_sum{svc=\"b\"} 0
rpc_count{svc=\"b\"} 0
# TYPE lat histogram
lat_bucket{le=\"1\"} 1
lat_bucket{le=\"+Inf\"} 3
lat_sum 2
lat_count 3
"
    );
}

#[test]
fn a_counter_named_like_a_summary_part_is_its_own_family() {
    let families = parse("# TYPE x counter\nx 1\nx_count 2\n").unwrap();
    assert_eq!(families.len(), 2);
    assert_eq!(families[1].name, "x_count");
    assert_eq!(families[1].kind, Kind::Untyped);
}

#[test]
fn formats_floats_like_go() {
    for (v, s) in [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (-1.0, "-1"),
        (0.5, "0.5"),
        (-2.25, "-2.25"),
        (123456.0, "123456"),
        (999999.0, "999999"),
        (1000000.0, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (0.000123, "0.000123"),
        (1.5e-7, "1.5e-07"),
        (1e21, "1e+21"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
    ] {
        assert_eq!(format_float(v), s, "{v}");
    }
}

#[test]
fn special_values_parse() {
    let families = parse("a +Inf\nb -Inf\nc NaN\nd 1e3\n").unwrap();
    assert_eq!(families[0].metrics[0].value, Value::Single(f64::INFINITY));
    assert_eq!(
        families[1].metrics[0].value,
        Value::Single(f64::NEG_INFINITY)
    );
    assert!(matches!(families[2].metrics[0].value, Value::Single(v) if v.is_nan()));
    assert_eq!(families[3].metrics[0].value, Value::Single(1000.0));
}

#[test]
fn rejects_malformed_lines_naming_the_line() {
    for (body, line, needle) in [
        ("ok 1\n1bad 2\n", 2, "invalid metric name"),
        ("a{x=\"1} 2\n", 1, "unterminated"),
        ("a{x=1} 2\n", 1, "not quoted"),
        ("a{x=\"1\" y=\"2\"} 2\n", 1, "expected , or }"),
        ("a{x=\"1\",x=\"2\"} 2\n", 1, "given twice"),
        ("a{x=\"\\t\"} 2\n", 1, "invalid escape"),
        ("a\n", 1, "no value"),
        ("a one\n", 1, "invalid value"),
        ("a 1 2 3\n", 1, "unexpected"),
        ("a 1 soon\n", 1, "invalid timestamp"),
        ("# TYPE a bogus\n", 1, "unknown metric type"),
        ("\n# TYPE s summary\ns 1\n", 3, "quantile"),
        ("# TYPE h histogram\nh_bucket 1\n", 2, "\"le\""),
        (
            "# TYPE h histogram\nh_bucket{le=\"x\"} 1\n",
            2,
            "invalid le",
        ),
    ] {
        let err = parse(body).unwrap_err();
        assert_eq!(err.line, line, "{body:?}: {err}");
        assert!(err.message.contains(needle), "{body:?}: {err}");
    }
}
