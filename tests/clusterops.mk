# Cluster operations: the network-namespace hosts (tests/netns.sh), the
# cluster tests over them, the deployment files and `make bench-cluster`.
# The namespace tests skip (exit 77) when not run as root.
if HAVE_CHECK
TESTS += tests/test_netns.sh tests/test_deploy.sh tests/test_cluster_ctl.sh
endif
EXTRA_DIST += tests/netns.sh tests/test_netns.sh tests/test_deploy.sh tests/deploy_check.py deploy \
	tests/test_cluster_ctl.sh tests/python/test_cluster.py
dist_doc_DATA += docs/CLUSTER.md
if HAVE_PYTHON
pkgpython_PYTHON += client/python/emad/_cluster.py
endif
