"""A few Prometheus series, rendered by hand (the text format is simple and a
client library would be one more dependency for four lines of output)."""

from __future__ import annotations

from collections import Counter

from router.batching import Batcher
from router.live import LiveView

# Request time buckets (seconds), for comparing a canary with the default.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        # (model, version, status code); version "" when none was chosen (an
        # error first). The per-model series is summed from it.
        self.version_requests: Counter[tuple[str, str, int]] = Counter()
        self.fallbacks: Counter[str] = Counter()  # model
        # (model, version) -> per-bucket counts, sum, count
        self.latency: dict[tuple[str, str], tuple[list[int], list[float]]] = {}

    def observe_latency(self, model: str, version: str, seconds: float) -> None:
        counts, total = self.latency.setdefault((model, version), ([0] * len(BUCKETS), [0.0, 0.0]))
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[i] += 1
        total[0] += seconds
        total[1] += 1

    def render(self, live: LiveView, batcher: Batcher) -> str:
        out = [
            "# HELP turnout_predict_requests_total Predict requests by model and HTTP status.",
            "# TYPE turnout_predict_requests_total counter",
        ]
        by_model: Counter[tuple[str, int]] = Counter()
        for (model, _, code), n in self.version_requests.items():
            by_model[(model, code)] += n
        for (model, code), n in sorted(by_model.items()):
            out.append(f'turnout_predict_requests_total{{model="{model}",code="{code}"}} {n}')
        out += [
            ("# HELP turnout_version_requests_total Predict requests by model, version served "
            "and HTTP status."),
            "# TYPE turnout_version_requests_total counter",
        ]
        for (model, version, code), n in sorted(self.version_requests.items()):
            out.append(f'turnout_version_requests_total{{model="{model}",version="{version}",'
                       f'code="{code}"}} {n}')
        out += [
            ("# HELP turnout_request_duration_seconds Time from submission to result, for "
            "requests answered within their wait, by model and version."),
            "# TYPE turnout_request_duration_seconds histogram",
        ]
        for (model, version), (counts, (total, count)) in sorted(self.latency.items()):
            labels = f'model="{model}",version="{version}"'
            for bound, n in zip(BUCKETS, counts, strict=True):
                out.append(f'turnout_request_duration_seconds_bucket{{{labels},le="{bound}"}} {n}')
            out.append(f'turnout_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(count)}')
            out.append(f"turnout_request_duration_seconds_sum{{{labels}}} {total}")
            out.append(f"turnout_request_duration_seconds_count{{{labels}}} {int(count)}")
        out += [
            "# HELP turnout_fallback_total Jobs sent to a route's fallback queue.",
            "# TYPE turnout_fallback_total counter",
        ]
        for model, n in sorted(self.fallbacks.items()):
            out.append(f'turnout_fallback_total{{model="{model}"}} {n}')
        out += [
            "# HELP turnout_queue_depth Jobs waiting per queue.",
            "# TYPE turnout_queue_depth gauge",
        ]
        for queue, depth in sorted(live.state.depths.items()):
            out.append(f'turnout_queue_depth{{queue="{queue}"}} {depth}')
        out += [
            "# HELP turnout_queue_workers Live workers consuming each queue.",
            "# TYPE turnout_queue_workers gauge",
        ]
        for queue in live.known_queues():
            out.append(f'turnout_queue_workers{{queue="{queue}"}} {len(live.state.consumers(queue))}')
        out += [
            "# HELP turnout_batches_total Tasks sent per model (each a batch of requests).",
            "# TYPE turnout_batches_total counter",
        ]
        for model, n in sorted(batcher.sent_batches.items()):
            out.append(f'turnout_batches_total{{model="{model}"}} {n}')
        out += [
            "# HELP turnout_batched_requests_total Requests sent in those tasks, per model.",
            "# TYPE turnout_batched_requests_total counter",
        ]
        for model, n in sorted(batcher.sent_jobs.items()):
            out.append(f'turnout_batched_requests_total{{model="{model}"}} {n}')
        out += [
            "# HELP turnout_broker_up Whether the last look at Redis succeeded.",
            "# TYPE turnout_broker_up gauge",
            f"turnout_broker_up {int(live.broker_ok)}",
        ]
        return "\n".join(out) + "\n"
