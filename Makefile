# distributed: PGXS build
EXTENSION = distributed
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = distributed
OBJS = \
	src/distributed.o \
	src/follower.o \
	src/leader.o \
	src/monitor.o \
	src/report.o \
	src/shmem.o \
	src/token.o \
	src/waiter.o

DATA = $(wildcard $(EXTENSION)--*.sql)
PGFILEDESC = "distributed - read-your-writes on streaming-replication followers"

REGRESS = setup leader follower monitor errors prefix upgrade
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=$(srcdir)/test/regress.conf

ISOLATION = same_key_writers different_key_writers eviction_lookups wait_race
ISOLATION_OPTS = --temp-instance=./tmp_check_iso --temp-config=$(srcdir)/test/regress.conf

TAP_TESTS = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))
PROVE_FLAGS = -I $(srcdir)/test/lib

# Warnings are errors; -Wno- only for what PostgreSQL's own headers trip.
PG_CFLAGS += -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies (without --enable-depend): rebuild every
# object when a shared header changes, or a stale object reads a changed
# struct with the old layout.
$(OBJS): src/distributed.h src/compat.h
