//! The report as text: one block per container, one table row per attachment. `wide` adds
//! what is needed to debug rather than to look: full ids, CNI versions, states, error details.

use std::time::Duration;

use super::{AttachmentView, ContainerState, ContainerView, Report};
use crate::clock::{Timestamp, human_duration};
use crate::failures::Failure;
use crate::records::Pending;

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    Normal,
    Wide,
}

/// The report as `plexusd inspect` prints it; `now` dates the ages in wide output.
pub fn text(report: &Report, detail: Detail, now: Timestamp) -> String {
    let mut out = String::new();
    if report.containers.is_empty() {
        out.push_str("no containers\n");
    }
    for container in &report.containers {
        container_block(&mut out, container, detail, now);
    }
    for problem in &report.problems {
        out.push_str(&format!("problem: {problem}\n"));
    }
    out
}

fn container_block(out: &mut String, container: &ContainerView, detail: Detail, now: Timestamp) {
    let pod = container
        .pod
        .as_ref()
        .map_or_else(|| "(no pod)".to_owned(), ToString::to_string);
    let id = match detail {
        Detail::Wide => container.container_id.to_string(),
        Detail::Normal => short(container.container_id.as_str()),
    };
    out.push_str(&format!(
        "{pod}  uid {}  container {id}  netns {}\n",
        container.uid.as_deref().unwrap_or("-"),
        dash_if_empty(&container.netns),
    ));
    if detail == Detail::Wide {
        let state = match container.state {
            ContainerState::Attached => "attached",
            ContainerState::Incomplete => "incomplete (some attachments have no ADD result)",
            ContainerState::Failed => "failed (no attachments)",
        };
        let ifname = container.ifname.as_ref().map_or("-", |i| i.as_str());
        out.push_str(&format!("  state {state}  runtime interface {ifname}\n"));
        if let Some(from) = &container.adopted_from {
            out.push_str(&format!("  adopted from Multus: {}\n", from.display()));
        }
    }
    if container.attachments.is_empty() {
        out.push_str("  no attachments\n");
    } else {
        out.push_str(&table(&container.attachments, detail, now));
    }
    let error = container
        .last_error
        .as_ref()
        .map_or_else(|| "none".to_owned(), |f| failure_line(f, detail));
    out.push_str(&format!("  last error: {error}\n\n"));
}

fn table(attachments: &[AttachmentView], detail: Detail, now: Timestamp) -> String {
    let mut header = vec![
        "INTERFACE",
        "NETWORK",
        "IPS",
        "MAC",
        "PLUGINS",
        "ATTACHED",
        "TOOK",
    ];
    if detail == Detail::Wide {
        header.extend(["CNI", "DEFAULT", "STATE"]);
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for a in attachments {
        let attached_at = a.attached_at.map_or_else(
            || "-".to_owned(),
            |at| match detail {
                Detail::Normal => at.to_string(),
                Detail::Wide => format!("{at} ({} ago)", human_duration(at.age(now))),
            },
        );
        let mut row = vec![
            a.interface.to_string(),
            a.network.clone(),
            join_or_dash(&a.ips),
            a.mac.clone().unwrap_or_else(|| "-".into()),
            join_or_dash(&a.plugins),
            attached_at,
            a.took_us.map_or_else(
                || "-".to_owned(),
                |us| human_duration(Duration::from_micros(us)),
            ),
        ];
        if detail == Detail::Wide {
            row.push(a.cni_version.clone());
            row.push(if a.default { "yes" } else { "no" }.to_owned());
            let state = match (a.pending, a.attached) {
                (Some(Pending::Attach), _) => "attaching",
                (Some(Pending::Detach), _) => "detaching",
                (None, true) => "attached",
                (None, false) => "intended",
            };
            row.push(state.to_owned());
        }
        rows.push(row);
    }
    aligned(&rows)
}

/// Rows as columns padded to their widest cell, indented under the container's line.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn failure_line(failure: &Failure, detail: Detail) -> String {
    let id = match detail {
        Detail::Wide => failure.container_id.to_string(),
        Detail::Normal => short(failure.container_id.as_str()),
    };
    let mut line = format!(
        "{} ADD of container {id} failed (CNI error {}): {}",
        failure.at, failure.code, failure.message
    );
    if detail == Detail::Wide && !failure.details.is_empty() {
        line.push_str(&format!("\n    details: {}", failure.details.trim()));
    }
    line
}

