//! The HTTPDNS frontend answers `/d` from the same snapshot and selection as DNS.

use crate::support::{Stack, get_json};

#[tokio::test]
async fn d_answers_v4_v6_with_and_without_ip() {
    let stack = Stack::start().await;
    let (status, body) = get_json(&stack.http_url("/d?host=www.example.test&ip=192.0.2.1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["host"], "www.example.test");
    assert_eq!(
        body["ips"],
        serde_json::json!(["192.0.2.10", "198.51.100.10"])
    );
    assert_eq!(body["ipsv6"], serde_json::json!([]));
    assert_eq!(body["ttl"], 20);
    assert_eq!(body["origin_ttl"], 20);
    assert_eq!(body["client_ip"], "192.0.2.1");

    let (_, v6) =
        get_json(&stack.http_url("/d?host=www.example.test&ip=203.0.113.9&query=6")).await;
    assert_eq!(v6["ipsv6"][0], "2001:db8:5::10");
    assert_eq!(v6["ips"], serde_json::json!([]));

    let (_, both) =
        get_json(&stack.http_url("/d?host=www.example.test&ip=198.51.100.3&query=4,6")).await;
    assert_eq!(both["ips"][0], "198.51.100.10");
    assert_eq!(both["ipsv6"][0], "2001:db8:a::10");

    // Without ip= the connection's source address (127.0.0.1, San Francisco) decides.
    let (_, own) = get_json(&stack.http_url("/d?host=www.example.test")).await;
    assert_eq!(own["client_ip"], "127.0.0.1");
    assert_eq!(own["ips"][0], "198.51.100.10");
    stack.running.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_json_code() {
    let stack = Stack::start().await;
    for (query, code) in [
        ("/d", "InvalidHost"),
        ("/d?host=", "InvalidHost"),
        ("/d?host=bad..name", "InvalidHost"),
        ("/d?host=www.example.test&ip=300.1.1.1", "InvalidIp"),
        ("/d?host=www.example.test&query=5", "InvalidQuery"),
    ] {
        let (status, body) = get_json(&stack.http_url(query)).await;
        assert!((400..500).contains(&status), "{query}: {status}");
        assert_eq!(body["code"], code, "{query}: {body}");
    }
    stack.running.stop().await;
}
