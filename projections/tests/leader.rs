//! The projector's singleton work runs in exactly one replica at a time (`projections::leader`): a
//! standby takes over within the lease's time to live when the leader dies, and a leader that loses its
//! lease stops working before the new one starts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use projections::leader::lead;
use streams::{Settings, lease::Lease};
use testkit::NatsServer;
use tokio::sync::watch;

/// Counts the replicas working at once; the highest count ever seen stays in `most`.
#[derive(Clone, Default)]
struct Workers {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

/// Decrements the count when the work is dropped (aborted).
struct Working(Workers);

impl Drop for Working {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Workers {
    /// The work of a replica: counts itself while it runs, runs until aborted.
    fn work(
        &self,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + use<> {
        let workers = self.clone();
        move || {
            let workers = workers.clone();
            Box::pin(async move {
                let now = workers.now.fetch_add(1, Ordering::SeqCst) + 1;
                workers.most.fetch_max(now, Ordering::SeqCst);
                let _working = Working(workers);
                std::future::pending::<()>().await;
            })
        }
    }
}

async fn wait_for(leading: &mut watch::Receiver<bool>, wanted: bool, within: Duration) -> bool {
    tokio::time::timeout(within, leading.wait_for(|l| *l == wanted)).await.is_ok()
}

#[tokio::test]
async fn one_replica_works_at_a_time_and_a_standby_takes_over_within_the_lease() {
    let server = NatsServer::start();
    let settings = Settings { lease_ttl: Duration::from_secs(3), ..Settings::default() };
    let topology = settings.apply(&async_nats::jetstream::new(server.connect().await)).await.unwrap();
    let workers = Workers::default();
    let (a_tx, mut a) = watch::channel(false);
    let (b_tx, mut b) = watch::channel(false);
    let first = tokio::spawn(lead(Lease::new(&topology, "projector", "a"), workers.work(), a_tx));
    assert!(wait_for(&mut a, true, Duration::from_secs(10)).await, "the first replica never led");
    let second = tokio::spawn(lead(Lease::new(&topology, "projector", "b"), workers.work(), b_tx));
    // For longer than the lease's time to live the leader keeps it by renewing: the standby never leads
    // (the wait ends at once if it does).
    assert!(
        !wait_for(&mut b, true, Duration::from_secs(4)).await,
        "the standby took over from a live leader"
    );
    assert_eq!(workers.now.load(Ordering::SeqCst), 1);

    // The leader dies without a word (its process is gone: nothing renews, nothing releases).
    first.abort();
    let _ = first.await;
    let died = tokio::time::Instant::now();
    assert!(wait_for(&mut b, true, Duration::from_secs(10)).await, "the standby never took over");
    let took = died.elapsed();
    assert!(
        took <= Duration::from_secs(3) + projections::leader::POLL * 2 + Duration::from_secs(1),
        "took {took:?}"
    );
    assert_eq!(workers.most.load(Ordering::SeqCst), 1, "two replicas worked at once");

    // NATS stops answering (frozen) with a standby waiting: the leader cannot renew, so it stops working
    // on its own before its lease could expire; once NATS is back, the lease expires and one replica,
    // whichever asks first, works again. Never two at once.
    let (c_tx, mut c) = watch::channel(false);
    let third = tokio::spawn(lead(Lease::new(&topology, "projector", "c"), workers.work(), c_tx));
    server.freeze();
    let stopped = wait_for(&mut b, false, Duration::from_millis(2_900)).await;
    server.thaw();
    assert!(stopped, "the leader kept working while it could not renew its lease");
    let led = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::select! {
            _ = b.wait_for(|l| *l) => {}
            _ = c.wait_for(|l| *l) => {}
        }
    })
    .await;
    assert!(led.is_ok(), "nobody led after NATS came back");
    assert_eq!(workers.most.load(Ordering::SeqCst), 1, "two replicas worked at once");
    assert_eq!(workers.now.load(Ordering::SeqCst), 1);
    second.abort();
    third.abort();
}
