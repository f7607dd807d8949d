//! kube-rs, unmodified, against the fixture, from inside a test network namespace.

use std::path::PathBuf;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use plexus_crds::NetworkAttachmentDefinition;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{ApiServer, Counters, block_in_netns, kube_client};
use crate::Netns;

/// Fields drop in order: the server stops before its namespace goes.
struct World {
    api: ApiServer,
    dir: TempDir,
    netns: Netns,
}

impl World {
    fn new() -> Self {
        let netns = Netns::new("api");
        let api = ApiServer::start_in(&netns.path());
        let dir = tempfile::tempdir().expect("temp dir");
        Self { api, dir, netns }
    }

    fn kubeconfig(&self, name: &str) -> PathBuf {
        self.api.write_kubeconfig(&self.dir.path().join(name))
    }

    /// Runs `f` with a client for the current token, inside the namespace.
    fn run<T: Send, F: Future<Output = T>>(&self, f: impl FnOnce(Client) -> F + Send) -> T {
        let kubeconfig = self.kubeconfig("kubeconfig");
        block_in_netns(&self.netns.path(), move || async move {
            f(kube_client(&kubeconfig).await).await
        })
    }
}

fn nad(ns: &str, name: &str, config: &str) -> Value {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"config": config},
    })
}

fn pod(ns: &str, name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": {"a": "1"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
    })
}

/// Polls `ok` until it holds (panics after 20 s, naming `what`).
async fn eventually(what: &str, ok: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running reflector (with the default backoff) and its store.
fn reflect<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: Resource
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(stream.for_each(|_| async {}));
    reader
}

fn names<K>(store: &Store<K>) -> Vec<String>
where
    K: Resource + Clone,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let mut names: Vec<String> = store
        .state()
        .iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect();
    names.sort();
    names
}

fn config_of(store: &Store<NetworkAttachmentDefinition>, ns: &str, name: &str) -> Option<String> {
    store
        .get(&ObjectRef::new(name).within(ns))
        .and_then(|n| n.spec.config.clone())
}

fn list_requests(api: &ApiServer, prefix: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with(prefix) && !r.contains("watch=true"))
        .count()
}

