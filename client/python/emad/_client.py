"""The emad client: models, pushes (sync and async), pulls, numpy and torch.

:class:`Client` wraps one libemad connection (``emad_client *``, guarded by a
lock because libemad clients are not thread-safe) and, once the first
asynchronous push is made, a second connection owned by a background sender
thread (:class:`emad._sender.Sender`). Every method raises :class:`emad.Error`
on failure, with libemad's code and the daemon's message. What a push does
when the daemon is away is its ``on_unavailable`` policy (:mod:`emad._sender`);
the data-parallel split is :mod:`emad._parallel`, loading into modules
:mod:`emad._modules`.
"""

import collections
import ctypes
import math
import os
import threading
import time

import numpy as np

from . import _arrays, _cluster, _modules, _parallel, _sender
from ._lib import (BUFFER, DEFAULT_DECAY, DEFAULT_URL, DTYPE_NAMES, DTYPE_SIZES, DTYPES, ERRORS,
                   FLOAT_DTYPES, KIND_NAMES, MAX_DECAYS, MAX_GLOBS, PARAM, Error, ModelConfig,
                   ModelInfoC, Options, PullOptions, PushResult as _PushResultC, Stat, Tensor, lib,
                   tensor_array)

__all__ = ["Client", "ModelInfo", "TensorInfo", "PushResult", "StateDict"]

#: One model as listed: name, first decay, committed step, tensor count, shadow bytes.
ModelInfo = collections.namedtuple(
    "ModelInfo", "name decay step tensors shadow_bytes snapshot_step last_push_age")

#: One stored tensor as described: name, kind ("param"/"buffer"), dtype name, shape,
#: step of its last update, size in bytes (in the pushed dtype).
TensorInfo = collections.namedtuple("TensorInfo", "name kind dtype shape step nbytes")

#: Result of a synchronous push (see emad_push_result in include/emad.h).
PushResult = collections.namedtuple(
    "PushResult", "applied stale step messages skipped ignored pending")

# Keyword options of create()/configure() and the libemad enum each name maps to.
_ENUM_OPTIONS = ("schedule", "step_gap", "buffers", "nonfinite")
_NUMBER_OPTIONS = ("update_after_step", "inv_gamma", "power", "min_decay", "writers")
_LIST_OPTIONS = ("copy", "ignore")
OPTIONS = ("decay",) + _ENUM_OPTIONS + _NUMBER_OPTIONS + _LIST_OPTIONS


class StateDict(collections.OrderedDict):
    """An ordered name -> tensor dict returned by pulls, with where it came from.

    Attributes: ``model`` (name), ``step`` (the model's committed step the
    pull saw: every tensor is from one consistent view), ``steps`` (name ->
    the step of that tensor's last update), ``dtypes`` (name -> emad dtype
    name, e.g. "BF16" for a uint16 numpy array holding bfloat16 bits).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = None
        self.step = 0
        self.steps = {}
        self.dtypes = {}

    def __reduce_ex__(self, protocol):
        # Pickled (torch.save) as a plain dict: the file loads where emad is not installed.
        return (dict, (), None, None, iter(self.items()))

    def __copy__(self):
        out = StateDict(self)
        out.model, out.step, out.steps, out.dtypes = self.model, self.step, self.steps, self.dtypes
        return out

    def __deepcopy__(self, memo):
        import copy

        out = StateDict((k, copy.deepcopy(v, memo)) for k, v in self.items())
        out.model, out.step = self.model, self.step
        out.steps, out.dtypes = dict(self.steps), dict(self.dtypes)
        return out


def _check_rc(lib_, handle, rc, what=None):
    """Raise Error for a negative libemad return code, with the client's last error."""
    if rc >= 0:
        return rc
    msg = lib_.fn("last_error")(handle) if handle else None
    msg = msg.decode("utf-8", "replace") if msg else lib_.strerror(rc)
    if what:
        msg = "%s: %s" % (what, msg)
    raise Error(rc, msg)


def _bstr(s, what):
    if not isinstance(s, str):
        raise Error(ERRORS["EMAD_EINVAL"], "%s must be a str, not %r" % (what, s))
    return s.encode("utf-8")


