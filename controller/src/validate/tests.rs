use std::io::Cursor;

use super::*;
use crate::config::Config;

fn rules() -> PodRules {
    PodRules::new(Config::default()).unwrap()
}

async fn run(files: &[&Path], stdin: &str, strict: bool) -> Report {
    let args = ValidateArgs {
        files: files.iter().map(|p| p.to_path_buf()).collect(),
        strict,
    };
    validate(&args, &rules(), Cursor::new(stdin.to_owned())).await
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const BROKEN_NAD: &str = "\
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: east
  namespace: tenant
spec:
  config: |
    {
      \"cniVersion\": \"1.0.0\",
      \"name\": \"east\"
      \"type\": \"macvlan\"
    }
";

const GOOD_NAD_AND_TYPO_POD: &str = "\
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: east
spec:
  config: '{\"cniVersion\": \"1.0.0\", \"name\": \"east\", \"type\": \"macvlan\"}'
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    k8s.v1.cni.cncf.io/networks: east@net 1
spec:
  containers: []
";

#[tokio::test]
async fn a_json_mistake_in_a_nad_is_reported_at_its_line_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "nad.yaml", BROKEN_NAD);
    let report = run(&[&file], "", false).await;
    assert_eq!(report.lines.len(), 1, "{:?}", report.lines);
    let line = &report.lines[0];
    // Line 4 of the config is line 11 of the file: the missing comma is noticed there.
    assert!(
        line.starts_with(&format!(
            "{}:11: error: network tenant/east: invalid config: ",
            file.display()
        )),
        "{line}"
    );
    assert!(report.failed());
    assert_eq!((report.objects, report.errors), (1, 1));
}

#[tokio::test]
async fn a_pod_mistake_is_reported_at_its_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.yaml", GOOD_NAD_AND_TYPO_POD);
    let report = run(&[&file], "", false).await;
    assert_eq!(report.lines.len(), 1, "{:?}", report.lines);
    assert!(
        report.lines[0].starts_with(&format!(
            "{}:13: error: pod default/web: invalid k8s.v1.cni.cncf.io/networks annotation: entry 1 (\"east@net 1\"): interface: invalid interface name \"net 1\"",
            file.display()
        )),
        "{}",
        report.lines[0]
    );
    assert_eq!(report.objects, 2);
}

#[tokio::test]
async fn nads_among_the_files_are_checked_against_the_pods_that_select_them() {
    let text = GOOD_NAD_AND_TYPO_POD.replace(
        "east@net 1",
        "'[{\"name\": \"east\", \"mac\": \"c2:00:00:00:00:01\"}, {\"name\": \"elsewhere\"}]'",
    );
    let report = run(&[Path::new("-")], &text, false).await;
    // macvlan alone declares no "mac"; "elsewhere" may exist in the cluster: not an error.
    assert_eq!(report.lines.len(), 1, "{:?}", report.lines);
    assert!(
        report.lines[0].starts_with(
            "<stdin>:13: error: pod default/web: network default/east: the selection asks for mac"
        ),
        "{}",
        report.lines[0]
    );
}

#[tokio::test]
async fn lists_directories_and_stdin_are_read_and_other_kinds_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    write(
        dir.path(),
        "b.json",
        "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\", \"annotations\": {\"k8s.v1.cni.cncf.io/networks\": \"a,,b\"}}}]}\n",
    );
    write(dir.path(), "notes.txt", "not a manifest");
    let report = run(&[dir.path(), Path::new("-")], BROKEN_NAD, false).await;
    assert_eq!(report.files, 3, "{:?}", report.lines);
    assert_eq!(report.objects, 2);
    assert!(report.lines[0].contains("b.json:2: error: pod default/p: invalid k8s.v1.cni.cncf.io/networks annotation: entry 2: is empty"), "{:?}", report.lines);
    assert!(
        report.lines[1].starts_with("<stdin>:11: error:"),
        "{:?}",
        report.lines
    );
}

#[tokio::test]
async fn yaml_that_does_not_parse_and_files_that_cannot_be_read_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.yaml",
        "kind: Pod\nmetadata:\n  name: [unclosed\n",
    );
    let missing = dir.path().join("missing.yaml");
    let report = run(&[&bad, &missing], "", false).await;
    assert_eq!(report.errors, 2, "{:?}", report.lines);
    assert_eq!(
        report.lines,
        [
            format!(
                "{}: error: cannot read: No such file or directory (os error 2)",
                missing.display()
            ),
            format!(
                "{}:3: error: not valid YAML: unclosed bracket '[' at line 3, column 9",
                bad.display()
            ),
        ]
    );
}

#[tokio::test]
async fn warnings_pass_unless_strict() {
    let nad = "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: conf-file-network}\nspec: {}\n";
    let report = run(&[Path::new("-")], nad, false).await;
    assert_eq!(
        (report.errors, report.warnings),
        (0, 1),
        "{:?}",
        report.lines
    );
    assert!(
        report.lines[0].starts_with(
            "<stdin>:4: warning: network default/conf-file-network: spec.config is empty"
        ),
        "{:?}",
        report.lines
    );
    assert!(!report.failed());
    assert!(run(&[Path::new("-")], nad, true).await.failed());
    assert_eq!(
        report.summary(),
        "1 object checked in 1 file: 0 errors, 1 warning"
    );
}

#[tokio::test]
async fn conf_files_get_the_config_rules() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "10-a.conflist",
        r#"{"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}]}"#,
    );
    let bad = write(
        dir.path(),
        "20-b.conf",
        "{\"cniVersion\": \"9.9.9\",\n \"name\": \"b\", \"type\": \"bridge\"}",
    );
    let report = run(&[&good, &bad], "", false).await;
    assert_eq!(report.lines.len(), 1, "{:?}", report.lines);
    assert!(
        report.lines[0].contains("20-b.conf:1: error: network "),
        "{}",
        report.lines[0]
    );
    assert!(
        report.lines[0].contains("incompatible CNI version \"9.9.9\""),
        "{}",
        report.lines[0]
    );
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_an_error_at_its_line() {
    let nad = "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: x}\nspec:\n  config:\n    type: bridge\n";
    let report = run(&[Path::new("-")], nad, false).await;
    assert_eq!(
        report.lines,
        ["<stdin>:6: error: spec.config: is {\"type\":\"bridge\"}, not a string"]
    );
}
