//! All of plexusd's own netlink work: moving the pod's default route to the attachment that
//! asked for it (NPWG §4.1.2.1.9). Delegates do everything else.
//!
//! The work runs on a dedicated OS thread that enters the pod's network namespace, never on a
//! tokio worker, because a namespace switch sticks to the thread that made it.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use futures::TryStreamExt;
use nix::sched::{CloneFlags, setns};
use rtnetlink::{Handle, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot enter network namespace {netns}: {reason}")]
    Namespace { netns: String, reason: String },
    #[error("interface {0} does not exist in the pod")]
    NoSuchInterface(String),
    #[error("netlink: {0}")]
    Netlink(String),
}

fn netlink_err(e: impl std::fmt::Display) -> NetlinkError {
    NetlinkError::Netlink(e.to_string())
}

/// Makes `gateways` the pod's default routes via `ifname`: every other default route of the
/// same address families is removed first, and later gateways get higher metrics, so their
/// order in the selection is their preference.
pub async fn move_default_route(
    netns: &str,
    ifname: &str,
    gateways: Vec<IpAddr>,
) -> Result<(), NetlinkError> {
    let ifname = ifname.to_owned();
    in_netns(netns, move |handle| async move {
        let index = link_index(&handle, &ifname).await?;
        for family_v4 in [true, false] {
            if gateways.iter().any(|gw| gw.is_ipv4() == family_v4) {
                delete_default_routes(&handle, family_v4).await?;
            }
        }
        for (metric, gateway) in (0u32..).zip(gateways) {
            let any: IpAddr = if gateway.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            let route = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(any, 0)
                .map_err(netlink_err)?
                .gateway(gateway)
                .map_err(netlink_err)?
                .output_interface(index)
                .priority(metric)
                .build();
            handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(netlink_err)?;
        }
        Ok(())
    })
    .await
}

async fn link_index(handle: &Handle, ifname: &str) -> Result<u32, NetlinkError> {
    let mut links = handle.link().get().match_name(ifname.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => {
            Err(NetlinkError::NoSuchInterface(ifname.to_owned()))
        }
        Err(e) => Err(netlink_err(e)),
    }
}

async fn delete_default_routes(handle: &Handle, ipv4: bool) -> Result<(), NetlinkError> {
    let query = if ipv4 {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    };
    let routes: Vec<_> = handle
        .route()
        .get(query)
        .execute()
        .try_collect()
        .await
        .map_err(netlink_err)?;
    for route in routes
        .into_iter()
        .filter(|r| r.header.destination_prefix_length == 0 && r.header.table == 254)
    {
        handle
            .route()
            .del(route)
            .execute()
            .await
            .map_err(netlink_err)?;
    }
    Ok(())
}

/// Runs `work` with a netlink handle whose socket lives in the namespace at `netns`.
async fn in_netns<F, Fut>(netns: &str, work: F) -> Result<(), NetlinkError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), NetlinkError>>,
{
    let path = PathBuf::from(netns);
    let netns_name = netns.to_owned();
    let (done, outcome) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("plexus-netns".into())
        .spawn(move || {
            let _ = done.send(run_in_netns(&path, work));
        })
        .map_err(|e| NetlinkError::Namespace {
            netns: netns_name.clone(),
            reason: e.to_string(),
        })?;
    outcome.await.map_err(|_| NetlinkError::Namespace {
        netns: netns_name,
        reason: "worker thread died".into(),
    })?
}

fn run_in_netns<F, Fut>(path: &std::path::Path, work: F) -> Result<(), NetlinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Result<(), NetlinkError>>,
{
    let namespace_err = |reason: String| NetlinkError::Namespace {
        netns: path.display().to_string(),
        reason,
    };
    let file = File::open(path).map_err(|e| namespace_err(e.to_string()))?;
    // This thread is ours alone and ends after the work, so it never needs to switch back.
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| namespace_err(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| namespace_err(e.to_string()))?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(netlink_err)?;
        tokio::spawn(connection);
        work(handle).await
    })
}
