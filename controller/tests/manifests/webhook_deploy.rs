//! The webhook's deploy manifests (examples/deploy/webhook/) agree with the binary: the
//! Deployment's command parses as `plexusd webhook`'s arguments, and its port, paths, probes,
//! Secret, Service, ValidatingWebhookConfiguration, RBAC and cert-manager Certificate all
//! point at one another and at what the webhook serves.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use plexus_controller::webhook::{self, PodPolicy, WebhookArgs};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::yaml::{documents_in, repo};

/// Every document of the manifests in `dir`.
fn documents(dir: &str) -> Vec<Value> {
    documents_in(dir).into_iter().map(|(_, doc)| doc).collect()
}

/// The one document of `kind`, read as its Kubernetes type.
fn one<T: DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    serde_json::from_value(found[0].clone()).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// `plexusd [--config FILE] webhook ARGS`: the binary's own argument type for the subcommand.
#[derive(Parser)]
struct Plexusd {
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Tool,
}

#[derive(clap::Subcommand)]
enum Tool {
    Webhook(WebhookArgs),
}

struct Deployed {
    docs: Vec<Value>,
    deployment: Deployment,
}

impl Deployed {
    fn load() -> Self {
        let docs = documents("examples/deploy/webhook");
        let deployment = one(&docs, "Deployment");
        Self { docs, deployment }
    }

    fn pod(&self) -> &PodSpec {
        self.deployment.spec.template.spec.as_ref().unwrap()
    }

    fn container(&self) -> &Container {
        let containers = &self.pod().containers;
        assert_eq!(containers.len(), 1);
        &containers[0]
    }

    fn command(&self) -> (Option<PathBuf>, WebhookArgs) {
        let command = self.container().command.clone().unwrap_or_default();
        assert_eq!(command.first().map(String::as_str), Some("plexusd"));
        let parsed = Plexusd::try_parse_from(&command)
            .unwrap_or_else(|e| panic!("the Deployment's command is not one plexusd takes: {e}"));
        let Tool::Webhook(args) = parsed.command;
        (parsed.config, args)
    }

    /// The mount path of the volume of that name.
    fn mount(&self, volume: &str) -> PathBuf {
        let mount = self
            .container()
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("no mount of volume {volume}"));
        PathBuf::from(&mount.mount_path)
    }

    fn volume(&self, name: &str) -> &k8s_openapi::api::core::v1::Volume {
        self.pod()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    }
}

#[test]
fn the_deployment_runs_two_webhook_replicas_off_the_host_network_with_the_daemon_sets_image() {
    let deployed = Deployed::load();
    let spec = &deployed.deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = deployed.pod();
    assert_ne!(pod.host_network, Some(true));
    let security = deployed.container().security_context.as_ref().unwrap();
    assert_ne!(security.privileged, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );

    let daemon_set: DaemonSet = one(&documents("examples/deploy"), "DaemonSet");
    let plexusd = &daemon_set.spec.template.spec.unwrap().containers[0];
    assert_eq!(
        deployed.container().image,
        plexusd.image,
        "the same image as the DaemonSet"
    );

    let budget: PodDisruptionBudget = one(&deployed.docs, "PodDisruptionBudget");
    let budget = budget.spec.unwrap();
    assert_eq!(budget.min_available, Some(IntOrString::Int(1)));
    assert_eq!(budget.selector, Some(spec.selector.clone()));
}