/// Container ids as `crictl` shows them: the first 13 characters.
fn short(id: &str) -> String {
    id.chars().take(13).collect()
}

fn join_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

fn dash_if_empty(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::parse_pod;
    use crate::names::{ContainerId, IfName};

    fn view() -> ContainerView {
        ContainerView {
            container_id: ContainerId::parse("0123456789abcdef0123").unwrap(),
            pod: Some(parse_pod("tenant/web").unwrap()),
            uid: Some("uid-1".into()),
            netns: "/run/netns/web".into(),
            ifname: Some(IfName::parse("eth0").unwrap()),
            state: ContainerState::Attached,
            adopted_from: None,
            attachments: vec![
                AttachmentView {
                    network: "cluster".into(),
                    interface: IfName::parse("eth0").unwrap(),
                    ips: vec!["198.18.0.2/24".into()],
                    mac: Some("02:00:00:00:00:01".into()),
                    plugins: vec!["bridge".into(), "portmap".into()],
                    cni_version: "1.0.0".into(),
                    default: true,
                    attached: true,
                    attached_at: Some(Timestamp::from_millis(60_000)),
                    took_us: Some(3_250),
                    pending: None,
                },
                AttachmentView {
                    network: "tenant/east".into(),
                    interface: IfName::parse("net1").unwrap(),
                    ips: vec![],
                    mac: None,
                    plugins: vec!["macvlan".into()],
                    cni_version: "0.3.1".into(),
                    default: false,
                    attached: false,
                    attached_at: None,
                    took_us: None,
                    pending: None,
                },
            ],
            last_error: None,
        }
    }

    #[test]
    fn a_container_prints_as_a_header_and_an_aligned_table() {
        let report = Report {
            containers: vec![view()],
            problems: vec![],
        };
        let text = text(&report, Detail::Normal, Timestamp::from_millis(120_000));
        let expected = "\
tenant/web  uid uid-1  container 0123456789abc  netns /run/netns/web
  INTERFACE  NETWORK      IPS            MAC                PLUGINS         ATTACHED                  TOOK
  eth0       cluster      198.18.0.2/24  02:00:00:00:00:01  bridge,portmap  1970-01-01T00:01:00.000Z  3.2ms
  net1       tenant/east  -              -                  macvlan         -                         -
  last error: none

";
        assert_eq!(text, expected);
    }

    #[test]
    fn wide_adds_ids_versions_states_ages_and_error_details() {
        let mut container = view();
        container.last_error = Some(Failure {
            at: Timestamp::from_millis(90_000),
            container_id: container.container_id.clone(),
            pod: container.pod.clone(),
            uid: None,
            netns: String::new(),
            code: 7,
            message: "network tenant/east (ADD on net1): plugin macvlan: failed".into(),
            details: "master uplink9 not found\n".into(),
        });
        let report = Report {
            containers: vec![container],
            problems: vec!["record /r/x.json is unreadable".into()],
        };
        let text = text(&report, Detail::Wide, Timestamp::from_millis(120_000));
        assert!(text.contains("container 0123456789abcdef0123"), "{text}");
        assert!(
            text.contains("state attached  runtime interface eth0"),
            "{text}"
        );
        assert!(text.contains("(1m00s ago)"), "{text}");
        assert!(text.contains("1.0.0  yes      attached"), "{text}");
        assert!(text.contains("intended"), "{text}");
        assert!(
            text.contains("last error: 1970-01-01T00:01:30.000Z ADD of container 0123456789abcdef0123 failed (CNI error 7): network tenant/east"),
            "{text}"
        );
        assert!(
            text.contains("    details: master uplink9 not found\n"),
            "{text}"
        );
        assert!(
            text.ends_with("problem: record /r/x.json is unreadable\n"),
            "{text}"
        );

        let mut leaving = view();
        leaving.attachments[1].attached = true;
        leaving.attachments[1].pending = Some(Pending::Detach);
        let report = Report {
            containers: vec![leaving],
            problems: vec![],
        };
        let leaving = super::text(&report, Detail::Wide, Timestamp::from_millis(120_000));
        assert!(leaving.contains("0.3.1  no       detaching"), "{leaving}");
    }

    #[test]
    fn an_empty_report_says_so() {
        assert_eq!(
            text(
                &Report::default(),
                Detail::Normal,
                Timestamp::from_millis(0)
            ),
            "no containers\n"
        );
    }
}
