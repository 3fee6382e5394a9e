"""A stand-in for ``python -m vllm.entrypoints.openai.api_server`` (tests of --engine-launch only).

It parses the flags adaptermath passes, serves :class:`fake_vllm.FakeVllm` with the echo backend
on the given loopback port, and, like vLLM's engine core, starts a child process. Environment:

* ``FAKE_VLLM_RECORD``: a file where it writes its argv, its pid, its child's pid and the value of
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` (JSON), so a test can check that nothing outlives the run;
* ``FAKE_VLLM_EXIT``: exit at once with this status after printing a line (a failed start);
* ``FAKE_VLLM_READY_DELAY``: seconds to wait before listening.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--max-lora-rank", type=int, default=16)
    args, _ = parser.parse_known_args()
    if os.environ.get("FAKE_VLLM_EXIT"):
        print("ValueError: fake failure while loading the model", flush=True)
        sys.exit(int(os.environ["FAKE_VLLM_EXIT"]))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    record = os.environ.get("FAKE_VLLM_RECORD")
    if record:
        with open(record, "w", encoding="utf-8") as handle:
            json.dump({"argv": sys.argv[1:], "pid": os.getpid(), "child": child.pid,
                       "runtime_updating": os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING")}, handle)
    time.sleep(float(os.environ.get("FAKE_VLLM_READY_DELAY", "0")))
    from fake_vllm import FakeVllm

    server = FakeVllm(args.model, enable_lora=args.enable_lora, max_lora_rank=args.max_lora_rank, port=args.port)
    # SIGTERM stops serving; the child is left for the process-group kill to take down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("INFO: Application startup complete.", flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
