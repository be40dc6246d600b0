use super::super::text;
use super::*;

fn rewrite(body: &str) -> String {
    let mut families = text::parse(body).unwrap();
    merge_clusters(&mut families);
    let mut out = String::new();
    for family in &families {
        text::write(&mut out, family);
    }
    out
}

#[test]
fn cracks_hashed_cluster_names() {
    assert_eq!(
        mergeable_prefix("backend-0123456789abcdef"),
        Some("backend")
    );
    assert_eq!(
        mergeable_prefix("backend_demo_svc_8080-A1B2C3D4E5F60718"),
        Some("backend_demo_svc_8080")
    );
    assert_eq!(mergeable_prefix("a-b-0123456789abcdef"), Some("a-b"));
    assert_eq!(mergeable_prefix("-0123456789abcdef"), Some(""));
    assert_eq!(mergeable_prefix("backend-0123456789abcde"), None);
    assert_eq!(mergeable_prefix("backend-0123456789abcdef0"), None);
    assert_eq!(mergeable_prefix("backend-0123456789abcdeg"), None);
    assert_eq!(mergeable_prefix("backend"), None);
    assert_eq!(mergeable_prefix("0123456789abcdef"), None);
}

#[test]
fn counters_of_split_clusters_are_summed_and_marked() {
    let body = "\
# TYPE envoy_cluster_upstream_rq counter
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"backend-1111111111111111\"} 10
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"backend-2222222222222222\"} 20
envoy_cluster_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"backend-2222222222222222\"} 1
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"ads_cluster\"} 3
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"web\"} 4
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"kuma_envoy_admin\"} 5
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"kuma_metrics_hijacker\"} 6
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"access_log_sink\"} 7
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"system_ads\"} 8
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"backend\"} 100
# TYPE envoy_server_uptime gauge
envoy_server_uptime 12
";
    assert_eq!(
        rewrite(body),
        "\
# TYPE envoy_cluster_upstream_rq counter
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"backend\",kuma_io_mesh_traffic=\"true\"} 130
envoy_cluster_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"backend\",kuma_io_mesh_traffic=\"true\"} 1
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"ads_cluster\"} 3
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"web\",kuma_io_mesh_traffic=\"true\"} 4
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"kuma_envoy_admin\"} 5
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"kuma_metrics_hijacker\"} 6
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"access_log_sink\"} 7
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"system_ads\"} 8
# TYPE envoy_server_uptime gauge
envoy_server_uptime 12
"
    );
}

