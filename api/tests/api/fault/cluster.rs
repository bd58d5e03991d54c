//! Faults on a three-node RabbitMQ cluster: a node killed, a node restarted, a node frozen
//! so publisher confirms never come. `scripts/cluster-test.sh` starts the cluster, points
//! `AMQP_URL` at its three nodes and runs these (ignored otherwise) one at a time; each adds
//! a row to the table it prints (`CLUSTER_REPORT`).

use std::{
    io::Write,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use common::{
    broker::{self, Topology},
    domain::Role,
};
use futures_util::{StreamExt, stream};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use reqwest::StatusCode;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use worker::republish;

use super::{
    assert_confirmed_exactly_once, assert_every_timeline_in_order, deliver, metric_value,
    place_orders, scalar,
    services::{WorkerLog, WorkerProcess, worker_log},
    shop, stats, wait_until_delivered, wait_until_none_pending,
};
use crate::{
    helpers::{TestApp, order_body, wait_until},
    retry_tiers::{confirming_channel, get, publish_command},
};

/// The local cluster of `scripts/cluster.sh`; its nodes are numbered 1 to 3. Every call
/// runs the script as a child process, so the test's runtime keeps serving meanwhile.
struct Cluster;

const CLUSTER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster.sh");

fn check(args: &[&str], output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

impl Cluster {
    async fn run(args: &[&str]) -> String {
        let output = tokio::process::Command::new(CLUSTER_SCRIPT)
            .args(args)
            .output()
            .await
            .expect("scripts/cluster.sh runs");
        check(args, output)
    }

    /// The node leading quorum queue `queue`.
    async fn leader(queue: &str) -> String {
        Self::run(&["leader", queue]).await.trim().to_owned()
    }

    /// The node listening at a `broker_node` address (`amqp://127.0.0.1:PORT/…`).
    fn node_at(address: &str) -> String {
        let port = address
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .expect("address has a port");
        let dir = std::env::var("CLUSTER_DIR").unwrap_or_else(|_| "/tmp/orderflow-cluster".into());
        ["1", "2", "3"]
            .into_iter()
            .find(|node| {
                std::fs::read_to_string(format!("{dir}/c{node}/port"))
                    .is_ok_and(|p| p.trim() == port)
            })
            .unwrap_or_else(|| panic!("no cluster node listens at {address}"))
            .to_owned()
    }

    /// The names of the client connections `node` holds.
    async fn connections(node: &str) -> Vec<String> {
        Self::run(&["connections", node])
            .await
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Takes `node` down with `how` (`kill`, `stop-node` or `freeze`). Bring it back with
    /// [`NodeDown::bring_back`]; dropped, the guard does it anyway (a test that failed first).
    async fn take_down(node: &str, how: &'static str) -> NodeDown {
        let cut = Self::connections(node).await;
        Self::take_down_holding(node, how, cut).await
    }

    /// [`Cluster::take_down`] at once, `cut` being the node's connections listed beforehand:
    /// listing them takes a second or more, too late where the fault must land while work
    /// still flows.
    async fn take_down_holding(node: &str, how: &'static str, cut: Vec<String>) -> NodeDown {
        let at = Instant::now();
        Self::run(&[how, node]).await;
        NodeDown {
            node: node.to_owned(),
            how,
            cut,
            at,
            back: false,
        }
    }
}

/// Worker consumer connections among `connections`.
fn consumers(connections: &[String]) -> usize {
    connections.iter().filter(|name| *name == "worker").count()
}

struct NodeDown {
    node: String,
    how: &'static str,
    /// The connections the node held when it went down.
    cut: Vec<String>,
    /// When it went down.
    at: Instant,
    back: bool,
}

impl NodeDown {
    fn revival(&self) -> [&str; 2] {
        let again = if self.how == "freeze" {
            "thaw"
        } else {
            "start-node"
        };
        [again, &self.node]
    }

    async fn bring_back(mut self) {
        Cluster::run(&self.revival()).await;
        self.back = true;
    }

    /// What was cut, for the table.
    fn describe(&self, fault: &str) -> String {
        format!(
            "{fault} c{}: {} connections cut, {} of them consumers",
            self.node,
            self.cut.len(),
            consumers(&self.cut)
        )
    }
}

impl Drop for NodeDown {
    fn drop(&mut self) {
        if !self.back {
            let args = self.revival();
            let output = std::process::Command::new(CLUSTER_SCRIPT)
                .args(args)
                .output()
                .expect("scripts/cluster.sh runs");
            check(&args, output);
        }
    }
}

/// A count of applied changes taken every 50 ms, to time how long a fault held them up.
struct Progress {
    samples: Arc<Mutex<Vec<(Instant, i64)>>>,
    stop: CancellationToken,
}

impl Progress {
    /// Counts with `sql` until dropped.
    fn watch(pool: &PgPool, sql: &'static str) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (pool, into, until) = (pool.clone(), samples.clone(), stop.clone());
        tokio::spawn(async move {
            while !until.is_cancelled() {
                let count = scalar(&pool, sql).await;
                lock(&into).push((Instant::now(), count));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { samples, stop }
    }

    fn count(&self) -> i64 {
        lock(&self.samples).last().map_or(0, |(_, count)| *count)
    }

    /// How the flow came through `fault`: the longest pause in progress that ended after
    /// it, and how long after the fault progress resumed from that pause.
    fn recovery(&self, fault: Instant) -> Recovery {
        let samples = lock(&self.samples);
        // The moments the count went up, from the last one before the fault on.
        let moves: Vec<Instant> = samples
            .windows(2)
            .filter(|pair| pair[1].1 > pair[0].1)
            .map(|pair| pair[1].0)
            .collect();
        let from = moves.iter().rposition(|at| *at <= fault).unwrap_or(0);
        moves[from..]
            .windows(2)
            .map(|pair| (pair[1] - pair[0], pair[1]))
            .filter(|(_, resumed)| *resumed > fault)
            .max()
            .map(|(pause, resumed)| Recovery {
                pause,
                resumed: resumed - fault,
            })
            .expect("progress resumed after the fault")
    }
}

/// The longest pause in progress across a fault.
struct Recovery {
    pause: Duration,
    /// From the fault to the end of that pause.
    resumed: Duration,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One row of the suite's table.
struct Row {
    scenario: &'static str,
    /// What flowed through the fault.
    work: String,
    faults: String,
    /// What the worker processes saw, when the scenario runs any.
    seen: Option<WorkerLog>,
    recovery: Recovery,
    total: Duration,
}

impl Row {
    /// Prints the row and appends it to `CLUSTER_REPORT`, tab-separated: scenario, work,
    /// faults, redeliveries, duplicates dropped, publishes republished for want of a
    /// confirm (the api's relay), longest pause, recovered after (from the fault), total time.
    fn report(self) {
        let republished = metric_value("orderflow_outbox_unconfirmed_total");
        let (redelivered, duplicates) = self.seen.map_or(("-".into(), "-".into()), |seen| {
            (seen.redelivered.to_string(), seen.duplicates.to_string())
        });
        let line = format!(
            "{}\t{}\t{}\t{redelivered}\t{duplicates}\t{republished}\t{:.1} s\t{:.1} s\t{:.1} s",
            self.scenario,
            self.work,
            self.faults,
            self.recovery.pause.as_secs_f64(),
            self.recovery.resumed.as_secs_f64(),
            self.total.as_secs_f64()
        );
        eprintln!("{line}");
        if let Ok(path) = std::env::var("CLUSTER_REPORT") {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("report file");
            writeln!(file, "{line}").expect("report written");
        }
    }
}

const CONFIRMED: &str = "SELECT count(*) FROM orders WHERE status <> 'pending'";
const VENDOR_CHANGES: &str = "SELECT count(*) FROM order_events
     WHERE kind = 'status_changed' AND to_status <> 'confirmed'";

async fn assert_no_dead_letters(app: &TestApp) {
    assert_eq!(
        stats(app).await["dead_letters"],
        0,
        "nothing was dead-lettered"
    );
}

/// 1,000 orders placed while 2 worker processes confirm them; the node leading the work
/// queue is killed (`kill -9` of its Erlang VM) a third of the way through.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
#[ignore = "needs the local cluster: scripts/cluster-test.sh"]
async fn killing_the_work_queue_leader_loses_no_order(pool: PgPool) {
    const ORDERS: usize = 1000;
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let alice = shop(&app, 5000).await;
    let log = worker_log(&app);
    let mut workers = WorkerProcess::several(2, &app, &pool, &log);
    // Each process picks a node at random: restart workers until one consumes through the
    // leader's node, so the kill also cuts a consumer holding unacknowledged messages.
    let leader = Cluster::leader(&app.settings().broker.queue).await;
    for attempt in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if consumers(&Cluster::connections(&leader).await) > 0 {
            break;
        }
        assert!(attempt < 19, "no worker connected through node c{leader}");
        let worker = workers.remove(0);
        worker.terminate().await;
        workers.push(WorkerProcess::start(&app, &pool, &log));
    }
    let progress = Progress::watch(&pool, CONFIRMED);
    let started = Instant::now();

    let killing = async {
        // Looked at before the wait, each `rabbitmqctl` call taking a second or more: the
        // kill lands at the third, while most orders are still to come.
        assert_eq!(Cluster::leader(&app.settings().broker.queue).await, leader);
        let cut = Cluster::connections(&leader).await;
        wait_until(
            "a third of the orders are confirmed",
            Duration::from_secs(60),
            || async { progress.count() >= (ORDERS / 3) as i64 },
        )
        .await;
        let down = Cluster::take_down_holding(&leader, "kill", cut).await;
        assert!(
            progress.count() < ORDERS as i64,
            "the kill landed while orders were still being confirmed"
        );
        (down.at, down)
    };
    let (ids, (killed_at, down)) = tokio::join!(place_orders(&app, &alice, ORDERS, 16), killing);
    assert_eq!(ids.len(), ORDERS);
    wait_until_none_pending(&pool, Duration::from_secs(120)).await;
    let total = started.elapsed();
    let recovery = progress.recovery(killed_at);
    let faults = down.describe("kill -9 of the work queue's leader");
    down.bring_back().await;

    assert_confirmed_exactly_once(&app, &pool, ORDERS, 5000).await;
    assert_no_dead_letters(&app).await;
    assert!(
        recovery.resumed < Duration::from_secs(10),
        "confirmations resumed {:?} after the kill",
        recovery.resumed
    );
    Row {
        scenario: "leader killed",
        work: format!("{ORDERS} orders"),
        faults,
        seen: Some(WorkerLog::read(&log)),
        recovery,
        total,
    }
    .report();
    let _ = std::fs::remove_file(&log);
}

/// processing → shipped → delivered for 300 orders, paced over about 45 s, while the node
/// leading the work queue is stopped and started again (which itself can take 15 s and more
/// on a loaded machine: the flow must outlast it).
#[sqlx::test(migrator = "common::db::MIGRATOR")]
#[ignore = "needs the local cluster: scripts/cluster-test.sh"]
async fn a_node_restarted_while_status_changes_flow_keeps_every_timeline_in_order(pool: PgPool) {
    const ORDERS: usize = 300;
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let vendor = app.user(Role::Vendor, "boss").await;
    let alice = shop(&app, 1000).await;
    let log = worker_log(&app);
    let _workers = WorkerProcess::several(2, &app, &pool, &log);
    let ids = place_orders(&app, &alice, ORDERS, 16).await;
    wait_until_none_pending(&pool, Duration::from_secs(60)).await;

    let progress = Progress::watch(&pool, VENDOR_CHANGES);
    let started = Instant::now();
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let changing = stream::iter(&ids)
        .enumerate()
        .for_each_concurrent(8, |(n, id)| {
            let (app, vendor, sent) = (&app, &vendor, &sent);
            async move {
                // One order's changes every 150 ms: the flow lasts about 45 s.
                tokio::time::sleep_until((started + Duration::from_millis(150 * n as u64)).into())
                    .await;
                deliver(app, vendor, id).await;
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    let restarting = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let leader = Cluster::leader(&app.settings().broker.queue).await;
        let down = Cluster::take_down(&leader, "stop-node").await;
        let stopped_at = down.at;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let faults = down.describe("stop and start of the work queue's leader");
        down.bring_back().await;
        let sent_by_then = sent.load(std::sync::atomic::Ordering::SeqCst);
        (faults, stopped_at, sent_by_then)
    };
    let ((), (faults, stopped_at, sent_by_restart)) = tokio::join!(changing, restarting);
    assert!(
        sent_by_restart < ORDERS,
        "the node was back while changes still flowed ({sent_by_restart} of {ORDERS} orders sent)"
    );
    wait_until_delivered(&pool, Duration::from_secs(120)).await;
    let total = started.elapsed();

    assert_every_timeline_in_order(&pool).await;
    assert_no_dead_letters(&app).await;
    assert_eq!(scalar(&pool, VENDOR_CHANGES).await, 3 * ORDERS as i64);
    let recovery = progress.recovery(stopped_at);
    assert!(
        recovery.resumed < Duration::from_secs(10),
        "changes resumed {:?} after the stop",
        recovery.resumed
    );
    Row {
        scenario: "node restarted",
        work: format!("{ORDERS} orders"),
        faults,
        seen: Some(WorkerLog::read(&log)),
        recovery,
        total,
    }
    .report();
    let _ = std::fs::remove_file(&log);
}

/// Orders placed at a steady pace while the node the api publishes through is frozen
/// (SIGSTOP) for 12 s. Its publisher confirms never come, so after `BROKER_CALL_TIMEOUT`
/// (10 s) the relay treats those publishes as unknown, reconnects to another node and
/// publishes them again; any copy the frozen node delivers once thawed is dropped by the
/// workers' inbox. The flow itself may wait for the thaw: a frozen node still counts as up
/// until `net_ticktime` (60 s) passes, and the quorum queues it is a member of can stop
/// confirming meanwhile (seen with the frozen node leading the work queue and with it only a
/// member; in other runs the flow paused only a second or two).
#[sqlx::test(migrator = "common::db::MIGRATOR")]
#[ignore = "needs the local cluster: scripts/cluster-test.sh"]
async fn publishes_left_unconfirmed_are_republished_without_a_double_effect(pool: PgPool) {
    const ORDERS: usize = 400;
    const FREEZE: Duration = Duration::from_secs(12);
    let app = TestApp::spawn_with_broker(pool.clone()).await;
    let alice = shop(&app, 1000).await;
    let log = worker_log(&app);
    let _workers = WorkerProcess::several(2, &app, &pool, &log);
    let progress = Progress::watch(&pool, CONFIRMED);
    let started = Instant::now();

    // One order every 50 ms: about 20 s of orders.
    let placing = stream::iter(0..ORDERS).for_each_concurrent(8, |n| {
        let (app, alice) = (&app, &alice);
        async move {
            tokio::time::sleep_until((started + Duration::from_millis(50 * n as u64)).into()).await;
            let response = app
                .post(
                    "/api/orders",
                    Some(&alice.token),
                    order_body(&[("BULK", 1)]),
                )
                .await;
            assert_eq!(response.status(), StatusCode::CREATED);
        }
    });
    let freezing = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let address = app.state.broker.node().expect("the relay is connected");
        let node = Cluster::node_at(&address);
        let frozen = Cluster::take_down(&node, "freeze").await;
        let frozen_at = frozen.at;
        tokio::time::sleep(FREEZE).await;
        let faults = frozen.describe("SIGSTOP for 12 s of the api's node");
        frozen.bring_back().await;
        (faults, frozen_at)
    };
    let ((), (faults, frozen_at)) = tokio::join!(placing, freezing);
    wait_until_none_pending(&pool, Duration::from_secs(120)).await;
    let total = started.elapsed();

    assert_confirmed_exactly_once(&app, &pool, ORDERS, 1000).await;
    assert_no_dead_letters(&app).await;
    assert!(
        metric_value("orderflow_outbox_unconfirmed_total") >= 1.0,
        "the relay saw publishes go unconfirmed and sent them again"
    );
    let recovery = progress.recovery(frozen_at);
    assert!(
        recovery.resumed < FREEZE + Duration::from_secs(10),
        "confirmations resumed {:?} after the freeze",
        recovery.resumed
    );
    Row {
        scenario: "node frozen",
        work: format!("{ORDERS} orders"),
        faults,
        seen: Some(WorkerLog::read(&log)),
        recovery,
        total,
    }
    .report();
    let _ = std::fs::remove_file(&log);
}

/// A retry waiting in a delay queue when the node leading that queue (and the work queue)
/// is killed comes back to the work queue all the same, while the node is still down: the
/// delay queues are quorum queues too.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
#[ignore = "needs the local cluster: scripts/cluster-test.sh"]
async fn a_retry_waiting_in_a_delay_queue_survives_losing_its_leader(pool: PgPool) {
    const WAIT: Duration = Duration::from_secs(4);
    let mut app = TestApp::spawn(pool).await;
    app.clean_up_broker_on_drop();
    let settings = app.settings();
    let topology = Topology::new(&settings.broker);
    let started = Instant::now();
    let (connection, channel) = confirming_channel(&settings, &topology).await;
    publish_command(&channel, &topology, b"waiting").await;
    let delivery = get(&channel, &topology.queue).await.expect("the message");
    republish::retry_later(&channel, &topology, &delivery, WAIT)
        .await
        .expect("retry");
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    let due = Instant::now() + WAIT;
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;

    let tier = &topology.retry_tier(WAIT).queue;
    let leader = Cluster::leader(tier).await;
    let down = Cluster::take_down(&leader, "kill").await;
    // Read through a surviving node while the killed one stays down. Until the queue has a
    // new leader, the broker answers a get with an error that closes the connection.
    let (connection, channel, back) = loop {
        assert!(
            down.at.elapsed() < Duration::from_secs(30),
            "the retry never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(connection) = broker::connect(&settings.broker, "cluster-test").await else {
            continue;
        };
        let channel = connection.create_channel().await.expect("channel");
        let got = channel
            .basic_get(
                topology.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await;
        match got {
            Ok(Some(message)) => break (connection, channel, message.delivery),
            Ok(None) => {}
            Err(error) => eprintln!("get failed, trying again: {error}"),
        }
        let _ = connection.close(200, "again".into()).await;
    };
    let arrived = Instant::now();
    assert_eq!(back.data, b"waiting");
    assert_eq!(republish::retries(&back), 1);
    back.acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
    let faults = down.describe("kill -9 of the delay queue's (and work queue's) leader");
    let recovery = Recovery {
        pause: arrived.saturating_duration_since(due),
        resumed: arrived - down.at,
    };
    down.bring_back().await;
    Row {
        scenario: "delay queue leader killed",
        work: format!("1 retry waiting {} s", WAIT.as_secs()),
        faults,
        seen: None,
        recovery,
        total: started.elapsed(),
    }
    .report();
}
