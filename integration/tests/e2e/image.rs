//! The image, run the way the DaemonSet runs it: its init step installs the shim into a CNI bin
//! dir, plexusd runs with the host paths the DaemonSet mounts inside a node's network
//! namespace, and a pod is attached through the installed shim and deleted again. Commands,
//! paths and the image name come from examples/deploy/, so the manifests and the image are
//! tested together. Skipped, saying why, only where podman cannot be installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use plexus_integration::podman::{self, Network, podman, podman_ok};
use plexus_integration::shim::{self, CniEnv};
use plexus_integration::{Netns, Pod, ShimOutput, binaries};
use serde_json::{Value, json};

fn deploy_file(name: &str) -> Value {
    let path = podman::repo_root().join("examples/deploy").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pod_spec() -> Value {
    deploy_file("40-daemonset.yaml")["spec"]["template"]["spec"].clone()
}

/// plexusd's config as the ConfigMap ships it.
fn configmap_config() -> Value {
    let text = deploy_file("30-configmap.yaml")["data"]["plexusd.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    serde_saphyr::from_str(&text).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The image `make image` built, with what it printed; `None` (and why, printed) where podman
/// cannot be installed.
fn built_image() -> Option<(String, String)> {
    if let Some(why) = podman::podman_missing() {
        eprintln!("skipped: {why}");
        return None;
    }
    let printed = podman::make_image();
    let image = pod_spec()["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    Some((image, printed))
}

/// A DaemonSet container's volume mounts as podman `-v` flags: host paths under `host` (the
/// node's netns dir is the machine's own, where test namespaces live), the ConfigMap from
/// `config`.
fn volume_flags(container: &Value, host: &Path, config: &Path) -> Vec<String> {
    let volumes: BTreeMap<String, Value> = pod_spec()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v.clone()))
        .collect();
    let mut flags = Vec::new();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let volume = &volumes[mount["name"].as_str().unwrap()];
        let source = match volume["hostPath"]["path"].as_str() {
            Some("/var/run/netns") => PathBuf::from("/run/netns"),
            Some(path) => host.join(path.trim_start_matches('/')),
            None => {
                assert!(volume["configMap"].is_object(), "{volume}");
                config.to_owned()
            }
        };
        std::fs::create_dir_all(&source).unwrap();
        let mut options = Vec::new();
        if mount["readOnly"] == true {
            options.push("ro");
        }
        if mount["mountPropagation"] == "HostToContainer" {
            options.push("rslave");
        }
        let mut flag = format!(
            "{}:{}",
            source.display(),
            mount["mountPath"].as_str().unwrap()
        );
        if !options.is_empty() {
            flag = format!("{flag}:{}", options.join(","));
        }
        flags.extend(["-v".to_owned(), flag]);
    }
    flags
}

/// podman's `--entrypoint` for a Kubernetes `command`, which replaces the image's entrypoint.
fn entrypoint(command: &Value) -> Vec<String> {
    vec!["--entrypoint".into(), command.to_string()]
}

/// The DaemonSet's plexusd container, running under podman; stopped by name on drop.
struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn exec(&self, command: &[String]) -> std::process::Output {
        let mut args = vec!["exec".to_owned(), self.name.clone()];
        args.extend(command.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        podman(&args).output().expect("podman exec")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = podman(&["stop", "--time", "5", &self.name]).output();
        if let Some(child) = self.child.take() {
            plexus_integration::stop(child, Duration::from_secs(10));
        }
        let _ = podman(&["rm", "--force", &self.name]).output();
        if std::thread::panicking() {
            eprintln!("---- plexusd log ({}) ----\n{}", self.name, self.log());
        }
    }
}

const CLUSTER_SUBNET: &str = "198.18.60.0/24";
const EAST_SUBNET: &str = "198.18.61.0/24";

/// A node before Plexus: Debian's plugins in its CNI bin dir and a bridge cluster network
/// whose host-local state is in the node's /var/lib/cni.
fn prepare_node(host: &Path) {
    let bin = host.join("opt/cni/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for plugin in std::fs::read_dir(binaries::CNI_BIN_DIR).unwrap().flatten() {
        std::fs::copy(plugin.path(), bin.join(plugin.file_name())).unwrap();
    }
    let conf = host.join("etc/cni/net.d");
    std::fs::create_dir_all(&conf).unwrap();
    let cluster = json!({
        "cniVersion": "1.0.0", "name": "cluster",
        "plugins": [{"type": "bridge", "bridge": "cni0", "isGateway": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": CLUSTER_SUBNET}]]}}]
    });
    std::fs::write(conf.join("10-cluster.conflist"), cluster.to_string()).unwrap();
}

/// The ConfigMap's plexusd.yaml, on the `files` source (no API server here) with a NAD and the
/// pod in the config volume.
fn prepare_config(config: &Path, pod: &Pod) {
    let mut plexusd = configmap_config();
    plexusd["source"] = "files".into();
    plexusd["manifestDir"] = "/etc/plexus/manifests".into();
    std::fs::create_dir_all(config.join("manifests")).unwrap();
    std::fs::write(config.join("plexusd.yaml"), plexusd.to_string()).unwrap();
    let east = json!({"cniVersion": "1.0.0", "name": "east", "type": "bridge", "bridge": "br-east",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": EAST_SUBNET}]]}});
    let nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "east", "namespace": "tenant"}, "spec": {"config": east.to_string()}});
    std::fs::write(config.join("manifests/nad.yaml"), nad.to_string()).unwrap();
    std::fs::write(config.join("manifests/pod.yaml"), pod.manifest("east")).unwrap();
}

/// Runs the DaemonSet's init container, then its plexusd container, in `node`'s namespace.
fn start_daemonset(image: &str, node: &Netns, host: &Path, config: &Path) -> Daemon {
    let spec = pod_spec();
    let init = &spec["initContainers"][0];
    let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
    assert_eq!(spec["hostNetwork"], true);
    args.extend(podman::run_flags(Network::Namespace(Path::new(
        &node.path(),
    ))));
    if init["securityContext"]["privileged"] == true {
        args.push("--privileged".into());
    }
    args.extend(volume_flags(init, host, config));
    args.extend(entrypoint(&init["command"]));
    args.push(image.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let installed = podman_ok(&args);
    eprintln!(
        "init step: {}",
        String::from_utf8_lossy(&installed.stdout).trim()
    );

    let container = &spec["containers"][0];
    let name = plexus_integration::unique("plexus-image-");
    let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--name".into(), name.clone()];
    args.extend(podman::run_flags(Network::Namespace(Path::new(
        &node.path(),
    ))));
    if container["securityContext"]["privileged"] == true {
        args.push("--privileged".into());
    }
    for env in container["env"].as_array().into_iter().flatten() {
        let value = match env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("spec.nodeName") => "image-test-node".to_owned(),
            Some(other) => panic!("env from {other} is not known to the test"),
            None => env["value"].as_str().unwrap().to_owned(),
        };
        args.extend([
            "--env".into(),
            format!("{}={value}", env["name"].as_str().unwrap()),
        ]);
    }
    args.extend(volume_flags(container, host, config));
    args.extend(entrypoint(&container["command"]));
    args.push(image.to_owned());
    let log = host.join("plexusd.log");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = podman(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("podman run");
    Daemon {
        name,
        child: Some(child),
        log,
    }
}

/// Runs the installed shim as the runtime does.
fn shim(binary: &Path, command: &str, pod: &Pod, conf: &Value, cni_path: &str) -> ShimOutput {
    let env = CniEnv {
        command: command.into(),
        container_id: pod.container_id.clone(),
        netns: pod.netns.path(),
        ifname: "eth0".into(),
        args: pod.cni_args(),
        path: cni_path.into(),
    };
    shim::exec_at(binary, &env, &conf.to_string())
}

/// host-local allocations left under the node's /var/lib/cni/networks.
fn allocations(host: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for network in std::fs::read_dir(host.join("var/lib/cni/networks"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for file in std::fs::read_dir(network.path()).unwrap().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn the_image_runs_as_the_daemonset_runs_it_and_a_pod_comes_and_goes_through_the_installed_shim() {
    let Some((image, printed)) = built_image() else {
        return;
    };
    eprintln!("make image:\n{printed}");
    let web = Pod::new("tenant", "web");
    let node = Netns::new("node");
    let dir = tempfile::Builder::new()
        .prefix("plexus-image-")
        .tempdir()
        .unwrap();
    let (host, config) = (dir.path().join("host"), dir.path().join("config"));
    prepare_node(&host);
    prepare_config(&config, &web);
    let mut daemon = start_daemonset(&image, &node, &host, &config);

    // The init step put the shim into the node's CNI bin dir.
    let spec = pod_spec();
    let init_command = strings(&spec["initContainers"][0]["command"]);
    let to = &init_command[init_command.iter().position(|a| a == "--to").unwrap() + 1];
    let installed = host.join(to.trim_start_matches('/')).join("plexus");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(podman::repo_root().join("target/image/rootfs/usr/local/bin/plexus"))
            .unwrap(),
        "the installed shim is the image's"
    );

    // plexusd comes up: the DaemonSet's own readiness probe says so.
    let container = &spec["containers"][0];
    let readiness = strings(&container["readinessProbe"]["exec"]["command"]);
    podman::wait_until("plexusd ready", Duration::from_secs(60), || {
        assert!(!daemon.exited(), "plexusd exited: {}", daemon.log());
        daemon.exec(&readiness).status.success()
    });
    let liveness = strings(&container["livenessProbe"]["exec"]["command"]);
    assert!(daemon.exec(&liveness).status.success());

    // It wrote the node's conflist, naming the socket in the mounted run dir.
    let config_yaml = configmap_config();
    let conf_dir = host.join(
        config_yaml["cniConfDir"]
            .as_str()
            .unwrap()
            .trim_start_matches('/'),
    );
    let conflist = conf_dir.join("00-plexus.conflist");
    podman::wait_until("00-plexus.conflist", Duration::from_secs(20), || {
        conflist.exists()
    });
    let conflist: Value = serde_json::from_slice(&std::fs::read(&conflist).unwrap()).unwrap();
    let mut conf = conflist["plugins"][0].clone();
    assert_eq!(conf["type"], "plexus");
    assert_eq!(conf["socketPath"], config_yaml["socketPath"]);
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    // The runtime is on the node, where the test keeps the node's /run under `host`.
    let socket = conf["socketPath"].as_str().unwrap().trim_start_matches('/');
    conf["socketPath"] = host.join(socket).display().to_string().into();

    // A pod ADD through the installed shim, as the runtime makes it.
    let cni_path = config_yaml["cniBinDirs"][0].as_str().unwrap();
    let add = shim(&installed, "ADD", &web, &conf, cni_path);
    assert!(add.success(), "{add:?}\n{}", daemon.log());
    assert_eq!(web.link_names(), ["eth0", "net1"]);
    assert!(web.link("net1").unwrap().addresses[0].starts_with("198.18.61."));
    assert_eq!(allocations(&host).len(), 2);
    let inspect = daemon.exec(&[
        "plexusd".into(),
        "inspect".into(),
        "--pod".into(),
        "tenant/web".into(),
    ]);
    let inspect = String::from_utf8_lossy(&inspect.stdout).into_owned();
    assert!(
        inspect.contains("tenant/east") && inspect.contains("198.18.61."),
        "{inspect}"
    );

    // DEL leaves nothing: no interface, no host-local allocation, no record.
    let del = shim(&installed, "DEL", &web, &conf, cni_path);
    assert!(del.success(), "{del:?}");
    assert!(web.link_names().is_empty());
    assert!(allocations(&host).is_empty(), "{:?}", allocations(&host));
    let records = host.join(
        config_yaml["recordsDir"]
            .as_str()
            .unwrap()
            .trim_start_matches('/'),
    );
    let left: Vec<_> = std::fs::read_dir(&records)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(
        daemon.log().contains("\"level\":\"INFO\""),
        "JSON logs, as the ConfigMap asks"
    );
    podman::assert_no_bridge_in_the_machine();
}

#[test]
fn the_daemonset_and_the_image_agree_on_commands_and_paths() {
    let Some((image, _)) = built_image() else {
        return;
    };
    let spec = pod_spec();
    assert_eq!(spec["initContainers"][0]["image"], image.as_str());
    let config: Value = serde_json::from_slice(
        &podman_ok(&["image", "inspect", "--format", "{{json .Config}}", &image]).stdout,
    )
    .unwrap();
    let path = strings(&config["Env"])
        .into_iter()
        .find_map(|e| e.strip_prefix("PATH=").map(str::to_owned))
        .expect("the image sets PATH");
    assert_eq!(strings(&config["Entrypoint"]), ["/usr/local/bin/plexusd"]);
    // Every command the DaemonSet runs starts with a program found on the image's PATH.
    let container = &spec["containers"][0];
    let commands = [
        &spec["initContainers"][0]["command"],
        &container["command"],
        &container["livenessProbe"]["exec"]["command"],
        &container["readinessProbe"]["exec"]["command"],
    ];
    for command in commands {
        let program = strings(command)[0].clone();
        assert!(
            path.split(':').any(|dir| dir == "/usr/local/bin") && program == "plexusd",
            "{program} on {path}"
        );
        let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
        args.extend(podman::run_flags(Network::None));
        args.extend(entrypoint(&json!([program, "--version"])));
        args.push(image.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(
            podman(&args).output().unwrap().status.success(),
            "{program} --version in the image"
        );
    }
    // The file the init step copies is in the image.
    let init = strings(&spec["initContainers"][0]["command"]);
    let from = &init[init.iter().position(|a| a == "--from").unwrap() + 1];
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--env".into(),
        "CNI_COMMAND=VERSION".into(),
    ];
    args.extend(podman::run_flags(Network::None));
    args.extend(entrypoint(&json!([from])));
    args.push(image.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let version = podman_ok(&args);
    let reply: Value = serde_json::from_slice(&version.stdout).unwrap();
    assert!(reply["supportedVersions"].is_array(), "{reply}");
    podman::assert_no_bridge_in_the_machine();
}

/// Every path plexusd's ConfigMap names is one the DaemonSet mounts from the node, and the init
/// step installs the shim where plexusd looks for plugins.
#[test]
fn the_daemonset_mounts_every_path_the_configmap_names() {
    let spec = pod_spec();
    let container = &spec["containers"][0];
    let mounts: Vec<String> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_owned())
        .collect();
    let mounted = |path: &str| mounts.iter().any(|m| Path::new(path).starts_with(m));
    let config = configmap_config();
    let socket_dir = Path::new(config["socketPath"].as_str().unwrap())
        .parent()
        .unwrap()
        .display()
        .to_string();
    let mut paths = vec![
        socket_dir,
        config["cniConfDir"].as_str().unwrap().to_owned(),
        config["recordsDir"].as_str().unwrap().to_owned(),
    ];
    paths.extend(strings(&config["cniBinDirs"]));
    if let Some(multus) = config["multusCacheDir"].as_str() {
        paths.push(multus.to_owned());
    }
    for path in &paths {
        assert!(
            mounted(path),
            "{path} is not mounted from the node: {mounts:?}"
        );
    }
    let init = strings(&spec["initContainers"][0]["command"]);
    let to = &init[init.iter().position(|a| a == "--to").unwrap() + 1];
    assert!(strings(&config["cniBinDirs"]).contains(to), "{to}");
    for probe in ["livenessProbe", "readinessProbe"] {
        let command = strings(&container[probe]["exec"]["command"]);
        let socket = &command[command.iter().position(|a| a == "--socket").unwrap() + 1];
        assert_eq!(socket, config["socketPath"].as_str().unwrap(), "{probe}");
    }
    let image = container["image"].as_str().unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        image,
        format!("localhost/plexus:{version}"),
        "make image's tag"
    );
}
