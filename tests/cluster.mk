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
tests_check_e2e_cluster_CFLAGS = $(TESTS_CFLAGS) -pthread
tests_check_e2e_cluster_LDADD = libemad.la $(TESTS_LIBS) -lpthread
endif
EXTRA_DIST += tests/placement_ref.py fuzz/fuzz_shardmap.c fuzz/corpus/shardmap

if ENABLE_FUZZING
noinst_PROGRAMS += fuzz/fuzz_shardmap
fuzz_fuzz_shardmap_SOURCES = fuzz/fuzz_shardmap.c
fuzz_fuzz_shardmap_CFLAGS = $(AM_CFLAGS) -fsanitize=fuzzer
fuzz_fuzz_shardmap_LDFLAGS = -fsanitize=fuzzer
fuzz_fuzz_shardmap_LDADD = libemadwire.la
endif

# A cluster whose daemons require authentication (emactl and the Python client).
if HAVE_CHECK
TESTS += tests/test_cluster_auth.sh
endif
EXTRA_DIST += tests/test_cluster_auth.sh
