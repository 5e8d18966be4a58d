# Cluster operations: the network-namespace hosts (tests/netns.sh), the
# cluster tests over them, the deployment files and `make bench-cluster`.
# The namespace tests skip (exit 77) when not run as root.
if HAVE_CHECK
TESTS += tests/test_netns.sh tests/test_deploy.sh tests/test_cluster_ctl.sh tests/test_slurm.sh \
	tests/test_cluster.sh tests/test_cluster_faults.sh tests/test_cluster_reads.sh
endif
EXTRA_DIST += systemd/emad-cluster.conf tests/netns.sh tests/test_netns.sh tests/test_deploy.sh tests/deploy_check.py deploy \
	tests/test_cluster_ctl.sh tests/python/test_cluster.py tests/test_slurm.sh examples/slurm \
	tests/test_cluster.sh tests/cluster_driver.py tests/test_cluster_faults.sh tests/test_cluster_reads.sh
dist_doc_DATA += docs/CLUSTER.md
if HAVE_PYTHON
pkgpython_PYTHON += client/python/emad/_cluster.py
endif

# `make bench-cluster` (bench/bench_cluster.sh): push throughput through 1, 2
# and 4 shards behind equally limited links; needs root. A quicker run:
# `make bench-cluster BENCH_CLUSTER_ARGS='--mib 256'`.
bench-cluster: emad emactl libemad.la
	top_builddir='$(abs_builddir)' top_srcdir='$(abs_top_srcdir)' PYTHON3='$(PYTHON3)' \
	  $(SHELL) $(srcdir)/bench/bench_cluster.sh $(BENCH_CLUSTER_ARGS)
.PHONY: bench-cluster
EXTRA_DIST += bench/bench_cluster.sh bench/bench_cluster.py
