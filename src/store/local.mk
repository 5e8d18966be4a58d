# src/store: the domain: models, tensors, shadows, transactions, views, and
# the EMA kernels. Part of libemadd (src/daemon/local.mk). store_int.h is
# the store's private header, for the files of this folder only.
emadd_store_sources = \
	src/store/ema.c src/store/ema.h \
	src/store/task.c src/store/task.h \
	src/store/store.c src/store/store.h src/store/store_int.h \
	src/store/budget.c src/store/budget.h \
	src/store/blob.c \
	src/store/stage.c \
	src/store/apply.c \
	src/store/pending.c \
	src/store/txn.c \
	src/store/view.c \
	src/store/prev.c \
	src/store/install.c
