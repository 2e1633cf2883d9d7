"""A few Prometheus series, rendered by hand (the text format is simple and a
client library would be one more dependency for four lines of output)."""

from __future__ import annotations

from collections import Counter

from router.batching import Batcher
from router.live import LiveView


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()  # (model, status code)
        self.fallbacks: Counter[str] = Counter()  # model

    def render(self, live: LiveView, batcher: Batcher) -> str:
        out = [
            "# HELP turnout_predict_requests_total Predict requests by model and HTTP status.",
            "# TYPE turnout_predict_requests_total counter",
        ]
        for (model, code), n in sorted(self.requests.items()):
            out.append(f'turnout_predict_requests_total{{model="{model}",code="{code}"}} {n}')
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
