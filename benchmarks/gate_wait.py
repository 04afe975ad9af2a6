"""What waiting for the host's gate costs the node: CPU of N processes waiting on it.

A fan-out puts dozens of tasks on one node next to (or on the same cores as) the
tracking server. While the gate's slots are all held, the tasks wait for one. This
script holds every slot of a gate of its own (``senders`` holder processes), starts N
waiter processes that each wait ``--wait`` seconds for a slot, and reports the CPU
time the waiters spent waiting (each measures its own ``time.process_time()``), as
cores (CPU seconds per second of wall time):

- ``room``: the gate as shipped: one waiter per share looks for a free slot every
  10-50 ms, the others look for its waiting room every 100-300 ms;
- ``poll``: the baseline, every waiter looking for a free slot every 10-50 ms (the
  gate before the waiting room).

No server is involved::

    python benchmarks/gate_wait.py --waiters 56 --wait 8
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid

HOLDER = """
import sys, time
from michelangelo_mlflow._logging.gate import SendGate
with SendGate(sys.argv[1], int(sys.argv[2])).slot(wait=5.0) as held:
    print("held" if held else "none", flush=True)
    sys.stdin.readline()
"""

WAITER = """
import sys, time
from michelangelo_mlflow._logging import gate
if sys.argv[4] == "poll":
    gate._QUEUE = gate._POLL  # every waiter looks for slots as often as the room's holder
g = gate.SendGate(sys.argv[1], int(sys.argv[2]))
print("ready", flush=True)
sys.stdin.readline()
start = time.process_time()
with g.slot(wait=float(sys.argv[3])) as held:
    pass
print(time.process_time() - start, held, flush=True)
"""


def measure(variant: str, waiters: int, senders: int, wait: float) -> tuple[float, int]:
    """CPU seconds the waiters spent, and how many got a slot (none should)."""
    url = f"http://gate-wait-{uuid.uuid4().hex}:5000"  # a gate of this run's own
    py = sys.executable
    holders = [
        subprocess.Popen(
            [py, "-c", HOLDER, url, str(senders)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(senders)
    ]
    try:
        for holder in holders:
            assert holder.stdout is not None
            if holder.stdout.readline().strip() != "held":
                raise SystemExit("a holder got no slot: is the gate's directory writable?")
        procs = [
            subprocess.Popen(
                [py, "-c", WAITER, url, str(senders), str(wait), variant],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(waiters)
        ]
        for proc in procs:  # imports are not measured: go once all are ready
            assert proc.stdout is not None
            proc.stdout.readline()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate()[0].split() for proc in procs]
    finally:
        for holder in holders:
            holder.communicate("done\n")
    cpu = sum(float(out[0]) for out in outputs)
    got = sum(out[1] == "True" for out in outputs)
    return cpu, got


def main() -> None:
    """Measure both variants, alternating, and print one line each and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, default=56, help="processes waiting")
    parser.add_argument("--senders", type=int, default=8, help="slots, all held")
    parser.add_argument("--wait", type=float, default=8.0, help="seconds each waits")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant")
    args = parser.parse_args()
    found: dict[str, list[float]] = {"room": [], "poll": []}
    for _ in range(args.repeat):
        for variant in found:
            started = time.monotonic()
            cpu, got = measure(variant, args.waiters, args.senders, args.wait)
            if got:
                raise SystemExit(f"{got} waiters got a slot that was held: the gate is broken")
            found[variant].append(cpu / args.wait)
            print(
                f"{variant}: {args.waiters} waiters for {args.wait:g} s: {cpu:.2f} CPU s "
                f"({cpu / args.wait:.3f} cores; run took {time.monotonic() - started:.1f} s)",
                flush=True,
            )
    room, poll = (statistics.median(found[v]) for v in ("room", "poll"))
    print(
        f"median cores while waiting: room {room:.3f}, poll {poll:.3f} "
        f"(room/poll = {room / poll:.2f}x)"
    )


if __name__ == "__main__":
    main()
