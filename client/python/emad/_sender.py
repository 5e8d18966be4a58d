"""Pushes that never hurt training: the background sender, its policies and health counters.

This module owns what happens to a push when the daemon is slow, away or
restarted: :class:`Health` (the counters ``Client.health()`` returns, the
warnings, the step each model was last seen at), :func:`probe` (is anything
listening at the daemon's address?) and :class:`Sender` (the thread that
sends asynchronous pushes on its own connection, reconnects in the
background and checks before each push that the daemon did not go back in
steps). The policies, per push (``on_unavailable=``):

- ``"skip"``: the caller never waits for an absent daemon. A push made while
  the daemon is away is dropped and counted; a push that finds the previous
  one still in flight waits for it only while the daemon's address answers
  (and at most ``max_wait`` seconds). The sender reconnects in the
  background and pushes resume by themselves.
- ``"raise"``: the failure is an :class:`~emad.Error` (for asynchronous pushes,
  raised by the next call, as any other background error).
- ``"block"``: the push is retried (reconnecting) until the daemon takes it.

Errors that are not about reachability (a shape change, an unknown model)
are raised whatever the policy.
"""

import logging
import os
import queue
import socket
import sys
import threading
import time
import warnings

from . import _arrays
from ._lib import ERRORS, Error

__all__ = ["Health", "Sender", "probe", "unavailable", "POLICIES", "UnavailableWarning",
           "LostStepsWarning"]

POLICIES = ("skip", "raise", "block")

#: Seconds between two warnings about skipped pushes.
WARN_INTERVAL = 60.0
#: Seconds between two attempts to reach an absent daemon (doubling up to RETRY_MAX).
RETRY_FIRST = 0.1
RETRY_MAX = 1.0
#: While a push waits for the one in flight, the daemon's address is probed after
#: PROBE_FIRST seconds, then every PROBE_INTERVAL.
PROBE_FIRST = 0.005
PROBE_INTERVAL = 0.05
#: How long a probe's TCP connect may take.
PROBE_TIMEOUT = 0.5

_log = logging.getLogger("emad")

# Codes meaning "the daemon did not answer" (not "the daemon said no"): a
# timeout, no connection, or state the daemon lost by restarting. Looked up
# when first needed (the table may come from the loaded library).
_UNAVAILABLE_NAMES = ("EMAD_ETIMEDOUT", "EMAD_ECONNECT", "EMAD_ENOTXN", "EMAD_ENOSESSION")


class UnavailableWarning(RuntimeWarning):
    """Pushes were skipped because the daemon was away (at most one warning a minute)."""


class LostStepsWarning(RuntimeWarning):
    """The daemon's step went back: it restarted from an older snapshot."""


def unavailable(e):
    """True if Error e means the daemon could not be reached (rather than refused the push)."""
    if not isinstance(e, Error) or e.code is None:
        return False
    if -1000 < e.code < 0:  # a negated errno from libemad
        return True
    return any(e.code == ERRORS[name] for name in _UNAVAILABLE_NAMES)


def check_policy(policy):
    """The policy name, or Error (EINVAL) for anything else."""
    if policy not in POLICIES:
        raise Error(ERRORS["EMAD_EINVAL"], "on_unavailable must be one of %s, not %r"
                    % (", ".join(POLICIES), policy))
    return policy


