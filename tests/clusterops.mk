# Cluster operations: the network-namespace hosts (tests/netns.sh), the
# cluster tests over them, the deployment files and `make bench-cluster`.
# The namespace tests skip (exit 77) when not run as root.
if HAVE_CHECK
TESTS += tests/test_netns.sh
endif
EXTRA_DIST += tests/netns.sh tests/test_netns.sh
