"""Local servers on this host: PostgreSQL, Redis, nginx, the API and the worker."""