#[test]
fn gauges_and_untyped_are_summed() {
    let body = "\
# TYPE envoy_cluster_membership_healthy gauge
envoy_cluster_membership_healthy{envoy_cluster_name=\"db-aaaaaaaaaaaaaaaa\"} 2
envoy_cluster_membership_healthy{envoy_cluster_name=\"db-bbbbbbbbbbbbbbbb\"} 3
envoy_cluster_x{envoy_cluster_name=\"db-aaaaaaaaaaaaaaaa\"} 0.25
envoy_cluster_x{envoy_cluster_name=\"db-bbbbbbbbbbbbbbbb\"} 0.5
";
    assert_eq!(
        rewrite(body),
        "\
# TYPE envoy_cluster_membership_healthy gauge
envoy_cluster_membership_healthy{envoy_cluster_name=\"db\",kuma_io_mesh_traffic=\"true\"} 5
# TYPE envoy_cluster_x untyped
envoy_cluster_x{envoy_cluster_name=\"db\",kuma_io_mesh_traffic=\"true\"} 0.75
"
    );
}

#[test]
fn histograms_are_summed_bucket_by_bucket() {
    let body = "\
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api-0000000000000001\",le=\"1\"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api-0000000000000001\",le=\"5\"} 2
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api-0000000000000001\",le=\"+Inf\"} 2
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"api-0000000000000001\"} 4.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"api-0000000000000001\"} 2
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api-0000000000000002\",le=\"0.5\"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api-0000000000000002\",le=\"1\"} 2
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api-0000000000000002\",le=\"5\"} 3
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api-0000000000000002\",le=\"+Inf\"} 4
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"api-0000000000000002\"} 100
envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"api-0000000000000002\"} 4
";
    assert_eq!(
        rewrite(body),
        "\
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api\",kuma_io_mesh_traffic=\"true\",le=\"0.5\"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api\",kuma_io_mesh_traffic=\"true\",le=\"1\"} 3
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api\",kuma_io_mesh_traffic=\"true\",le=\"5\"} 5
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"api\",kuma_io_mesh_traffic=\"true\",le=\"+Inf\"} 6
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"api\",kuma_io_mesh_traffic=\"true\"} 104.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"api\",kuma_io_mesh_traffic=\"true\"} 6
"
    );
}

#[test]
fn summaries_are_summed_quantile_by_quantile() {
    let body = "\
# TYPE envoy_cluster_s summary
envoy_cluster_s{envoy_cluster_name=\"q-cccccccccccccccc\",quantile=\"0.99\"} 2
envoy_cluster_s{envoy_cluster_name=\"q-cccccccccccccccc\",quantile=\"0.5\"} 1
envoy_cluster_s_sum{envoy_cluster_name=\"q-cccccccccccccccc\"} 3
envoy_cluster_s_count{envoy_cluster_name=\"q-cccccccccccccccc\"} 2
envoy_cluster_s{envoy_cluster_name=\"q-dddddddddddddddd\",quantile=\"0.5\"} 10
envoy_cluster_s_sum{envoy_cluster_name=\"q-dddddddddddddddd\"} 10
envoy_cluster_s_count{envoy_cluster_name=\"q-dddddddddddddddd\"} 1
";
    assert_eq!(
        rewrite(body),
        "\
# TYPE envoy_cluster_s summary
envoy_cluster_s{envoy_cluster_name=\"q\",kuma_io_mesh_traffic=\"true\",quantile=\"0.5\"} 11
envoy_cluster_s{envoy_cluster_name=\"q\",kuma_io_mesh_traffic=\"true\",quantile=\"0.99\"} 2
envoy_cluster_s_sum{envoy_cluster_name=\"q\",kuma_io_mesh_traffic=\"true\"} 13
envoy_cluster_s_count{envoy_cluster_name=\"q\",kuma_io_mesh_traffic=\"true\"} 3
"
    );
}

#[test]
fn http_families_are_marked_except_the_proxys_own() {
    let body = "\
# TYPE envoy_http_downstream_rq_total counter
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"admin\"} 1
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"kuma_envoy_admin\"} 2
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"kuma_metrics_prometheus\"} 3
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"inbound_127_0_0_1_8080\"} 4
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"outbound_backend\"} 5
";
    assert_eq!(
        rewrite(body),
        "\
# TYPE envoy_http_downstream_rq_total counter
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"admin\"} 1
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"kuma_envoy_admin\"} 2
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"kuma_metrics_prometheus\"} 3
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"inbound_127_0_0_1_8080\",kuma_io_mesh_traffic=\"true\"} 4
envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"outbound_backend\",kuma_io_mesh_traffic=\"true\"} 5
"
    );
}

#[test]
fn other_families_and_odd_series_are_kept() {
    // A cluster family's series without the cluster label (Kuma drops the whole body) and a
    // listener family pass unchanged; equal label sets of unhashed names are not merged apart.
    let body = "\
# TYPE envoy_cluster_y counter
envoy_cluster_y{envoy_cluster_name=\"a\"} 1
envoy_cluster_y{other=\"b\"} 2
envoy_cluster_y{envoy_cluster_name=\"c\",kuma_io_mesh_traffic=\"no\"} 3
# TYPE envoy_listener_downstream_cx_total counter
envoy_listener_downstream_cx_total{envoy_listener_address=\"127.0.0.1_8080\"} 9
";
    assert_eq!(
        rewrite(body),
        "\
# TYPE envoy_cluster_y counter
envoy_cluster_y{envoy_cluster_name=\"a\",kuma_io_mesh_traffic=\"true\"} 1
envoy_cluster_y{other=\"b\"} 2
envoy_cluster_y{envoy_cluster_name=\"c\",kuma_io_mesh_traffic=\"true\"} 3
# TYPE envoy_listener_downstream_cx_total counter
envoy_listener_downstream_cx_total{envoy_listener_address=\"127.0.0.1_8080\"} 9
"
    );
}
