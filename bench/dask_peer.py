"""Dask distributed, measured the way bench/core.ts measures the fabric: no-op tasks on a
LocalCluster with as many worker processes as the fabric's endpoint has workers.
Prints one JSON object: p50_ms, p99_ms (sequential round trips) and tasks_per_s (all at once)."""
import json
import statistics
import sys
import time

from dask.distributed import Client, LocalCluster


def noop(i):
    return None


def main():
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    sequential = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
    warmup = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        for i in range(warmup):
            client.submit(noop, i, pure=False).result()
        samples = []
        for i in range(sequential):
            t0 = time.perf_counter()
            client.submit(noop, i, pure=False).result()
            samples.append((time.perf_counter() - t0) * 1000)
        samples.sort()
        t0 = time.perf_counter()
        futures = client.map(noop, range(batch), pure=False)
        client.gather(futures)
        seconds = time.perf_counter() - t0
        print(json.dumps({
            "p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[int(0.99 * len(samples)) - 1], 2),
            "tasks_per_s": round(batch / seconds),
            "throughput_tasks": batch,
            "workers": workers,
        }))


if __name__ == "__main__":
    main()
