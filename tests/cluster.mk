# Cluster mode (docs/PROTOCOL.md, "Cluster mode"): the shard map and the
# placement (check_cluster), the daemon's cluster checks and libemad's
# cluster client against several daemons on 127.0.0.1 (check_e2e_cluster).
if HAVE_CHECK
check_PROGRAMS += tests/check_cluster
tests_check_cluster_SOURCES = tests/check_cluster.c
tests_check_cluster_CPPFLAGS = $(TESTS_CPPFLAGS)
tests_check_cluster_CFLAGS = $(TESTS_CFLAGS)
tests_check_cluster_LDADD = $(TESTS_LIBS)
check_PROGRAMS += tests/check_e2e_cluster
tests_check_e2e_cluster_SOURCES = tests/check_e2e_cluster.c
tests_check_e2e_cluster_CPPFLAGS = $(TESTS_CPPFLAGS)
tests_check_e2e_cluster_CFLAGS = $(TESTS_CFLAGS)
tests_check_e2e_cluster_LDADD = libemad.la $(TESTS_LIBS)
endif
EXTRA_DIST += tests/placement_ref.py
