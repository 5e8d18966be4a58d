# src/daemon: the emad program. Every daemon layer (base, files, store,
# daemon) goes into libemadd, so the unit tests and fuzzers link the same
# code as the daemon.
noinst_LTLIBRARIES += libemadd.la
libemadd_la_SOURCES = $(emadd_base_sources) $(emadd_files_sources) $(emadd_store_sources) \
	src/daemon/server.c src/daemon/server.h src/daemon/server_int.h \
	src/daemon/request.c src/daemon/reply.c src/daemon/layouts.c src/daemon/layouts.h src/daemon/async.c \
	src/daemon/iocpu.c src/daemon/iocpu.h \
	src/daemon/ops_model.c src/daemon/ops_push.c src/daemon/ops_pull.c \
	src/daemon/ops_auth.c src/daemon/authgate.c \
	src/daemon/authfile.c src/daemon/authfile.h src/daemon/authsess.c src/daemon/authsess.h \
	src/daemon/persist.c src/daemon/persist.h \
	src/daemon/metrics.c src/daemon/metrics.h \
	src/daemon/http.c src/daemon/http.h \
	src/daemon/settings.c src/daemon/settings.h \
	src/daemon/sysmem.c src/daemon/sysmem.h \
	src/daemon/notify.c src/daemon/notify.h \
	src/daemon/shard.c src/daemon/shard.h
libemadd_la_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS) $(NANOMSG_CFLAGS) $(MSGPACK_CFLAGS) \
	$(JANSSON_CFLAGS) $(XXHASH_CFLAGS) $(MHD_CFLAGS) $(INIH_CFLAGS) $(SYSTEMD_CFLAGS) $(SODIUM_CFLAGS) -pthread
libemadd_la_LIBADD = libemadcore.la $(UV_LIBS) $(NANOMSG_LIBS) $(MSGPACK_LIBS) \
	$(JANSSON_LIBS) $(XXHASH_LIBS) $(MHD_LIBS) $(INIH_LIBS) $(SYSTEMD_LIBS) $(SODIUM_LIBS) -lm -lpthread

bin_PROGRAMS += emad
emad_SOURCES = src/daemon/emad.c
emad_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS) $(NANOMSG_CFLAGS)
emad_LDADD = libemadd.la