class _Conn:
    """One libemad connection (emad_client *) and the lock that serializes its calls."""

    def __init__(self, lib_, urls, opts):
        self.lib = lib_
        self.lock = threading.Lock()
        self.handle = None
        self.url = None
        errors = []
        for url in urls:
            if url.startswith(_cluster.PREFIX):  # raises with the map's problem
                self.handle, self.url = _cluster.connect(lib_, url[len(_cluster.PREFIX):], opts), url
                return
            h = ctypes.c_void_p()
            rc = lib_.fn("connect")(ctypes.byref(h), _bstr(url, "url"), ctypes.byref(opts))
            if rc == 0:
                self.handle, self.url = h, url
                return
            # The detail of the failure (emad_last_error(NULL)), e.g. a key file too open.
            detail = lib_.fn("last_error")(None)
            detail = detail.decode("utf-8", "replace") if detail else lib_.strerror(rc)
            errors.append((rc, "%s: %s" % (url, detail)))
        code = errors[-1][0]
        raise Error(code, "cannot connect to emad: %s" % "; ".join(m for _, m in errors))

    def call(self, name, *args, what=None, feature=None):
        """Call emad_<name>(handle, *args) under the lock; raise Error on a negative result."""
        f = self.lib.fn(name, feature=feature)
        with self.lock:
            if self.handle is None:
                raise Error(ERRORS["EMAD_EINVAL"], "the client is closed")
            rc = f(self.handle, *args)
            return _check_rc(self.lib, self.handle, rc, what)

    def close(self):
        with self.lock:
            if self.handle is not None:
                self.lib.fn("close")(self.handle)
                self.handle = None


def _push_entries(conn, model, step, entries, writer):
    """Send one push of entries at step (as writer if not None); returns a PushResult."""
    if not entries:
        raise Error(ERRORS["EMAD_EINVAL"], "push of no tensors")
    if any(e.count for e in entries):
        conn.lib.fn("push_as", feature="pushing a Shard")  # slices need a library that knows them
    arr = tensor_array(entries)
    res = _PushResultC()
    bmodel = _bstr(model, "model")
    if int(step) < 0:
        raise Error(ERRORS["EMAD_ERANGE"], "step %d is negative" % step)
    if writer is None:
        conn.call("push", bmodel, int(step), arr, len(entries), ctypes.byref(res))
    else:
        conn.call("push_as", bmodel, int(step), int(writer), arr, len(entries),
                  ctypes.byref(res), feature="push(writer=...)")
    return PushResult(res.applied, res.stale, res.step, res.messages, res.skipped, res.ignored,
                      bool(res.pending))


def _model_steps(conn):
    """{model: committed step} of every model on conn's daemon (one `list` request)."""
    p = ctypes.POINTER(ModelInfoC)()
    n = ctypes.c_size_t()
    conn.call("list", ctypes.byref(p), ctypes.byref(n))
    try:
        return {p[i].name.decode("utf-8"): p[i].step for i in range(n.value)}
    finally:
        conn.lib.free(p)


def _default_urls(url_or_urls, cluster=None):
    if cluster is not None:
        if url_or_urls is not None:
            raise Error(ERRORS["EMAD_EINVAL"], "give a daemon URL or cluster=MAP, not both")
        return [_cluster.PREFIX + _bstr(cluster, "cluster").decode("utf-8")]
    if url_or_urls is None and os.environ.get("EMAD_CLUSTER"):
        return [_cluster.PREFIX + os.environ["EMAD_CLUSTER"]]
    if url_or_urls is None:
        url_or_urls = os.environ.get("EMAD_SERVER") or DEFAULT_URL
    if isinstance(url_or_urls, str):
        urls = [u for u in url_or_urls.split(",") if u]
    else:
        urls = list(url_or_urls)
    if not urls:
        raise Error(ERRORS["EMAD_EINVAL"], "no daemon URL given")
    return urls


