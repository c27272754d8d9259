"""The Python client's warm no-op round trip: ``run`` + ``get_result`` of a Python function that
returns ``None``, sequentially, after a warm-up; prints one JSON line with p50 and p99 (ms).

Needs FABRIC_HTTP_ADDRESS, FABRIC_TOKEN and FABRIC_ENDPOINT_ID (an endpoint that runs Python).
``npm run bench -- python_client`` starts a fabric and runs this (bench/python-client.ts).

    python3 clients/python/bench_roundtrip.py [--calls 200] [--warmup 50]
"""

import argparse
import json
import os
import platform
import sys
import time

try:
    import fabric_client  # installed
except ImportError:  # from the source tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))
    import fabric_client


def noop():
    return None


def percentile(values, p):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, -(-p * len(ordered) // 100) - 1))
    return ordered[index]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50)
    opts = parser.parse_args()
    with fabric_client.Client() as client:
        fid = client.register_function(noop)
        for _ in range(opts.warmup):
            client.get_result(client.run(fid), timeout=60)
        samples = []
        for _ in range(opts.calls):
            started = time.perf_counter()
            client.get_result(client.run(fid), timeout=60)
            samples.append((time.perf_counter() - started) * 1000)
    print(
        json.dumps(
            {
                "p50_ms": round(percentile(samples, 50), 2),
                "p99_ms": round(percentile(samples, 99), 2),
                "calls": opts.calls,
                "warmup": opts.warmup,
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