#[test]
fn the_command_parses_and_its_paths_are_the_mounted_secret_and_config() {
    let deployed = Deployed::load();
    let (config, args) = deployed.command();
    assert_eq!(args.pod_policy, PodPolicy::Warn);

    // The certificate and key are the Secret's files.
    let tls_dir = deployed.mount("tls");
    assert_eq!(args.cert, tls_dir.join("tls.crt"));
    assert_eq!(args.key, tls_dir.join("tls.key"));
    let secret = deployed
        .volume("tls")
        .secret
        .as_ref()
        .expect("a Secret volume");
    assert_eq!(
        secret.optional,
        Some(true),
        "pods start before the Secret exists"
    );
    let certificate = documents("examples/deploy/webhook/cert-manager")
        .into_iter()
        .find(|d| d["kind"] == "Certificate")
        .expect("a cert-manager Certificate");
    assert_eq!(
        secret.secret_name.as_deref(),
        certificate["spec"]["secretName"].as_str()
    );

    // The config is plexusd.yaml of the ConfigMap the DaemonSet uses, and it loads.
    let config = config.expect("--config");
    assert_eq!(config.parent(), Some(deployed.mount("config").as_path()));
    let config_map = deployed.volume("config").config_map.as_ref().unwrap();
    assert_eq!(config_map.name, "plexus-config");
    let config_map: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("examples/deploy/30-configmap.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(config_map["metadata"]["name"], "plexus-config");
    let file = config.file_name().unwrap().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    std::fs::write(&path, config_map["data"][file].as_str().unwrap()).unwrap();
    let config = plexus_controller::config::Config::load(Some(&path)).unwrap();
    plexus_controller::checks::PodRules::new(config).unwrap();
}

#[test]
fn port_probes_service_and_webhook_configuration_point_at_what_the_webhook_serves() {
    let deployed = Deployed::load();
    let (_, args) = deployed.command();
    let port = &deployed.container().ports.as_ref().unwrap()[0];
    assert_eq!(port.container_port, i32::from(args.listen.port()));
    let port_name = port.name.clone().unwrap();
    let readiness = deployed.container().readiness_probe.as_ref().unwrap();
    let get = readiness.http_get.as_ref().unwrap();
    assert_eq!(get.path.as_deref(), Some(webhook::HEALTH_PATH));
    assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    assert_eq!(get.port, IntOrString::String(port_name.clone()));
    let liveness = deployed.container().liveness_probe.as_ref().unwrap();
    assert_eq!(
        liveness.tcp_socket.as_ref().unwrap().port,
        IntOrString::String(port_name.clone())
    );

    let service: Service = one(&deployed.docs, "Service");
    let service_spec = service.spec.as_ref().unwrap();
    assert_eq!(
        service_spec.selector.as_ref(),
        deployed.deployment.spec.selector.match_labels.as_ref()
    );
    let service_port = &service_spec.ports.as_ref().unwrap()[0];
    assert_eq!(
        service_port.target_port,
        Some(IntOrString::String(port_name))
    );

    let configuration: ValidatingWebhookConfiguration =
        one(&deployed.docs, "ValidatingWebhookConfiguration");
    let hooks = configuration.webhooks.unwrap();
    let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nads.plexus.k8s.cni.cncf.io",
            "pods.plexus.k8s.cni.cncf.io",
            "workloads.plexus.k8s.cni.cncf.io"
        ]
    );
    for hook in &hooks {
        let at = &hook.name;
        // An outage of the webhook never blocks the cluster.
        assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"), "{at}");
        let timeout = hook.timeout_seconds.expect("a short timeout");
        assert!((1..=5).contains(&timeout), "{at}: {timeout}");
        assert!(
            args.lookup_timeout_ms < u64::try_from(timeout).unwrap() * 1000,
            "{at}: NAD lookups must end before the API server gives up"
        );
        assert_eq!(hook.side_effects, "None", "{at}");
        assert_eq!(hook.admission_review_versions, ["v1"], "{at}");
        let target = hook.client_config.service.as_ref().expect("a Service");
        assert_eq!(Some(&target.name), service.metadata.name.as_ref(), "{at}");
        assert_eq!(
            Some(&target.namespace),
            service.metadata.namespace.as_ref(),
            "{at}"
        );
        assert_eq!(target.path.as_deref(), Some(webhook::REVIEW_PATH), "{at}");
        assert_eq!(target.port, Some(service_port.port), "{at}");
        assert!(hook.client_config.url.is_none(), "{at}");
    }
    let rules = |i: usize| -> BTreeSet<(String, String)> {
        hooks[i]
            .rules
            .iter()
            .flatten()
            .flat_map(|r| {
                let operations = r.operations.clone().unwrap_or_default();
                r.resources
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(move |res| {
                        operations
                            .clone()
                            .into_iter()
                            .map(move |op| (res.clone(), op))
                    })
            })
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        list.iter()
            .map(|(r, o)| ((*r).to_owned(), (*o).to_owned()))
            .collect()
    };
    assert_eq!(
        rules(0),
        pairs(&[
            ("network-attachment-definitions", "CREATE"),
            ("network-attachment-definitions", "UPDATE")
        ])
    );
    // Pods only on CREATE: updates (plexusd's network-status patch) are never reviewed.
    assert_eq!(rules(1), pairs(&[("pods", "CREATE")]));
    assert!(rules(2).contains(&("deployments".to_owned(), "UPDATE".to_owned())));
    assert!(rules(2).contains(&("cronjobs".to_owned(), "CREATE".to_owned())));

    // cert-manager fills the caBundle from the Certificate whose Secret the webhook serves, and
    // the certificate names the Service as the API server calls it.
    let certificate = documents("examples/deploy/webhook/cert-manager")
        .into_iter()
        .find(|d| d["kind"] == "Certificate")
        .unwrap();
    let inject = configuration
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("cert-manager.io/inject-ca-from"))
        .expect("the CA injector annotation");
    assert_eq!(
        inject,
        &format!(
            "{}/{}",
            certificate["metadata"]["namespace"].as_str().unwrap(),
            certificate["metadata"]["name"].as_str().unwrap()
        )
    );
    let service_dns = format!(
        "{}.{}.svc",
        service.metadata.name.as_deref().unwrap(),
        service.metadata.namespace.as_deref().unwrap()
    );
    let dns_names: Vec<&str> = certificate["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(dns_names.contains(&service_dns.as_str()), "{dns_names:?}");
}

#[test]
fn the_webhook_may_only_get_nads() {
    let deployed = Deployed::load();
    let role: ClusterRole = one(&deployed.docs, "ClusterRole");
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&["k8s.cni.cncf.io".to_owned()][..])
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["network-attachment-definitions".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get"]);
    let binding: ClusterRoleBinding = one(&deployed.docs, "ClusterRoleBinding");
    let account: ServiceAccount = one(&deployed.docs, "ServiceAccount");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(Some(&subject.name), account.metadata.name.as_ref());
    assert_eq!(subject.namespace, account.metadata.namespace);
    assert_eq!(deployed.pod().service_account_name, account.metadata.name);
}