class Client(_cluster.ClusterMixin):
    """A connection to an emad daemon, or to a cluster of them.

    Args:
        url_or_urls: the daemon's URL (``"tcp://host:7470"``, ``"ipc:///path"``),
            or a list of URLs (or one string with commas) tried in order at
            connect: the first daemon that answers is used. Default:
            ``$EMAD_SERVER``, else ``tcp://127.0.0.1:7470`` (but see cluster).
        cluster: instead of a URL, a cluster's shard map: a file, or its text
            (``"epoch 1; shard 0 tcp://h0:7470 tcp://h1:7470; shard 1 ..."``).
            Every call then goes through the map (docs/CLUSTER.md); the
            cluster_* methods report on it. Default: ``$EMAD_CLUSTER`` if set
            and no URL is given.
        timeout: seconds per request (send and reply), default 30.
        connect_timeout: seconds for the first contact, default 5.
        max_pending: asynchronous pushes (``wait=False``) captured but not yet
            sent, at most; a further one waits until the oldest is sent
            (while the daemon answers; see on_unavailable). Each holds one
            host copy of the pushed tensors. Default 1.
        chunk_bytes, max_reply_bytes: libemad's message size options (bytes).
        user, key_file: authenticate as ``user`` with the key file ``key_file``
            (made by ``emactl keygen``; mode 0600) to a daemon run with
            ``--auth-file`` (docs/SECURITY.md). ``user`` defaults to the user
            named in the key file. With neither, ``$EMAD_USER`` and
            ``$EMAD_KEY_FILE`` are used if set; otherwise requests are not
            authenticated.
        on_unavailable: what a push does when the daemon cannot be reached:
            "skip" (drop it, count it, warn once a minute, reconnect in the
            background), "raise" or "block" (retry until it is back).
            Default None: "skip" for asynchronous pushes, "raise" for
            synchronous ones. Each push may override it.
        max_wait: under "skip", the longest an asynchronous push waits for
            the one in flight while the daemon's address answers (seconds;
            None: no limit). Default 10.
        warn_interval: seconds between two warnings about skipped pushes.
        check_restarts: before each asynchronous push, compare the model's
            step on the daemon with the highest this client saw, to report
            a daemon restarted from an older snapshot (one `list` request on
            the background connection). Default True.

    A Client may be shared by threads (calls are serialized); it is a
    context manager, and :meth:`close` flushes asynchronous pushes.
    """

    def __init__(self, url_or_urls=None, timeout=30.0, connect_timeout=5.0, max_pending=1,
                 chunk_bytes=None, max_reply_bytes=None, on_unavailable=None, max_wait=10.0,
                 warn_interval=_sender.WARN_INTERVAL, check_restarts=True, user=None,
                 key_file=None, cluster=None):
        self._lib = lib()
        self._opts = Options()
        self._lib.fn("options_init")(ctypes.byref(self._opts))
        # The strings stay referenced here: the options struct only points to them, and the
        # background sender connects with the same struct later.
        self._user = None if user is None else _bstr(user, "user")
        self._key_file = None if key_file is None else os.fsencode(key_file)
        self._opts.user = self._user
        self._opts.key_file = self._key_file
        self._opts.timeout_ms = max(1, int(timeout * 1000))
        self._opts.connect_timeout_ms = max(1, int(connect_timeout * 1000))
        if chunk_bytes is not None:
            self._opts.chunk_bytes = int(chunk_bytes)
        if max_reply_bytes is not None:
            self._opts.max_reply_bytes = int(max_reply_bytes)
        if int(max_pending) < 1:
            raise Error(ERRORS["EMAD_EINVAL"], "max_pending must be at least 1")
        self._max_pending = int(max_pending)
        self._policy = None if on_unavailable is None else _sender.check_policy(on_unavailable)
        self._max_wait = max_wait
        self._check_restarts = bool(check_restarts)
        self._health = _sender.Health(float(warn_interval))
        self._sender = None
        self._retired = []  # senders given up with a push in flight (see _sender_for_async)
        self._sender_lock = threading.Lock()
        self._staging = _arrays.Staging()  # device-to-host copies of synchronous pushes
        self._staging_lock = threading.Lock()
        self._conn = None
        self._conn = _Conn(self._lib, _default_urls(url_or_urls, cluster), self._opts)

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self):
        """The URL of the daemon this client is connected to ("cluster:MAP" for a cluster)."""
        return self._conn.url

    @property
    def library(self):
        """Path of the loaded libemad."""
        return self._lib.path

    def _check(self):
        """Raise a pending error of an earlier asynchronous push; issue queued warnings."""
        if self._conn is None or self._conn.handle is None:
            raise Error(ERRORS["EMAD_EINVAL"], "the client is closed")
        self._health.warn_pending()
        if self._sender is not None:
            self._sender.check()

    def health(self):
        """Counters of this client's pushes, as a dict (never contacts the daemon).

        ``pushes`` (push calls), ``sent`` (taken by the daemon), ``skipped``
        (dropped under on_unavailable="skip": ``skipped_unavailable`` when the
        daemon was unreachable, ``skipped_busy`` after waiting max_wait for a
        daemon that answers but did not finish the previous push),
        ``retries`` (under "block"), ``failures`` (asynchronous pushes that
        raised), ``reconnects``, ``restarts_behind`` (times a model's step went
        back on the daemon) and ``steps_lost`` (steps it went back in all),
        ``bytes`` (tensor bytes sent), ``available`` (the daemon answered the
        last attempt), ``pending`` (asynchronous pushes not yet sent or
        dropped), ``last_error`` (text or None), ``steps`` ({model: highest
        committed step seen}).
        """
        self._health.warn_pending()
        senders = [s for s in [self._sender] + self._retired if s is not None]
        return self._health.snapshot(sum(s.pending for s in senders))

    def flush(self, timeout=None):
        """Wait until every asynchronous push was sent; raise the first error among them.

        With a timeout (seconds) that expires, raises Error (EMAD_ETIMEDOUT).
        """
        if self._sender is not None:
            if not self._sender.wait(timeout):
                raise Error(ERRORS["EMAD_ETIMEDOUT"],
                            "flush: asynchronous pushes still pending after %gs" % timeout)
            self._health.warn_pending()
            self._sender.check()

    def close(self):
        """Flush asynchronous pushes, then close the connections. Raises a pending push error
        after closing; calling it again does nothing."""
        if self._conn is None:
            return
        try:
            self.flush()
        finally:
            if self._sender is not None:
                self._sender.stop()
                self._sender = None
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # do not hide the original exception behind a push error
            try:
                self.close()
            except Error:
                pass

    def __del__(self):
        try:
            if self._sender is not None:
                self._sender.wait()
                self._sender.stop()
            if self._conn is not None:
                self._conn.close()
        except Exception:
            pass

    # ---- models ------------------------------------------------------------------------------

    def _config(self, base, options, feature):
        """A ModelConfig from base (defaults if None) with the keyword options applied."""
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise Error(ERRORS["EMAD_EINVAL"], "unknown option%s %s (known: %s)" % (
                "s" if len(unknown) > 1 else "", ", ".join(sorted(unknown)), ", ".join(OPTIONS)))
        cfg = ModelConfig()
        keep = []
        if base is None:
            self._lib.fn("config_init", feature=feature)(ctypes.byref(cfg))
        else:
            ctypes.memmove(ctypes.byref(cfg), ctypes.byref(base), ctypes.sizeof(cfg))
        if "decay" in options:
            d = options["decay"]
            decays = [d] if isinstance(d, (int, float)) else list(d)
            if not 1 <= len(decays) <= MAX_DECAYS:
                raise Error(ERRORS["EMAD_ERANGE"],
                            "%d decays; a model has 1 to %d" % (len(decays), MAX_DECAYS))
            cfg.ndecays = len(decays)
            for i, v in enumerate(decays):
                cfg.decays[i] = float(v)
        from_name = self._lib.fn("option_from_name", feature=feature)
        for key in _ENUM_OPTIONS:
            if key in options:
                v = options[key]
                if isinstance(v, str):
                    n = from_name(key.encode(), v.encode())
                    if n < 0:
                        raise Error(ERRORS["EMAD_EINVAL"], "%s=%r is not a known value" % (key, v))
                    v = n
                setattr(cfg, key, int(v))
        for key in _NUMBER_OPTIONS:
            if key in options:
                conv = float if key in ("inv_gamma", "power", "min_decay") else int
                setattr(cfg, key, conv(options[key]))
        for key in _LIST_OPTIONS:
            if key in options:
                pats = options[key]
                pats = [pats] if isinstance(pats, str) else list(pats or [])
                if len(pats) > MAX_GLOBS:
                    raise Error(ERRORS["EMAD_ELIMIT"],
                                "%d %s patterns, at most %d" % (len(pats), key, MAX_GLOBS))
                arr = getattr(cfg, key)
                for i in range(MAX_GLOBS):
                    arr[i] = None
                for i, p in enumerate(pats):
                    b = _bstr(p, key + " pattern")
                    keep.append(b)
                    arr[i] = b
                setattr(cfg, "n" + key, len(pats))
        return cfg, keep

    def create(self, model, decay=DEFAULT_DECAY, exist_ok=False, **options):
        """Create a model.

        Args:
            model: name, 1..128 bytes of ``A-Z a-z 0-9 . _ -``.
            decay: the EMA decay, or a list of up to 8 decays (one shadow
                each; pulls choose one, default the first).
            exist_ok: an existing model with the same configuration is not an
                error (a different one is, EMAD_EEXIST).
            **options: schedule ("constant", "num_updates", "warmup"),
                update_after_step, inv_gamma, power, min_decay, step_gap
                ("ignore", "compensate"), buffers ("copy", "average"), copy
                and ignore (lists of glob patterns), nonfinite ("reject",
                "skip", "allow"), writers (int). docs/EMA.md has the formulas.

        A single float decay without options works with any libemad; the
        options need one with emad_create_config.
        """
        self._check()
        bmodel = _bstr(model, "model")
        if not options and isinstance(decay, (int, float)):
            self._conn.call("create", bmodel, float(decay), int(bool(exist_ok)))
            return
        feature = "create() with %s" % ", ".join(["decay list"] if not options else sorted(options))
        options = dict(options, decay=decay)
        cfg, keep = self._config(None, options, feature)
        self._conn.call("create_config", bmodel, ctypes.byref(cfg), int(bool(exist_ok)),
                        feature=feature)
        del keep  # the pattern bytes had to live until here

    def get_config(self, model):
        """A model's configuration as a dict of the create() keywords (decay is a list)."""
        self._check()
        cfg = ModelConfig()
        self._conn.call("get_config", _bstr(model, "model"), ctypes.byref(cfg),
                        feature="get_config()")
        try:
            return self._config_dict(cfg)
        finally:
            self._lib.fn("config_free")(ctypes.byref(cfg))

    def _config_dict(self, cfg):
        out = {"decay": [cfg.decays[i] for i in range(cfg.ndecays)]}
        for key in _ENUM_OPTIONS:
            name = self._lib.fn(key + "_name")(getattr(cfg, key))
            out[key] = name.decode() if name else getattr(cfg, key)
        for key in _NUMBER_OPTIONS:
            out[key] = getattr(cfg, key)
        for key in _LIST_OPTIONS:
            arr = getattr(cfg, key)
            out[key] = [arr[i].decode("utf-8") for i in range(getattr(cfg, "n" + key))]
        return out

    def configure(self, model, **options):
        """Change a live model's decays (same count) and schedule options.

        Takes the create() keywords; those not given keep their current
        values. Changing buffers, writers, copy, ignore or the number of
        decays is EMAD_EIMMUTABLE. Applies from the next push on.
        """
        self._check()
        bmodel = _bstr(model, "model")
        cur = ModelConfig()
        self._conn.call("get_config", bmodel, ctypes.byref(cur), feature="configure()")
        try:
            cfg, keep = self._config(cur, options, "configure()")
            self._conn.call("configure", bmodel, ctypes.byref(cfg), feature="configure()")
            del keep  # the pattern bytes had to live until here
        finally:
            self._lib.fn("config_free")(ctypes.byref(cur))

    def drop(self, model):
        """Drop a model and all its tensors."""
        self._check()
        self._conn.call("drop", _bstr(model, "model"))

    def list(self):
        """All models, as a list of :class:`ModelInfo`."""
        self._check()
        p = ctypes.POINTER(ModelInfoC)()
        n = ctypes.c_size_t()
        self._conn.call("list", ctypes.byref(p), ctypes.byref(n))
        try:
            return [_model_info(p[i]) for i in range(n.value)]
        finally:
            self._lib.free(p)

    def describe(self, model):
        """(:class:`ModelInfo`, list of :class:`TensorInfo` in first-push order) of a model."""
        self._check()
        return self._describe(model)

    def _describe(self, model):
        info = ModelInfoC()
        p = ctypes.POINTER(Tensor)()
        n = ctypes.c_size_t()
        self._conn.call("describe", _bstr(model, "model"), ctypes.byref(info), ctypes.byref(p),
                        ctypes.byref(n))
        try:
            tensors = []
            for i in range(n.value):
                t = p[i]
                tensors.append(TensorInfo(t.name.decode("utf-8"), KIND_NAMES.get(t.kind, t.kind),
                                          DTYPE_NAMES.get(t.dtype, t.dtype),
                                          tuple(t.shape[j] for j in range(t.ndim)), t.step,
                                          t.nbytes))
        finally:
            self._lib.fn("tensors_free")(p, n)
        return _model_info(info), tensors

    def snapshot(self, model=None):
        """Ask the daemon for a durable snapshot of model (None: every model); its step."""
        self._check()
        step = ctypes.c_uint64()
        self._conn.call("snapshot", None if model is None else _bstr(model, "model"),
                        ctypes.byref(step), feature="snapshot()")
        return step.value

    def stats(self):
        """The daemon's counters as a dict name -> int."""
        self._check()
        p = ctypes.POINTER(Stat)()
        n = ctypes.c_size_t()
        self._conn.call("stats", ctypes.byref(p), ctypes.byref(n))
        try:
            return {p[i].name.decode(): p[i].value for i in range(n.value)}
        finally:
            self._lib.free(p)

    # ---- push --------------------------------------------------------------------------------

    def _sender_for_async(self):
        with self._sender_lock:
            if self._sender is not None and self._sender.retired:
                # the daemon went away with a push in flight: that thread waits for its
                # request timeout; a new sender reconnects as soon as the daemon is back
                self._retired = [s for s in self._retired if s.thread.is_alive()]
                self._retired.append(self._sender)
                self._sender = None
            if self._sender is None:
                url = self._conn.url
                self._sender = _sender.Sender(
                    lambda: _Conn(self._lib, [url], self._opts),
                    lambda *args: _push_entries(*args), _model_steps,
                    url, self._max_pending, self._health, self._max_wait, self._check_restarts)
            return self._sender

    def _push(self, model, step, entries, wait, writer, on_unavailable):
        _bstr(model, "model")
        if not entries:
            raise Error(ERRORS["EMAD_EINVAL"], "push of no tensors")
        if writer is not None:
            self._lib.fn("push_as", feature="push(writer=...)")
        policy = on_unavailable or self._policy or ("skip" if not wait else "raise")
        _sender.check_policy(policy)
        if not wait:
            self._sender_for_async().submit(model, int(step), entries, writer, policy)
            self._health.warn_pending()
            return None
        if self._sender is not None:  # keep pushes in step order
            self.flush()
        if all(e.on_host for e in entries):
            return self._push_now(model, step, entries, writer, policy)
        with self._staging_lock:  # device tensors: one host copy in the reused buffer
            self._staging.stage(entries)
            return self._push_now(model, step, entries, writer, policy)

    def _push_now(self, model, step, entries, writer, policy):
        """A synchronous push on the main connection under policy; None if skipped."""
        health = self._health
        health.add("pushes")
        delay = _sender.RETRY_FIRST
        while True:
            recovering = not health.available
            if recovering and policy == "skip" and not _sender.probe(self._conn.url):
                health.skip("unavailable")
                health.warn_pending()
                return None
            try:
                if recovering and self._check_restarts and model in health.seen:
                    steps = _model_steps(self._conn)
                    if model in steps:
                        health.saw_step(model, steps[model])
                res = _push_entries(self._conn, model, step, entries, writer)
            except Error as e:
                if not _sender.unavailable(e) or policy == "raise":
                    if _sender.unavailable(e):
                        health.set_available(False, e)
                    raise
                health.set_available(False, e)
                if policy == "skip":
                    health.skip("unavailable", e)
                    health.warn_pending()
                    return None
                health.add("retries")  # "block": nanomsg reconnects; try again
                time.sleep(delay)
                delay = min(delay * 2, _sender.RETRY_MAX)
                continue
            health.set_available(True)
            health.add("sent")
            health.add("bytes", sum(e.nbytes for e in entries))
            health.saw_step(model, res.step)
            health.warn_pending()
            return res

    def push(self, model, step, params, buffers=None, writer=None, wait=True,
             on_unavailable=None):
        """Push one training step's values.

        Args:
            model: model name.
            step: the training step (an int >= 0). A tensor already updated
                at this step or a later one is left alone (stale).
            params: name -> value, averaged. Values: numpy arrays (float16,
                float32, float64; ``Typed(bits, "BF16")`` for bfloat16), torch
                tensors (any device; bfloat16 sent as such), or :class:`Shard`.
            buffers: name -> value, copied (any dtype).
            writer: push as this writer of a model created with writers=N.
            wait: False returns once the values are copied; a background
                thread sends them (see push_module).
            on_unavailable: "skip", "raise" or "block" (see :class:`Client`).

        Arrays are sent without a copy when they are C-contiguous and
        little-endian (otherwise one contiguous copy is made). Returns a
        :class:`PushResult` (None when wait is False, or when the push was
        skipped).
        """
        self._check()
        entries = [_arrays.make_entry(k, PARAM, v) for k, v in params.items()]
        entries += [_arrays.make_entry(k, BUFFER, v) for k, v in (buffers or {}).items()]
        return self._push(model, step, entries, wait, writer, on_unavailable)

    def push_module(self, model, module, step, wait=True, writer=None, include_frozen=False,
                    rank=None, world_size=None, on_unavailable=None):
        """Push a torch module's state at a training step.

        Trainable parameters (``requires_grad=True`` in ``named_parameters()``)
        are params (averaged); ``named_buffers()`` that are part of the
        state_dict (i.e. persistent) are buffers (copied): the split of the
        reference EMA example. Tensors go in their own dtype (bfloat16 and
        float16 without upcast); GPU tensors are copied to host through one
        pinned staging buffer. With include_frozen, frozen parameters are
        pushed as params too (the EMA of a constant is that constant), so a
        pulled state dict loads with strict=True.

        With ``wait=False`` the call returns as soon as the tensors are
        copied; a background thread sends them. At most ``max_pending``
        (default 1) such pushes are outstanding: the next one waits for the
        oldest to be sent, unless the daemon is unreachable (on_unavailable,
        default "skip": the push is dropped and counted in :meth:`health`).
        Errors surface on the next call or on :meth:`flush`; :meth:`close`
        flushes.

        Data-parallel training: with ``world_size`` > 1 (by default
        ``torch.distributed``'s rank and world size when it is initialised),
        the tensors are split among the ranks balanced by bytes, every rank
        computing the same plan, and this rank pushes its part as writer
        ``rank`` of a model created with ``writers=world_size``; buffers are
        pushed by rank 0 only. An explicit ``writer`` turns the split off.

        On a cluster client (``cluster=``) the split is made per shard: the
        bytes that the placement puts on each shard are cut among the ranks,
        so every rank sends about 1/world_size of every shard's part and all
        ranks use all shards' links at once (:func:`emad._parallel.split_cluster`).
        """
        self._check()
        entries = _module_entries(module, include_frozen)
        if writer is None:
            rank, world_size = _parallel.rank_and_size(rank, world_size)
            if world_size > 1 and self.cluster is not None:
                entries = _parallel.split_cluster(entries, world_size,
                                                  self._pieces(entries))[rank]
                writer = rank
            elif world_size > 1:
                entries = _parallel.split(entries, world_size)[rank]
                writer = rank
        return self._push(model, step, entries, wait, writer, on_unavailable)

    # ---- pull --------------------------------------------------------------------------------

    def _pull_arrays(self, model, names, dtype, decay):
        """(StateDict of numpy arrays, dtype names) pulled through emad_pull_into[_ex]."""
        out_dtype = None
        if dtype is not None:
            out_dtype = _arrays.emad_dtype(dtype)
            if out_dtype not in ("F32", "BF16", "F16"):
                raise Error(ERRORS["EMAD_EDTYPE"], "pull dtype must be F32, BF16 or F16, not %s"
                            % out_dtype)
        use_ex = out_dtype is not None or decay is not None
        if use_ex:
            popts = PullOptions()
            self._lib.fn("pull_options_init", feature="pull(decay=..., dtype=...)")(
                ctypes.byref(popts))
            if decay is not None:
                popts.decay = float(decay)
            if out_dtype is not None:
                popts.dtype = DTYPES[out_dtype]
        bmodel = _bstr(model, "model")
        for attempt in range(3):
            info, described = self._describe(model)
            if names is not None:
                by_name = {t.name: t for t in described}
                wanted = []
                for n in names:
                    if n not in by_name:
                        raise Error(ERRORS["EMAD_ENOTENSOR"],
                                    "model '%s' has no tensor '%s'" % (model, n))
                    wanted.append(by_name[n])
                described = wanted
            sd = StateDict()
            sd.model, sd.step = model, info.step
            if not described:
                return sd
            bufs, arr = [], (Tensor * len(described))()
            for t, d in zip(arr, described):
                dt = d.dtype
                if out_dtype is not None and dt in FLOAT_DTYPES:
                    dt = out_dtype
                numel = math.prod(d.shape)  # 1 for a scalar (shape ())
                nbytes = numel * DTYPE_SIZES[dt]
                buf = np.empty(max(nbytes, 1), dtype=np.uint8)
                bufs.append(buf)
                t.name = d.name.encode("utf-8")
                t.data = buf.ctypes.data
                t.nbytes = nbytes
            step = ctypes.c_uint64()
            try:
                if use_ex:
                    self._conn.call("pull_into_ex", bmodel, arr, len(described),
                                    ctypes.byref(popts), ctypes.byref(step),
                                    feature="pull(decay=..., dtype=...)")
                else:
                    self._conn.call("pull_into", bmodel, arr, len(described), ctypes.byref(step))
            except Error as e:
                if e.code == ERRORS["EMAD_ESIZE"] and attempt < 2:
                    continue  # the model was replaced between describe and pull: again
                raise
            sd.step = step.value
            for t, buf in zip(arr, bufs):
                name = t.name.decode("utf-8")
                dt = DTYPE_NAMES[t.dtype]
                shape = tuple(t.shape[j] for j in range(t.ndim))
                a = buf[:t.nbytes].view(_arrays.numpy_dtype(dt)).reshape(shape)
                sd[name] = a
                sd.steps[name] = t.step
                sd.dtypes[name] = dt
            return sd
        raise AssertionError("unreachable")

    def pull(self, model, tensors=None, dtype=None, decay=None):
        """Pull the averaged model as numpy arrays.

        Args:
            model: model name.
            tensors: names to pull (default: all, in first-push order).
            dtype: convert floating tensors to "F32", "BF16" or "F16" (or the
                numpy/torch dtype) on the daemon; default: as pushed.
            decay: which shadow of a model with several decays (default: the
                first).

        Returns a :class:`StateDict` of numpy arrays (its ``step`` is the
        committed step the pull saw). bfloat16 tensors are
        ``ml_dtypes.bfloat16`` arrays if ml_dtypes is installed, else uint16
        arrays of bfloat16 bit patterns (``StateDict.dtypes`` says "BF16").
        The data is received straight into the arrays (no second copy).
        """
        self._check()
        if isinstance(tensors, str):
            tensors = [tensors]
        return self._pull_arrays(model, tensors, dtype, decay)

    def pull_state_dict(self, model, dtype=None, device=None, decay=None, tensors=None):
        """Pull the averaged model as a dict of torch tensors that load_state_dict accepts.

        Tensors have the pushed dtype (bfloat16 as torch.bfloat16, int64
        counters as int64), or ``dtype`` (torch.float32, torch.bfloat16,
        torch.float16, or a name) for floating ones; they are on the CPU,
        sharing memory with the received buffers, or moved to ``device``.
        Returns a :class:`StateDict` (``.step`` is the model's step).
        """
        self._check()
        import torch

        if isinstance(tensors, str):
            tensors = [tensors]
        arrays = self._pull_arrays(model, tensors, dtype, decay)
        sd = StateDict()
        sd.model, sd.step, sd.steps, sd.dtypes = arrays.model, arrays.step, arrays.steps, \
            arrays.dtypes
        for name, a in arrays.items():
            t = _arrays.to_torch(a, arrays.dtypes[name])
            if device is not None:
                t = t.to(torch.device(device))
            sd[name] = t
        return sd

    def load_into(self, module, model, strict=True, decay=None):
        """Load a model's EMA into a torch module; returns a :class:`LoadResult` (an int: the step).

        Keys match directly or after stripping wrapper prefixes on either
        side (``module.`` of DDP/DataParallel, ``_orig_mod.`` of
        torch.compile); tied weights are filled from the tensor they share;
        each tensor is converted to the module's dtype and device. With
        strict=True a key missing on either side raises :class:`LoadError`
        (an :class:`Error`) naming every one; with strict=False the rest is
        loaded and the result's ``missing`` and ``unexpected`` list them
        (frozen/LoRA models whose frozen weights were not pushed). A model
        with no tensors yet, or a shape that differs, is always an error.
        """
        sd = self.pull_state_dict(model, decay=decay)
        return _modules.load(module, sd, strict, model)

    def averaged(self, module, model, strict=True, decay=None):
        """Context manager: the module holds the model's EMA inside the block, its own after.

        ``with client.averaged(net, "run1") as r: evaluate(net)``. The values
        the EMA replaced are copied aside (one copy, on their device) and
        put back when the block ends, also when it raises; ``r`` is the
        :class:`LoadResult`. Matching and strict= as :meth:`load_into`.
        """
        sd = self.pull_state_dict(model, decay=decay)
        return _modules.averaged(module, sd, strict, model)


def _model_info(c):
    age = None if c.last_push_age_ms < 0 else c.last_push_age_ms / 1000.0
    return ModelInfo(c.name.decode("utf-8"), c.decay, c.step, c.ntensors, c.shadow_bytes,
                     c.snapshot_step, age)


def _module_entries(module, include_frozen):
    """Push entries for a torch module: trainable params, then persistent buffers."""
    entries = []
    for name, p in module.named_parameters():
        if p.requires_grad or include_frozen:
            entries.append(_arrays.make_entry(name, PARAM, p))
    persistent = module.state_dict(keep_vars=True).keys()
    for name, b in module.named_buffers():
        if name in persistent:
            entries.append(_arrays.make_entry(name, BUFFER, b))
    return entries
