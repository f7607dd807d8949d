//! Per-container serialization: operations for one container never overlap (CNI §3
//! Lifecycle; NPWG §7.3), while different containers proceed in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::names::ContainerId;

type Slot = Arc<AsyncMutex<()>>;

#[derive(Default)]
pub struct ContainerLocks {
    slots: Arc<Mutex<HashMap<ContainerId, Slot>>>,
}

/// Held while one container's operation runs; its slot is forgotten once nobody needs it.
pub struct ContainerGuard {
    id: ContainerId,
    slot: Slot,
    guard: Option<OwnedMutexGuard<()>>,
    slots: Arc<Mutex<HashMap<ContainerId, Slot>>>,
}

impl ContainerLocks {
    pub async fn lock(&self, id: &ContainerId) -> ContainerGuard {
        let slot = match self.slots.lock() {
            Ok(mut slots) => Arc::clone(slots.entry(id.clone()).or_default()),
            // A poisoned map only means another thread panicked while inserting; a private
            // slot still serializes nothing, so fall back to one that is at least correct alone.
            Err(_) => Slot::default(),
        };
        let guard = Arc::clone(&slot).lock_owned().await;
        ContainerGuard {
            id: id.clone(),
            slot,
            guard: Some(guard),
            slots: Arc::clone(&self.slots),
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        if let Ok(mut slots) = self.slots.lock() {
            // The map and this guard hold two references; more means someone is waiting.
            if Arc::strong_count(&self.slot) <= 2 {
                slots.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_container_is_serialized_and_its_slot_is_released() {
        let locks = Arc::new(ContainerLocks::default());
        let id = ContainerId::parse("c1").unwrap();
        let first = locks.lock(&id).await;
        let waiter = {
            let (locks, id) = (Arc::clone(&locks), id.clone());
            tokio::spawn(async move { drop(locks.lock(&id).await) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "second lock of the same container did not wait"
        );
        let other = locks.lock(&ContainerId::parse("c2").unwrap()).await;
        drop(other);
        drop(first);
        waiter.await.unwrap();
        assert!(locks.slots.lock().unwrap().is_empty());
    }
}
