//! The socket's gate: who may call plexusd, how many connections and requests it takes at
//! once, how big a request may be, and what happens to clients that stall. Every refusal
//! reaches the caller as a CNI error object printed by the shim.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use plexus_integration::shim::{self, CniEnv};
use plexus_integration::{Node, Pod, binaries};
use serde_json::json;

use crate::fixtures::{bridge, nad, pod};

/// A STATUS call (no pod needed) as `uid`.
fn status_as(node: &Node, uid: u32) -> plexus_integration::ShimOutput {
    let env = CniEnv {
        command: "STATUS".into(),
        path: binaries::CNI_BIN_DIR.into(),
        ..Default::default()
    };
    shim::exec_as(uid, &env, &node.plexus_conf("1.1.0").to_string())
}

/// plexusd's resident memory, in KiB, from /proc.
fn rss_kib(node: &Node) -> u64 {
    let pid = node.plexusd_pid().expect("plexusd runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS")
}

/// `count` connections that connect and say nothing.
fn flood(node: &Node, count: usize) -> Vec<UnixStream> {
    (0..count)
        .map(|i| {
            UnixStream::connect(node.socket()).unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect()
}

/// Waits until plexusd closes `stream` (EOF or reset), up to `limit`; whether it did.
fn closed_by_plexusd(stream: &mut UnixStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut sink = Vec::new();
    match stream.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn only_the_uids_the_config_allows_may_call_plexusd() {
    let node = Node::builder()
        .config_line("socketAllowedUids: [0, 65534]")
        .start();
    // The node's dir is the socket's directory; others must be able to reach the socket to
    // be refused by plexusd rather than by the file system.
    std::fs::set_permissions(node.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = std::fs::metadata(node.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o666,
        "other uids may call, so anyone may connect"
    );

    let allowed = status_as(&node, 65534);
    assert!(allowed.success(), "{allowed:?}");

    let refused = status_as(&node, 65533);
    let error = refused.error();
    assert_eq!(error["code"], 4, "{error}");
    assert!(
        error["msg"].as_str().unwrap().contains("uid 65533"),
        "{error}"
    );
    assert!(
        error["details"].as_str().unwrap().contains("0, 65534"),
        "{error}"
    );
    assert!(node.log().contains("refused a caller"), "{}", node.log());
}

#[test]
fn by_default_the_socket_is_root_only() {
    let node = Node::builder().start();
    let mode = std::fs::metadata(node.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::set_permissions(node.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let error = status_as(&node, 65534).error();
    // The file system refuses the connection before plexusd sees it.
    assert_eq!(error["code"], 50, "{error}");
    assert!(
        error["details"]
            .as_str()
            .unwrap()
            .contains("ermission denied"),
        "{error}"
    );
}

#[test]
fn a_flood_of_500_idle_connections_leaves_plexusd_answering_within_its_memory_bound() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder()
        .config_line("socketReadTimeoutSeconds: 3")
        .manifest(
            "n.yaml",
            &nad(
                "tenant",
                "east",
                &bridge("east", "br-east", "198.18.30.0/24"),
            ),
        )
        .manifest("p.yaml", &pod(&web, "east"))
        .rust_log("info")
        .start();
    let idle = rss_kib(&node);
    let mut streams = flood(&node, 500);

    // While all 500 are open, a real call goes through and so does a probe.
    node.add(&web).result();
    assert_eq!(web.link_names(), ["eth0", "net1"]);
    assert_eq!(node.get("/healthz").map(|(s, _)| s), Some(200));
    let flooded = rss_kib(&node);
    // Generous: plexusd idles at about 10 MiB; 500 connections must not cost it 50 more.
    assert!(
        flooded < 64 * 1024,
        "plexusd RSS {flooded} KiB with 500 idle connections (idle: {idle} KiB)"
    );

    // Clients that said nothing are dropped after socketReadTimeoutSeconds.
    for (i, stream) in streams.iter_mut().enumerate() {
        assert!(
            closed_by_plexusd(stream, Duration::from_secs(30)),
            "idle connection {i} still open"
        );
    }
    assert!(node.del(&web).success());
    node.assert_clean();
}

#[test]
fn past_its_connection_limit_plexusd_answers_try_again_later() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder()
        .config_line("socketMaxConnections: 16")
        .manifest("p.yaml", &pod(&web, ""))
        .start();
    let mut streams = flood(&node, 16);
    // Every slot is taken, unless one of the flood came while the node's readiness probe
    // still held its slot and was turned away: then an ADD gets through, and one more idle
    // connection takes the slot it found free.
    let deadline = Instant::now() + Duration::from_secs(20);
    let busy = loop {
        let output = node.add(&web);
        if !output.success() || Instant::now() > deadline {
            break output;
        }
        assert!(node.del(&web).success());
        streams.extend(flood(&node, 1));
        thread::sleep(Duration::from_millis(50));
    };
    let error = busy.error();
    assert_eq!(error["code"], 11, "{error}");
    assert!(error["msg"].as_str().unwrap().contains("busy"), "{error}");
    assert!(
        error["details"]
            .as_str()
            .unwrap()
            .contains("socketMaxConnections"),
        "{error}"
    );
    assert!(web.link_names().is_empty());

    drop(streams);
    let output = (0..200)
        .map(|_| {
            thread::sleep(Duration::from_millis(25));
            node.add(&web)
        })
        .find(|o| o.success())
        .expect("ADD succeeds once the flood is gone");
    output.result();
    assert!(node.del(&web).success());
    node.assert_clean();
}

#[test]
fn past_its_request_limit_plexusd_answers_try_again_later() {
    let slow = Pod::new("tenant", "slow");
    let quick = Pod::new("tenant", "quick");
    // `gate` holds its ADD until the test lets it go.
    let gate = r#"cat >/dev/null
case "$CNI_COMMAND" in
  ADD) touch @DIR@/entered; while [ ! -e @DIR@/go ]; do sleep 0.05; done
       echo '{"cniVersion":"1.0.0","interfaces":[],"ips":[]}' ;;
esac"#;
    let node = Node::builder()
        .config_line("socketMaxRequests: 1")
        .plugin("gate", gate)
        .manifest(
            "n.yaml",
            &nad(
                "tenant",
                "gated",
                &json!({"cniVersion": "1.0.0", "name": "gated", "type": "gate"}),
            ),
        )
        .manifest("a.yaml", &pod(&slow, "gated"))
        .manifest("b.yaml", &pod(&quick, ""))
        .start();
    thread::scope(|scope| {
        let held = scope.spawn(|| node.add(&slow));
        let entered = node.dir().join("entered");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !entered.exists() {
            assert!(Instant::now() < deadline, "the gated ADD never started");
            thread::sleep(Duration::from_millis(20));
        }
        let error = node.add(&quick).error();
        assert_eq!(error["code"], 11, "{error}");
        assert!(
            error["details"]
                .as_str()
                .unwrap()
                .contains("socketMaxRequests"),
            "{error}"
        );
        // Health and metrics are not CNI requests and are still served.
        assert_eq!(node.get("/healthz").map(|(s, _)| s), Some(200));
        std::fs::write(node.dir().join("go"), "").unwrap();
        held.join().unwrap().result();
    });
    node.add(&quick).result();
    assert!(node.del(&slow).success());
    assert!(node.del(&quick).success());
    node.assert_clean();
}

#[test]
fn a_request_over_the_size_limit_is_refused_before_anything_runs() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder()
        .config_line("socketMaxRequestBytes: 4096")
        .manifest("p.yaml", &pod(&web, ""))
        .start();
    let mut conf = node.plexus_conf("1.1.0");
    conf["x-padding"] = json!("x".repeat(8192));
    let error = node.cni("ADD", &web, &conf).error();
    assert_eq!(error["code"], 6, "{error}");
    assert!(
        error["msg"]
            .as_str()
            .unwrap()
            .contains("socketMaxRequestBytes"),
        "{error}"
    );
    assert!(web.link_names().is_empty());
    node.assert_clean();
}

#[test]
fn a_client_that_stalls_is_dropped_after_the_read_timeout() {
    let node = Node::builder()
        .config_line("socketReadTimeoutSeconds: 1")
        .start();
    // Half a request line, then nothing.
    let mut headers = UnixStream::connect(node.socket()).unwrap();
    headers
        .write_all(b"POST /v1/cni HTTP/1.1\r\nHost: pl")
        .unwrap();
    assert!(closed_by_plexusd(&mut headers, Duration::from_secs(30)));

    // Complete headers, a body that never comes: a CNI error naming the setting.
    let mut body = UnixStream::connect(node.socket()).unwrap();
    body.write_all(
        b"POST /v1/cni HTTP/1.1\r\nHost: plexus\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"command\":",
    )
    .unwrap();
    body.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reply = String::new();
    let _ = body.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("socketReadTimeoutSeconds"), "{reply}");

    // And plexusd still serves.
    assert_eq!(node.get("/healthz").map(|(s, _)| s), Some(200));
}
