# client/lib: libemad, the client library. Its objects are built once, as
# the convenience library libemadclient (which the reply fuzz target also
# links); libemad.so is those objects and the wire part of src/common, and
# exports only emad_* symbols.
noinst_LTLIBRARIES += libemadclient.la
libemadclient_la_SOURCES = \
	client/lib/client.h \
	client/lib/errors.c \
	client/lib/creds.c \
	client/lib/session.c \
	client/lib/transport.c \
	client/lib/heap.c \
	client/lib/info.c \
	client/lib/push.c \
	client/lib/layout.c \
	client/lib/pull.c \
	client/lib/admin.c \
	client/lib/cluster.h \
	client/lib/cluster.c \
	client/lib/cluster_ops.c \
	client/lib/cluster_read.c \
	client/lib/cluster_info.c \
	client/lib/cluster_pull.c \
	client/lib/cluster_sync.c \
	client/lib/cluster_copy.c
libemadclient_la_CFLAGS = $(AM_CFLAGS) $(NANOMSG_CFLAGS) $(MSGPACK_CFLAGS)
libemadclient_la_LIBADD = libemadwire.la $(NANOMSG_LIBS) $(MSGPACK_LIBS) -lpthread

lib_LTLIBRARIES = libemad.la
libemad_la_SOURCES =
libemad_la_LIBADD = libemadclient.la
libemad_la_LDFLAGS = $(AM_LDFLAGS) -version-info 0:0:0 -export-symbols-regex '^emad_'
