# PostgreSQL 15 from Debian's packages, for docker-compose.yml (no registry needed).
#   docker build --build-arg BASE_IMAGE=minipaas-base:bookworm \
#     -f deploy/compose/postgres.Dockerfile -t minipaas-postgres:15 .
# It listens on a unix socket only (/run/postgresql, a volume the API and worker mount), never
# on TCP: nothing is published on the host. See postgres-entrypoint.sh.
ARG BASE_IMAGE=minipaas-base:bookworm
FROM ${BASE_IMAGE}

# Debian would create and start a cluster of its own: the entrypoint makes the only one
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-common \
    && sed -ri 's/^#?\s*create_main_cluster\b.*/create_main_cluster = false/' \
        /etc/postgresql-common/createcluster.conf \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres -m 0755 /run/postgresql

COPY deploy/compose/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
USER postgres
# Fast shutdown: ends sessions and writes a checkpoint (SIGTERM would wait for every client)
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
