"""A stand-in for `nvidia-smi --query-gpu=... -lms N`: prints the real CSV format at the asked period.

Copied into a temp folder as an executable named `nvidia-smi` (see test_smi.py). Environment knobs:
FAKE_SMI_GPUS (count, default 2), FAKE_SMI_POWER (watts, default 71.5; "N/A" prints [N/A]),
FAKE_SMI_EXIT_AFTER (loops, then exit 1 with an error on stderr), FAKE_SMI_FAIL (fail like a
machine without a driver: message on stdout, exit 9).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime

EXPECTED = ["--query-gpu=timestamp,index,power.draw,utilization.gpu", "--format=csv,noheader,nounits", "-lms"]


def main(argv: list[str]) -> int:
    if os.environ.get("FAKE_SMI_FAIL"):
        print(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running."
        )
        return 9
    if argv[:3] != EXPECTED or len(argv) != 4:
        print(f"fake nvidia-smi: unexpected arguments {argv}", file=sys.stderr)
        return 2
    period_s = int(argv[3]) / 1000.0
    gpus = int(os.environ.get("FAKE_SMI_GPUS", "2"))
    power = os.environ.get("FAKE_SMI_POWER", "71.5")
    exit_after = int(os.environ.get("FAKE_SMI_EXIT_AFTER", "0"))
    loops = 0
    next_t = time.monotonic()
    while True:
        stamp = datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        for i in range(gpus):
            p = "[N/A]" if power == "N/A" else f"{float(power) + i:.2f}"
            sys.stdout.write(f"{stamp}, {i}, {p}, {10 * i + 5}\n")
        sys.stdout.flush()
        loops += 1
        if exit_after and loops >= exit_after:
            print("Unable to determine the device handle for GPU 00000000:17:00.0: Unknown Error", file=sys.stderr)
            return 1
        next_t += period_s
        time.sleep(max(0.0, next_t - time.monotonic()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
