"""Clusters: a :class:`emad.Client` connected through a shard map (docs/CLUSTER.md).

``Client(cluster=MAP)`` connects with libemad's ``emad_connect_cluster``: MAP
is a shard-map file or its text (``"epoch 1; shard 0 tcp://h0:7470; ..."``).
Every method of the client then goes through the map: libemad places each
tensor on its shard(s), fans pushes out to every replica and pulls all
tensors from one committed step. This module owns what only a cluster
client has: the map's shape (:meth:`ClusterMixin.cluster_info`), the state
of every replica (:meth:`~ClusterMixin.cluster_status`), the placement
(:meth:`~ClusterMixin.cluster_plan`), resync and the warnings about skipped
replicas; and the URL form ``cluster:MAP`` under which :class:`_Conn`
connects (so the background sender of asynchronous pushes reconnects the
same way).
"""

import collections
import ctypes

from ._lib import ERRORS, Error, Piece, ReplicaStatus, tensor_array

__all__ = ["ClusterInfo", "ReplicaState", "PlacedPiece", "PREFIX", "connect", "split_warnings"]

#: URL prefix of a cluster connection: "cluster:" + the map (a path or its text).
PREFIX = "cluster:"

#: The map of a cluster client: shards, replicas per shard, epoch, acks per push.
ClusterInfo = collections.namedtuple("ClusterInfo", "shards replicas epoch ack")

#: One replica as emad_cluster_status() reports it (error: 0 or a libemad code; step and lag
#: concern the model asked about).
ReplicaState = collections.namedtuple(
    "ReplicaState", "shard replica url reachable error epoch has_model step lag resyncing")

#: One piece of a placement: elements [offset, offset + count) of tensor `name` on `shard`.
PlacedPiece = collections.namedtuple("PlacedPiece", "name shard offset count whole")


def connect(lib_, map_, opts):
    """A libemad client handle for shard map map_ (str); raises Error with the map's problem."""
    h = ctypes.c_void_p()
    bmap = map_.encode("utf-8")
    rc = lib_.fn("connect_cluster", feature="Client(cluster=...)")(ctypes.byref(h), bmap,
                                                                    ctypes.byref(opts))
    if rc == 0:
        return h
    msg = None
    if h:
        m = lib_.fn("last_error")(h)
        msg = m.decode("utf-8", "replace") if m else None
        lib_.fn("close")(h)
    if not msg:
        buf = ctypes.create_string_buffer(512)
        if lib_.fn("cluster_check_map")(bmap, buf, len(buf)) != 0:
            msg = buf.value.decode("utf-8", "replace")
    raise Error(rc, "cannot connect to the cluster: %s" % (msg or lib_.strerror(rc)))


def split_warnings(text):
    """The lines of emad_cluster_warnings() as a list (empty if none)."""
    return [line for line in (text or b"").decode("utf-8", "replace").splitlines() if line]


class ClusterMixin:
    """The cluster methods of :class:`emad.Client` (see the module doc)."""

    @property
    def cluster(self):
        """The shard map this client was connected with, or None for a single daemon."""
        url = self._conn.url if self._conn is not None else None
        return url[len(PREFIX):] if url and url.startswith(PREFIX) else None

    def _need_cluster(self, what):
        self._check()
        if self.cluster is None:
            raise Error(ERRORS["EMAD_EINVAL"], "%s needs a client made with cluster=MAP" % what)

    def cluster_info(self):
        """The map's shape as a :data:`ClusterInfo` (shards, replicas, epoch, ack)."""
        self._need_cluster("cluster_info")
        s, r, a = ctypes.c_uint32(), ctypes.c_uint32(), ctypes.c_uint32()
        e = ctypes.c_uint64()
        self._conn.call("cluster_info", ctypes.byref(s), ctypes.byref(r), ctypes.byref(e),
                        ctypes.byref(a), feature="cluster_info")
        return ClusterInfo(s.value, r.value, e.value, a.value)

    def cluster_status(self, model=None):
        """Every replica of every shard (shard-major) as :data:`ReplicaState`; with model, its
        step and lag there. Unreachable replicas are reported, not raised."""
        self._need_cluster("cluster_status")
        p = ctypes.POINTER(ReplicaStatus)()
        n = ctypes.c_size_t()
        bmodel = model.encode("utf-8") if model is not None else None
        self._conn.call("cluster_status", bmodel, ctypes.byref(p), ctypes.byref(n),
                        feature="cluster_status")
        try:
            return [ReplicaState(p[i].shard, p[i].replica, p[i].url.decode("utf-8", "replace"),
                                 bool(p[i].reachable), p[i].error, p[i].epoch,
                                 bool(p[i].has_model), p[i].step, p[i].lag, bool(p[i].resyncing))
                    for i in range(n.value)]
        finally:
            self._lib.fn("cluster_status_free")(p, n.value)

    def _pieces(self, entries):
        """[(entry index, shard, offset, count, whole)] of entries on this client's shards."""
        arr = tensor_array(entries, data=False)
        p = ctypes.POINTER(Piece)()
        n = ctypes.c_size_t()
        self._conn.call("cluster_plan", arr, len(entries), ctypes.byref(p), ctypes.byref(n),
                        feature="cluster_plan")
        try:
            return [(p[i].tensor, p[i].shard, p[i].offset, p[i].count, bool(p[i].whole))
                    for i in range(n.value)]
        finally:
            self._lib.free(p)

    def cluster_plan(self, tensors):
        """Where tensors (name -> array or torch tensor, or a torch module's state) live: a list
        of :data:`PlacedPiece`, in the order of the names sorted, each tensor's pieces by
        offset."""
        self._need_cluster("cluster_plan")
        from . import _arrays  # pylint: disable=import-outside-toplevel
        from ._lib import BUFFER  # pylint: disable=import-outside-toplevel

        if hasattr(tensors, "state_dict"):
            tensors = tensors.state_dict()
        # The placement reads names, dtypes and shapes only; as buffers, any dtype is accepted.
        entries = [_arrays.make_entry(k, BUFFER, v) for k, v in sorted(tensors.items())]
        return [PlacedPiece(entries[i].name, shard, off, cnt, whole)
                for i, shard, off, cnt, whole in self._pieces(entries)]

    def cluster_resync(self, model=None):
        """Bring the replicas behind in their shard up to date with model (None: every model);
        returns how many were."""
        self._need_cluster("cluster_resync")
        copied = ctypes.c_size_t()
        bmodel = model.encode("utf-8") if model is not None else None
        self._conn.call("cluster_resync", bmodel, ctypes.byref(copied), feature="cluster_resync")
        return copied.value

    def cluster_warnings(self):
        """The replicas the last call on the main connection skipped although it succeeded
        (a replica down with ``ack`` still met): one line each, [] if none."""
        self._need_cluster("cluster_warnings")
        with self._conn.lock:
            return split_warnings(self._lib.fn("cluster_warnings")(self._conn.handle))
