"""Load benchmark of a running server: N concurrent clients POST an image to /v1/predict
for T seconds; latency percentiles, throughput and errors (scripts/benchmark_serve.py)."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    clients: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms, np.float64)
        pct = (lambda q: round(float(np.percentile(lat, q)), 1)) if lat.size else (lambda q: None)
        return {
            "clients": self.clients, "seconds": round(self.seconds, 1), "requests": int(lat.size),
            "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "max_ms": round(float(lat.max()), 1) if lat.size else None,
            "throughput_rps": round(lat.size / self.seconds, 1) if self.seconds else 0.0,
            "p95_over_p50": round(pct(95) / pct(50), 2) if lat.size else None,
        }


def run_load(url: str, body: bytes, clients: int = 8, seconds: float = 60.0, path: str = "/v1/predict") -> LoadResult:
    """Each client thread keeps one HTTP/1.1 connection and sends requests back to back."""
    parts = urlsplit(url)
    result = LoadResult(clients, seconds)
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(body))}

    def client():
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                kind = None if response.status == 200 else f"http_{response.status}"
            except Exception as exc:  # noqa: BLE001 - counted, then reconnect
                kind = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                if kind is None:
                    result.latencies_ms.append(elapsed)
                else:
                    result.errors[kind] = result.errors.get(kind, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - begin
    return result
