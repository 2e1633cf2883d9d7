"""What ``/metrics`` exports, with prometheus-client, in Prometheus's naming
(seconds, bytes, ratios, ``_total``).

Each API process exports its own: the requests it answered, and the tasks it
queued, timed when their results come back (queue time, run time, request
time, batch size), so that summing over processes counts every task once.
The cluster's state (queues, workers, GPUs from the heartbeats, delivery
counters kept in Redis) is the same from every process: take it from any one
(``max``/``min`` over instances, never ``sum``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from turnout.core.messages import ResultDoc
from turnout.core.routes import RouteTable
from turnout.router.batching import Batcher
from turnout.router.live import LiveView

# Seconds: from a sub-millisecond scikit-learn call to a long GPU batch.
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 120.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
MIB = 1024 * 1024
# A `_created` gauge beside every counter doubles the page for nothing a
# dashboard reads.
disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "turnout_predict_requests", "Predict requests by model and HTTP status.",
            ["model", "code"], registry=r)
        self.version_requests = Counter(
            "turnout_version_requests",
            "Predict requests by model, version served and HTTP status (version empty for an "
            "error before one was chosen).", ["model", "version", "code"], registry=r)
        self.errors = Counter(
            "turnout_errors", "Error answers by HTTP status and Turnout error (QueueFull, "
            "NoCapacity, RateLimited, Unauthorized, ...), every endpoint.",
            ["code", "error"], registry=r)
        self.fallbacks = Counter(
            "turnout_fallback", "Jobs sent to a route's fallback queue.", ["model"], registry=r)
        self.queue_time = Histogram(
            "turnout_queue_time_seconds", "Time from submission to a worker starting the task.",
            ["model", "version"], buckets=TIME_BUCKETS, registry=r)
        self.run_time = Histogram(
            "turnout_run_time_seconds", "Time the model ran for a request's task.",
            ["model", "version"], buckets=TIME_BUCKETS, registry=r)
        self.request_time = Histogram(
            "turnout_request_duration_seconds",
            "Time from submission to result, every request this process queued.",
            ["model", "version"], buckets=TIME_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "turnout_batch_size", "Requests per task (micro-batching).", ["model"],
            buckets=SIZE_BUCKETS, registry=r)
        self.batch_rows = Histogram(
            "turnout_batch_rows", "Rows per task (one forward pass).", ["model"],
            buckets=SIZE_BUCKETS, registry=r)
        self.task_outcomes = Counter(
            "turnout_tasks", "Tasks this process queued, by how they ended.",
            ["model", "status"], registry=r)
        self.oom_splits = Counter(
            "turnout_oom_splits", "Times a batch was split in halves after running out of "
            "device memory.", ["model"], registry=r)

    def request(self, model: str, version: str, code: int) -> None:
        self.requests.labels(model, str(code)).inc()
        self.version_requests.labels(model, version, str(code)).inc()

    def error(self, code: int, error: str) -> None:
        self.errors.labels(str(code), error).inc()

    def observe_result(self, model: str, version: str, meta: ResultDoc) -> None:
        """A task this process queued has finished: time each of its requests."""
        self.task_outcomes.labels(model, meta.status).inc()
        if meta.status != "SUCCESS" or not isinstance(meta.result, dict):
            return
        result = meta.task_result()
        version = result.version or version
        self.batch_size.labels(model).observe(len(result.outcomes))
        rows = 0
        for entry in result.outcomes:
            rows += len(entry.predictions or ())
            timings = entry.timings_ms
            if timings:
                self.queue_time.labels(model, version).observe(timings.get("queued", 0) / 1000)
                self.run_time.labels(model, version).observe(timings.get("run", 0) / 1000)
                self.request_time.labels(model, version).observe(timings.get("total", 0) / 1000)
            if entry.oom_splits:
                self.oom_splits.labels(model).inc(entry.oom_splits)
        self.batch_rows.labels(model).observe(rows)

    def watch_cluster(
        self, live: LiveView, batcher: Batcher, table: Callable[[], RouteTable]
    ) -> None:
        self.registry.register(ClusterCollector(live, batcher, table))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ClusterCollector(Collector):
    """Gauges read at scrape time from the live view: queues, workers, GPUs,
    routes, and the delivery counters every worker keeps in Redis."""

    def __init__(
        self, live: LiveView, batcher: Batcher, table: Callable[[], RouteTable]
    ) -> None:
        self.live = live
        self.batcher = batcher
        # A callable: the route table in force changes on reload.
        self.table = table

    def collect(self) -> Iterator[Metric]:
        live = self.live
        table = self.table()
        yield _gauge("turnout_broker_up", "Whether the last look at Redis succeeded.", [],
                     [([], int(live.broker_ok))])
        queues = live.known_queues()
        yield _gauge("turnout_queue_depth", "Jobs waiting per queue.", ["queue"],
                     [([q], live.state.depths.get(q, 0)) for q in queues])
        yield _gauge("turnout_queue_workers", "Live workers consuming each queue.", ["queue"],
                     [([q], len(live.state.consumers(q))) for q in queues])
        yield _gauge("turnout_queue_drain_per_second",
                     "Tasks a second each queue drains while it has work waiting (0: not known).",
                     ["queue"], [([q], live.state.drain_per_s.get(q, 0.0)) for q in queues])
        yield _gauge("turnout_queue_estimated_wait_seconds",
                     "How long a job queued now in the lowest lane would wait.",
                     ["queue"], [([q], w) for q in queues
                                 if (w := live.state.estimated_wait_s(q, "low")) is not None])
        yield _gauge("turnout_queue_lane_depth", "Jobs waiting per queue and lane.",
                     ["queue", "lane"], [([q, lane], n) for q in queues
                                         for lane, n in (live.lane_depths.get(q) or {}).items()])
        yield _gauge("turnout_queue_lane_drain_per_second",
                     "Tasks a second each lane drains while it has work waiting.",
                     ["queue", "lane"], [([q, lane], r) for q in queues
                                         for lane, r in (live.state.lane_drain_per_s.get(q) or {}).items()])
        yield _gauge("turnout_queue_max_depth", "Waiting jobs at which new work gets 429.",
                     ["queue"], [([q], table.queue_config(q).max_depth) for q in queues])
        yield from self._routes(table)
        yield from self._workers()
        batches = CounterMetricFamily("turnout_batches", "Tasks sent per model (each a batch "
                                      "of requests).", labels=["model"])
        for model, n in sorted(self.batcher.sent_batches.items()):
            batches.add_metric([model], n)
        yield batches
        jobs = CounterMetricFamily("turnout_batched_requests", "Requests sent in those tasks, "
                                   "per model.", labels=["model"])
        for model, n in sorted(self.batcher.sent_jobs.items()):
            jobs.add_metric([model], n)
        yield jobs
        stats = live.delivery_stats
        redelivered = CounterMetricFamily(
            "turnout_redeliveries", "Jobs given back for another delivery (their worker died, "
            "was declared dead, or shut down holding them), cluster-wide.", labels=["why"])
        events = CounterMetricFamily(
            "turnout_delivery_events", "Delivery safety events, cluster-wide: acks refused, "
            "fenced starts and results, duplicate results discarded.", labels=["event"])
        for name, n in sorted(stats.items()):
            if name.startswith("given_back_"):
                redelivered.add_metric([name.removeprefix("given_back_")], n)
            else:
                events.add_metric([name], n)
        yield redelivered
        yield events

    def _routes(self, table: RouteTable) -> Iterator[Metric]:
        state = self.live.state
        serving = []
        limits = []
        for route in table.routes.values():
            servers = {w.name for q in route.queues for w in state.servers(q, route.name)}
            serving.append(([route.name, route.queue], len(servers)))
            limits.append(([route.name], route.time_limit_s))
        yield _gauge("turnout_model_live_workers", "Live workers that serve the model on its "
                     "queue or fallback (0: requests get 503).", ["model", "queue"], serving)
        yield _gauge("turnout_model_time_limit_seconds", "The route's time limit.", ["model"],
                     limits)

    def _workers(self) -> Iterator[Metric]:
        up, busy, slots, loaded, refused = [], [], [], [], []
        gpu_util, mem_used, mem_total, temp, power = [], [], [], [], []
        for w in self.live.workers:
            name = w.name
            up.append(([name, w.kind, w.device, w.host], 1))
            busy.append(([name], w.busy))
            slots.append(([name], w.concurrency))
            loaded.append(([name], len(w.models)))
            for model in w.refused:
                refused.append(([name, model], 1))
            gpu = w.gpu
            if gpu is not None:
                index = gpu.index if gpu.index is not None else w.gpu_index
                labels = [name, w.host, str(index), gpu.uuid or ""]
                if gpu.utilization_pct is not None:
                    gpu_util.append((labels, gpu.utilization_pct / 100))
                if gpu.memory_used_mb is not None:
                    mem_used.append((labels, gpu.memory_used_mb * MIB))
                if gpu.memory_total_mb is not None:
                    mem_total.append((labels, gpu.memory_total_mb * MIB))
                if gpu.temperature_c is not None:
                    temp.append((labels, gpu.temperature_c))
                if gpu.power_w is not None:
                    power.append((labels, gpu.power_w))
        yield _gauge("turnout_worker_up", "A live worker (from its heartbeat).",
                     ["worker", "kind", "device", "host"], up)
        yield _gauge("turnout_worker_busy_slots", "Jobs the worker is running now.", ["worker"],
                     busy)
        yield _gauge("turnout_worker_slots", "Jobs the worker runs at once (its concurrency).",
                     ["worker"], slots)
        yield _gauge("turnout_worker_models_loaded", "Models the worker has loaded.", ["worker"],
                     loaded)
        yield _gauge("turnout_worker_refused_models", "1 for each model a worker refused to load "
                     "(it does not fit).", ["worker", "model"], refused)
        gpu_labels = ["worker", "host", "gpu", "uuid"]
        yield _gauge("turnout_gpu_utilization_ratio", "GPU busy share over NVML's last sample "
                     "period (0-1).", gpu_labels, gpu_util)
        yield _gauge("turnout_gpu_memory_used_bytes", "GPU memory in use.", gpu_labels, mem_used)
        yield _gauge("turnout_gpu_memory_total_bytes", "GPU memory in all.", gpu_labels,
                     mem_total)
        yield _gauge("turnout_gpu_temperature_celsius", "GPU temperature.", gpu_labels, temp)
        yield _gauge("turnout_gpu_power_watts", "GPU power draw.", gpu_labels, power)


def _gauge(
    name: str, doc: str, labels: list[str], samples: Sequence[tuple[list[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family
