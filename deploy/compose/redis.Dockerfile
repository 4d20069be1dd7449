# Redis from Debian's packages, for docker-compose.yml (no registry needed).
#   docker build --build-arg BASE_IMAGE=minipaas-base:bookworm \
#     -f deploy/compose/redis.Dockerfile -t minipaas-redis:7 .
# It always asks for REDIS_PASSWORD (redis-entrypoint.sh refuses to start without one).
ARG BASE_IMAGE=minipaas-base:bookworm
FROM ${BASE_IMAGE}

RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

COPY deploy/compose/redis-entrypoint.sh /usr/local/bin/redis-entrypoint
USER redis
ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]
