"""Context switches of every thread of this process (voluntary plus non-voluntary, from
/proc/self/task/N/status): the wake-ups a hand-off between threads costs. The throughput
clients report them for their timed part, beside the events per second."""
import os


def switches() -> int:
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:  # the thread ended meanwhile
            pass
    return total
