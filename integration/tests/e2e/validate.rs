//! `plexusd validate` as a CI pipeline runs it: the real binary on files and stdin, its
//! `file:line` lines on stdout, the summary on stderr, and its exit status; and every manifest
//! (and CNI conf file) in examples/ passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use plexus_integration::binaries;

fn validate(args: &[&Path], stdin: &str) -> Output {
    let mut command = Command::new(binaries::plexusd());
    command.arg("validate").args(args);
    plexus_integration::run_with_stdin(command, stdin)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// Every file under `dir` a user would apply or put in a CNI conf dir.
fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read examples") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            manifests(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json" | "conf" | "conflist")
        ) {
            out.push(path);
        }
    }
}

#[test]
fn every_manifest_in_examples_passes() {
    let mut files = Vec::new();
    manifests(&repo().join("examples"), &mut files);
    files.sort();
    assert!(files.len() >= 25, "{files:?}");
    let args: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let output = validate(&args, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}{stderr}", stdout(&output));
    assert!(!stdout(&output).contains(": error:"), "{}", stdout(&output));
    // The NADs, the pods, the webhook's Deployment and the demo's CNI conf files.
    let objects: usize = stderr
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(objects >= 25, "{stderr}");
}

const BROKEN_NAD: &str = "\
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-net
  namespace: tenant
spec:
  config: |
    {
      \"cniVersion\": \"1.0.0\",
      \"name\": \"macvlan-net\",
      \"type\": \"macvlan\",
      \"master\": \"eth1\",
    }
";

const POD_WITH_TYPO: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: tenant
  annotations:
    k8s.v1.cni.cncf.io/networks: macvlan-net@net 1
spec:
  containers:
    - name: app
      image: busybox
";

#[test]
fn a_broken_file_fails_with_file_and_line_and_a_good_one_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nad = dir.path().join("nad.yaml");
    std::fs::write(&nad, BROKEN_NAD).expect("write");
    let output = validate(&[&nad, Path::new("-")], POD_WITH_TYPO);
    assert_eq!(output.status.code(), Some(1));
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            format!(
                "{}:13: error: network tenant/macvlan-net: invalid config: network configuration could not be decoded: trailing comma at line 6 column 1",
                nad.display()
            ),
            "<stdin>:7: error: pod tenant/web: invalid k8s.v1.cni.cncf.io/networks annotation: entry 1 (\"macvlan-net@net 1\"): interface: invalid interface name \"net 1\": must not contain '/', ':' or whitespace".to_owned(),
        ]
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "plexusd validate: 2 objects checked in 2 files: 2 errors, 0 warnings\n"
    );

    let fixed = BROKEN_NAD.replace("\"eth1\",\n", "\"eth1\"\n");
    let good = POD_WITH_TYPO.replace("@net 1", "@net1");
    std::fs::write(&nad, fixed).expect("write");
    let output = validate(&[&nad, Path::new("-")], &good);
    assert!(output.status.success(), "{}", stdout(&output));
    assert_eq!(stdout(&output), "");
}

#[test]
fn warnings_fail_only_with_strict() {
    let nad = "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: node-conf}\n";
    let output = validate(&[Path::new("-")], nad);
    assert!(output.status.success());
    assert!(
        stdout(&output)
            .starts_with("<stdin>:1: warning: network default/node-conf: spec.config is empty"),
        "{}",
        stdout(&output)
    );
    let mut command = Command::new(binaries::plexusd());
    command.args(["validate", "--strict", "-"]);
    let strict = plexus_integration::run_with_stdin(command, nad);
    assert_eq!(strict.status.code(), Some(1));
}
