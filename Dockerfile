# widen-bot: the container. Build from the repository root:  docker build -t widen-bot .
# Python as CI tests it (3.11); pin by digest too (python:3.11.13-slim-bookworm@sha256:...) if you mirror images.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: a wheel of this package, installed with its dependencies into a venv --------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY widen/ widen/
COPY receiver/ receiver/
COPY bot/ bot/
# The venv gets no pip of its own: the build stage's pip installs into it, and stays behind.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/widen-bot \
 && pip --python /opt/widen-bot/bin/python install --no-cache-dir /wheels/*.whl

# ---- runtime: the venv and nothing else of the build ----------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid, so orchestrators can verify runAsNonRoot and volumes can be chowned to it.
RUN groupadd --system --gid 10001 widen-bot \
 && useradd --system --uid 10001 --gid widen-bot --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin widen-bot \
 && mkdir /data \
 && chown widen-bot:widen-bot /data
COPY --from=build /opt/widen-bot /opt/widen-bot
ENV PATH=/opt/widen-bot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    DATABASE_URL=sqlite:////data/widen-bot.db \
    HOST=0.0.0.0 \
    PORT=3000
# The inbox (deliveries not yet posted) and the delivery URLs made by /widen create live here.
VOLUME /data
WORKDIR /data
USER 10001:10001
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]
# SIGTERM: stop accepting, finish or release in-flight work within SHUTDOWN_TIMEOUT, flush the store, exit 0.
STOPSIGNAL SIGTERM
CMD ["widen-bot", "serve"]
