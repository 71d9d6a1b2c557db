"""What the benchmark scripts share: command-line basics, the table header, the output."""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch


def base_parser(doc: str | None, settings: list[str]) -> argparse.ArgumentParser:
    """``--device``, ``--setting``, ``--threads`` and ``--out``; scripts add their own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--setting", choices=[*settings, "all"], default=settings[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write the Markdown table here")
    return parser


CLOCKS = {
    # wall time: what a user waits for; CPU time of the process: immune to other processes
    # sharing the cores (a loaded shared machine), and equal to wall time on an idle one
    "wall": time.perf_counter,
    "cpu": time.process_time,
}


def default_clock(device: torch.device) -> str:
    """``cpu`` (process CPU time) on a CPU device, ``wall`` on an accelerator."""
    return "cpu" if device.type == "cpu" else "wall"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def apply_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(device: torch.device, measured: str, per: str) -> list[str]:
    """The table's first lines: device, versions, threads, what the times are, the command."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return [
        f"Device: {device.type} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"times are {measured} per {per}.",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
    ]


def emit(table: str, out: str | None) -> None:
    """Print the table and write it to ``out`` if given."""
    print(table)
    if out:
        with open(out, "w") as handle:
            handle.write(table)
