//! A records directory that cannot be written: the ADD fails before any delegate runs, with
//! an error naming the directory, and nothing is left; once the disk is back, all works.

use plexus_integration::{INTENT_JOURNAL, Node, Pod};

use crate::fixtures::{bridge, nad, pod};

fn node_on_a_small_disk(web: &Pod) -> Node {
    Node::builder()
        // Room for the intent journal (512 KiB, written when plexusd starts), so that a full
        // disk is full with the journal in place, as on a node.
        .records_tmpfs(1024)
        .manifest(
            "n.yaml",
            &nad(
                "tenant",
                "east",
                &bridge("east", "br-east", "198.18.31.0/24"),
            ),
        )
        .manifest("p.yaml", &pod(web, "east"))
        .start()
}

/// The ADD failed with an I/O error naming the records directory and `cause`, and no
/// delegate ran: no bridge, no interface, no IP, no record.
fn assert_refused_before_any_delegate(node: &Node, web: &Pod, cause: &str) {
    let error = node.add(web).error();
    assert_eq!(error["code"], 5, "{error}");
    let msg = error["msg"].as_str().unwrap();
    let dir = node.plexusd_records_dir().display().to_string();
    assert!(
        msg.contains(&dir) && msg.contains(cause) && msg.contains("nothing was attached"),
        "{msg}"
    );
    assert!(web.link_names().is_empty(), "{:?}", web.link_names());
    let links = node.netns.links();
    assert!(
        !links.iter().any(|l| l == "cni0" || l == "br-east"),
        "a delegate ran: {links:?}"
    );
    node.assert_clean();
}

#[test]
fn a_full_records_disk_fails_the_add_before_any_delegate_runs() {
    let web = Pod::new("tenant", "web");
    let node = node_on_a_small_disk(&web);
    // The journal's slots were written at start and need no new space; the intent's record
    // file does, and that is refused before any delegate runs.
    assert!(node.records_dir().join(INTENT_JOURNAL).is_file());
    node.records_mount().fill();
    assert_refused_before_any_delegate(&node, &web, "No space left on device");
    assert!(node.del(&web).success());

    node.records_mount().drain();
    node.add(&web).result();
    assert_eq!(web.link_names(), ["eth0", "net1"]);
    assert!(node.del(&web).success());
    node.assert_clean();
}

#[test]
fn a_read_only_records_disk_fails_the_add_and_a_del_is_retried_until_it_can_finish() {
    let web = Pod::new("tenant", "web");
    let node = node_on_a_small_disk(&web);
    node.records_mount().set_read_only(true, None);
    assert_refused_before_any_delegate(&node, &web, "Read-only file system");
    node.records_mount()
        .set_read_only(false, node.plexusd_pid());

    node.add(&web).result();
    node.records_mount().set_read_only(true, None);
    // The attachments go, but the record cannot: the DEL fails so that the runtime retries.
    let error = node.del(&web).error();
    assert_eq!(error["code"], 5, "{error}");
    assert!(web.link_names().is_empty());
    assert_eq!(node.records().len(), 1);
    node.records_mount()
        .set_read_only(false, node.plexusd_pid());
    assert!(node.del(&web).success());
    node.assert_clean();
}
