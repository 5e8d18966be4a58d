# src/store: the domain: models, tensors, shadows, transactions, views, and
# the EMA kernels. Part of libemadd (src/daemon/local.mk).
emadd_store_sources = \
	src/store/ema.c src/store/ema.h \
	src/store/task.c src/store/task.h \
	src/store/store.c src/store/store.h
