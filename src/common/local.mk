# src/common: what the daemon and the clients share, with no abort on
# out-of-memory. Two convenience libraries, so that libemad.so links only
# the wire protocol (msgpack) and not the file formats (jansson, xxhash):
# libemadwire: protocol tables and checks, error codes, name rules, error
# messages (cause), counters, dtypes, EMA configuration, the tensor-map codec,
# authentication (key formats, handshake, frame tags: libsodium, and OpenSSL's
# Poly1305 for large pieces).
# libemadcore: libemadwire plus the safetensors and snapshot file formats.
noinst_LTLIBRARIES += libemadwire.la libemadcore.la
libemadwire_la_SOURCES = \
	src/common/proto.c src/common/proto.h \
	src/common/decode.c src/common/decode.h \
	src/common/counters.c src/common/counters.h \
	src/common/errors.c src/common/errors.h \
	src/common/names.c src/common/names.h \
	src/common/cause.c src/common/cause.h \
	src/common/dtype.c src/common/dtype.h \
	src/common/emaconf.c src/common/emaconf.h \
	src/common/codec.c src/common/codec.h \
	src/common/auth.c src/common/auth.h src/common/gmac.c src/common/gmac.h \
	src/common/shardmap.c src/common/shardmap.h \
	src/common/placement.c src/common/placement.h
libemadwire_la_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(SODIUM_CFLAGS) $(LIBCRYPTO_CFLAGS)
libemadwire_la_LIBADD = $(MSGPACK_LIBS) $(SODIUM_LIBS) $(LIBCRYPTO_LIBS) -lm

libemadcore_la_SOURCES = \
	src/common/safetensors.c src/common/safetensors.h \
	src/common/snapshot.c src/common/snapshot.h \
	src/common/snapshot_meta.c src/common/snapshot_meta.h
libemadcore_la_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(JANSSON_CFLAGS) $(XXHASH_CFLAGS)
libemadcore_la_LIBADD = libemadwire.la $(MSGPACK_LIBS) $(JANSSON_LIBS) $(XXHASH_LIBS) -lm
