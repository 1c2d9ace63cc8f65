from tests.helpers.pg_cluster import *  # noqa: F403  (moved to tests/helpers for the catalog tests)