#[test]
fn nad_reflector_follows_apply_update_and_delete() {
    let w = World::new();
    w.api.apply(nad("default", "a", r#"{"type":"bridge"}"#));
    w.run(|client| async {
        let store = reflect(
            Api::<NetworkAttachmentDefinition>::all(client),
            watcher::Config::default(),
        );
        eventually("initial list", || {
            config_of(&store, "default", "a").is_some()
        })
        .await;
        w.api.apply(nad("other", "b", r#"{"type":"macvlan"}"#));
        eventually("added", || names(&store) == ["a", "b"]).await;
        w.api.apply(nad("default", "a", r#"{"type":"ipvlan"}"#));
        eventually("updated", || {
            config_of(&store, "default", "a").as_deref() == Some(r#"{"type":"ipvlan"}"#)
        })
        .await;
        assert!(w.api.delete("NetworkAttachmentDefinition", "default", "a"));
        eventually("deleted", || names(&store) == ["b"]).await;
    });
    let c = w.api.counters_for("network-attachment-definitions");
    assert_eq!(
        (c.reads, c.watches, c.writes),
        (1, 1, 0),
        "{:?}",
        w.api.requests()
    );
}

#[test]
fn pod_reflector_with_a_node_field_selector_sees_only_that_node() {
    let w = World::new();
    w.api.apply(pod("default", "p1", "n1"));
    w.api.apply(pod("default", "p2", "n2"));
    w.run(|client| async {
        let store = reflect(
            Api::<Pod>::all(client),
            watcher::Config::default().fields("spec.nodeName=n1"),
        );
        eventually("initial list", || names(&store) == ["p1"]).await;
        w.api.apply(pod("kube-system", "p4", "n2"));
        w.api.apply(pod("kube-system", "p3", "n1"));
        // Events arrive in order: once p3 is there, p4 was filtered out.
        eventually("p3 added", || names(&store) == ["p1", "p3"]).await;
        // p1 moves to n2: for this watcher it is gone.
        w.api.apply(pod("default", "p1", "n2"));
        eventually("p1 left the selection", || names(&store) == ["p3"]).await;
        w.api.apply(pod("default", "p2", "n1"));
        eventually("p2 entered the selection", || names(&store) == ["p2", "p3"]).await;
    });
    assert!(
        w.api
            .requests()
            .iter()
            .all(|r| !r.starts_with("GET /api/v1/pods") || r.contains("spec.nodeName%3Dn1")),
        "{:?}",
        w.api.requests()
    );
}

#[test]
fn get_counts_one_read_and_a_missing_pod_is_a_404_status() {
    let w = World::new();
    w.api.apply(pod("default", "here", "n1"));
    w.run(|client| async {
        let pods = Api::<Pod>::namespaced(client, "default");
        w.api.reset_counters();
        let found = pods.get("here").await.expect("get");
        assert_eq!(found.spec.unwrap().node_name.as_deref(), Some("n1"));
        assert_eq!(
            w.api.counters(),
            Counters {
                reads: 1,
                watches: 0,
                writes: 0
            }
        );
        match pods.get("missing").await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 404);
                assert_eq!(status.reason, "NotFound");
                assert!(status.is_not_found());
            }
            other => panic!("expected a 404, got {other:?}"),
        }
        assert!(pods.get_opt("missing").await.expect("get_opt").is_none());
    });
}

#[test]
fn merge_and_json_patches_land_and_bump_the_resource_version() {
    const STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
    let w = World::new();
    let before = w.api.apply(pod("default", "p", "n1"));
    let rv = |v: &Value| -> u64 {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    w.run(|client| async {
        let pods = Api::<Pod>::namespaced(client, "default");
        let pp = PatchParams::default();
        w.api.reset_counters();
        let merged = pods
            .patch(
                "p",
                &pp,
                &Patch::Merge(json!({"metadata": {"annotations": {STATUS: "[1]"}}})),
            )
            .await
            .expect("merge patch");
        assert_eq!(
            w.api.counters(),
            Counters {
                reads: 0,
                watches: 0,
                writes: 1
            }
        );
        let annotations = merged.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[STATUS], "[1]");
        assert_eq!(annotations["a"], "1", "merge keeps the other annotations");
        let merged_rv: u64 = merged.metadata.resource_version.unwrap().parse().unwrap();
        assert!(merged_rv > rv(&before));

        let escaped = STATUS.replace('~', "~0").replace('/', "~1");
        let patched = pods
            .patch(
                "p",
                &pp,
                &Patch::Json::<()>(
                    serde_json::from_value(json!([
                        {"op": "test", "path": format!("/metadata/annotations/{escaped}"), "value": "[1]"},
                        {"op": "replace", "path": format!("/metadata/annotations/{escaped}"), "value": "[2]"},
                        {"op": "remove", "path": "/metadata/annotations/a"},
                    ]))
                    .unwrap(),
                ),
            )
            .await
            .expect("json patch");
        let annotations = patched.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.get(STATUS).map(String::as_str), Some("[2]"));
        assert!(!annotations.contains_key("a"));
        let patched_rv: u64 = patched.metadata.resource_version.unwrap().parse().unwrap();
        assert!(patched_rv > merged_rv);

        // Strategic merge is taken as a merge patch.
        pods.patch(
            "p",
            &pp,
            &Patch::Strategic(json!({"metadata": {"labels": {"l": "v"}}})),
        )
        .await
        .expect("strategic merge patch");

        let failed = pods
            .patch(
                "p",
                &pp,
                &Patch::Json::<()>(
                    serde_json::from_value(json!([{"op": "test", "path": "/metadata/name", "value": "q"}]))
                        .unwrap(),
                ),
            )
            .await;
        assert!(
            matches!(failed, Err(kube::Error::Api(ref s)) if s.code == 422),
            "{failed:?}"
        );
        let missing = pods.patch("nope", &pp, &Patch::Merge(json!({}))).await;
        assert!(
            matches!(missing, Err(kube::Error::Api(ref s)) if s.code == 404),
            "{missing:?}"
        );
        let exists = pods
            .create(&PostParams::default(), &serde_json::from_value(pod("default", "p", "n1")).unwrap())
            .await;
        assert!(
            matches!(exists, Err(kube::Error::Api(ref s)) if s.code == 409 && s.reason == "AlreadyExists"),
            "{exists:?}"
        );
    });
    let stored = w.api.object("Pod", "default", "p").expect("pod");
    assert_eq!(stored["metadata"]["annotations"][STATUS], "[2]");
    assert_eq!(stored["metadata"]["labels"]["l"], "v");
    assert_eq!(stored["metadata"]["uid"], before["metadata"]["uid"]);
}

#[test]
fn the_event_recorder_publishes_and_updates_events() {
    let w = World::new();
    let stored = w.api.apply(pod("default", "p", "n1"));
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some("p".into()),
        namespace: Some("default".into()),
        uid: stored["metadata"]["uid"].as_str().map(str::to_owned),
        ..Default::default()
    };
    w.run(|client| async move {
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "plexus".into(),
                instance: Some("n1".into()),
            },
        );
        let event = Event {
            type_: EventType::Normal,
            reason: "AddedInterface".into(),
            note: Some("net1 from default/macvlan".into()),
            action: "Attach".into(),
            secondary: None,
        };
        recorder.publish(&event, &reference).await.expect("publish");
        // The same event again: the recorder patches it with a series.
        recorder
            .publish(&event, &reference)
            .await
            .expect("publish again");
    });
    let events = w.api.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["apiVersion"], "events.k8s.io/v1");
    assert_eq!(e["reason"], "AddedInterface");
    assert_eq!(e["note"], "net1 from default/macvlan");
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["regarding"]["name"], "p");
    assert_eq!(e["metadata"]["namespace"], "default");
    assert_eq!(e["series"]["count"], 2);
    let c = w.api.counters_for("events");
    assert_eq!(c.writes, 2, "{:?}", w.api.requests());
}

