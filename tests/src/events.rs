//! Kubernetes Events about an object, as the controller reports them.
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

use crate::wait::{WaitError, wait_for};

/// Events about object `name` in `ns`: (type, reason, note).
pub async fn events(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Vec<(String, String, String)>, kube::Error> {
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect())
}

/// Waits for an Event `reason` about `ns/name`; returns its (type, note).
pub async fn wait_event(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> Result<(String, String), WaitError> {
    wait_for(
        format!("Event {reason} on {ns}/{name}"),
        timeout,
        || async {
            let all = events(client, ns, name).await.map_err(|e| e.to_string())?;
            all.iter()
                .find(|(_, r, _)| r == reason)
                .map(|(t, _, note)| (t.clone(), note.clone()))
                .ok_or_else(|| format!("events so far: {all:?}"))
        },
    )
    .await
}
