//! NAD lookups for the pod rules: one GET per NAD at the moment of the review, so a NAD
//! created a second ago counts, with a deadline that keeps the review inside the API server's
//! webhook timeout.

use std::time::Duration;

use futures::future::BoxFuture;
use kube::Api;
use plexus_crds::NetworkAttachmentDefinition;

use crate::checks::{Lookup, NadLookup};
use crate::names::{Namespace, ObjectName};

pub struct KubeNads {
    client: kube::Client,
    deadline: Duration,
}

impl KubeNads {
    pub fn new(client: kube::Client, deadline: Duration) -> Self {
        Self { client, deadline }
    }
}

impl NadLookup for KubeNads {
    fn nad<'a>(&'a self, namespace: &'a Namespace, name: &'a ObjectName) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            let api: Api<NetworkAttachmentDefinition> =
                Api::namespaced(self.client.clone(), namespace.as_str());
            match tokio::time::timeout(self.deadline, api.get_opt(name.as_str())).await {
                Ok(Ok(Some(nad))) => Lookup::Found(nad.into()),
                Ok(Ok(None)) => Lookup::Missing,
                Ok(Err(error)) => Lookup::Unknown(Some(error.to_string())),
                Err(_) => Lookup::Unknown(Some(format!(
                    "the API server did not answer within {} ms",
                    self.deadline.as_millis()
                ))),
            }
        })
    }
}
