# src/base: the daemon's helpers (allocation that aborts on out-of-memory,
# logging, a string map, the line reader of INI files). Part of libemadd (src/daemon/local.mk).
emadd_base_sources = \
	src/base/log.c src/base/log.h \
	src/base/xmalloc.c src/base/xmalloc.h \
	src/base/strmap.c src/base/strmap.h \
	src/base/inilines.c src/base/inilines.h