#[test]
fn after_a_compaction_a_running_watcher_relists_and_converges() {
    let w = World::new();
    w.api.apply(nad("default", "a", "{}"));
    w.api.apply(nad("default", "b", "{}"));
    w.run(|client| async {
        let store = reflect(
            Api::<NetworkAttachmentDefinition>::all(client),
            watcher::Config::default(),
        );
        eventually("initial list", || names(&store) == ["a", "b"]).await;
        let lists = || {
            list_requests(
                &w.api,
                "GET /apis/k8s.cni.cncf.io/v1/network-attachment-definitions",
            )
        };
        assert_eq!(lists(), 1);

        // Compaction under an open watch: 410, re-list.
        w.api.compact();
        eventually("re-list after 410", || lists() == 2).await;
        w.api.apply(nad("default", "c", "{}"));
        eventually("c after the re-list", || names(&store) == ["a", "b", "c"]).await;

        // Changes the watcher never sees as events (history compacted while it is away).
        w.api.pause();
        w.api.delete("NetworkAttachmentDefinition", "default", "b");
        w.api.apply(nad("default", "d", "{}"));
        w.api.compact();
        w.api.resume();
        eventually("no stale b, d present", || names(&store) == ["a", "c", "d"]).await;
        assert!(lists() >= 3);
    });
}

#[test]
fn after_pause_and_resume_the_watcher_recovers() {
    let w = World::new();
    w.api.apply(pod("default", "p1", "n1"));
    w.run(|client| async {
        let pods = Api::<Pod>::namespaced(client.clone(), "default");
        let store = reflect(Api::<Pod>::all(client), watcher::Config::default());
        eventually("initial list", || names(&store) == ["p1"]).await;
        w.api.pause();
        assert!(
            std::net::TcpStream::connect(w.api.url().trim_start_matches("http://")).is_err(),
            "connections are refused while paused"
        );
        assert!(
            pods.get("p1").await.is_err(),
            "no request is served while paused"
        );
        w.api.apply(pod("default", "p2", "n1"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(names(&store), ["p1"]);
        w.api.resume();
        eventually("p2 after resume", || names(&store) == ["p1", "p2"]).await;
        assert!(pods.get("p1").await.is_ok());
    });
}

#[test]
fn a_wrong_token_is_a_401_and_rotation_works_with_a_new_kubeconfig() {
    let w = World::new();
    w.api.set_token(Some("first"));
    let first = w.kubeconfig("first");
    w.api.set_token(Some("second"));
    let second = w.kubeconfig("second");
    w.api.apply(pod("default", "p", "n1"));
    block_in_netns(&w.netns.path(), || async {
        let old = Api::<Pod>::namespaced(kube_client(&first).await, "default");
        match old.get("p").await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 401);
                assert_eq!(s.reason, "Unauthorized");
            }
            other => panic!("expected 401, got {other:?}"),
        }
        let new = Api::<Pod>::namespaced(kube_client(&second).await, "default");
        new.get("p").await.expect("the current token is accepted");
        w.api.set_token(Some("first"));
        old.get("p").await.expect("rotated back");
        assert!(new.get("p").await.is_err());
        w.api.set_token(None);
        new.get("p").await.expect("no authentication required");
    });
}

