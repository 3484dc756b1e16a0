# Passgate's container image. Build: docker build -t passgate .   Run: see README, "Docker".
#
# Two stages: `build` installs the dependencies and builds the service's wheel into a virtual
# environment; `runtime` gets only that environment, so no build tool or cache reaches it.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The virtual environment gets no pip of its own (14 MB less in the image): the base image's pip
# installs into it with --python.
RUN python -m venv --without-pip /opt/venv
WORKDIR /src

# The dependencies alone first, from the runtime lock (exact versions and their hashes, see
# docs/dependencies.md): every build installs the same packages, a file that changed on the index
# fails the build, and nothing outside the lock is pulled in (--no-deps). This layer, the slow
# one, is rebuilt only when the lock changes, not on every change to the source.
COPY requirements/runtime.txt ./requirements.txt
RUN pip --python /opt/venv/bin/python install --require-hashes --no-deps -r requirements.txt

# Then the service itself, as a wheel (not editable): the wheel carries the migration scripts
# as app/migrations, so migration on start works from the installed package alone.
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY app ./app
RUN pip --python /opt/venv/bin/python install --no-deps . \
    && cd / && /opt/venv/bin/python -c 'import app.migrate as m; assert "site-packages" in str(m.script_location())'


FROM python:${PYTHON_VERSION}-slim AS runtime

# A fixed uid/gid, so a bind-mounted data folder can be chowned to match from the host. The
# folder is the service's alone (0700): it holds the database and, outside production, the key.
RUN groupadd --system --gid 10001 passgate \
    && useradd --system --uid 10001 --gid passgate --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin passgate \
    && mkdir --mode=0700 /data \
    && chown passgate:passgate /data

COPY --from=build /opt/venv /opt/venv
# The entrypoint lives in app/ (the top level holds only what the project layout names).
COPY --chmod=0755 app/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite+aiosqlite:////data/app.db \
    WORKERS=2 \
    FORWARDED_ALLOW_IPS=127.0.0.1

# The SQLite database and, outside production, the generated signing key live here.
VOLUME ["/data"]
# A folder with no .env in it: configuration comes from the container's environment.
WORKDIR /srv
USER passgate:passgate
EXPOSE 8000

# Liveness only (/health, not /health/ready): a database outage is no reason to replace this
# container, which recovers by itself once the database is back.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["serve"]
