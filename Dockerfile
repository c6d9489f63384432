# One image for every imagebot service:
#   docker build -t imagebot .                                  # bot_gateway, billing, jobs, migrate
#   docker build -t imagebot-gpu --build-arg EXTRAS=gpu,cuda,moderation .  # gpu_runner (torch, ...)
# Run a service with `imagebot run <service>`, migrations with `imagebot migrate`.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a virtual environment -------------
FROM ${PYTHON_IMAGE} AS build

# Comma-separated optional dependency groups from pyproject.toml, e.g. "gpu". `moderation`: the
# image detector the gateway and the runners refuse to start without while MODERATION_ENABLED
# (its licence: docs/architecture.md, Moderation); drop it only with moderation turned off.
ARG EXTRAS="moderation"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that editing src/ does not reinstall them
# (torch and friends in the GPU image are several GB).
COPY pyproject.toml ./
RUN python -c 'import os, tomllib; \
p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e.strip() for e in os.environ.get("EXTRAS", "").split(",") if e.strip()]; \
deps = p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]]; \
print("\n".join(deps))' > /tmp/requirements.txt \
    && cat /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# Then the project itself (README.md is the package's readme in pyproject.toml).
COPY README.md ./
COPY src ./src
RUN pip install --no-deps . && pip check

# --- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STORAGE_LOCAL_ROOT=/data/objects

RUN groupadd --system --gid 10001 imagebot \
    && useradd --system --uid 10001 --gid imagebot --home-dir /home/imagebot --create-home \
       --shell /usr/sbin/nologin imagebot \
    && mkdir -p /data/objects /models \
    && chown imagebot:imagebot /data/objects

COPY --from=build /opt/venv /opt/venv

# `imagebot migrate` runs alembic with alembic.ini from the working directory.
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations

USER imagebot:imagebot

# Services serve /healthz on 8080 (billing also serves the YooKassa webhook there).
EXPOSE 8080

ENTRYPOINT ["imagebot"]
CMD ["--help"]