#[test]
fn watches_get_bookmarks_and_a_410_for_a_compacted_version() {
    let w = World::new();
    w.api.apply(pod("default", "p", "n1"));
    w.run(|client| async {
        let pods = Api::<Pod>::namespaced(client, "default");
        let rv = w.api.resource_version().to_string();
        let mut stream = pods
            .watch(&WatchParams::default().timeout(3), &rv)
            .await
            .expect("watch")
            .boxed();
        w.api.apply(pod("default", "p", "n2"));
        let mut saw_modified = false;
        let mut saw_bookmark = false;
        while let Some(event) = stream.try_next().await.expect("watch event") {
            match event {
                WatchEvent::Modified(p) => {
                    saw_modified = p.spec.unwrap().node_name.as_deref() == Some("n2");
                }
                WatchEvent::Bookmark(b) => {
                    saw_bookmark = true;
                    assert!(
                        b.metadata.resource_version.parse::<u64>().unwrap() >= rv.parse().unwrap()
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            saw_modified && saw_bookmark,
            "the stream ends at timeoutSeconds"
        );

        w.api.compact();
        let mut stream = pods
            .watch(&WatchParams::default(), &rv)
            .await
            .expect("watch")
            .boxed();
        match stream.try_next().await.expect("event") {
            Some(WatchEvent::Error(s)) => {
                assert_eq!(s.code, 410);
                assert_eq!(s.reason, "Expired");
            }
            other => panic!("expected a 410 ERROR, got {other:?}"),
        }
        assert!(stream.try_next().await.expect("end").is_none());

        // A streaming-list watcher (sendInitialEvents) works too.
        let store = reflect(pods.clone(), watcher::Config::default().streaming_lists());
        eventually("streaming list", || names(&store) == ["p"]).await;
        w.api.apply(pod("default", "q", "n1"));
        eventually("after the initial events", || names(&store) == ["p", "q"]).await;
    });
}

#[test]
fn dra_objects_are_discovered_selected_and_their_status_applied_through_kube_rs() {
    use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
    let w = World::new();
    for (node, driver) in [
        ("n1", "a.example.com"),
        ("n2", "a.example.com"),
        ("n1", "b.example.com"),
    ] {
        w.api.apply(json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": format!("{node}-{driver}")},
            "spec": {"driver": driver, "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1}},
        }));
    }
    w.api.apply(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "c", "namespace": "ns"},
        "spec": {"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "x"}}]}},
        "status": {"devices": [{"driver": "a.example.com", "pool": "n1", "device": "d0", "data": {"own": true}}]},
    }));
    w.run(|client| async move {
        let served = client
            .list_api_group_resources("resource.k8s.io/v1")
            .await
            .unwrap();
        let names: Vec<&str> = served.resources.iter().map(|r| r.name.as_str()).collect();
        assert!(
            names.contains(&"resourceclaims") && names.contains(&"resourceslices"),
            "{names:?}"
        );

        let slices: Api<ResourceSlice> = Api::all(client.clone());
        let mine = slices
            .list(
                &kube::api::ListParams::default()
                    .fields("spec.nodeName=n1,spec.driver=a.example.com"),
            )
            .await
            .unwrap();
        let mine: Vec<String> = mine
            .items
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(mine, ["n1-a.example.com"]);

        let claims: Api<ResourceClaim> = Api::namespaced(client, "ns");
        let applied = json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "c", "namespace": "ns"},
            "status": {"devices": [{"driver": "a.example.com", "pool": "n1", "device": "d0",
                "networkData": {"interfaceName": "net1", "ips": ["198.18.0.2/24"]}}]},
        });
        let claim = claims
            .patch_status("c", &PatchParams::apply("plexus"), &Patch::Apply(&applied))
            .await
            .unwrap();
        let device = &claim.status.unwrap().devices.unwrap()[0];
        assert_eq!(
            device
                .network_data
                .as_ref()
                .unwrap()
                .interface_name
                .as_deref(),
            Some("net1")
        );
        assert!(device.data.is_some(), "the other fields stay");
        // Overwriting a value someone else wrote is a conflict.
        let mut foreign = applied.clone();
        foreign["status"]["devices"][0]["data"] = json!({"plexus": true});
        let error = claims
            .patch_status("c", &PatchParams::apply("plexus"), &Patch::Apply(&foreign))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, kube::Error::Api(s) if s.code == 409),
            "{error}"
        );
    });
}

#[test]
fn a_failing_server_answers_500_until_it_recovers() {
    let world = World::new();
    let list = || {
        world.run(|client| async move {
            Api::<Pod>::all(client)
                .list(&Default::default())
                .await
                .map(|list| list.items.len())
        })
    };
    world.api.fail_requests(true);
    let error = list().unwrap_err();
    assert!(format!("{error:?}").contains("500"), "{error:?}");
    world.api.fail_requests(false);
    assert_eq!(list().unwrap(), 0);
}
