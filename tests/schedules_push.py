#!/usr/bin/python3
"""schedules_push.py - the long runs of pushes of tests/test_schedules.sh in
one process: each line of a job file is one push of safetensors files
through the Python client (libemad's emad_push, as `emactl push` sends
it): the params file's tensors as params, the buffers file's as buffers,
each in its own dtype (BF16 as BF16) and shape.

    schedules_push.py URL JOBS

JOBS holds one push per line, `MODEL STEP PARAMS [BUFFERS|-] [ignored=N]`:
every push must succeed, apply or ignore every tensor it sends (none
stale, skipped or left waiting), and with ignored=N report exactly N
tensors ignored. Files are read with tests/safetensors_np.py. Exit status
0, or 1 with the failing line on stderr. Environment: PYTHONPATH reaching
client/python and EMAD_LIBRARY (tests/lib.sh's client_env).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import emad  # noqa: E402
import safetensors_np as st  # noqa: E402


def arrays(path):
    """name -> array (BF16 as emad.Typed of its bits) of a safetensors file."""
    tensors, _ = st.load(path)
    return {k: emad.Typed(v.bits, "BF16") if isinstance(v, st.BF16) else v
            for k, v in tensors.items()}


def main(url, jobs):
    scale = float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE") or 1)
    pushes = 0
    with emad.Client(url, timeout=300 * scale, connect_timeout=60 * scale) as c, \
            open(jobs) as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            model, step, params = words[0], int(words[1]), words[2]
            buffers = words[3] if len(words) > 3 and words[3] != "-" else None
            want_ignored = [int(w[8:]) for w in words[4:] if w.startswith("ignored=")]
            p = arrays(params)
            b = arrays(buffers) if buffers is not None else {}
            try:
                r = c.push(model, step, p, b)
            except emad.Error as e:
                sys.exit("push %s: %s" % (line.strip(), e))
            sent = len(p) + len(b)
            if r.stale or r.skipped or r.pending or r.applied + r.ignored != sent:
                sys.exit("push %s: %d applied, %d ignored, %d stale, %d skipped, pending %d "
                         "of %d tensors" % (line.strip(), r.applied, r.ignored, r.stale,
                                            r.skipped, r.pending, sent))
            if want_ignored and r.ignored != want_ignored[0]:
                sys.exit("push %s: %d ignored, expected %d" % (line.strip(), r.ignored,
                                                               want_ignored[0]))
            pushes += 1
    print("schedules_push.py: %d pushes" % pushes)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: schedules_push.py URL JOBS")
    main(sys.argv[1], sys.argv[2])
