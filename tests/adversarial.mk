# The adversarial suite (issue 20): hostile and buggy clients against the real daemon, with a
# second client's `hello` latency bounded throughout.
if HAVE_CHECK
TESTS += tests/test_adversarial.sh
endif
EXTRA_DIST += tests/test_adversarial.sh tests/adversarial.py tests/adv_wire.py
