use tokio::sync::watch;

/// A shutdown signal that many tasks can wait on. Servers and consumer loops take
/// one as an argument, so tests can stop them without signals.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending half: `trigger` stops every holder of a [`Shutdown`].
pub struct ShutdownTrigger(watch::Sender<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown has been triggered (or the trigger dropped).
    pub async fn wait(mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// A shutdown that fires with this one, or by its own trigger: a binary
    /// whose main loop ends stops its other servers (the ops endpoints) with
    /// it, so the process exits instead of living on without its work.
    pub fn linked(&self) -> (ShutdownTrigger, Shutdown) {
        let (trigger, child) = channel();
        let parent = self.clone();
        let forward = trigger.0.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = parent.wait() => { let _ = forward.send(true); }
                _ = forward.closed() => {}
            }
        });
        (trigger, child)
    }
}

/// Ctrl-C or SIGTERM (what Kubernetes sends before killing a pod).
pub async fn os_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_linked_shutdown_fires_with_its_parent_or_by_itself() {
        let (parent_trigger, parent) = channel();
        let (_own, child) = parent.linked();
        assert!(!child.is_triggered());
        parent_trigger.trigger();
        tokio::time::timeout(Duration::from_secs(1), child.wait())
            .await
            .expect("the parent's shutdown reaches the child");

        let (_parent_trigger, parent) = channel();
        let (own, child) = parent.linked();
        own.trigger();
        tokio::time::timeout(Duration::from_secs(1), child.clone().wait())
            .await
            .expect("the child's own trigger stops it");
        assert!(!parent.is_triggered(), "the parent goes on");
    }
}