def probe(url, timeout=PROBE_TIMEOUT):
    """True if something accepts connections at url's address (tcp:// and ipc:// only).

    A plain connect and close, as any health check does; other transports
    are assumed reachable.
    """
    try:
        if url.startswith("tcp://"):
            host, _, port = url[len("tcp://"):].rpartition(":")
            host = host.strip("[]")
            if ";" in host:  # nanomsg's "tcp://iface;host:port"
                host = host.split(";", 1)[1]
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout):
                return True
        if url.startswith("ipc://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(url[len("ipc://"):])
                return True
    except (OSError, ValueError):
        return False
    return True


class Health:
    """The counters of one client, the step each model was seen at, and pending warnings.

    Thread-safe. Warnings found by the sender thread are queued and issued
    by :meth:`warn_pending` in the caller's thread, so ``warnings`` filters
    and ``pytest.warns`` see them.
    """

    COUNTERS = ("pushes", "sent", "skipped", "skipped_unavailable", "skipped_busy", "retries",
                "failures", "reconnects", "restarts_behind", "steps_lost", "bytes")

    def __init__(self, warn_interval):
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(self.COUNTERS, 0)
        self.available = True
        self.last_error = None
        self.seen = {}  # model -> highest committed step a reply or a check showed
        self.warn_interval = warn_interval
        self.last_warned = None
        self.skipped_since_warning = 0
        self.to_warn = []  # (category, message)

    def add(self, name, n=1):
        with self.lock:
            self.counts[name] += n

    def skip(self, reason, error=None):
        """Count one dropped push; queue the minute's warning."""
        with self.lock:
            self.counts["skipped"] += 1
            self.counts["skipped_" + reason] += 1
            self.skipped_since_warning += 1
            if error is not None:
                self.last_error = str(error)
            now = time.monotonic()
            if self.last_warned is None or now - self.last_warned >= self.warn_interval:
                self.last_warned = now
                msg = ("emad: %d push%s skipped (daemon %s; %d in all); pushes resume by "
                       "themselves when it is back" % (
                           self.skipped_since_warning,
                           "" if self.skipped_since_warning == 1 else "es",
                           "unreachable" if reason == "unavailable" else "not answering",
                           self.counts["skipped"]))
                self.skipped_since_warning = 0
                self.to_warn.append((UnavailableWarning, msg))

    def set_available(self, up, error=None):
        with self.lock:
            self.available = up
            if error is not None:
                self.last_error = str(error)

    def saw_step(self, model, step):
        """Record a model's committed step from a reply or a check; detect a step going back."""
        with self.lock:
            before = self.seen.get(model)
            if before is not None and step < before:
                lost = before - step
                self.counts["restarts_behind"] += 1
                self.counts["steps_lost"] += lost
                msg = ("emad: model '%s' is at step %d on the daemon, but step %d was pushed "
                       "before: the daemon went back %d step%s (restarted from an older "
                       "snapshot); those updates are lost" % (model, step, before, lost,
                                                              "" if lost == 1 else "s"))
                self.to_warn.append((LostStepsWarning, msg))
                self.seen[model] = step
            else:
                self.seen[model] = max(step, before or 0)

    def warn_pending(self):
        """Issue the queued warnings (call from the user's thread)."""
        with self.lock:
            todo, self.to_warn = self.to_warn, []
        if not todo:
            return
        level, f = 1, sys._getframe()  # point the warning at the first frame outside emad
        while f is not None and f.f_globals.get("__name__", "").startswith("emad."):
            f, level = f.f_back, level + 1
        for category, msg in todo:
            _log.warning("%s", msg)
            warnings.warn(msg, category, stacklevel=level)

    def snapshot(self, pending):
        with self.lock:
            out = dict(self.counts)
            out.update(available=self.available, pending=pending, last_error=self.last_error,
                       steps=dict(self.seen))
        return out


class Sender:
    """Background pushes: a thread with its own connection, fed through a bounded queue.

    At most ``max_pending`` captured steps exist at once (queued or being
    sent), each in its own staging buffer. :meth:`submit` captures into a
    free buffer; what it does when none is free depends on the policy (see
    the module). An error that is not about reachability (or any error under
    "raise") is kept and raised once by :meth:`check`.

    ``connect`` is a function returning a new connection (a ``_Conn``);
    ``push`` sends entries on one (``_push_entries``); ``models_steps`` maps a
    connection to {model: committed step} (for the restart check).
    """

    def __init__(self, connect, push, models_steps, url, max_pending, health, max_wait,
                 check_restarts):
        self.connect, self.push, self.models_steps = connect, push, models_steps
        self.url = url
        self.health = health
        self.max_wait = max_wait
        self.check_restarts = check_restarts
        self.conn = None
        self.away = False  # the daemon is known to be unreachable
        try:
            if not probe(url):
                raise Error(ERRORS["EMAD_ECONNECT"], "nothing listens at %s" % url)
            self.conn = connect()
        except Error as e:
            if not unavailable(e):
                raise
            self._mark_away(e)  # away at the start: the thread connects when it is back
        self.free = queue.Queue()
        for _ in range(max_pending):
            self.free.put(_arrays.Staging())
        self.max_pending = max_pending
        self.work = queue.Queue()
        self.cond = threading.Condition()
        self.pending = 0
        self.stopping = False
        self.retired = False
        self.error = None
        self.more_errors = 0
        self.thread = threading.Thread(target=self._run, name="emad-push", daemon=True)
        self.thread.start()

    # ---- the caller's side -----------------------------------------------------------------

    def submit(self, model, step, entries, writer, policy):
        """Capture entries into a free staging buffer and queue the push; False if dropped."""
        self.health.add("pushes")
        if policy == "skip" and self.away:
            self.health.skip("unavailable")
            return False
        staging = self._free_buffer(policy)
        if staging is None:
            return False
        try:
            self.check()  # the push this one waited for may have failed: say so now
            staging.stage(entries)
        except BaseException:
            self.free.put(staging)
            raise
        with self.cond:
            self.pending += 1
        self.work.put((model, step, entries, writer, staging, policy))
        return True

    def _free_buffer(self, policy):
        """A free staging buffer; under "skip", None (push counted as skipped) rather than
        waiting for an unreachable daemon or longer than max_wait."""
        if policy != "skip":
            return self.free.get()
        try:
            return self.free.get_nowait()
        except queue.Empty:
            pass
        start = time.monotonic()
        wait = PROBE_FIRST
        while True:
            try:
                return self.free.get(timeout=wait)
            except queue.Empty:
                pass
            wait = PROBE_INTERVAL
            if self.away:
                self.health.skip("unavailable")
                return None
            waited = time.monotonic() - start
            if self.max_wait is not None and waited >= self.max_wait:
                self.health.skip("busy")
                return None
            if not probe(self.url):
                self._mark_away(None)
                self.retire()
                self.health.skip("unavailable")
                return None

    def retire(self):
        """Give up this sender: its thread finishes the push in flight (which may take the
        request timeout), drops what is queued behind it under "skip", closes its
        connection and ends. The client starts a new sender that reconnects at once."""
        self.retired = True
        self.work.put(None)

    def check(self):
        """Raise the first error of an earlier background push, once."""
        with self.cond:
            e, n = self.error, self.more_errors
            self.error, self.more_errors = None, 0
        if e is None:
            return
        if isinstance(e, Error):
            msg = "asynchronous push failed: %s" % e.message
            if n:
                msg += " (and %d later asynchronous push%s)" % (n, "es" if n > 1 else "")
            raise Error(e.code, msg) from e
        raise e

    def wait(self, timeout=None):
        """Wait until every queued push was sent or dropped; False on timeout."""
        with self.cond:
            return self.cond.wait_for(lambda: self.pending == 0, timeout)

    def stop(self):
        self.stopping = True
        self.work.put(None)
        self.thread.join()
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # ---- the thread's side -----------------------------------------------------------------

    def _mark_away(self, error):
        if not self.away:
            _log.info("emad: daemon at %s unreachable%s", self.url,
                      ": %s" % error if error else "")
        self.away = True
        self.health.set_available(False, error)

    def _keep_error(self, e):
        with self.cond:
            if self.error is None:
                self.error = e
            else:
                self.more_errors += 1

    def _run(self):
        delay = RETRY_FIRST
        while True:
            timeout = None
            if self.away and not self.retired:  # reconnect (or see the daemon back) meanwhile
                if self._try_up():
                    delay = RETRY_FIRST
                else:
                    timeout, delay = delay, min(delay * 2, RETRY_MAX)
            try:
                item = self.work.get(timeout=timeout)
            except queue.Empty:
                continue
            if item is None:
                if self.retired:
                    self._finish_retired()
                return
            model, step, entries, writer, staging, policy = item
            try:
                if self.retired and policy == "skip":
                    self.health.skip("unavailable")
                else:
                    self._send(model, step, entries, writer, policy)
            except Exception as e:  # kept for the caller's next call
                self.health.add("failures")
                self._keep_error(e)
            finally:
                with self.cond:
                    self.pending -= 1
                    self.cond.notify_all()
                self.free.put(staging)

    def _finish_retired(self):
        """The end of a retired sender's thread (nothing is queued after retire())."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _try_up(self):
        """One attempt to reach the daemon again: probe, then connect if needed."""
        if not probe(self.url):
            return False
        if self.conn is None:
            try:
                self.conn = self.connect()
            except Error as e:
                self.health.set_available(False, e)
                return False
            self.health.add("reconnects")
        self._up()
        return True

    def _send(self, model, step, entries, writer, policy):
        """One push under its policy: retried ("block"), dropped ("skip") or raised."""
        delay = RETRY_FIRST
        while True:
            if self.conn is None and not self._try_up():
                if policy == "skip":
                    self.health.skip("unavailable")
                    return
                if policy == "raise":
                    raise Error(ERRORS["EMAD_ECONNECT"], "the daemon at %s is unreachable"
                                % self.url)
                if self.stopping:
                    raise Error(ERRORS["EMAD_ECONNECT"], "closed while the daemon at %s was "
                                "unreachable" % self.url)
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            try:
                if self.check_restarts:
                    self._check_steps(model)
                res = self.push(self.conn, model, step, entries, writer)
            except Error as e:
                if not unavailable(e) or policy == "raise":
                    raise
                if self.retired:  # replaced already: just let this push go
                    self.health.skip("unavailable", e)
                    return
                self._mark_away(e)
                self.conn.close()
                self.conn = None
                if policy == "skip":
                    self.health.skip("unavailable", e)
                    return
                self.health.add("retries")
                continue
            if not self.retired:
                self._up()
            self.health.add("sent")
            self.health.add("bytes", sum(e.nbytes for e in entries))
            self.health.saw_step(model, res.step)
            return

    def _up(self):
        if self.away:
            _log.info("emad: daemon at %s reachable again", self.url)
        self.away = False
        self.health.set_available(True)

    def _check_steps(self, model):
        """Compare the daemon's step of model with the highest this client saw."""
        if model not in self.health.seen:
            return
        steps = self.models_steps(self.conn)
        if model in steps:
            self.health.saw_step(model, steps[model])


def env_float(name, default):
    """A float from the environment, or default."""
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default
