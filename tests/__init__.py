"""Unit tests (``unit/``), and integration tests that start a real Redis, real
Celery workers and the real API (``integration/``), with their helpers
(``support/``)."""
